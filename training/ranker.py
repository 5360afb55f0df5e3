"""LightGBM LambdaRank over the ranking frame (after LightGBM's sklearn API conventions).

Keyword-only constructor, ``fit`` returns self, a clear error before fitting, and the model is
saved as LightGBM's text format with its feature names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from features.rank_workers import usable_cores
from features.ranking_frame import prior_scores
from recsys.config import RankerConfig
from recsys.errors import DataValidationError, FitStopped, NotFittedError
from recsys.progress import progress as progress_bar
from training.prior_blend import fit_prior_weights

MAX_LABEL = 30  # LambdaRank label_gain has 31 entries by default: labels stay small integers.
# The training curve's sample of training queries is drawn with the ranker's seed plus this.
TRAIN_CURVE_SEED = 11


@dataclass(frozen=True)
class RankerData:
    """LightGBM train and validation sets (validation binned with the train set's bins).

    curve: the set the training curve (``evals["train"]``) is measured on: ``train`` itself, a
    seeded sample of its whole queries (``curve_rows``, sorted row positions) binned like it, or
    None (no training curve). The curve is a diagnostic: no fit reads it, so the model is the
    same either way.
    """

    train: lgb.Dataset
    valid: lgb.Dataset
    feature_names: tuple[str, ...]
    n_rows: int
    # The raw arrays, for the prior's weights and start scores (RankerConfig.prior_sources).
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    X_val: np.ndarray
    curve: lgb.Dataset | None = None
    curve_rows: np.ndarray | None = None  # None: the curve, if any, is over every training row
    curve_queries: int = 0  # training queries the curve reads (0: no training curve)


def curve_sample(groups: np.ndarray, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted row positions, their group sizes) of a seeded sample of ``n_queries`` whole
    queries of a set whose queries have ``groups`` rows each (contiguous blocks, in order); None
    when ``n_queries`` covers every query (the curve is then the whole set)."""
    groups = np.asarray(groups, dtype=np.int64)
    if n_queries < 1:
        raise ValueError(f"a training-curve sample needs at least 1 query, got {n_queries}")
    if n_queries >= len(groups):
        return None
    picked = np.sort(np.random.default_rng(seed).choice(len(groups), size=n_queries, replace=False))
    starts = np.r_[0, np.cumsum(groups)[:-1]]
    sizes = groups[picked]
    rows = np.repeat(starts[picked] - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(int(sizes.sum()))
    return rows, sizes


def _stop_when(should_stop: Callable[[], bool]) -> Callable:
    """A LightGBM callback that raises ``FitStopped`` after a round once ``should_stop()`` is true."""
    def check(env: lgb.callback.CallbackEnv) -> None:
        if should_stop():
            raise FitStopped(f"ranker fit stopped after round {env.iteration + 1}: its caller ended")

    return check


def _valid_only(callback: Callable) -> Callable:
    """``callback`` (LightGBM's early stopping) fed the validation set's results only. LightGBM
    skips the training set itself there, but not a sample of it (``RankerData.curve``), which
    would otherwise stop boosting when the training curve flattens."""
    def watched(env: lgb.callback.CallbackEnv) -> None:
        # Built by keyword: CallbackEnv is a namedtuple in LightGBM 4.0 and a dataclass later.
        callback(lgb.callback.CallbackEnv(
            model=env.model, params=env.params, iteration=env.iteration, begin_iteration=env.begin_iteration,
            end_iteration=env.end_iteration,
            evaluation_result_list=[r for r in env.evaluation_result_list or [] if r[0] == "valid"]))

    watched.order = callback.order  # LightGBM runs callbacks in this order
    watched.before_iteration = False
    return watched


class LambdaRanker:
    """Learning-to-rank model. ``feature_names`` fixes the column order of every matrix."""

    def __init__(self, *, feature_names: tuple[str, ...], config: RankerConfig | None = None,
                 seed: int = 0, threads: int | None = None) -> None:
        """threads: LightGBM threads of a fit (None: the usable cores). The fit is deterministic
        with a fixed histogram layout; the trees were the same on 1 and 2 threads in every check
        (tests/test_ranker.py, benchmarks/ranker_variants.py), but LightGBM promises determinism
        for the same parameters only, and its NDCG sums per-thread parts, so the logged curves
        could differ in their last bits on another thread count."""
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None for every usable core), got {threads}")
        self.feature_names = tuple(feature_names)
        self.config = config or RankerConfig()
        self.seed = seed
        self.threads = threads
        self.booster: lgb.Booster | None = None
        self.evals: dict[str, dict[str, list[float]]] = {}
        self.unused_features: tuple[str, ...] = ()
        self.prior_weights: dict[str, float] = {}  # source -> weight of its within-query z-score
        self.fit_seconds = 0.0
        self.members = 1  # LightGBM models averaged into ``booster`` (a fold ensemble's folds)

    def _check(self, X: np.ndarray, y: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise DataValidationError(
                f"feature matrix has shape {X.shape}, expected (rows, {len(self.feature_names)}) "
                f"for features {list(self.feature_names)}"
            )
        if y is not None:
            if y.shape[0] != X.shape[0]:
                raise DataValidationError(f"labels have {y.shape[0]} rows but features have {X.shape[0]}")
            if y.min() < 0 or y.max() > MAX_LABEL or not np.all(y == np.round(y)):
                raise DataValidationError(
                    f"LambdaRank labels must be integers in 0..{MAX_LABEL}, got range [{y.min()}, {y.max()}]"
                )
        if groups is not None and int(np.sum(groups)) != X.shape[0]:
            raise DataValidationError(
                f"group sizes sum to {int(np.sum(groups))} but there are {X.shape[0]} rows; "
                "group must list the size of each query's contiguous block of rows"
            )

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, X_val: np.ndarray, y_val: np.ndarray,
            groups_val: np.ndarray, eval_at: tuple[int, ...] = (10,),
            log_metric: Callable[[str, float, int], None] | None = None) -> LambdaRanker:
        """Train with early stopping on the validation queries. Returns self."""
        data = self.dataset(X, y, groups, X_val=X_val, y_val=y_val, groups_val=groups_val)
        return self.fit_dataset(data, eval_at=eval_at, log_metric=log_metric)

    def dataset(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, X_val: np.ndarray, y_val: np.ndarray,
                groups_val: np.ndarray, curve_queries: int | None = None) -> RankerData:
        """Validated LightGBM train/validation sets in this ranker's column order. Their bins are
        built on the first fit and reused by every later fit on the same sets.

        curve_queries: training queries the training curve is measured on, a seeded sample
        (None: as many as the validation set has, so the two curves cost and scatter alike; 0: no
        training curve). On the demo's largest set the whole training set (5.5 times the
        validation queries) made a fit 1.18-1.24x as long as the default sample (two runs)
        (``benchmarks/ranker_curve.py``).
        """
        self._check(X, y, groups)
        self._check(X_val, y_val, groups_val)
        names = list(self.feature_names)
        train_set = lgb.Dataset(X, label=y, group=groups, feature_name=names, free_raw_data=False)
        val_set = lgb.Dataset(X_val, label=y_val, group=groups_val, reference=train_set, feature_name=names)
        wanted = len(groups_val) if curve_queries is None else curve_queries
        if wanted < 0:
            raise ValueError(f"curve_queries must be 0 (no training curve) or more, got {curve_queries}")
        sample = curve_sample(groups, wanted, self.seed + TRAIN_CURVE_SEED) if wanted else None
        if sample is None:  # the whole training set, or no curve
            curve_set, curve_rows = (train_set if wanted else None), None
        else:
            curve_rows, sizes = sample
            curve_set = lgb.Dataset(X[curve_rows], label=y[curve_rows], group=sizes, reference=train_set,
                                    feature_name=names)
        return RankerData(train=train_set, valid=val_set, feature_names=self.feature_names, n_rows=X.shape[0],
                          X=X, y=y, groups=groups, X_val=X_val, curve=curve_set, curve_rows=curve_rows,
                          curve_queries=min(wanted, len(groups)))

    def fit_dataset(self, data: RankerData, *, unused_features: tuple[str, ...] = (), eval_at: tuple[int, ...] = (10,),
                    log_metric: Callable[[str, float, int], None] | None = None,
                    progress_name: str = "", should_stop: Callable[[], bool] | None = None) -> LambdaRanker:
        """Train on prepared sets (see ``dataset``); ``unused_features`` get zero split gain
        (LightGBM ``feature_contri``), so the model never splits on them: an ablation without
        those features that reuses the sets' bins instead of building new ones. should_stop:
        asked after every round; True ends the fit with ``FitStopped``. Returns self."""
        if data.feature_names != self.feature_names:
            raise DataValidationError(f"the sets have features {list(data.feature_names)}, this ranker "
                                      f"{list(self.feature_names)}")
        unknown = set(unused_features) - set(self.feature_names)
        if unknown:
            raise DataValidationError(f"unused_features {sorted(unknown)} are not features of this ranker")
        c = self.config
        params = {
            "objective": c.objective, "metric": "ndcg", "eval_at": list(eval_at),
            "learning_rate": c.learning_rate, "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_data_in_leaf, "feature_fraction": c.feature_fraction,
            "lambdarank_truncation_level": c.lambdarank_truncation_level, "max_delta_step": c.max_delta_step,
            "seed": self.seed, "deterministic": True, "verbosity": -1,
            "num_threads": self.threads or usable_cores(),
            # With deterministic, LightGBM asks for a fixed histogram layout instead of the one a
            # timing trial picks (which can go either way on a busy machine). The trees do not
            # depend on the thread count (tests/test_ranker.py, benchmarks/ranker_variants.py).
            "force_col_wise": True,
        }
        if unused_features:
            params["feature_contri"] = [0.0 if name in unused_features else 1.0 for name in self.feature_names]
        self.unused_features = tuple(unused_features)
        self.evals = {}
        start = time.perf_counter()
        self._set_prior(data, eval_at[0])
        with progress_bar(total=c.num_boost_round, desc=f"ranker {progress_name}".rstrip(), unit="round") as bar:
            self.booster = lgb.train(
                params, data.train, num_boost_round=c.num_boost_round,
                valid_sets=[data.valid] if data.curve is None else [data.curve, data.valid],
                valid_names=["valid"] if data.curve is None else ["train", "valid"],
                callbacks=[_valid_only(lgb.early_stopping(c.early_stopping_rounds, verbose=False,
                                                          min_delta=c.early_stopping_min_delta)),
                           lgb.record_evaluation(self.evals), lambda env: bar.update(1),
                           *([_stop_when(should_stop)] if should_stop else [])],
            )
        self.fit_seconds = time.perf_counter() - start
        if log_metric:
            self.log_curves(log_metric)
        return self

    def model_text(self) -> str:
        """LightGBM's model text without its ``[num_threads: N]`` parameter line: equal texts are
        the same trees, whatever threads fitted them."""
        return "\n".join(line for line in self._require().model_to_string().splitlines()
                         if not line.startswith("[num_threads:"))

    def log_curves(self, log_metric: Callable[[str, float, int], None]) -> None:
        """The last fit's learning curves as ``ranker/<split>_<metric>`` at each round (1-based)."""
        for split, metrics in self.evals.items():
            for name, values in metrics.items():
                for step, value in enumerate(values, start=1):
                    log_metric(f"ranker/{split}_{name.replace('@', '_at_')}", value, step)

    def _require(self) -> lgb.Booster:
        if self.booster is None:
            raise NotFittedError("LambdaRanker is not fitted; call fit(...) or load(path) first")
        return self.booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        """float32 (rows,) scores; higher ranks first. Uses the best (early-stopped) iteration."""
        booster = self._require()
        self._check(X)
        scores = booster.predict(X, num_iteration=booster.best_iteration or None)
        if self.prior_weights:
            scores = scores + prior_scores(X, self.prior_weights, self.feature_names)
        return scores.astype(np.float32)

    def _set_prior(self, data: RankerData, k: int) -> None:
        """Fit the prior's weights on the training queries and make it both sets' start scores
        (``RankerConfig.prior_sources`` less the unused features; none: start from zero)."""
        sources = tuple(s for s in self.config.prior_sources
                        if s not in self.unused_features and f"{s}_query_z" not in self.unused_features)
        missing = [f"{s}_query_z" for s in sources if f"{s}_query_z" not in self.feature_names]
        if missing:
            raise DataValidationError(f"prior_sources need the features {missing}")
        self.prior_weights = (fit_prior_weights(data.X, data.y, data.groups, sources, self.feature_names, k)
                              if sources else {})
        sets = [(data.train, data.X), (data.valid, data.X_val)]
        if data.curve_rows is not None:  # a sample: its own start scores
            sets.append((data.curve, data.X[data.curve_rows]))
        for lgb_set, X in sets:
            lgb_set.set_init_score(prior_scores(X, self.prior_weights, self.feature_names) if sources else None)

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature (0 for ``unused_features``)."""
        booster = self._require()
        return dict(zip(self.feature_names, booster.feature_importance("gain").tolist(), strict=True))

    @property
    def best_iteration(self) -> int:
        """Trees the model predicts with: the early-stopped iteration, or every tree of a model
        without one (loaded, or a fold ensemble's merged model)."""
        booster = self._require()
        return int(booster.best_iteration if booster.best_iteration > 0 else booster.num_trees())

    def save(self, path: str | Path) -> None:
        """LightGBM's text model at ``path``, and the prior's weights beside it (``.prior.json``)."""
        self._require().save_model(str(path), num_iteration=self.booster.best_iteration or None)
        Path(path).with_suffix(".prior.json").write_text(json.dumps(self.prior_weights))

    @classmethod
    def load(cls, path: str | Path) -> LambdaRanker:
        booster = lgb.Booster(model_file=str(path))
        ranker = cls(feature_names=tuple(booster.feature_name()))
        ranker.booster = booster
        prior = Path(path).with_suffix(".prior.json")
        ranker.prior_weights = json.loads(prior.read_text()) if prior.exists() else {}
        return ranker
