"""Collaborative filtering: ALS (``implicit``) and BPR (``features.bpr``), reduced to their factors.

After fitting only the factor matrices are kept (saved as npz), so scoring at serving time is
numpy arithmetic and does not depend on implicit's own persistence format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from features.item_item import binary
from features.pair_scores import pair_dot
from features.user_items import check_user_items
from recsys.config import PipelineConfig
from recsys.errors import ConfigError

ALGORITHMS = ("als", "bpr")
# ALS solves each user (then each item) independently from the other side's fixed factors, so
# its threads do not race: 0 = all cores, same factors (tests/test_determinism.py checks this).
ALS_THREADS = 0


@dataclass(frozen=True)
class CFFactors:
    """user_factors: (n_users, f) float32; item_factors: (n_items, f) float32.

    score(u, i) = user_factors[u] . item_factors[i] (BPR's item bias is folded in as a column).
    """

    name: str
    user_factors: np.ndarray
    item_factors: np.ndarray

    def pair_scores(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """float32 (n,) scores of (user, item) pairs; NaN where user_idx or item_idx is -1."""
        return pair_dot(self.user_factors, self.item_factors, user_idx, item_idx)

    def save(self, path: Path) -> None:
        np.savez(path, user_factors=self.user_factors, item_factors=self.item_factors)

    @classmethod
    def load(cls, path: Path, name: str) -> CFFactors:
        with np.load(path) as data:
            return cls(name=name, user_factors=data["user_factors"], item_factors=data["item_factors"])


def bpr_epochs(iterations: int, max_samples: int, n_interactions: int) -> int:
    """BPR's epochs for ``n_interactions`` training pairs: ``iterations``, or fewer (at least 5)
    when ``iterations x n_interactions`` exceeds ``max_samples``."""
    if n_interactions <= 0 or iterations * n_interactions <= max_samples:
        return iterations
    return max(5, min(iterations, max_samples // n_interactions))


def als_alpha(alpha: float, user_confidence: float, values: sp.csr_matrix) -> float:
    """ALS's confidence scale for ``values`` (users x items, the matrix ALS is fitted on).

    ``alpha`` > 0 is used as it is. 0 = from the data: ``user_confidence`` divided by the mean
    over users with history of the sum of their values, so a user's positives weigh about the
    same against the L2 penalty on sparse logs (a handful of items per user) as on dense ones
    (hundreds of ratings). Rounded to 3 significant digits, so the logged value is the one used.
    """
    if alpha > 0:
        return float(alpha)
    return float(f"{user_confidence / mean_user_sum(values):.3g}")


def als_input(user_items: sp.csr_matrix, config: PipelineConfig) -> tuple[sp.csr_matrix, float]:
    """What ALS is fitted on under ``config``: the values (the weights, or 0/1 without
    ``cf_use_weights``; users x items CSR) and the confidence scale alpha for them."""
    values = user_items if config.cf_use_weights else binary(user_items)
    return values, als_alpha(config.als_alpha, config.als_user_confidence, values)


def mean_user_sum(values: sp.csr_matrix) -> float:
    """The mean over users with history of their sum of values (users x items); 1.0 if none has any."""
    sums = np.asarray(values.sum(axis=1), dtype=np.float64).ravel()
    return float(sums[sums > 0].mean()) if np.any(sums > 0) else 1.0


def fit_cf(name: str, user_items: sp.csr_matrix, *, n_users: int, n_items: int, factors: int,
           iterations: int, regularization: float = 0.05, alpha: float = 1.0, learning_rate: float = 0.05,
           seed: int = 0, after_epochs=None, every: int = 10, should_stop=None) -> CFFactors:
    """Fit ALS or BPR on ``user_items`` (users x items) and return its factors.

    alpha: ALS's confidence scale (confidence = 1 + alpha x value); BPR uses only the pattern.
    learning_rate: BPR's SGD step (ALS has none). regularization: L2 weight of either.
    Same matrix and ``seed``, same factors (``ALS_THREADS``; BPR runs on one thread).
    after_epochs, should_stop: BPR only, see ``features.bpr.fit_bpr_factors``.
    """
    from implicit.cpu.als import AlternatingLeastSquares

    from features.bpr import fit_bpr_factors

    user_items = check_user_items(user_items, n_users, n_items)
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown CF algorithm {name!r}; use one of {ALGORITHMS}")
    if name == "bpr":
        pattern = user_items.copy()
        pattern.data[:] = 1.0
        user_factors, item_factors = fit_bpr_factors(pattern, factors=factors, iterations=iterations,
                                                     learning_rate=learning_rate, regularization=regularization,
                                                     seed=seed, after_epochs=after_epochs, every=every,
                                                     should_stop=should_stop)
    else:
        # implicit runs its own threads; a multi-threaded BLAS underneath oversubscribes the cores
        # (implicit checks this when the model is built, so the limit covers construction too).
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                            iterations=iterations, random_state=seed, num_threads=ALS_THREADS)
            model.fit(user_items, show_progress=False)
        user_factors, item_factors = model.user_factors, np.array(model.item_factors, dtype=np.float32)
    # An item nobody interacted with keeps its random initial factors in BPR: noise, not a score.
    # Zero rows (ALS's own answer for such items, and what add-items gives new items) say "unknown".
    item_factors[np.diff(user_items.tocsc().indptr) == 0] = 0.0
    return CFFactors(name=name, user_factors=np.ascontiguousarray(user_factors, dtype=np.float32),
                     item_factors=item_factors)
