"""Collaborative filtering with ``implicit``: ALS and BPR, reduced to their factors.

After fitting only the factor matrices are kept (saved as npz), so scoring at serving time is
numpy arithmetic and does not depend on implicit's own persistence format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from features.pair_scores import pair_dot
from features.user_items import check_user_items
from recsys.errors import ConfigError

ALGORITHMS = ("als", "bpr")
# BPR's SGD is Hogwild: with more than one thread, threads race on shared item factors and the
# result depends on scheduling. One thread makes a fit a function of (matrix, seed) and of nothing
# about the machine (implicit also draws one sampling seed per thread).
BPR_THREADS = 1
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


def fit_cf(name: str, user_items: sp.csr_matrix, *, n_users: int, n_items: int, factors: int,
           iterations: int, regularization: float = 0.05, alpha: float = 1.0, seed: int = 0) -> CFFactors:
    """Fit ALS or BPR on ``user_items`` (users x items) and return its factors.

    alpha: ALS's confidence scale (confidence = 1 + alpha x value); BPR uses only the pattern.
    Same matrix and ``seed``, same factors: see ``BPR_THREADS`` and ``ALS_THREADS``.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    user_items = check_user_items(user_items, n_users, n_items)
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown CF algorithm {name!r}; use one of {ALGORITHMS}")
    # implicit runs its own threads; a multi-threaded BLAS underneath oversubscribes the cores
    # (implicit checks this when the model is built, so the limit covers construction too).
    with threadpool_limits(limits=1, user_api="blas"):
        if name == "als":
            model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                            iterations=iterations, random_state=seed, num_threads=ALS_THREADS)
        else:
            model = BayesianPersonalizedRanking(factors=factors, iterations=iterations, learning_rate=0.05,
                                                regularization=0.01, random_state=seed, num_threads=BPR_THREADS)
        model.fit(user_items, show_progress=False)
    item_factors = np.array(model.item_factors, dtype=np.float32)
    # An item nobody interacted with keeps its random initial factors in BPR: noise, not a score.
    # Zero rows (ALS's own answer for such items, and what add-items gives new items) say "unknown".
    item_factors[np.diff(user_items.tocsc().indptr) == 0] = 0.0
    return CFFactors(name=name, user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
                     item_factors=item_factors)
