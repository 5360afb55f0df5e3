"""What ``recsys tune`` measures a setting on: validation data cut from the training window only.

The run's own cuts (``training.pipeline.split_windows``): the test split is set aside untouched,
the training window is split again into a feature window (what models fit on) and a label
window (what they are scored on). A stage-1 model is scored alone, by full ranking of every
catalog item the user has not interacted with in the feature window, on the label-window users
with feature-window history (a seeded sample above ``eval_max_users``). The candidate and ranker
stages score the ranker variant the pipeline would ship (``tuning._Tuner.scored_variant``): it
learns on the label window's users, early-stops on the held-out 15% of them, and is scored by
full ranking on those. Where the
run's ranker is a fold ensemble (few label users, ``ranker_folds.folds_from_data``), they are
scored out of fold instead (``out_of_fold_users``): every label user is scored, by a model that
neither learnt from them nor stopped its trees on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.bundle import RankingBundle
from features.candidates import top_n
from features.cf import als_input, bpr_epochs, fit_cf
from features.item_item import binary, fit_item_item
from features.state import FeatureState, text_user_vectors, with_indices
from features.user_items import build_session_items, build_user_items
from recsys import metrics, windows
from recsys.config import PipelineConfig
from recsys.dataset import Dataset
from recsys.errors import DataValidationError
from recsys.split import Split
from training import variants
from training.evaluate import rank_in_chunks, sample_users
from training.pipeline import Windows, split_windows, window_state
from training.ranker_folds import folds_from_data, user_folds

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user_idx (n,) -> scores (n, n_items) float32
CHUNK_USERS = 1_024  # users per dense scoring chunk


@dataclass
class ValidationData:
    """The feature window as a matrix and the label window as relevance.

    user_items: (n_users, n_items) float32 CSR of feature-window weights; user_idx: (n,) int
    label-window users with feature-window history, sorted; relevant: per user, the int item
    indices of their label-window items they had not interacted with in the feature window.
    """

    windows: Windows
    user_items: sp.csr_matrix
    events: pl.DataFrame  # feature-window interactions with user_idx/item_idx
    user_idx: np.ndarray
    relevant: list[np.ndarray]

    @property
    def n_items(self) -> int:
        return self.user_items.shape[1]


def validation_data(dataset: Dataset, config: PipelineConfig, cuts: windows.Cuts | None = None) -> ValidationData:
    """Cut the data as ``recsys train`` does (or take ``cuts``, the ones ``check_trainable`` made
    from this same dataset and config) and keep the training window's two parts only."""
    w = split_windows(dataset, config, cuts)
    feature = w.nested.train.filter(pl.col("user_id").is_in(w.users.ids.implode()))
    user_items = build_user_items(feature, w.users, w.items)
    label = with_indices(w.nested.test, w.users, w.items).filter(pl.col("user_idx") >= 0)
    with_history = np.flatnonzero(np.diff(user_items.indptr) > 0).astype(np.int32)
    label = label.filter(pl.col("user_idx").is_in(pl.Series(with_history).implode()))
    seen = user_items.tocoo()
    seen_pairs = pl.DataFrame({"user_idx": seen.row.astype(np.int32), "item_idx": seen.col.astype(np.int32)})
    fresh = (label.select(pl.col("user_idx").cast(pl.Int32), pl.col("item_idx").cast(pl.Int32)).unique()
             .join(seen_pairs, on=["user_idx", "item_idx"], how="anti")
             .group_by("user_idx").agg(pl.col("item_idx").sort()).sort("user_idx"))
    user_idx = fresh["user_idx"].to_numpy()
    relevant = [np.asarray(v) for v in fresh["item_idx"].to_list()]
    user_idx, relevant = sample_users(user_idx, relevant, config.eval_max_users,
                                      config.seed + windows.EVAL_SAMPLE_SEED)
    events = with_indices(w.nested.train, w.users, w.items).filter(pl.col("user_idx") >= 0)
    return ValidationData(windows=w, user_items=user_items, events=events, user_idx=user_idx, relevant=relevant)


def ndcg_of_scores(data: ValidationData, score_fn: ScoreFn, k: int, seed: int) -> float:
    """Mean nDCG@k over the validation users of a dense scorer (feature-window items excluded,
    NaN never picked, ties by the seeded tie rule)."""
    if not len(data.user_idx):
        return float("nan")
    ranked = []
    for start in range(0, len(data.user_idx), CHUNK_USERS):
        chunk = data.user_idx[start:start + CHUNK_USERS]
        scores = np.array(score_fn(chunk), dtype=np.float32)
        scores[np.nan_to_num(scores, nan=-np.inf) == -np.inf] = -np.inf
        rows = data.user_items[chunk]
        scores[np.repeat(np.arange(len(chunk)), np.diff(rows.indptr)), rows.indices] = -np.inf
        ranked.append(top_n(scores, k, seed=seed, query=chunk))
    return metrics.topk_metrics(np.concatenate(ranked), data.relevant, k)[f"ndcg@{k}"]


def cf_scorer(data: ValidationData, name: str, config: PipelineConfig, after_epochs=None,
              report_every: int = 10) -> ScoreFn:
    """ALS or BPR fitted on the feature window with ``config``'s settings, as the pipeline fits them."""
    matrix = data.user_items
    n_users, n_items = data.user_items.shape
    if name == "als":
        matrix, alpha = als_input(data.user_items, config)
        factors = fit_cf("als", matrix, n_users=n_users, n_items=n_items, factors=config.als_factors,
                         iterations=config.als_iterations, regularization=config.als_regularization,
                         alpha=alpha, seed=config.seed)
    else:
        factors = fit_cf("bpr", matrix, n_users=n_users, n_items=n_items, factors=config.bpr_factors,
                         iterations=bpr_epochs(config.bpr_iterations, config.bpr_max_samples, matrix.nnz),
                         learning_rate=config.bpr_learning_rate, regularization=config.bpr_regularization,
                         seed=config.seed, after_epochs=after_epochs, every=report_every)
    return lambda u: factors.user_factors[u] @ factors.item_factors.T


def item_item_scorer(data: ValidationData, config: PipelineConfig) -> ScoreFn:
    """EASE (or cosine co-occurrence above ``item_item_max_items``) as the pipeline fits it."""
    sessions = None
    if config.item_item_session_gap_seconds > 0:
        sessions = build_session_items(data.events, data.windows.items, config.item_item_session_gap_seconds)
    model = fit_item_item(data.user_items, kind="ease", regularization=config.item_item_regularization,
                          neighbours=config.item_item_neighbours, max_items=config.item_item_max_items,
                          dropout=config.item_item_dropout, sessions=sessions,
                          session_weight=config.item_item_session_weight)
    history = binary(data.user_items)
    return lambda u: np.where((s := model.user_scores(history[u])) == 0, np.float32(np.nan), s)


def text_scorer(data: ValidationData, item_vectors: np.ndarray, config: PipelineConfig, pooling=None) -> ScoreFn:
    """The text interest score as the pipeline's state computes it (``features.state.text_user_vectors``):
    the user's vector (the ordered user tower's when ``pooling`` is a ``SequenceTower``, else the
    pooled history vector) . item vector."""
    n_users, n_items = data.user_items.shape
    users = text_user_vectors(data.events, n_users=n_users, n_items=n_items, item_vectors=item_vectors,
                              pooling=pooling, config=config)
    return lambda u: users[u] @ item_vectors.T


def feature_state(data: ValidationData, item_vectors: np.ndarray, config: PipelineConfig,
                  pooling=None) -> FeatureState:
    """The stage-1 state on the feature window (what the ranker's features and candidates read)."""
    w = data.windows
    return window_state(w, w.nested, item_vectors, config, pooling)


@dataclass
class LabelUsers:
    """The ranker's label users (``variants.label_users``) and the held-out ones that validate it."""

    users: tuple[np.ndarray, list[np.ndarray]]
    held_out: np.ndarray
    held_out_relevant: list[np.ndarray]


def label_users(data: ValidationData, state: FeatureState, config: PipelineConfig) -> LabelUsers:
    users = variants.label_users(state, data.windows.nested.test, config)
    held_out = variants.validation_users(users[0], config.seed + windows.VALIDATION_SEED)
    position = {int(u): i for i, u in enumerate(users[0])}
    return LabelUsers(users=users, held_out=held_out,
                      held_out_relevant=[users[1][position[int(u)]] for u in held_out])


def extra_cut_state(data: ValidationData, cut: Split, item_vectors: np.ndarray, config: PipelineConfig,
                    pooling=None) -> FeatureState:
    """The state of one extra label cut (``windows.extra_label_cuts``), as the pipeline fits it:
    on the cut's feature window."""
    return window_state(data.windows, cut, item_vectors, config, pooling)


def extra_cut_frame(state: FeatureState, cut: Split, config: PipelineConfig) -> pl.DataFrame:
    """The labelled frame of one extra label cut from its state (``extra_cut_state``, or that
    state with the pretrained vectors for the pretrained-text variant): the cut's label users."""
    users = variants.label_users(state, cut.test, config)
    return variants.labelled_frame(state, users, cut.impressions_test, config)  # no cold items in its labels


def ranker_ndcg(data: ValidationData, state: FeatureState, who: LabelUsers, config: PipelineConfig,
                frame: pl.DataFrame | None = None, extra_frames: list[pl.DataFrame] = (),
                variant: str = variants.FINETUNED) -> tuple[float, pl.DataFrame]:
    """Validation nDCG@k of the ranker variant ``variant`` learnt with ``config`` (mean of
    ``ranker_per_user``). Returns (nDCG@k, the first cut's labelled frame)."""
    per_user, frame = ranker_per_user(data, state, who, config, frame, extra_frames, variant)
    return (float(per_user.mean()) if len(per_user) else float("nan")), frame


def ranker_per_user(data: ValidationData, state: FeatureState, who: LabelUsers, config: PipelineConfig,
                    frame: pl.DataFrame | None = None, extra_frames: list[pl.DataFrame] = (),
                    variant: str = variants.FINETUNED) -> tuple[np.ndarray, pl.DataFrame]:
    """Per-user validation nDCG@k (float64 (n,), empty without held-out users) of the ranker
    variant ``variant`` (``variants.VARIANTS``: its candidates and the columns it may split on)
    learnt with ``config``: fitted on the label users' queries, early-stopped on the held-out
    users' queries and scored by full ranking on the held-out users, in ``who.held_out`` order.
    ``frame``: the labelled frame when the candidates did not change; ``extra_frames``: those of
    the extra label cuts (``extra_cut_frame``; ``config.label_cuts`` - 1 of them). Where the run's
    ranker is a fold ensemble (``ranker.folds`` > 1, or 0 and the data chose more than one),
    every label user is scored out of fold instead (``out_of_fold_ranked``, with the ensemble's
    number of folds, at least ``OUT_OF_FOLD_MIN_FOLDS``), in ``who.users`` order.
    Returns (per-user nDCG@k, the first cut's labelled frame)."""
    config = variants.variant_config(variant, config)
    if frame is None:
        frame = variants.labelled_frame(state, who.users, data.windows.nested.impressions_test, config,
                                        data.windows.feature_cold)
    if not len(who.held_out):
        return np.zeros(0), frame
    stacked = variants.stacked_frames([frame, *extra_frames]) if extra_frames else frame
    n_folds = folds_from_data(config.ranker.folds, int(np.setdiff1d(who.users[0], who.held_out).size))
    if n_folds > 1:
        relevant = who.users[1]
        ranked = out_of_fold_ranked(state, who.users, stacked, config, max(n_folds, OUT_OF_FOLD_MIN_FOLDS), variant)
    else:
        relevant = who.held_out_relevant
        ranker = variants.fit_rankers({variant: stacked}, who.held_out, config, label_users=who.users[0])[variant]
        ranked = _full_ranking(state, config, ranker, who.held_out, relevant)
    return metrics.ndcg_per_user(ranked, relevant, config.k), frame


def _full_ranking(state: FeatureState, config: PipelineConfig, ranker, user_idx: np.ndarray,
                  relevant: list[np.ndarray]) -> np.ndarray:
    """int (len(user_idx), k) top-k item indices of ``ranker`` (a fitted ``LambdaRanker``) over
    the candidates ``state`` generates for the users, as the pipeline ranks."""
    bundle = RankingBundle(config=config, state=state, booster=ranker.booster, feature_columns=ranker.feature_names,
                           prior_weights=ranker.prior_weights)
    return rank_in_chunks({"ranker": bundle}, user_idx, relevant, config.k, keep_scores="",
                          seed=config.seed)["ranker"][0]


OUT_OF_FOLD_MIN_FOLDS = 3  # a fold to score, one to stop on, at least one to fit on


def out_of_fold_users(users: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """[(fit users, stop users, scored users)] per fold k of the label users ``users`` (int, sorted):
    the users are dealt into ``n_folds`` folds by ``ranker_folds.user_folds`` (a seeded hash of the
    user alone, so every trial gets the same deal); fold k is scored, fold k + 1 (mod n) stops the
    trees, the rest fit. Each user is scored exactly once, by a model that did not see them."""
    if n_folds < OUT_OF_FOLD_MIN_FOLDS:
        raise ValueError(f"out-of-fold scoring needs at least {OUT_OF_FOLD_MIN_FOLDS} folds (fit, stop, score), "
                         f"got {n_folds}")
    fold = user_folds(users, n_folds, seed)
    sizes = np.bincount(fold, minlength=n_folds)
    if sizes.min() == 0:
        raise DataValidationError(f"out-of-fold scoring in {n_folds} folds: the {len(users)} label users leave a "
                                  f"fold empty (users per fold: {sizes.tolist()}); lower ranker.folds")
    return [(users[(fold != k) & (fold != (k + 1) % n_folds)], users[fold == (k + 1) % n_folds], users[fold == k])
            for k in range(n_folds)]


def out_of_fold_ranked(state: FeatureState, users: tuple[np.ndarray, list[np.ndarray]], frame: pl.DataFrame,
                       config: PipelineConfig, n_folds: int, variant: str = variants.FINETUNED) -> np.ndarray:
    """int (n_users, k) top-k item indices of every label user (``users`` order), each ranked
    (full ranking, as ``ranker_per_user``) by one LambdaRank model of variant ``variant`` with
    ``config``'s settings, early-stopped on the next fold's queries of ``frame``
    and fitted on every other row but the scored fold's (``out_of_fold_users``, seed
    ``TUNE_FOLD_SEED``; rows of extra label cuts' users outside the label users always fit).

    Why: with a few hundred label users the ~15% held out are too few (MovieLens: ~140) to tell
    trials apart (the winner of 30 trials is mostly the luckiest), and scoring them with models
    that stopped their trees on them favours settings that stop on noise. Scored out of fold, all
    of them count and none is judged by a model that watched them. users: ``label_users``' output.
    """
    user_idx, relevant = users  # user_idx sorted
    single = replace(config, ranker=replace(config.ranker, folds=1))
    ranked = np.full((len(user_idx), config.k), -1, dtype=np.int64)
    for fit_users, stop_users, scored in out_of_fold_users(user_idx, n_folds,
                                                           config.seed + windows.TUNE_FOLD_SEED):
        # Every row but the scored users' (the extra label cuts' users who are not first-cut label
        # users fit too, as in recsys train); the stop users' rows stop the trees.
        learnt, _ = variants.split_by_users(frame, scored)
        ranker = variants.fit_rankers({variant: learnt}, stop_users, single, label_users=fit_users)[variant]
        rows = np.searchsorted(user_idx, scored)
        ranked[rows] = _full_ranking(state, config, ranker, scored, [relevant[i] for i in rows])
    return ranked

