"""Bayesian Personalised Ranking (Rendle et al. 2009), written here with torch tensors.

Why not ``implicit``'s BPR: on MovieLens 100K it stays well below the published BPR and falls
as epochs go on; ``benchmarks/bpr_check.py`` measures both on the same splits (figures in
docs/results.md).

The model: score(u, i) = p_u . q_i + b_i. Each epoch draws as many (user, positive item)
pairs as there are interactions (uniformly over the interactions) and one uniform negative
item per pair; a negative the user interacted with is skipped (not redrawn, as in Cornac).
Every sample takes one SGD step on ln sigmoid(x_ui - x_uj) with L2 regularisation
``regularization``; the steps of a batch of ``BATCH`` samples are computed from the same
factors and summed (as Hogwild threads would), so an item drawn m times in a batch moves by m
steps at once: keep ``learning_rate x m`` small (the tuner searches rates up to 0.1). The
learning rate decays linearly to ``FINAL_LR_SHARE`` of its start over the epochs, so the last
epochs refine instead of oscillating around the optimum.

One thread and seeded draws: the same matrix and seed give the same factors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recsys.errors import FitStopped

BATCH = 4_096  # samples per vectorised step
FINAL_LR_SHARE = 0.1  # learning rate at the last epoch, as a share of the first


def fit_bpr_factors(user_items: sp.csr_matrix, *, factors: int, iterations: int, learning_rate: float,
                    regularization: float, seed: int,
                    after_epochs: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
                    every: int = 10, should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BPR factors of a binary ``user_items`` (n_users, n_items) pattern.

    Returns user_factors (n_users, factors + 1) float32 whose last column is 1, and
    item_factors (n_items, factors + 1) float32 whose last column is the item bias, so that
    ``user_factors @ item_factors.T`` is the score.

    after_epochs: called as ``after_epochs(epochs_done, user_factors, item_factors)`` every
    ``every`` epochs before the last (the tuner's pruning looks at the factors there; an
    exception it raises stops the fit). should_stop: asked before every epoch; True stops the fit
    with ``FitStopped`` (a caller that no longer wants the result, e.g. after Ctrl-C).
    """
    start = _Start.of(user_items, factors, seed)
    user_f, item_f, bias, n = start.user_f, start.item_f, start.bias, len(start.users)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for epoch in range(iterations):
                if should_stop is not None and should_stop():
                    raise FitStopped(f"BPR stopped after {epoch} of {iterations} epochs: its caller ended")
                lr = learning_rate * (1.0 - (1.0 - FINAL_LR_SHARE) * epoch / max(iterations - 1, 1))
                picks, negatives = start.epoch_draws()
                for first in range(0, n, BATCH):
                    pick = picks[first:first + BATCH]
                    _batch_step(user_f, item_f, bias, u=start.users.index_select(0, pick),
                                i=start.items.index_select(0, pick), j=negatives[first:first + BATCH],
                                positive_keys=start.positive_keys, lr=lr, regularization=regularization)
                if after_epochs is not None and (epoch + 1) % every == 0 and epoch + 1 < iterations:
                    after_epochs(epoch + 1, *_with_bias(user_f, item_f, bias))
    finally:
        torch.set_num_threads(threads)
    return _with_bias(user_f, item_f, bias)


@dataclass
class _Start:
    """A fit's inputs and seeded starting point: the (user, item) pairs as int64 tensors (nnz,),
    their sorted ``user * n_items + item`` keys, the initial factors (float32 (n_users, f),
    (n_items, f)) and biases (float32 (n_items,)), and the generator of the epochs' draws."""

    users: torch.Tensor
    items: torch.Tensor
    positive_keys: torch.Tensor
    user_f: torch.Tensor
    item_f: torch.Tensor
    bias: torch.Tensor
    generator: torch.Generator

    @classmethod
    def of(cls, user_items: sp.csr_matrix, factors: int, seed: int) -> _Start:
        n_users, n_items = user_items.shape
        coo = user_items.tocoo()
        users = torch.from_numpy(coo.row.astype(np.int64))
        items = torch.from_numpy(coo.col.astype(np.int64))
        rng = np.random.default_rng(seed)
        return cls(users=users, items=items,
                   # A negative is a positive when its key is found here.
                   positive_keys=torch.sort(users * n_items + items).values,
                   user_f=torch.from_numpy((rng.random((n_users, factors), dtype=np.float32) - 0.5) / factors),
                   item_f=torch.from_numpy((rng.random((n_items, factors), dtype=np.float32) - 0.5) / factors),
                   bias=torch.zeros(n_items, dtype=torch.float32),
                   generator=torch.Generator().manual_seed(seed))

    def epoch_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch's int64 (nnz,) draws: positions of (user, positive) pairs, uniform with
        replacement, and one uniform negative item per draw."""
        n, n_items = len(self.users), len(self.item_f)
        picks = (torch.randint(0, n, (n,), generator=self.generator) if n
                 else torch.zeros(0, dtype=torch.int64))
        return picks, torch.randint(0, n_items, (n,), generator=self.generator)


def _batch_step(user_f: torch.Tensor, item_f: torch.Tensor, bias: torch.Tensor, *, u: torch.Tensor,
                i: torch.Tensor, j: torch.Tensor, positive_keys: torch.Tensor, lr: float,
                regularization: float) -> None:
    """One vectorised SGD step on a batch of samples (user u, positive i, negative j), in place.

    user_f: float32 (n_users, f); item_f: float32 (n_items, f); bias: float32 (n_items,);
    u, i, j: int64 (batch,); positive_keys: sorted int64 ``user * n_items + item`` of every pair.

    The steps, per kept sample (a negative the user has is skipped), all from the factors as
    they were before the batch except the negative's bias, which is read after the positives'
    bias updates (an item can be both in one batch):
        user_f[u] += lr * (z * (q_i - q_j) - reg * p_u)
        item_f[i] += lr * (z * p_u - reg * q_i);   item_f[j] += lr * (-z * p_u - reg * q_j)
        bias[i] += lr * (z - reg * b_i);           bias[j] += lr * (-z - reg * b_j)
    with z = sigmoid(-(b_i - b_j + p_u . (q_i - q_j))). The products are computed in place on the
    batch's gathered rows, each rounding as the written-out expression would (the tests compare
    with it bit for bit); row gathers use ``index_select``, the cheapest copy of rows.
    """
    keys = u * len(item_f) + j
    found = torch.searchsorted(positive_keys, keys).clamp_(max=max(len(positive_keys) - 1, 0))
    kept = (positive_keys.index_select(0, found) != keys).nonzero().squeeze(1)
    u, i, j = u.index_select(0, kept), i.index_select(0, kept), j.index_select(0, kept)
    pu, qi, qj = user_f.index_select(0, u), item_f.index_select(0, i), item_f.index_select(0, j)
    diff = qi - qj
    bias_i = bias.index_select(0, i)
    z = torch.sigmoid(-(bias_i - bias.index_select(0, j) + (pu * diff).sum(1)))[:, None]
    user_f.index_add_(0, u, diff.mul_(z).sub_(pu * regularization).mul_(lr))
    z_pu = pu.mul_(z)  # p_u is not read again
    item_f.index_add_(0, i, torch.sub(z_pu, qi.mul_(regularization), out=qi).mul_(lr))
    item_f.index_add_(0, j, z_pu.neg_().sub_(qj.mul_(regularization)).mul_(lr))  # -(z p_u) == (-z) p_u exactly
    z = z[:, 0]
    bias.index_add_(0, i, lr * (z - regularization * bias_i))
    bias.index_add_(0, j, lr * (-z - regularization * bias.index_select(0, j)))


def _with_bias(user_f: torch.Tensor, item_f: torch.Tensor, bias: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(users, f + 1) with a column of ones, (items, f + 1) with the bias column: float32 copies."""
    ones = np.ones((user_f.shape[0], 1), dtype=np.float32)
    return (np.hstack([user_f.numpy(), ones]).astype(np.float32),
            np.hstack([item_f.numpy(), bias.numpy()[:, None]]).astype(np.float32))
