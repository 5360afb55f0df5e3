"""Stage-1 state: everything fitted on one window of logs that the ranking frame reads.

One ``FeatureState`` is fitted on the feature window (to build the ranker's training frame)
and one on the whole training window (saved with the model for evaluation, batch ranking and
serving). It is saved in inspectable formats: Parquet, npz/npy and JSON.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from features import behaviour
from features.cf import CFFactors, als_input, bpr_epochs, fit_cf
from features.item_item import ItemItem, binary, fit_item_item, fit_with_cooccurrence
from features.score_source import ScoreSource, SourceWindow
from features.sequence_tower import SequenceTower, SequenceUserVectors, stored_histories
from features.sources import fit_sources, load_sources, save_sources, with_item_vectors
from features.text_interest import HistoryPooling, UserVectors, history_weights
from features.text_popularity import fit_text_popularity, predict_text_popularity
from features.ties import tie_keys
from features.user_items import build_session_items, build_user_items
from recsys.config import PipelineConfig
from recsys.errors import FitStopped
from recsys.idmap import IdMap
from recsys.progress import progress as progress_bar
from recsys.stage_timer import stage, worker_context

log = logging.getLogger(__name__)


@dataclass
class FeatureState:
    """Fitted stage-1 models and point-in-time feature tables.

    Shapes: ``item_vectors`` (n_items, 384) float32; ``user_text`` (n_users, 384) float32, read
    by rows (``UserVectors``: computed from the pooling weights when read; ``SequenceUserVectors``:
    from each user's last items through the ordered user tower; a saved state from before them
    holds the array);
    ``seen`` CSR (n_users, n_items) float32 (the user's training interactions);
    ``item_category`` (n_items,) int32; feature tables keyed by contiguous indices;
    ``sources``: the registered score sources the run turned on, by name (``features.sources``).
    """

    users: IdMap
    items: IdMap
    categories: IdMap
    item_category: np.ndarray
    als: CFFactors
    bpr: CFFactors
    item_item: ItemItem
    item_vectors: np.ndarray
    user_text: UserVectors | SequenceUserVectors | np.ndarray
    text_popularity_weights: np.ndarray
    seen: sp.csr_matrix
    item_features: pl.DataFrame
    user_features: pl.DataFrame
    affinity: pl.DataFrame
    ref_time: datetime
    history_len: int
    half_life: float
    pooling: HistoryPooling | None = None  # learned history attention (None: plain recency weights)
    sources: dict[str, ScoreSource] = field(default_factory=dict)
    # The co-occurrence baseline's model when fitting ``item_item`` gave it (not saved; evaluation only).
    cooccurrence: ItemItem | None = field(default=None, repr=False, compare=False)
    _dense: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    _history: sp.csr_matrix | None = field(default=None, repr=False, compare=False)
    _text_popularity: np.ndarray | None = field(default=None, repr=False, compare=False)
    _item_has_history: np.ndarray | None = field(default=None, repr=False, compare=False)
    _popular_orders: dict | None = field(default=None, repr=False, compare=False)

    def text_popularity(self) -> np.ndarray:
        """float32 (n_items,) log1p(relative popularity) predicted from each item's text, built once."""
        if self._text_popularity is None:
            self._text_popularity = predict_text_popularity(self.item_vectors, self.text_popularity_weights)
        return self._text_popularity

    def user_has_history(self) -> np.ndarray:
        """bool (n_users,): the user has at least one interaction in the window."""
        return np.diff(self.seen.indptr) > 0

    def item_has_history(self) -> np.ndarray:
        """bool (n_items,): someone interacted with the item in the window."""
        if self._item_has_history is None or len(self._item_has_history) != self.n_items:
            self._item_has_history = np.bincount(self.seen.indices, minlength=self.n_items) > 0
        return self._item_has_history

    def popular_order(self, column: str, seed: int) -> np.ndarray:
        """int (n_items,) item indices by ``item_features[column]`` descending, ties by the seeded
        tie rule with one shared query key (``features.ties``); sorted once per column, seed and
        values (a catalog update that changes the values sorts again)."""
        values = self.item_features[column].to_numpy()
        key = (column, seed, values.shape[0], hash(values.tobytes()))
        cached = self._popular_orders or {}
        if key in cached:
            return cached[key]
        order = np.lexsort((tie_keys(seed, 0, np.arange(len(values))), -values))
        # One assignment of a new dict: ranking worker threads may read and fill it at once.
        self._popular_orders = {**{k: v for k, v in cached.items() if k[0] != column}, key: order}
        return order

    def has_profile(self, user_idx: np.ndarray) -> np.ndarray:
        """bool (n,): the user is known (not -1) and has history in the window."""
        user_idx = np.asarray(user_idx)
        out = user_idx >= 0
        out[out] = self.user_has_history()[user_idx[out]]
        return out

    def pair_has_history(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """bool (n,): both the user (``has_profile``) and the item have history in the window."""
        return self.has_profile(user_idx) & self.item_has_history()[item_idx]

    def history(self) -> sp.csr_matrix:
        """The 0/1 pattern of ``seen`` (n_users, n_items) float32 CSR, built once: item-to-item input."""
        if self._history is None:
            self._history = binary(self.seen)
        return self._history

    def dense_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature tables as float32 matrices indexed by position, built once and cached:
        items (n_items, len(ITEM_FEATURES)), users (n_users, len(USER_FEATURES)) and the
        user-category affinity (n_users, n_categories), 0 where the user has no history there."""
        if self._dense is None:
            items = self.item_features.sort("item_idx").select(behaviour.ITEM_FEATURES).to_numpy()
            users = self.user_features.sort("user_idx").select(behaviour.USER_FEATURES).to_numpy()
            affinity = np.zeros((self.n_users, len(self.categories)), dtype=np.float32)
            affinity[self.affinity["user_idx"].to_numpy(), self.affinity["category_idx"].to_numpy()] = \
                self.affinity[behaviour.AFFINITY_FEATURE].to_numpy()
            self._dense = (np.ascontiguousarray(items, dtype=np.float32),
                           np.ascontiguousarray(users, dtype=np.float32), affinity)
        return self._dense

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.users.save(folder / "users.parquet")
        self.items.save(folder / "items.parquet")
        self.categories.save(folder / "categories.parquet")
        np.save(folder / "item_category.npy", self.item_category)
        self.als.save(folder / "als.npz")
        self.bpr.save(folder / "bpr.npz")
        self.item_item.save(folder / "item_item.npz")
        np.save(folder / "item_vectors.npy", self.item_vectors)
        for stale in ("user_text.npy", "user_text_weights.npz", "user_histories.npy", "sequence_tower.json",
                      "sequence_tower.pt"):
            (folder / stale).unlink(missing_ok=True)  # load tells the kinds apart by the files present
        if isinstance(self.user_text, SequenceUserVectors):
            np.save(folder / "user_histories.npy", self.user_text.histories)
            self.user_text.tower.save(folder)
        elif isinstance(self.user_text, UserVectors):
            sp.save_npz(folder / "user_text_weights.npz", self.user_text.weights)
        else:
            np.save(folder / "user_text.npy", self.user_text)
        np.save(folder / "text_popularity_weights.npy", self.text_popularity_weights)
        save_sources(self.sources, folder)
        sp.save_npz(folder / "seen.npz", self.seen)
        self.item_features.write_parquet(folder / "item_features.parquet")
        self.user_features.write_parquet(folder / "user_features.parquet")
        self.affinity.write_parquet(folder / "affinity.parquet")
        meta = {"ref_time": self.ref_time.isoformat(), "history_len": self.history_len,
                "half_life": self.half_life, "n_users": self.n_users, "n_items": self.n_items,
                "sources": list(self.sources)}
        if self.pooling is not None:
            np.save(folder / "pooling_query.npy", self.pooling.query)
            meta["pooling_slope"] = self.pooling.slope
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> FeatureState:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        item_vectors = np.load(folder / "item_vectors.npy")
        if (folder / "sequence_tower.json").exists():
            user_text = SequenceUserVectors(np.load(folder / "user_histories.npy"), item_vectors,
                                            SequenceTower.load(folder))
        elif (folder / "user_text_weights.npz").exists():
            weights = sp.load_npz(folder / "user_text_weights.npz").tocsr()
            user_text = UserVectors(weights, item_vectors[:weights.shape[1]])
        else:
            user_text = np.load(folder / "user_text.npy")
        return cls(
            users=IdMap.load(folder / "users.parquet", kind="user"),
            items=IdMap.load(folder / "items.parquet", kind="item"),
            categories=IdMap.load(folder / "categories.parquet", kind="category"),
            item_category=np.load(folder / "item_category.npy"),
            als=CFFactors.load(folder / "als.npz", "als"),
            bpr=CFFactors.load(folder / "bpr.npz", "bpr"),
            item_item=ItemItem.load(folder / "item_item.npz"),
            item_vectors=item_vectors,
            user_text=user_text,
            text_popularity_weights=np.load(folder / "text_popularity_weights.npy"),
            seen=sp.load_npz(folder / "seen.npz").tocsr(),
            item_features=pl.read_parquet(folder / "item_features.parquet"),
            user_features=pl.read_parquet(folder / "user_features.parquet"),
            affinity=pl.read_parquet(folder / "affinity.parquet"),
            ref_time=datetime.fromisoformat(meta["ref_time"]),
            history_len=meta["history_len"],
            half_life=meta["half_life"],
            pooling=HistoryPooling(query=np.load(folder / "pooling_query.npy"), slope=meta["pooling_slope"])
            if "pooling_slope" in meta else None,
            sources=load_sources(folder, meta.get("sources")),
        )


def with_text_vectors(state: FeatureState, interactions: pl.DataFrame, item_vectors: np.ndarray) -> FeatureState:
    """The same state with other item vectors (and the user vectors recomputed from them).

    interactions: the window the state was fitted on (canonical schema); used for the
    recency weights of each user's history. Everything else is shared, not copied.
    """
    events = with_indices(interactions, state.users, state.items).filter(pl.col("user_idx") >= 0)
    weights = history_weights(events, n_users=state.n_users, n_items=state.n_items,
                              history_len=state.history_len, half_life=state.half_life)
    counts = state.item_features.sort("item_idx")["item_pop_all_rel"].to_numpy()
    return replace(state, item_vectors=item_vectors, user_text=UserVectors(weights, item_vectors), pooling=None,
                   sources=with_item_vectors(state.sources, item_vectors),
                   text_popularity_weights=fit_text_popularity(item_vectors, counts), _text_popularity=None)


def with_indices(events: pl.DataFrame, users: IdMap, items: IdMap) -> pl.DataFrame:
    """Add ``user_idx`` and ``item_idx`` (Int32) columns; unknown users get -1."""
    return events.with_columns(
        pl.Series("user_idx", users.to_index(events["user_id"], unknown="null")),
        pl.Series("item_idx", items.to_index(events["item_id"])),
    )


def item_item_settings(config: PipelineConfig, sessions: sp.csr_matrix | None = None) -> dict:
    """Keyword arguments of ``fit_item_item`` / ``fit_with_cooccurrence`` for ``config``'s
    item-to-item model (EASE, cosine above ``item_item_max_items``), with optional session rows."""
    return dict(kind="ease", regularization=config.item_item_regularization,
                neighbours=config.item_item_neighbours, max_items=config.item_item_max_items,
                dropout=config.item_item_dropout, sessions=sessions,
                session_weight=config.item_item_session_weight)


def fit_feature_state(*, catalog: pl.DataFrame, interactions: pl.DataFrame,
                      impressions: pl.DataFrame | None, item_vectors: np.ndarray, users: IdMap,
                      items: IdMap, config: PipelineConfig,
                      pooling: HistoryPooling | SequenceTower | None = None,
                      with_cooccurrence: bool = False) -> FeatureState:
    """Fit CF models and compute feature tables on ``interactions`` (one window).

    with_cooccurrence: also keep the co-occurrence baseline's model (``cooccurrence``) when the
    item-to-item fit is the plain cosine, from the same pass (a state whose baselines are evaluated).

    catalog: the items table, in the order of ``items`` (the item id map).
    users/items: fitted id maps; every user and item in ``interactions`` must be in them.
    item_vectors: (len(items), 384) float32 from the text encoder (through the tower's item
    adaptor when ``pooling`` is a ``SequenceTower``).
    pooling: how a user's items make their interest vector: the fine-tuned attention pooling,
    the ordered user tower, or None for the plain recency mean.
    """
    ref_time = interactions["timestamp"].max()
    events = with_indices(interactions, users, items).filter(pl.col("user_idx") >= 0)
    user_items = build_user_items(interactions.filter(pl.col("user_id").is_in(users.ids.implode())),
                                  users, items)
    n_users, n_items = len(users), len(items)
    bar = progress_bar(total=4, desc="fit features", unit="part")  # ALS+item-item+sources, text, behaviour, BPR
    # BPR runs on one thread (features.bpr) and costs more than the rest of the state together, so
    # it runs beside the rest instead of before it, and each part's result is the same as alone.
    # Nothing else here runs torch, whose thread count BPR sets for the process while it runs: a
    # score source that did would need to run after BPR.
    with _beside("bpr", fit_cf, "bpr", user_items, n_users=n_users, n_items=n_items, factors=config.bpr_factors,
                 iterations=bpr_epochs(config.bpr_iterations, config.bpr_max_samples, user_items.nnz),
                 learning_rate=config.bpr_learning_rate, regularization=config.bpr_regularization,
                 seed=config.seed) as bpr_job:
        with stage("cf"):
            als_values, alpha = als_input(user_items, config)
            als = fit_cf("als", als_values, n_users=n_users, n_items=n_items, factors=config.als_factors,
                         iterations=config.als_iterations, regularization=config.als_regularization, alpha=alpha,
                         seed=config.seed)
        with stage("item_item"):
            sessions = None
            if config.item_item_session_gap_seconds > 0:
                sessions = build_session_items(events, items, config.item_item_session_gap_seconds)
            settings = item_item_settings(config, sessions)
            if with_cooccurrence:
                item_item, cooccurrence = fit_with_cooccurrence(user_items, **settings)
            else:
                item_item, cooccurrence = fit_item_item(user_items, **settings), None
        with stage("sources"):
            sources = fit_sources(SourceWindow(events=events, user_items=user_items, n_users=n_users,
                                               n_items=n_items, seed=config.seed, item_vectors=item_vectors), config)
        bar.update(1)
        user_text = text_user_vectors(events, n_users=n_users, n_items=n_items, item_vectors=item_vectors,
                                      pooling=pooling, config=config)
        bar.update(1)
        categories = IdMap(kind="category").fit(catalog["category"])
        item_category = categories.to_index(catalog["category"])
        imp = None
        if impressions is not None and impressions.height:
            imp = with_indices(impressions, users, items).lazy()
        # The reference time is just after the last event, so "strictly before" keeps it.
        ref_after = ref_time + timedelta(microseconds=1)
        lazy = events.lazy()
        item_table = behaviour.item_features(lazy, imp, n_items=n_items, ref_time=ref_after,
                                             ctr_prior_strength=config.ctr_prior_strength)
        user_table = behaviour.user_features(lazy, n_users=n_users, ref_time=ref_after)
        affinity = behaviour.user_category_affinity(
            lazy, pl.DataFrame({"item_idx": np.arange(n_items, dtype=np.int32), "category_idx": item_category}),
            ref_time=ref_after)
        bar.update(1)
        with stage("cf"):  # what is left of BPR once the rest is done
            bpr = bpr_job.result()
    bar.update(1)
    bar.close()
    return FeatureState(
        users=users, items=items, categories=categories, item_category=item_category,
        als=als, bpr=bpr, item_item=item_item, cooccurrence=cooccurrence, item_vectors=item_vectors,
        user_text=user_text,
        text_popularity_weights=fit_text_popularity(item_vectors,
                                                    item_table.sort("item_idx")["item_pop_all_rel"].to_numpy()),
        seen=user_items,
        item_features=item_table,
        user_features=user_table,
        affinity=affinity,
        ref_time=ref_after,
        history_len=config.text.history_len,
        half_life=config.text.recency_half_life,
        pooling=None if isinstance(pooling, SequenceTower) else pooling,  # the tower holds its own
        sources=sources,
    )


@contextmanager
def _beside(name: str, fit: Callable, *args, **kwargs) -> Iterator[Future]:
    """``fit(*args, should_stop=..., **kwargs)`` on a thread of its own while the block runs;
    yields its future. Leaving the block waits for the job; leaving it with an error (or Ctrl-C)
    first makes ``should_stop()`` true, which the job reads between its epochs, so no thread
    outlives the call either way."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    job = pool.submit(worker_context().run, fit, *args, should_stop=stop.is_set, **kwargs)
    try:
        yield job
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True)
        error = job.exception()
        if stop.is_set() and error is not None and not isinstance(error, FitStopped):
            # The block's own error propagates; say that the job had failed too.
            log.warning("%s failed as well: %s: %s", name, type(error).__name__, error)


def text_user_vectors(events: pl.DataFrame, *, n_users: int, n_items: int, item_vectors: np.ndarray, pooling,
                      config: PipelineConfig) -> UserVectors | SequenceUserVectors:
    """Each user's text interest vector (rows (n_users, d) float32, computed when read) from the
    window's ``events`` (``user_idx``, ``item_idx``, ``timestamp``): the ordered user tower over
    their last items when ``pooling`` is a ``SequenceTower`` (``item_vectors`` then the tower's
    adapted ones), else the pooled, recency-weighted history vector."""
    if isinstance(pooling, SequenceTower):
        return SequenceUserVectors(stored_histories(events, n_users=n_users, n_items=n_items,
                                                    history_len=pooling.shape.history_len, seed=config.seed),
                                   item_vectors, pooling)
    return UserVectors(history_weights(events, n_users=n_users, n_items=n_items, history_len=config.text.history_len,
                                       half_life=config.text.recency_half_life, pooling=pooling,
                                       item_vectors=item_vectors), item_vectors)
