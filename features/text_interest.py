"""User interest vectors from the vectors of the items in their history, and interest scores.

A user vector is the recency-weighted mean of their last ``history_len`` item vectors
(weight 0.5 ** (position_from_end / half_life)), L2-normalised. No language-model forward
pass is needed for users: only item vectors.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp


def history_weights(interactions: pl.DataFrame, *, n_users: int, n_items: int, history_len: int,
                    half_life: float) -> sp.csr_matrix:
    """Recency weights as CSR (n_users, n_items) float32 from ``user_idx, item_idx, timestamp``."""
    recent = (
        interactions.select("user_idx", "item_idx", "timestamp")
        .sort("timestamp")
        .with_columns(pl.int_range(pl.len(), 0, -1).over("user_idx").alias("_from_end"))
        .filter(pl.col("_from_end") <= history_len)
        .with_columns((0.5 ** ((pl.col("_from_end") - 1) / half_life)).cast(pl.Float32).alias("_w"))
    )
    matrix = sp.csr_matrix(
        (recent["_w"].to_numpy(), (recent["user_idx"].to_numpy(), recent["item_idx"].to_numpy())),
        shape=(n_users, n_items), dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix


def user_vectors(weights: sp.csr_matrix, item_vectors: np.ndarray) -> np.ndarray:
    """float32 (n_users, d) unit vectors; all-zero rows for users without history."""
    vectors = np.asarray(weights @ item_vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def vector_from_history(item_idx: np.ndarray, item_vectors: np.ndarray, *, half_life: float) -> np.ndarray:
    """One interest vector (d,) from item indices ordered oldest -> newest (request-time history)."""
    if len(item_idx) == 0:
        return np.zeros(item_vectors.shape[1], dtype=np.float32)
    from_end = np.arange(len(item_idx) - 1, -1, -1)
    w = (0.5 ** (from_end / half_life)).astype(np.float32)
    v = w @ item_vectors[np.asarray(item_idx)]
    n = np.linalg.norm(v)
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)
