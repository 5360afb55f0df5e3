"""Score sources that score an item by its links from the user's most recent items.

A user's score for item b is ``sum_p w_p * links[a_p, b]`` over their ``recent_count`` most
recent items a_p, the p-th most recent weighing 1/p. The links are a sparse (n_items, n_items)
matrix (what followed an item, or its nearest items by text), so a user costs at most
recent_count x the links kept per item. The subclasses give the links; this base gives the
rest of the ``ScoreSource`` interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.csr_rows import csr_rows
from features.item_item import ItemItem
from features.score_source import ScoreSource


class RecentLinks(ScoreSource):
    """Subclasses are frozen dataclasses with a ``recent`` CSR (n_users, n_items) float32 field
    (each user's 1/p weights on their most recent items; empty rows: no events in the window)
    and give ``links`` (CSR (n_items, n_items) float32) and ``_make``. ``files``: (links file,
    recent file)."""

    recent_count: ClassVar[int] = 3
    recent: sp.csr_matrix

    @property
    def links(self) -> sp.csr_matrix:
        raise NotImplementedError

    @classmethod
    def _make(cls, links: sp.csr_matrix, recent: sp.csr_matrix) -> RecentLinks:
        raise NotImplementedError

    def scores(self, user_idx: np.ndarray, request: sp.csr_matrix | None = None) -> sp.csr_matrix:
        """request: CSR (len(user_idx), n_items) recent-item weights read instead of the stored
        rows (``request_rows``)."""
        recent = request if request is not None else csr_rows(self.recent, user_idx)
        return (recent @ self.links).tocsr().astype(np.float32, copy=False)

    def baseline_scores(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_scores(user_idx)

    def user_scores(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense float32 (len(user_idx), n_items) scores; 0 where no recent item links to the
        item. user_idx: int (n,) in 0..n_users-1."""
        return self.user_scores_sparse(user_idx).toarray()

    def user_scores_sparse(self, user_idx: np.ndarray) -> sp.csr_matrix:
        """CSR float32 (len(user_idx), n_items) of ``user_scores``."""
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if user_idx.size and user_idx.max() >= self.recent.shape[0]:
            raise IndexError(f"user rows must be in 0..{self.recent.shape[0] - 1}")
        if user_idx.size and user_idx.min() < 0:
            raise IndexError(f"user rows must be in 0..{self.recent.shape[0] - 1}; mask unknown users (-1) first")
        return self.scores(user_idx)

    def pair_scores(self, user_idx: np.ndarray, item_idx: np.ndarray,
                    request: sp.csr_matrix | None = None) -> np.ndarray:
        """float32 (n,) scores of (user, item) pairs; NaN where user_idx is -1. request: CSR
        (rows, n_items) weights to read instead of the stored ones (user_idx then indexes them)."""
        return self._votes().pair_scores(self.recent if request is None else request, user_idx, item_idx)

    def request_rows(self, user_idx: np.ndarray, history: pl.DataFrame, n: int) -> sp.csr_matrix | None:
        """Per query, the recent-item weights with the request's history as the newest items (CSR
        (n, n_items)); None without any history (the stored rows then serve)."""
        if history.height == 0:
            return None
        rows, cols, weights = [], [], []
        fresh = {q: items for q, items in
                 history.group_by("query_idx", maintain_order=True).agg("item_idx").iter_rows()}
        indptr, indices, data = self.recent.indptr, self.recent.indices, self.recent.data
        for q in range(n):
            u = int(user_idx[q])
            span = slice(indptr[u], indptr[u + 1]) if u >= 0 else slice(0, 0)  # the stored row (a CSR slice)
            if q not in fresh:  # the stored row as it is: an answer never depends on its batch
                rows += [q] * (span.stop - span.start)
                cols += indices[span].tolist()
                weights += data[span].tolist()
                continue
            # The request's items, newest first, then the stored ones, most recent (largest weight 1/p) first.
            newest_first = list(reversed(fresh[q])) + indices[span][np.argsort(-data[span], kind="stable")].tolist()
            for p, item in enumerate(newest_first[:self.recent_count]):
                rows.append(q)
                cols.append(item)
                weights.append(1.0 / (p + 1))
        recent = sp.csr_matrix((np.asarray(weights, dtype=np.float32), (rows, cols)), shape=(n, self.links.shape[0]))
        recent.sum_duplicates()
        return recent

    def with_new_items(self, n_new: int, item_vectors: np.ndarray) -> RecentLinks:
        """The same source over a catalog grown by ``n_new`` items nobody has taken yet (no links
        from or to them; item_vectors, the grown catalog's, unused here)."""
        return self._make(self._votes().with_new_items(n_new).weights, self._grown_recent(n_new))

    def _grown_recent(self, n_new: int) -> sp.csr_matrix:
        """``recent`` with ``n_new`` empty item columns appended."""
        return sp.csr_matrix((self.recent.data, self.recent.indices, self.recent.indptr),
                             shape=(self.recent.shape[0], self.recent.shape[1] + n_new))

    def save(self, folder: Path) -> None:
        links_file, recent_file = self.files
        sp.save_npz(Path(folder) / links_file, self.links)
        sp.save_npz(Path(folder) / recent_file, self.recent)

    @classmethod
    def load(cls, folder: Path) -> RecentLinks:
        links_file, recent_file = cls.files
        return cls._make(sp.load_npz(Path(folder) / links_file).tocsr().astype(np.float32),
                         sp.load_npz(Path(folder) / recent_file).tocsr().astype(np.float32))

    def _votes(self) -> ItemItem:
        return ItemItem(kind=self.name, weights=self.links)


def recent_weights(user: np.ndarray, item: np.ndarray, *, n_users: int, n_items: int,
                   recent: int) -> sp.csr_matrix:
    """CSR (n_users, n_items) float32: 1/p on each user's p-th most recent item, p = 1..recent.

    user, item: int arrays (n,) of events grouped by user in time order (``transitions.time_order``)."""
    last = np.r_[user[1:] != user[:-1], True] if user.size else np.zeros(0, dtype=bool)
    end = np.flatnonzero(last)
    from_end = np.repeat(end, np.diff(np.r_[-1, end])) - np.arange(len(user))  # 0 for the most recent event
    keep = from_end < recent
    weights = sp.csr_matrix(((1.0 / (from_end[keep] + 1)).astype(np.float32), (user[keep], item[keep])),
                            shape=(n_users, n_items), dtype=np.float32)
    weights.sum_duplicates()
    return weights

