"""The cuts and seeded draws of a training run, in one place.

``training.pipeline`` (which trains) and ``recsys.data_checks`` (which refuses, up front, data
too small to train) both cut the data this way, so the check cannot drift from the run:

1. ``test_cut``: the test split of the data; with the cold-items protocol, a seeded share of the
   training window's items is taken out of it (``COLD_ITEMS_SEED``).
2. ``label_cut``: the training window split again into a feature window and a label window
   (``LABEL_SPLIT_SEED``); with the cold-items protocol the feature window loses a second seeded
   share of items (``FEATURE_COLD_SEED``), so the ranker learns on items without behaviour.
   With ``label_cuts`` n > 1, ``extra_label_cuts`` cuts the feature window again, n - 1 times
   (``LABEL_SPLIT_SEED + EXTRA_CUT_SEED_STEP * c``): each later cut's label window lies inside
   the previous feature window, so no cut's feature window holds the first cut's label window.
3. Label users are capped by ``sample_positions`` (``RANKER_SAMPLE_SEED``), and a
   ``VALIDATION_USER_SHARE`` of them is held out by ``held_out_positions`` (``VALIDATION_SEED``).
   With ``ranker.folds`` n > 1 the other label users are dealt into n folds (``RANKER_FOLD_SEED``).
   ``recsys tune`` scores a fold-ensemble run's trials out of fold (``TUNE_FOLD_SEED``).

Seeds are offsets added to the run's seed; each draw has its own stream.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from recsys.cold_items import pick_cold_items, without_items
from recsys.config import PipelineConfig
from recsys.split import Split, split_interactions
from recsys.streamed import distinct

LABEL_SPLIT_SEED = 1
RANKER_SAMPLE_SEED = 2
EVAL_SAMPLE_SEED = 3
VALIDATION_SEED = 4
COLD_ITEMS_SEED = 7
FEATURE_COLD_SEED = 8
VARIANT_CHOICE_SEED = 9  # the bootstrap of the text variants' paired lift (training.variants.choose_variant)
TUNE_FOLD_SEED = 6  # the out-of-fold deal of recsys tune's ranker scoring (training.tune_validation)
RANKER_FOLD_SEED = 5  # which fold each training user of a fold ensemble is in (training.ranker_folds)
VALIDATION_USER_SHARE = 0.15
EXTRA_CUT_SEED_STEP = 10


@dataclass(frozen=True)
class Cuts:
    """Every cut of one run, as ``test_cut``, ``label_cut`` and ``extra_label_cuts`` make them.

    ``recsys.data_checks.check_trainable`` returns the cuts it checked, so a training run (and
    ``recsys tune``) splits its data once (at scale each cut is joins over tens of millions of
    impression rows). Cuts belong to the dataset and config they were made from.
    """

    split: Split
    cold_items: pl.Series | None
    nested: Split
    feature_cold: pl.Series | None
    extra: list[Split]
    feature_users: pl.Series | None = None  # the feature window's distinct user ids, when counted

    def training_users(self) -> pl.Series:
        """The distinct user ids of the training window (``split.train``), sorted: the run's
        user id map.

        ``feature_users`` (the feature window's distinct ids, which ``check_trainable`` counts
        for its checks) saves hashing most of the window's rows again: without the cold-items
        protocol the training window is the feature window and the label window, row for row
        (``label_cut`` divides it by a mask), so its users are those ids and the label window's.
        A hash table of every user outgrows the CPU caches at scale; this probes it with the
        label window's rows and one row per feature-window user instead of every row.
        """
        if self.feature_users is None or self.feature_cold is not None:
            ids = self.split.train["user_id"]
        else:
            ids = pl.concat([self.feature_users, self.nested.test["user_id"]])
        return distinct(ids).sort()


def cut_all(interactions: pl.DataFrame, impressions: pl.DataFrame | None, config: PipelineConfig) -> Cuts:
    """The test cut, the label cut of its training window and the extra label cuts."""
    split, cold_items = test_cut(interactions, impressions, config)
    nested, feature_cold = label_cut(split, config)
    return Cuts(split=split, cold_items=cold_items, nested=nested, feature_cold=feature_cold,
                extra=extra_label_cuts(nested, config))


def test_cut(interactions: pl.DataFrame, impressions: pl.DataFrame | None, config: PipelineConfig,
             name: str | None = None) -> tuple[Split, pl.Series | None]:
    """(the test split with cold items out of its training side, the cold items or None)."""
    split = split_interactions(interactions, kind=config.split, test_fraction=config.test_fraction,
                               seed=config.seed, impressions=impressions, **({"name": name} if name else {}))
    if config.cold_item_fraction <= 0:
        return split, None
    cold_items = pick_cold_items(split.train, config.cold_item_fraction, config.seed + COLD_ITEMS_SEED)
    return replace(split, train=without_items(split.train, cold_items),
                   impressions_train=without_items(split.impressions_train, cold_items)), cold_items


def label_cut(split: Split, config: PipelineConfig, name: str | None = None) -> tuple[Split, pl.Series | None]:
    """(the feature | label split of ``split.train``, the feature window's cold items or None)."""
    nested = split_interactions(split.train, kind=config.split, test_fraction=config.label_fraction,
                                seed=config.seed + LABEL_SPLIT_SEED, impressions=split.impressions_train,
                                **({"name": name} if name else {}))
    if config.cold_item_fraction <= 0:
        return nested, None
    feature_cold = pick_cold_items(nested.train, config.cold_item_fraction, config.seed + FEATURE_COLD_SEED)
    return replace(nested, train=without_items(nested.train, feature_cold),
                   impressions_train=without_items(nested.impressions_train, feature_cold)), feature_cold


def sample_positions(n: int, max_users: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a seeded uniform sample of ``max_users`` of ``n`` users; None when
    ``max_users`` is 0 or at least ``n`` (keep them all)."""
    if max_users <= 0 or n <= max_users:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_users, replace=False))


def held_out_positions(n_users: int, seed: int) -> np.ndarray:
    """Sorted positions of the ``VALIDATION_USER_SHARE`` (at least one) of ``n_users`` label users
    held out for validation."""
    if n_users == 0:
        return np.zeros(0, dtype=np.int64)
    size = max(1, int(round(n_users * VALIDATION_USER_SHARE)))
    return np.sort(np.random.default_rng(seed).choice(n_users, size=size, replace=False))


def extra_label_cuts(nested: Split, config: PipelineConfig, name: str | None = None) -> list[Split]:
    """The ``config.label_cuts - 1`` cuts after ``label_cut``'s: cut c (1-based) splits cut c-1's
    feature window by ``label_fraction`` again (earlier in time for temporal, each user's
    second-to-last item for leave-last-out, a random share for stratified). Returns them in that
    order; the last one's feature window is the smallest, the one the text model learns on."""
    cuts: list[Split] = []
    previous = nested
    for c in range(1, config.label_cuts):
        previous = split_interactions(previous.train, kind=config.split, test_fraction=config.label_fraction,
                                      seed=config.seed + LABEL_SPLIT_SEED + EXTRA_CUT_SEED_STEP * c,
                                      impressions=previous.impressions_train,
                                      **({"name": f"{name} (label cut {c + 1})"} if name else {}))
        cuts.append(previous)
    return cuts
