"""Sequential rules: the items that followed each item in users' time-ordered histories.

The classic sequence baseline of session-based recommendation ("SR", Ludewig & Jannach 2018,
"Evaluation of session-based recommendation algorithms"): for every user's sequence and every
gap g = 1..``steps``, the item g positions after item a gets 1/g of a vote from a. A user is
scored from their ``recent`` most recent items, the p-th most recent voting with weight 1/p:
"what people took next after what you just took". It reads order, which no other single
model here does (co-occurrence and EASE see a user's items as a set).

Order within a user is by time; events at the same time are ordered by the seeded tie rule
(``features.ties``), never by item index or file order, and a pair at the same time votes both
ways (either could have come first). Each item keeps its ``NEIGHBOURS`` strongest followers
(as the item-to-item models do), so a user costs at most RECENT x NEIGHBOURS products.

A registered score source (``features.sources``, settings ``sources.transitions``): candidates
from a user's top scores and the score's within-query rank and z-score as ranker features; with
``use: "auto"`` on where the protocol tests what comes next (temporal, leave-last-out), off for a
stratified split, whose held-out items are random positions of the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.csr_rows import csr_rows
from features.item_item import ItemItem, _prune_rows
from features.score_source import ScoreSource, SourceWindow
from features.ties import tie_keys

STEPS = 3  # positions after an item that still count as "followed it"
RECENT = 3  # most recent items of a user that vote
NEIGHBOURS = 200  # followers kept per item


@dataclass(frozen=True)
class SequentialRules(ScoreSource):
    """follows: CSR (n_items, n_items) float32, row a: the summed 1/gap votes of the items that
    followed a; recent: CSR (n_users, n_items) float32, each user's 1/p weights on their
    ``RECENT`` most recent items (empty rows: users without events in the window)."""

    name = "transitions"
    score_column = "transition_score"
    files = ("transitions_follows.npz", "transitions_recent.npz")

    setting_docs = {**ScoreSource.setting_docs,
                    "use": "the sequential rules as ranker candidates and features; auto: on for temporal and "
                           "leave-last-out splits, off for stratified (held-out items at random positions)"}

    follows: sp.csr_matrix
    recent: sp.csr_matrix

    @classmethod
    def auto_on(cls, split: str) -> bool:
        return split != "stratified"  # random held-out positions: "what comes next" is not what is tested

    @classmethod
    def fit(cls, window: SourceWindow, settings: dict[str, Any]) -> SequentialRules:
        return fit_sequential_rules(window.events, n_users=window.n_users, n_items=window.n_items, seed=window.seed)

    def scores(self, user_idx: np.ndarray, request: sp.csr_matrix | None = None) -> sp.csr_matrix:
        """What followed each user's most recent items; request: CSR (len(user_idx), n_items)
        recent-item weights read instead of the stored rows (``request_rows``)."""
        if request is not None:
            return (request @ self.follows).tocsr().astype(np.float32, copy=False)
        return (csr_rows(self.recent, user_idx) @ self.follows).tocsr().astype(np.float32, copy=False)

    def baseline_scores(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_scores(user_idx)

    def user_scores(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense float32 (len(user_idx), n_items) scores; 0 where no recent item was ever followed
        by the item. user_idx: int (n,) in 0..n_users-1."""
        return self.user_scores_sparse(user_idx).toarray()

    def user_scores_sparse(self, user_idx: np.ndarray) -> sp.csr_matrix:
        """CSR float32 (len(user_idx), n_items) of ``user_scores``; rows of -1 users are empty."""
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if user_idx.size and user_idx.max() >= self.recent.shape[0]:
            raise IndexError(f"user rows must be in 0..{self.recent.shape[0] - 1}")
        if user_idx.size and user_idx.min() < 0:
            raise IndexError(f"user rows must be in 0..{self.recent.shape[0] - 1}; mask unknown users (-1) first")
        return self._votes().user_scores_sparse(self.recent[user_idx])

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
            for p, item in enumerate(newest_first[:RECENT]):
                rows.append(q)
                cols.append(item)
                weights.append(1.0 / (p + 1))
        recent = sp.csr_matrix((np.asarray(weights, dtype=np.float32), (rows, cols)), shape=(n, self.follows.shape[0]))
        recent.sum_duplicates()
        return recent

    def with_new_items(self, n_new: int) -> SequentialRules:
        """The same model over a catalog grown by ``n_new`` items nobody has taken yet."""
        recent = sp.csr_matrix((self.recent.data, self.recent.indices, self.recent.indptr),
                               shape=(self.recent.shape[0], self.recent.shape[1] + n_new))
        return SequentialRules(follows=self._votes().with_new_items(n_new).weights, recent=recent)

    def save(self, folder: Path) -> None:
        sp.save_npz(Path(folder) / "transitions_follows.npz", self.follows)
        sp.save_npz(Path(folder) / "transitions_recent.npz", self.recent)

    @classmethod
    def load(cls, folder: Path) -> SequentialRules:
        folder = Path(folder)
        return cls(follows=sp.load_npz(folder / "transitions_follows.npz").tocsr().astype(np.float32),
                   recent=sp.load_npz(folder / "transitions_recent.npz").tocsr().astype(np.float32))

    def _votes(self) -> ItemItem:
        return ItemItem(kind="transitions", weights=self.follows)


def fit_sequential_rules(events: pl.DataFrame, *, n_users: int, n_items: int, seed: int, steps: int = STEPS,
                         recent: int = RECENT, neighbours: int = NEIGHBOURS) -> SequentialRules:
    """Fit on one window's events: ``user_idx``, ``item_idx`` (int, 0 <= idx < n) and ``timestamp``.

    Rows with a negative index are refused (map or drop unknown users first). ``seed`` is the
    run's seed (the tie rule for events at the same time).
    """
    if steps < 1 or recent < 1:
        raise ValueError(f"steps and recent must be at least 1, got steps={steps}, recent={recent}")
    user, item, time = ordered_events(events, n_users=n_users, n_items=n_items, seed=seed)
    item = item.astype(np.int32)  # int32 pairs: three gaps over tens of millions of events are the fit's memory
    rows, cols, votes = [], [], []
    for gap in range(1, steps + 1):
        same_user = user[:-gap] == user[gap:]
        first, then = item[:-gap][same_user], item[gap:][same_user]
        same_time = (time[:-gap] == time[gap:])[same_user]
        vote = np.float32(1.0 / gap)
        rows += [first, then[same_time]]
        cols += [then, first[same_time]]
        votes += [np.full(len(first), vote, dtype=np.float32), np.full(int(same_time.sum()), vote, dtype=np.float32)]
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    different = rows_all != cols_all  # an item following itself says nothing about what to show next
    follows = sp.csr_matrix((np.concatenate(votes)[different], (rows_all[different], cols_all[different])),
                            shape=(n_items, n_items), dtype=np.float32)
    follows.sum_duplicates()
    if np.diff(follows.indptr).max(initial=0) > neighbours:
        follows = _prune_rows(follows, neighbours)
    # Position from each user's end: 0 for the most recent event.
    last = np.r_[user[1:] != user[:-1], True] if user.size else np.zeros(0, dtype=bool)
    end = np.flatnonzero(last)
    from_end = np.repeat(end, np.diff(np.r_[-1, end])) - np.arange(len(user))
    keep = from_end < recent
    weights = sp.csr_matrix(((1.0 / (from_end[keep] + 1)).astype(np.float32), (user[keep], item[keep])),
                            shape=(n_users, n_items), dtype=np.float32)
    weights.sum_duplicates()
    return SequentialRules(follows=follows, recent=weights)


def ordered_events(events: pl.DataFrame, *, n_users: int, n_items: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, time) int64 arrays of ``events`` (``user_idx``, ``item_idx`` in 0..n-1,
    ``timestamp``) grouped by user in time order (``time_order``); bad input is refused whole."""
    for column in ("user_idx", "item_idx", "timestamp"):
        if column not in events.columns:
            raise ValueError(f"events need a {column!r} column; got {events.columns}")
    user = events["user_idx"].to_numpy().astype(np.int64)
    item = events["item_idx"].to_numpy().astype(np.int64)
    if user.size and (user.min() < 0 or user.max() >= n_users or item.min() < 0 or item.max() >= n_items):
        raise ValueError(f"user_idx must be in 0..{n_users - 1} and item_idx in 0..{n_items - 1}; "
                         "drop events of users or items outside the id maps first")
    time = events["timestamp"].to_physical().to_numpy().astype(np.int64)
    order = time_order(user, item, time, seed)
    return user[order], item[order], time[order]


def time_order(user: np.ndarray, item: np.ndarray, time: np.ndarray, seed: int) -> np.ndarray:
    """int64 positions ordering events by (user, time, tie rule): ``np.lexsort((tie_keys(seed,
    user, item), time, user))``, with polars' sort (about 3x faster at tens of millions of rows)
    and tie keys hashed only for events that share a user and a time."""
    frame = pl.DataFrame({"user": user, "time": time}).with_row_index("row")
    order = frame.sort(["user", "time", "row"])["row"].to_numpy().astype(np.int64)
    same = (user[order][1:] == user[order][:-1]) & (time[order][1:] == time[order][:-1])
    if same.any():
        tied = np.zeros(len(order), dtype=bool)
        tied[1:] |= same
        tied[:-1] |= same
        members = np.flatnonzero(tied)
        run = np.cumsum(np.r_[True, ~same])[members]
        rows = order[members]
        order[members] = rows[np.lexsort((tie_keys(seed, user[rows], item[rows]), run))]
    return order
