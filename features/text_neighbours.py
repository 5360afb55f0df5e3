"""Text neighbours of the user's most recent items: "more like what you just took", read from text.

Each item keeps its ``NEIGHBOURS`` nearest items by the cosine of the encoder's item vectors
(positive cosines only, itself excluded; ties at the cut by the tie rule, never by catalog
order; items whose text encodes exactly like many others', such as empty texts, have none). A
user's score for an item sums the cosines from their ``RECENT`` most recent items to it, the
p-th most recent weighing 1/p (``features.recent_links``). Unlike the text
interest score (a pooled vector of the whole history), it keeps each recent item apart, so the
ranker sees how close a candidate is to what the user took last. Items without interactions
are neighbours too, so it can propose items that only have text.

A registered score source (``features.sources``, settings ``sources.text_neighbours``). It reads
item text: the no-text ranker variant leaves it out, and the pretrained-text variant rebuilds
the neighbours from the pretrained vectors. "auto" (the default) turns it on where the
protocol tests what comes next (temporal, leave-last-out) for catalogs of at most
``MAX_AUTO_ITEMS`` items: the neighbour search is a catalog x catalog product. It is a baseline
in every run within that limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from features.item_item import _prune_rows
from features.recent_links import RecentLinks, recent_weights
from features.score_source import ScoreSource, SourceWindow
from features.transitions import ordered_events

NEIGHBOURS = 50  # nearest items kept per item
RECENT = 3  # most recent items of a user that look for neighbours
MAX_AUTO_ITEMS = 50_000  # "auto" turns the source off above this many items (items^2 x 384 products)
_BLOCK = 1024  # items per block of the neighbour search


@dataclass(frozen=True)
class TextNeighbours(RecentLinks):
    """similar: CSR (n_items, n_items) float32, row a: the cosines of a's nearest items; recent:
    CSR (n_users, n_items) float32, each user's 1/p weights on their ``RECENT`` most recent items."""

    name = "text_neighbours"
    # "auto" by default: read through the ordered user tower's item vectors it lifts both text
    # variants on validation on Office seeds 0-2, and the shipped (text) variant's validation
    # under --cold-items on the same seeds (docs/results.md, "Text neighbours").
    defaults = {**ScoreSource.defaults, "use": "auto"}
    score_column = "recent_text_score"
    files = ("text_neighbours_similar.npz", "text_neighbours_recent.npz")
    reads_text = True
    max_items = MAX_AUTO_ITEMS
    scores_items_without_history = True
    recent_count = RECENT
    setting_docs = {**ScoreSource.setting_docs,
                    "use": "the text neighbours of the user's last items as ranker candidates and features; auto "
                           "(default): on for temporal and leave-last-out splits up to 50,000 items"}

    similar: sp.csr_matrix
    recent: sp.csr_matrix

    @classmethod
    def auto_on(cls, split: str) -> bool:
        return split != "stratified"  # random held-out positions: "what was taken last" is not what is tested

    @classmethod
    def fit(cls, window: SourceWindow, settings: dict[str, Any]) -> TextNeighbours:
        if window.item_vectors is None or len(window.item_vectors) != window.n_items:
            raise ValueError(f"text_neighbours needs the window's item vectors ({window.n_items} rows)")
        user, item, _ = ordered_events(window.events, n_users=window.n_users, n_items=window.n_items,
                                       seed=window.seed)
        return cls(similar=nearest_by_text(window.item_vectors),
                   recent=recent_weights(user, item, n_users=window.n_users, n_items=window.n_items, recent=RECENT))

    def with_item_vectors(self, item_vectors: np.ndarray) -> TextNeighbours:
        return TextNeighbours(similar=nearest_by_text(item_vectors), recent=self.recent)

    def with_new_items(self, n_new: int, item_vectors: np.ndarray) -> TextNeighbours:
        """New items have text: the neighbours are searched again over the grown catalog, so new
        items are neighbours of the old ones and have their own."""
        expected = self.similar.shape[0] + n_new
        if len(item_vectors) != expected:
            raise ValueError(f"item_vectors has {len(item_vectors)} rows; the grown catalog has {expected} items")
        return TextNeighbours(similar=nearest_by_text(item_vectors), recent=self._grown_recent(n_new))

    @property
    def links(self) -> sp.csr_matrix:
        return self.similar

    @classmethod
    def _make(cls, links: sp.csr_matrix, recent: sp.csr_matrix) -> TextNeighbours:
        return cls(similar=links, recent=recent)


def nearest_by_text(item_vectors: np.ndarray, neighbours: int = NEIGHBOURS) -> sp.csr_matrix:
    """CSR (n, n) float32: each item's ``neighbours`` largest positive cosines to other items
    (item_vectors: (n, d) float32, unit rows). Ties at the cut follow the tie rule of
    ``item_item._prune_rows`` (seed 0, as the item-to-item models). Items whose vector is shared
    by more than ``neighbours`` items (empty or placeholder texts, which encode alike) and
    all-zero rows have no neighbours and are no one's: their cosine of 1 says nothing.
    Memory: about three (_BLOCK, n) float32 blocks at a time."""
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    n = len(vectors)
    crowded = shared_vectors(vectors, more_than=neighbours)
    if crowded.any():
        vectors = vectors.copy()
        vectors[crowded] = 0.0
    blocks = []
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        sims = vectors[start:stop] @ vectors.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # an item is not its own neighbour
        keep = sims > 0
        if n > neighbours:  # entries at or above each row's k-th largest (ties included), then the exact cut
            kth = np.partition(sims, n - neighbours, axis=1)[:, n - neighbours]
            keep &= sims >= kth[:, None]
        rows, cols = np.nonzero(keep)
        block = sp.csr_matrix((sims[rows, cols], (rows, cols)), shape=(stop - start, n), dtype=np.float32)
        blocks.append(_prune_rows(block, neighbours, first_row=start))
    if not blocks:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    return sp.vstack(blocks).tocsr().astype(np.float32)


def shared_vectors(vectors: np.ndarray, *, more_than: int) -> np.ndarray:
    """bool (n,): the row's exact vector is shared by more than ``more_than`` rows."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=bool)
    rows = np.ascontiguousarray(vectors).view(np.dtype((np.void, vectors.dtype.itemsize * vectors.shape[1])))
    _, inverse, counts = np.unique(rows.ravel(), return_inverse=True, return_counts=True)
    return counts[inverse.ravel()] > more_than
