"""Ensembles of LambdaRank models, shipped as one LightGBM model: folds (``ranker.folds`` > 1) and
seeds (``ranker.seeds`` > 1, ``fit_seed_ensemble``: the same users, other column draws).

The training users are dealt into n folds (seeded); member k learns on the queries of the other
folds and stops early on fold k's. The shipped ranker is the mean of the members' scores,
written as one LightGBM text model whose trees are every member's with leaf values divided by n
(``averaged_booster``), so scoring, compiled trees, saving and serving see an ordinary booster.

Why: with a few hundred label users, where early stopping stops depends on which users it
watches (each member logs its kept trees as ``ranker/<variant>/fold<k>_trees``), and the
average does not hang on one such draw. The held-out validation users stay out of every
member's training and early stopping, so the variant choice judges models they took no part in
(with one model they also stop its trees). The shipped model holds every member's trees: about
n times the trees to score. Measured on MovieLens 100K in docs/results.md.
"""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np
import polars as pl

from features.ranking_frame import feature_matrix, frame_feature_columns, group_sizes
from features.ties import tie_keys
from recsys.config import PipelineConfig
from recsys.errors import DataValidationError
from training.ranker import LambdaRanker, RankerData

_TREE_START = re.compile(r"\n(?=Tree=\d+\n)")
FOLD_KEY = -2  # the tie-rule hash's query slot for the fold deal (no query has this number)
# ranker.folds 0 (from the data): AUTO_FOLDS members when the ranker learns from
# AUTO_FOLDS_MIN_USERS .. AUTO_FOLDS_BELOW_USERS - 1 users. Fewer than the minimum leave each fold
# too few users to stop on; from the upper bound on, one model's early stopping watches enough
# users and the members' extra fits and trees do not pay (docs/results.md#the-ranker-on-few-users).
AUTO_FOLDS = 5
AUTO_FOLDS_MIN_USERS = 200
AUTO_FOLDS_BELOW_USERS = 1500


def folds_from_data(folds: int, n_training_users: int) -> int:
    """The members a fold ensemble gets: ``folds`` (``ranker.folds``) when set, else (0) the data's
    choice by the number of users the ranker learns from, the held-out validation users not counted."""
    if folds > 0:
        return folds
    return AUTO_FOLDS if AUTO_FOLDS_MIN_USERS <= n_training_users < AUTO_FOLDS_BELOW_USERS else 1


def user_folds(users: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """int (len(users),) fold 0..n_folds-1 of each user index: a seeded hash of the user alone,
    so a user's fold does not depend on which other users a frame holds (the variants' frames
    and tune's trials drop different users, and keep the same deal for the rest)."""
    return (tie_keys(seed, FOLD_KEY, np.asarray(users)) % np.uint64(n_folds)).astype(np.int64)


def averaged_booster(boosters: list[lgb.Booster]) -> lgb.Booster:
    """One booster whose raw score is the mean of ``boosters``' raw scores (each at its best
    iteration): all their trees, leaf values divided by their number. The boosters must share
    features and objective (the first one's header and parameters are kept) and have constant
    leaves (no ``linear_tree``: its leaf coefficients are not scaled)."""
    if not boosters:
        raise ValueError("averaged_booster needs at least one booster")
    scale = 1.0 / len(boosters)
    trees: list[str] = []
    for booster in boosters:
        text = booster.model_to_string()
        body = text[text.index("Tree=0\n"):text.index("end of trees")]
        trees += [block.strip("\n") for block in _TREE_START.split(body) if block.strip()]
    blocks = []
    for i, tree in enumerate(trees):
        lines = tree.split("\n")
        lines[0] = f"Tree={i}"
        for j, line in enumerate(lines):
            key, _, values = line.partition("=")
            if key in ("leaf_value", "internal_value"):
                lines[j] = f"{key}=" + " ".join(repr(float(v) * scale) for v in values.split())
        blocks.append("\n".join(lines))
    first = boosters[0].model_to_string()
    # tree_sizes lists each tree's bytes; without it LightGBM reads the trees one after another.
    header = "\n".join(line for line in first[:first.index("Tree=0\n")].split("\n")
                       if not line.startswith("tree_sizes="))
    return lgb.Booster(model_str=header.rstrip("\n") + "\n\n" + "\n\n\n".join(blocks) + "\n\n\n"
                       + first[first.index("end of trees"):])


def fold_frames(train: pl.DataFrame, n_folds: int, seed: int) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """[(fit rows, early-stopping rows)] per fold of a labelled frame (with ``user_idx``): fold k's
    users' rows (every query of theirs) stop early, the other folds' rows fit; row order kept."""
    users = np.unique(train["user_idx"].to_numpy())
    fold_of_user = user_folds(users, n_folds, seed)
    sizes = np.bincount(fold_of_user, minlength=n_folds)
    if sizes.min() == 0:
        raise DataValidationError(f"ranker.folds={n_folds}: the {len(users)} training label users leave a fold "
                                  f"empty (users per fold: {sizes.tolist()}); lower ranker.folds")
    row_fold = fold_of_user[np.searchsorted(users, train["user_idx"].to_numpy())]
    return [(train.filter(pl.Series(row_fold != k)), train.filter(pl.Series(row_fold == k)))
            for k in range(n_folds)]


def fit_fold_ensemble(train: pl.DataFrame, config: PipelineConfig, *, seed: int,
                      unused_features: tuple[str, ...] = (), eval_at: tuple[int, ...] = (10,),
                      progress_name: str = "", threads: int | None = None,
                      should_stop=None) -> tuple[LambdaRanker, list[LambdaRanker]]:
    """(the averaged ranker, its members) of ``config.ranker.folds`` (> 1) members over the labelled
    frame ``train`` (query_idx, user_idx, label and FEATURE_COLUMNS; rows of a query contiguous).

    Every query of a user is on the same side of every fold. seed: the fold deal's seed; the
    members' LightGBM seed is ``config.seed``. The averaged ranker: ``merged_ranker``. threads: each
    member's LightGBM threads (None: the usable cores); the members are fitted one after another.
    should_stop: passed to each member's fit (``LambdaRanker.fit_dataset``).
    """
    n_folds = config.ranker.folds
    members = []
    columns = frame_feature_columns(train)
    for k, (fit, stop) in enumerate(fold_frames(train, n_folds, seed)):
        member = LambdaRanker(feature_names=columns, config=config.ranker, seed=config.seed, threads=threads)
        sets = member.dataset(feature_matrix(fit, columns), fit["label"].to_numpy(), group_sizes(fit),
                              X_val=feature_matrix(stop, columns), y_val=stop["label"].to_numpy(),
                              groups_val=group_sizes(stop), curve_queries=0)  # no member's curve is logged
        members.append(member.fit_dataset(sets, unused_features=unused_features, eval_at=eval_at,
                                          progress_name=f"{progress_name} fold {k + 1}/{n_folds}".strip(),
                                          should_stop=should_stop))
    return merged_ranker(members, config, unused_features=unused_features, threads=threads), members


def fit_seed_ensemble(data: RankerData, config: PipelineConfig, *, unused_features: tuple[str, ...] = (),
                      eval_at: tuple[int, ...] = (10,), progress_name: str = "", threads: int | None = None,
                      should_stop=None) -> tuple[LambdaRanker, list[LambdaRanker]]:
    """(the averaged ranker, its members) of ``config.ranker.seeds`` (> 1) LightGBM fits of the same
    sets ``data`` (from ``LambdaRanker.dataset``), member i with LightGBM seed ``config.seed + i``,
    each early-stopped on ``data``'s validation queries. The seed draws each tree's columns
    (``feature_fraction``), so the members differ by those draws alone, and their mean does not
    hang on one draw. Members are fitted one after another; the rest as ``fit_fold_ensemble``."""
    members = []
    n = config.ranker.seeds
    for i in range(n):
        member = LambdaRanker(feature_names=data.feature_names, config=config.ranker, seed=config.seed + i,
                              threads=threads)
        members.append(member.fit_dataset(data, unused_features=unused_features, eval_at=eval_at,
                                          progress_name=f"{progress_name} seed {i + 1}/{n}".strip(),
                                          should_stop=should_stop))
    return merged_ranker(members, config, unused_features=unused_features, threads=threads), members


def merged_ranker(members: list[LambdaRanker], config: PipelineConfig, *, unused_features: tuple[str, ...],
                  threads: int | None) -> LambdaRanker:
    """One ranker scoring the mean of ``members``' scores (``averaged_booster``); its
    ``prior_weights`` are the members' means (the prior is linear in them; equal weights stay as
    they are), its ``fit_seconds`` their sum, ``members`` their number."""
    ranker = LambdaRanker(feature_names=members[0].feature_names, config=config.ranker, seed=config.seed,
                          threads=threads)
    ranker.booster = averaged_booster([m.booster for m in members])
    ranker.unused_features = tuple(unused_features)
    names = sorted({name for m in members for name in m.prior_weights})
    weights = {name: [m.prior_weights.get(name, 0.0) for m in members] for name in names}
    # A seed ensemble's members fit the same prior on the same rows: kept as it is, not re-rounded.
    ranker.prior_weights = {name: w[0] if len(set(w)) == 1 else float(np.mean(w)) for name, w in weights.items()}
    ranker.fit_seconds = sum(m.fit_seconds for m in members)
    ranker.members = len(members)
    return ranker
