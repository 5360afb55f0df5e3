"""Popularity predicted from item text: how much behaviour an item's description suggests.

A ridge regression from the item vectors to ``log1p(relative popularity)`` (interactions over
the window's average item, so windows of different lengths give one scale), fitted on the items seen
in the window. Items without behaviour (new or cold items) get an estimate from their text
alone, which is what lets them compete with items that have a history (the ``text_popularity``
row of a ``--cold-items`` run measures it alone).
"""

from __future__ import annotations

import numpy as np


def fit_text_popularity(item_vectors: np.ndarray, interaction_counts: np.ndarray,
                        regularization: float = 10.0) -> np.ndarray:
    """Weights float32 (d + 1,) (last = intercept) of ``log1p(count) ~ vector``.

    item_vectors: (n_items, d) float32; interaction_counts: (n_items,) counts (or relative
    counts) in the window,
    NaN or 0 for unseen items (left out of the fit). All-zero weights when nothing was seen.
    """
    counts = np.nan_to_num(np.asarray(interaction_counts, dtype=np.float64), nan=0.0)
    seen = counts > 0
    d = item_vectors.shape[1]
    if seen.sum() < 2:
        return np.zeros(d + 1, dtype=np.float32)
    x = item_vectors[seen].astype(np.float64)
    y = np.log1p(counts[seen])
    mean = y.mean()
    w = np.linalg.solve(x.T @ x + regularization * np.eye(d), x.T @ (y - mean))
    return np.append(w, mean).astype(np.float32)


def predict_text_popularity(item_vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 (n_items,) predicted ``log1p(count)`` (in the units the weights were fitted on)."""
    return (item_vectors @ weights[:-1] + weights[-1]).astype(np.float32)
