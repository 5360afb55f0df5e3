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

import numpy as np
import scipy.sparse as sp
import torch

BATCH = 4_096  # samples per vectorised step
FINAL_LR_SHARE = 0.1  # learning rate at the last epoch, as a share of the first


def fit_bpr_factors(user_items: sp.csr_matrix, *, factors: int, iterations: int, learning_rate: float,
                    regularization: float, seed: int,
                    after_epochs: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
                    every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """BPR factors of a binary ``user_items`` (n_users, n_items) pattern.

    Returns user_factors (n_users, factors + 1) float32 whose last column is 1, and
    item_factors (n_items, factors + 1) float32 whose last column is the item bias, so that
    ``user_factors @ item_factors.T`` is the score.

    after_epochs: called as ``after_epochs(epochs_done, user_factors, item_factors)`` every
    ``every`` epochs before the last (the tuner's pruning looks at the factors there; an
    exception it raises stops the fit).
    """
    n_users, n_items = user_items.shape
    coo = user_items.tocoo()
    users = torch.from_numpy(coo.row.astype(np.int64))
    items = torch.from_numpy(coo.col.astype(np.int64))
    n = len(users)
    # Sorted user * n_items + item keys: a negative is a positive when its key is found here.
    positive_keys = torch.sort(users * n_items + items).values
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    user_f = torch.from_numpy((rng.random((n_users, factors), dtype=np.float32) - 0.5) / factors)
    item_f = torch.from_numpy((rng.random((n_items, factors), dtype=np.float32) - 0.5) / factors)
    bias = torch.zeros(n_items)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for epoch in range(iterations):
                share = 1.0 - (1.0 - FINAL_LR_SHARE) * epoch / max(iterations - 1, 1)
                lr = learning_rate * share
                picks = torch.randint(0, n, (n,), generator=generator) if n else torch.zeros(0, dtype=torch.int64)
                negatives = torch.randint(0, n_items, (n,), generator=generator)
                for start in range(0, n, BATCH):
                    pick = picks[start:start + BATCH]
                    u, i, j = users[pick], items[pick], negatives[start:start + BATCH]
                    keys = u * n_items + j
                    found = torch.searchsorted(positive_keys, keys).clamp_(max=max(n - 1, 0))
                    keep = positive_keys[found] != keys
                    u, i, j = u[keep], i[keep], j[keep]
                    pu, qi, qj = user_f[u], item_f[i], item_f[j]
                    z = torch.sigmoid(-(bias[i] - bias[j] + (pu * (qi - qj)).sum(1)))[:, None]
                    user_f.index_add_(0, u, lr * (z * (qi - qj) - regularization * pu))
                    item_f.index_add_(0, i, lr * (z * pu - regularization * qi))
                    item_f.index_add_(0, j, lr * (-z * pu - regularization * qj))
                    bias.index_add_(0, i, lr * (z[:, 0] - regularization * bias[i]))
                    bias.index_add_(0, j, lr * (-z[:, 0] - regularization * bias[j]))
                if after_epochs is not None and (epoch + 1) % every == 0 and epoch + 1 < iterations:
                    after_epochs(epoch + 1, *_with_bias(user_f, item_f, bias))
    finally:
        torch.set_num_threads(threads)
    return _with_bias(user_f, item_f, bias)


def _with_bias(user_f: torch.Tensor, item_f: torch.Tensor, bias: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(users, f + 1) with a column of ones, (items, f + 1) with the bias column: float32 copies."""
    ones = np.ones((user_f.shape[0], 1), dtype=np.float32)
    return (np.hstack([user_f.numpy(), ones]).astype(np.float32),
            np.hstack([item_f.numpy(), bias.numpy()[:, None]]).astype(np.float32))
