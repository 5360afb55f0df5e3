"""The ``user_items`` matrix that ``implicit`` consumes: CSR, users x items, float32."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.errors import DataValidationError
from recsys.idmap import IdMap


def build_user_items(interactions: pl.DataFrame, users: IdMap, items: IdMap) -> sp.csr_matrix:
    """Sum of ``weight`` per (user, item), shape (len(users), len(items)), float32 CSR.

    Rows whose user or item is not in the id maps are an error: fit the maps on this data.
    """
    u = users.to_index(interactions["user_id"])
    i = items.to_index(interactions["item_id"])
    w = interactions["weight"].to_numpy().astype(np.float32) if "weight" in interactions.columns \
        else np.ones(interactions.height, dtype=np.float32)
    matrix = sp.csr_matrix((w, (u, i)), shape=(len(users), len(items)), dtype=np.float32)
    matrix.sum_duplicates()
    return matrix


def build_session_items(interactions: pl.DataFrame, items: IdMap, gap_seconds: float) -> sp.csr_matrix:
    """Binary session x item matrix (n_sessions, len(items)) float32 CSR.

    A session is a run of one user's interactions, in time order, with at most ``gap_seconds``
    between consecutive ones (``gap_seconds`` > 0). Sessions of a single interaction are kept:
    they add to an item's own count only. Every item must be in ``items``. Sessions are numbered
    by user id, then time; events at the same time keep their input order (a stable sort).
    """
    if gap_seconds <= 0:
        raise ValueError(f"gap_seconds must be positive, got {gap_seconds}")
    ordered = interactions.select("user_id", "item_id", "timestamp").sort("user_id", "timestamp", maintain_order=True)
    gap = pl.col("timestamp").diff().over("user_id").dt.total_microseconds()
    new_session = (gap.is_null() | (gap > gap_seconds * 1e6)).cast(pl.Int64)
    session = ordered.select(new_session.cum_sum().alias("session") - 1)["session"].to_numpy()
    n_sessions = int(session[-1]) + 1 if len(session) else 0
    matrix = sp.csr_matrix((np.ones(len(session), dtype=np.float32), (session, items.to_index(ordered["item_id"]))),
                           shape=(n_sessions, len(items)), dtype=np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def check_user_items(user_items: sp.spmatrix, n_users: int, n_items: int) -> sp.csr_matrix:
    """Check orientation and dtype where the matrix is passed; return it as CSR float32."""
    if not sp.issparse(user_items):
        raise DataValidationError(f"user_items must be a scipy sparse matrix, got {type(user_items).__name__}")
    if user_items.shape != (n_users, n_items):
        raise DataValidationError(
            f"user_items has shape {user_items.shape}, expected (users, items) = ({n_users}, {n_items}); "
            "did you pass item_users (the transpose)?"
        )
    return user_items.tocsr().astype(np.float32)
