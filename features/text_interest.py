"""User interest vectors from the vectors of the items in their history, and interest scores.

A user vector is an attention-pooled mean of their last ``history_len`` item vectors,
L2-normalised: item i of the history (``p`` positions from the newest) weighs
``exp(slope * p + query . v_i)``. With ``query = 0`` and ``slope = -ln 2 / half_life`` this is the
plain recency-weighted mean (weight 0.5 ** (p / half_life)); fine-tuning learns both, so the
tower can attend to the history items that say most about the next one. No language-model
forward pass is needed for users: only item vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp


@dataclass(frozen=True)
class HistoryPooling:
    """query: float32 (d,) attention query over item vectors; slope: log-weight per position back."""

    query: np.ndarray
    slope: float

    @classmethod
    def recency(cls, half_life: float, dim: int) -> HistoryPooling:
        """The plain recency-weighted mean: no item attention, weight halves every ``half_life``."""
        return cls(query=np.zeros(dim, dtype=np.float32), slope=-math.log(2.0) / half_life)

    def item_logits(self, item_vectors: np.ndarray) -> np.ndarray:
        """float32 (n_items,) attention logit of each item, clipped to [-20, 20] (exp stays finite)."""
        return np.clip(item_vectors @ self.query, -20.0, 20.0).astype(np.float32)


def history_weights(interactions: pl.DataFrame, *, n_users: int, n_items: int, history_len: int,
                    half_life: float, pooling: HistoryPooling | None = None,
                    item_vectors: np.ndarray | None = None) -> sp.csr_matrix:
    """Pooling weights as CSR (n_users, n_items) float32 from ``user_idx, item_idx, timestamp``.

    Without ``pooling`` (or ``item_vectors``): recency weights 0.5 ** (p / half_life).
    History order is time, then the row's position in ``interactions`` (a stable sort): of two
    events at the same time the later row counts as the more recent.
    """
    recent = (
        interactions.select("user_idx", "item_idx", "timestamp")
        .sort("timestamp", maintain_order=True)
        .with_columns(pl.int_range(pl.len(), 0, -1).over("user_idx").alias("_from_end"))
        .filter(pl.col("_from_end") <= history_len)
    )
    if pooling is None or item_vectors is None:
        recent = recent.with_columns((0.5 ** ((pl.col("_from_end") - 1) / half_life)).cast(pl.Float32).alias("_w"))
    else:
        logits = pooling.item_logits(item_vectors)[recent["item_idx"].to_numpy()]
        recent = recent.with_columns(pl.Series("_w", np.exp(
            pooling.slope * (recent["_from_end"].to_numpy() - 1) + logits).astype(np.float32)))
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


class UserVectors:
    """Interest vectors (n_users, d) float32, computed from the pooling weights when read.

    ``vectors[rows]`` equals ``user_vectors(weights, item_vectors)[rows]`` exactly (a CSR row
    product and a row norm do not depend on the other rows), without holding n_users x d floats
    (1.5 GB per state at 1M users and d = 384). Rows: an int array (n,), a slice or one int.
    weights: CSR (n_users, n_items_at_fit) float32; item_vectors: (n_items_at_fit, d) float32,
    the vectors the weights pool (a catalog update appends items; these rows stay as they are).
    ``materialize`` keeps the whole table when it is small (the server does, at load).
    """

    dtype = np.dtype(np.float32)
    # ``materialize`` keeps every row at most this size: a served request then reads its rows
    # from a table (~1 us) instead of a CSR row product (~90 us).
    DENSE_MAX_BYTES = 256 * 2**20

    def __init__(self, weights: sp.csr_matrix, item_vectors: np.ndarray) -> None:
        if weights.shape[1] != item_vectors.shape[0]:
            raise ValueError(f"pooling weights cover {weights.shape[1]} items but {item_vectors.shape[0]} "
                             "item vectors were given; pass the vectors the weights were fitted with")
        self.weights = weights.tocsr()
        self.item_vectors = item_vectors
        self._dense: np.ndarray | None = None

    def materialize(self, max_bytes: int | None = None) -> bool:
        """Compute and keep every row when the table takes at most ``max_bytes`` (default
        ``DENSE_MAX_BYTES``); reads then come from it, with the same values. True when kept."""
        limit = self.DENSE_MAX_BYTES if max_bytes is None else max_bytes
        if self._dense is None and len(self) * self.shape[1] * 4 <= limit:
            self._dense = user_vectors(self.weights, self.item_vectors)
        return self._dense is not None

    @property
    def shape(self) -> tuple[int, int]:
        return self.weights.shape[0], self.item_vectors.shape[1]

    def __len__(self) -> int:
        return self.weights.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            if self._dense is not None:
                return self._dense[rows].copy()  # never a view of the kept table
            return user_vectors(self.weights[rows], self.item_vectors)
        rows = np.asarray(rows)
        if rows.ndim == 0:
            return self[rows.reshape(1)][0]
        rows = checked_user_rows(rows, len(self))
        if self._dense is not None:
            return self._dense[rows]
        return user_vectors(self.weights[rows], self.item_vectors)


def checked_user_rows(rows: np.ndarray, n_users: int) -> np.ndarray:
    """``rows`` (a 1-d int array or a boolean mask of ``n_users``) as int row indices, or an
    IndexError that says what was wrong (unknown users, -1, must be masked by the caller)."""
    if rows.dtype == bool:
        if rows.shape != (n_users,):
            raise IndexError(f"a boolean mask of users must have shape ({n_users},), not {rows.shape}")
        rows = np.flatnonzero(rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise IndexError(f"user rows must be a 1-d int array, a slice or an int; got {rows.dtype} {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= n_users):
        raise IndexError(f"user rows must be in 0..{n_users - 1}; mask unknown users (-1) first")
    return rows

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._dense.copy() if self._dense is not None else user_vectors(self.weights, self.item_vectors)
        return out if dtype is None else out.astype(dtype)


def vector_from_history(item_idx: np.ndarray, item_vectors: np.ndarray, *, half_life: float,
                        pooling: HistoryPooling | None = None) -> np.ndarray:
    """One interest vector (d,) from item indices ordered oldest -> newest (request-time history)."""
    if len(item_idx) == 0:
        return np.zeros(item_vectors.shape[1], dtype=np.float32)
    from_end = np.arange(len(item_idx) - 1, -1, -1)
    if pooling is None:
        w = (0.5 ** (from_end / half_life)).astype(np.float32)
    else:
        w = np.exp(pooling.slope * from_end + pooling.item_logits(item_vectors[np.asarray(item_idx)]))
        w = w.astype(np.float32)
    v = w @ item_vectors[np.asarray(item_idx)]
    n = np.linalg.norm(v)
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)
