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
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.item_item import _prune_rows
from features.recent_links import RecentLinks, recent_weights
from features.score_source import ScoreSource, SourceWindow
from features.ties import tie_keys

STEPS = 3  # positions after an item that still count as "followed it"
RECENT = 3  # most recent items of a user that vote
NEIGHBOURS = 200  # followers kept per item


@dataclass(frozen=True)
class SequentialRules(RecentLinks):
    """follows: CSR (n_items, n_items) float32, row a: the summed 1/gap votes of the items that
    followed a; recent: CSR (n_users, n_items) float32, each user's 1/p weights on their
    ``RECENT`` most recent items (empty rows: users without events in the window)."""

    name = "transitions"
    score_column = "transition_score"
    files = ("transitions_follows.npz", "transitions_recent.npz")
    recent_count = RECENT

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

    @property
    def links(self) -> sp.csr_matrix:
        return self.follows

    @classmethod
    def _make(cls, links: sp.csr_matrix, recent: sp.csr_matrix) -> SequentialRules:
        return cls(follows=links, recent=recent)


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
    return SequentialRules(follows=follows, recent=recent_weights(user, item, n_users=n_users, n_items=n_items,
                                                                  recent=recent))


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
