"""The model bundle: everything needed to rank, in one folder of inspectable files.

Layout::

    config.json          PipelineConfig
    manifest.json        feature columns, format version
    ranker.txt           LightGBM text model (best iteration)
    state/               FeatureState (Parquet, npz/npy, JSON)
    encoder/             fine-tuned MiniLM (save_pretrained), for new item text

Training writes it; batch ranking, serving and evaluation read it through ``score``, which
predicts with the trees compiled to native code where lleaves is installed
(``features.compiled_trees``; LightGBM's ``predict`` otherwise).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from features.candidates import POPULAR_COLUMNS, SOURCE_FEATURES, generate_candidates
from features.compiled_trees import CompiledTrees, compile_trees
from features.rank_workers import in_worker
from features.ranking_frame import (
    feature_arrays,
    feature_columns_of,
    feature_matrix,
    position_in_group,
    prior_scores,
)
from features.sequence_tower import SequenceUserVectors
from features.sources import candidate_counts, score_columns
from features.state import FeatureState
from features.text_interest import UserVectors
from features.ties import order_by_score
from recsys.config import PipelineConfig

# 3: the state may keep its users' last items and the ordered user tower (user_histories.npy,
# sequence_tower.pt) instead of pooling weights (2: user_text_weights.npz; 1: user_text.npy).
FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)


@dataclass
class RankingBundle:
    config: PipelineConfig
    state: FeatureState
    booster: lgb.Booster
    feature_columns: tuple[str, ...]
    encoder_dir: Path | None = None
    # The ranker's prior (RankerConfig.prior_sources): source -> weight of its within-query z-score,
    # added to the booster's output. Empty: the booster alone.
    prior_weights: dict[str, float] = field(default_factory=dict)
    # False: LightGBM's predict even where the compiled trees are available (benchmarks compare).
    use_compiled_trees: bool = True
    _compiled: CompiledTrees | None = field(default=None, repr=False, compare=False)
    _compile_tried: bool = field(default=False, repr=False, compare=False)

    def compiled_trees(self) -> CompiledTrees | None:
        """The booster compiled to native code (``features.compiled_trees``), built or loaded from
        the cache on the first call; None where unavailable (LightGBM predicts)."""
        if not self._compile_tried:
            self._compiled = compile_trees(self.booster)
            self._compile_tried = True
        return self._compiled

    def warm(self) -> None:
        """Build every lazy table ranking reads (compiled trees, state caches) now, once, before
        worker threads read them (``features.rank_workers``)."""
        if self.use_compiled_trees:
            self.compiled_trees()
        state = self.state
        for build in (state.dense_tables, state.history, state.text_popularity, state.item_has_history):
            build()
        if isinstance(state.user_text, UserVectors | SequenceUserVectors):
            state.user_text.materialize()
        for column in POPULAR_COLUMNS:
            state.popular_order(column, self.config.seed)

    def score(self, frame: pl.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
        """float32 (rows,) ranker scores of a ranking frame (or of its feature arrays)."""
        matrix = feature_matrix(frame, self.feature_columns)
        if matrix.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        # Small frames (one request) score faster on one thread: OpenMP's fork/join across the
        # cores costs more than the work, and other thread pools (polars) spin on them too. A
        # batch-ranking worker (features.rank_workers) has a core of its own.
        threads = 1 if matrix.shape[0] < 20_000 or in_worker() else 0
        trees = self.compiled_trees() if self.use_compiled_trees else None
        scores = trees.predict(matrix, threads) if trees is not None else self.booster.predict(matrix,
                                                                                               num_threads=threads)
        if self.prior_weights:
            scores = scores + prior_scores(matrix, self.prior_weights, self.feature_columns)
        return scores.astype(np.float32)

    def score_candidates(self, user_idx: np.ndarray, *, query_text: np.ndarray | None = None,
                         explicit: pl.DataFrame | None = None, exclude: pl.DataFrame | None = None,
                         explicit_queries: np.ndarray | None = None,
                         source_rows: dict[str, object] | None = None) -> pl.DataFrame:
        """Every candidate of every query with its score: (query_idx, user_idx, item_idx, score).

        user_idx: int32 (n,), one query per entry; -1 for users unknown to the model (they get
            the non-personal candidates and NaN personal features).
        query_text: optional (n, d) interest vectors replacing the stored user vectors (request
            history, cold users); rows of zeros mean "no text interest".
        source_rows: optional registered score source name -> its rows for the n queries
            (request history; ``ScoreSource.request_rows``), replacing the stored user rows.
        explicit: optional (query_idx, item_idx) rows: those queries rank exactly these items
            instead of generated candidates.
        exclude: optional (query_idx, item_idx) rows never returned.
        explicit_queries: optional int32 queries that rank exactly their ``explicit`` rows, even
            when they have none (default: the queries that appear in ``explicit``).
        """
        candidates, arrays = self.candidate_features(user_idx, query_text=query_text, explicit=explicit,
                                                     exclude=exclude, explicit_queries=explicit_queries,
                                                     source_rows=source_rows)
        return self.score_features(candidates, arrays)

    def candidate_features(self, user_idx: np.ndarray, *, query_text: np.ndarray | None = None,
                           explicit: pl.DataFrame | None = None,
                           exclude: pl.DataFrame | None = None,
                           explicit_queries: np.ndarray | None = None,
                           source_rows: dict[str, object] | None = None) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
        """The candidates (query_idx, user_idx, item_idx) Int32 and their feature arrays, unscored.

        Arguments as in ``score_candidates``. The arrays (one per feature column, rows aligned
        with the candidates) depend on the state only, so bundles sharing a state can score the
        same arrays with their own boosters (``score_features``).
        """
        user_idx = np.asarray(user_idx, dtype=np.int32)
        generate = np.arange(len(user_idx), dtype=np.int32)
        if explicit_queries is None and explicit is not None:
            explicit_queries = explicit["query_idx"].unique().to_numpy()
        if explicit_queries is not None and len(explicit_queries):
            generate = np.setdiff1d(generate, explicit_queries)
        parts = []
        # Generated candidates carry their source scores; explicit ones (a request's own list) do not.
        reuse_scores = explicit is None or explicit.height == 0
        if generate.size:
            text = None if query_text is None else query_text[generate]
            rows = {name: value[generate] for name, value in (source_rows or {}).items()}
            generated = generate_candidates(self.state, user_idx[generate], self.config.candidates,
                                            seed=self.config.seed, user_text=text, with_scores=reuse_scores,
                                            source_counts=candidate_counts(self.config), source_rows=rows)
            parts.append(generated.with_columns(pl.Series("query_idx", generate[generated["query_idx"].to_numpy()])))
        if explicit is not None and explicit.height:
            parts.append(explicit.select(pl.col("query_idx").cast(pl.Int32),
                                         pl.Series("user_idx", user_idx[explicit["query_idx"].to_numpy()]),
                                         pl.col("item_idx").cast(pl.Int32)))
        if not parts:  # every query has an explicit list and none of them holds a known item
            parts.append(pl.DataFrame(schema={"query_idx": pl.Int32, "user_idx": pl.Int32, "item_idx": pl.Int32}))
        candidates = parts[0] if len(parts) == 1 else pl.concat(parts).sort("query_idx", "item_idx")
        if exclude is not None and exclude.height:
            candidates = candidates.join(exclude.cast({"query_idx": pl.Int32, "item_idx": pl.Int32}),
                                         on=["query_idx", "item_idx"], how="anti", maintain_order="left")
        carried = (*SOURCE_FEATURES.values(), *score_columns().values())
        known = {name: candidates[name].to_numpy() for name in carried if name in candidates.columns}
        arrays = feature_arrays(self.state, candidates["user_idx"].to_numpy(), candidates["item_idx"].to_numpy(),
                                query_idx=candidates["query_idx"].to_numpy(), query_text=query_text, known=known,
                                source_rows=source_rows)
        return candidates.select("query_idx", "user_idx", "item_idx"), arrays

    def score_features(self, candidates: pl.DataFrame, arrays: dict[str, np.ndarray]) -> pl.DataFrame:
        """``candidates`` with a Float32 ``score`` column: this booster on ``candidate_features``' arrays."""
        scores = self.score(arrays)
        # The booster ranks users with a profile only, in training (label users) as in serving;
        # the others are ranked transparently.
        unknown = ~self.state.has_profile(candidates["user_idx"].to_numpy())
        if unknown.any():
            scores[unknown] = fallback_scores({k: v[unknown] for k, v in arrays.items()}, self.state)
        return candidates.with_columns(pl.Series("score", scores))

    def save(self, folder: str | Path, *, encoder_dir: Path | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / "config.json")
        manifest = {"format_version": FORMAT_VERSION, "feature_columns": list(self.feature_columns),
                    "prior_weights": self.prior_weights}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        self.booster.save_model(str(folder / "ranker.txt"))
        self.state.save(folder / "state")
        source = encoder_dir or self.encoder_dir
        if source is not None:
            shutil.copytree(source, folder / "encoder", dirs_exist_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RankingBundle:
        folder = Path(folder)
        if not (folder / "manifest.json").exists():
            raise FileNotFoundError(f"{folder} is not a model bundle (manifest.json missing)")
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest["format_version"] not in READABLE_FORMATS:
            raise ValueError(f"bundle format {manifest['format_version']} is not supported "
                             f"(this code reads {', '.join(map(str, READABLE_FORMATS))}); retrain or upgrade")
        encoder = folder / "encoder"
        state = FeatureState.load(folder / "state")
        columns = tuple(manifest["feature_columns"])
        missing = sorted(set(columns) - set(feature_columns_of(state)))
        if missing:  # e.g. a state folder without a score source's files: fail here, not per request
            raise ValueError(f"{folder}: the ranker reads {missing}, which this bundle's state cannot compute "
                             "(files missing from its state folder?); save the bundle again from its run")
        return cls(
            config=PipelineConfig.load(folder / "config.json"),
            state=state,
            booster=lgb.Booster(model_file=str(folder / "ranker.txt")),
            feature_columns=columns,
            encoder_dir=encoder if encoder.exists() else None,
            prior_weights=manifest.get("prior_weights", {}),
        )


def fallback_scores(features: dict[str, np.ndarray], state: FeatureState) -> np.ndarray:
    """Scores for users the model does not know: what is trending (last day and week, log-scaled
    to 0..1), blended 40/60 with the text interest of the request's history when there is one.

    features: feature arrays (see ``feature_arrays``) of such rows; returns float32 (rows,).
    """
    def scaled(column: str) -> np.ndarray:
        top = float(state.item_features[column].max() or 0.0)
        values = features[column]
        return np.log1p(values) / np.log1p(top) if top > 0 else np.zeros(len(values))

    trend = 0.5 * scaled("item_pop_1d_rel") + 0.5 * scaled("item_pop_7d_rel")
    text = features["text_score"]
    return np.where(np.isnan(text), trend, 0.4 * trend + 0.6 * text).astype(np.float32)


def head_k(scored: pl.DataFrame, k: int, *, seed: int) -> pl.DataFrame:
    """Top-k rows per query_idx by score, with 1-based ``rank``, sorted by query then rank.

    scored: query_idx, user_idx, item_idx, score. Ties follow the seeded tie rule
    (``features.ties``; the query key is the user where known and -1 for every unknown user, so
    an order never depends on how users were batched); NaN scores rank last.
    """
    query = scored["query_idx"].to_numpy()
    item = scored["item_idx"].to_numpy()
    score = np.nan_to_num(scored["score"].to_numpy().astype(np.float64), nan=-np.inf)
    order = order_by_score(query, score, seed=seed, key_query=scored["user_idx"].to_numpy(), key_item=item)
    rank = position_in_group(query[order])
    keep = rank < k
    return scored[order[keep]].with_columns(pl.Series("rank", rank[keep] + 1, dtype=pl.Int32))
