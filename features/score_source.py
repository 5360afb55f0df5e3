"""The interface of an added score source: one module fits, scores, grows, saves and loads it.

A score source is a stage-1 model whose (user, item) scores join the ranker (in the manner of
implicit's ``RecommenderBase``: fit on a window, score users, score given items). The state,
candidate generation, the ranking frame, the baselines, catalog updates, serving and the
config loop over the registered sources (``features.sources``); a new source is one module
with a subclass of ``ScoreSource`` and one line in that registry.

What the loops expect of a source's scores: a CSR (rows, n_items) float32 whose stored
positive entries are what the source knows; every other entry is "nothing to say" (a NaN
feature, never a candidate). The ranker sees a source through two scale-free views of its
score, the within-query rank and z-score (``feature_columns``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp

USES = ("auto", "on", "off")


@dataclass(frozen=True)
class SourceWindow:
    """One window of logs as a source is fitted on it.

    events: the window's interactions with ``user_idx`` and ``item_idx`` (Int32, 0 <= idx < n;
    users outside the id map already dropped), ``timestamp``, and the canonical columns.
    user_items: CSR (n_users, n_items) float32 of the window's interaction values.
    seed: the run's seed (its tie rule and any sampling).
    item_vectors: (n_items, d) float32 unit-norm text vectors of the state's encoder.
    """

    events: pl.DataFrame
    user_items: sp.csr_matrix | None
    n_users: int
    n_items: int
    seed: int
    item_vectors: np.ndarray | None = None


class ScoreSource(ABC):
    """A fitted score source. Subclasses set the class attributes and implement the methods.

    name: the registry key, the config key (``sources.<name>``), the baseline's name and the
        ``data_choice.<name>`` param.
    score_column: the raw score's column (``<score_column>_query_rank`` and ``_query_z`` are
        the ranker's columns).
    files: the file names ``save`` writes into a state folder (stale ones are removed before saving).
    defaults: settings and their defaults; every source has ``use`` ("auto", "on", "off") and
        ``candidates`` (per user, 0 = features only), a subclass may add its own.
    setting_docs: one line per setting, shown by ``recsys config show``.
    reads_text: the source reads the item text vectors: the no-text ranker variant neither takes
        its candidates nor splits on its columns, and the pretrained-text variant reads it
        through ``with_item_vectors``.
    max_items: catalogs above this many items leave the source off under ``use: "auto"`` and
        keep it from being fitted just for its baseline (None: no limit); ``use: "on"`` still
        turns it on (and then its baseline is the state's).
    scores_items_without_history: its scores reach items nobody took in the window (text), so
        its baseline does not hide them.
    """

    name: ClassVar[str]
    score_column: ClassVar[str]
    files: ClassVar[tuple[str, ...]]
    reads_text: ClassVar[bool] = False
    max_items: ClassVar[int | None] = None
    scores_items_without_history: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {"use": "auto", "candidates": 50}
    setting_docs: ClassVar[dict[str, str]] = {
        "use": "auto: on where the source's protocol rule says so (auto_on); on/off force it",
        "candidates": "candidates from this source per user (0 = a feature only)",
    }

    @classmethod
    def feature_columns(cls) -> tuple[str, str]:
        """The ranker's columns of this source: its score's within-query rank and z-score."""
        return f"{cls.score_column}_query_rank", f"{cls.score_column}_query_z"

    @classmethod
    def auto_on(cls, split: str) -> bool:
        """Whether ``use: "auto"`` turns the source on under the evaluation protocol ``split``
        (within ``max_items``)."""
        return True

    @classmethod
    def affordable(cls, n_items: int) -> bool:
        """Whether a catalog of ``n_items`` is within ``max_items``."""
        return cls.max_items is None or n_items <= cls.max_items

    @classmethod
    @abstractmethod
    def fit(cls, window: SourceWindow, settings: dict[str, Any]) -> ScoreSource:
        """The source fitted on one window (settings: this source's resolved settings)."""

    @abstractmethod
    def scores(self, user_idx: np.ndarray, request: Any = None) -> sp.csr_matrix:
        """CSR (len(user_idx), n_items) float32 scores, column indices in any order; rows of -1
        users are empty. request: this source's request rows (``request_rows``) for exactly these
        queries, read instead of the stored user rows."""

    @abstractmethod
    def pair_scores(self, user_idx: np.ndarray, item_idx: np.ndarray, request: Any = None) -> np.ndarray:
        """float32 (n,) scores of (user, item) pairs; 0 or NaN = nothing to say. With
        ``request`` (rows for every query), ``user_idx`` holds query positions into it."""

    @abstractmethod
    def request_rows(self, user_idx: np.ndarray, history: pl.DataFrame, n: int) -> Any:
        """This source's rows for ``n`` request queries whose newest evidence is ``history``
        (query_idx, item_idx in time order), sliceable by query (``rows[a:b]``), or None when
        the stored rows serve as they are. user_idx: int (n,), -1 = unknown user."""

    @abstractmethod
    def with_new_items(self, n_new: int, item_vectors: np.ndarray) -> ScoreSource:
        """The same source over a catalog grown by ``n_new`` items nobody has taken yet
        (item_vectors: (n_items + n_new, d) float32, the grown catalog's text vectors)."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write ``files`` into ``folder``."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path) -> ScoreSource:
        """Read what ``save`` wrote."""

    def with_item_vectors(self, item_vectors: np.ndarray) -> ScoreSource:
        """The same source over other item text vectors (``reads_text`` sources only)."""
        raise NotImplementedError(f"{self.name} does not read item text")

    def baseline_scores(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense float32 (len(user_idx), n_items) scores of the source alone as a baseline; 0 =
        nothing to say (never picked). user_idx: int (n,) of known users."""
        return self.scores(np.asarray(user_idx)).toarray()
