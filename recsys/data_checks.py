"""Up-front check that a dataset can train with a configuration, before any model is fitted.

A training run cuts its data three times (``training.pipeline.split_windows``): the test split,
then the nested split of the training window into a feature window and a label window, with the
cold items (``cold_item_fraction``) taken out of both training windows. Each later stage then
needs something of those windows:

- the test evaluation needs a user of the training window with a new item in the test split;
- the text model fine-tunes on next-item examples of the feature window (an interaction after
  a user's first): at least 2, one held out to validate;
- the ranker learns from *label users* (``training.variants.label_users``): users with history
  in the feature window and an item in the label window they did not take in the feature
  window. A seeded share of them (``VALIDATION_USER_SHARE``, at least one) is held out for
  early stopping (``training.variants.validation_users``), so both the held-out users and the
  rest need a query the ranker can learn from: a positive and a negative, i.e. a catalog item
  the user took in neither window (or, with impressions, a label-window impression with a
  click and a non-click; with cold items, a cold item taken and one not).

``check_trainable`` makes those cuts (``training.pipeline.train`` and ``recsys tune`` reuse
them) and raises :class:`DataValidationError` naming the count that is short and what the
protocol needs, so a run on too little data stops in a second with exit code 2 instead of
failing minutes later.
The conditions are necessary ones: data that fails one cannot train. They follow the pipeline
closely enough that the least data passing them trains (tests/test_data_faults.py), but candidate
generation is not simulated, so an odd candidate setting (say, every source at 0) can still
leave the ranker without a query to learn from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys import windows
from recsys.config import PipelineConfig
from recsys.errors import DataValidationError
from recsys.split import pairs_seen
from recsys.streamed import rows_per_key

if TYPE_CHECKING:
    from recsys.dataset import Dataset

_PAIR = ["user_id", "item_id"]
_FIRST_LOOK_ROWS = 10_000  # test rows tried first for a fresh (user, item) pair


def check_trainable(dataset: Dataset, config: PipelineConfig) -> windows.Cuts:
    """Raise :class:`DataValidationError` when ``dataset`` lacks what ``config``'s split and
    protocol need for a training run (``training.pipeline.train`` calls it first); else return
    the cuts it checked, equal to ``windows.cut_all``'s (the run, or ``recsys tune``'s search, reuses
    them; they hold only for this dataset and config)."""
    if dataset.events_released:
        raise ValueError("this dataset's event tables were released after an earlier run "
                         "(Dataset.release_events); load the data again to train on it")
    src = dataset.source
    inter = dataset.interactions
    n_items = dataset.items.height
    cuts = f", label_cuts={config.label_cuts} (fewer cuts need less history)" if config.label_cuts > 1 else ""
    protocol = f"the {config.split} split (test_fraction={config.test_fraction:g}, " \
               f"label_fraction={config.label_fraction:g}{cuts})"
    split, cold_items = windows.test_cut(inter, dataset.impressions, config, name=src)
    train = split.train
    _check_test_users(src, protocol, train, split.test, n_items)
    nested, feature_cold = windows.label_cut(
        split, config, name=f"{src} (training window of {config.split} split, {train.height} interactions)")
    feature = nested.train
    extra = windows.extra_label_cuts(nested, config, name=src)
    feature_rows = rows_per_key(feature, "user_id", "n_rows")  # the text and the label-user checks read it
    _check_text_examples(src, protocol,
                         rows_per_key(extra[-1].train, "user_id", "n_rows") if extra else feature_rows)
    _check_label_users(src, protocol, config, feature, feature_rows, nested.test, nested.impressions_test,
                       feature_cold, n_items, train["user_id"])
    return windows.Cuts(split=split, cold_items=cold_items, nested=nested, feature_cold=feature_cold, extra=extra,
                        feature_users=feature_rows["user_id"])


def _check_test_users(src: str, protocol: str, train: pl.DataFrame, test: pl.DataFrame, n_items: int) -> None:
    """The test evaluation (``training.evaluate.test_relevance``) needs a user known from the
    training window with a test item they did not take there."""
    # Only whether one fresh pair exists matters. At scale, the first rows of the test split all
    # but always hold one: look there first, against only those users' training rows.
    head = test.head(_FIRST_LOOK_ROWS).select(_PAIR)
    if _fresh_known_pairs(head, train.filter(pl.col("user_id").is_in(head["user_id"].implode()))).height:
        return
    fresh = _fresh_known_pairs(test.select(_PAIR), train)
    if fresh.height == 0:
        known = test.filter(pl.col("user_id").is_in(train["user_id"].unique().implode()))
        test_users = test["user_id"].n_unique()
        raise DataValidationError(
            f"{src}: the evaluation needs at least 1 test user (a user with interactions in the training window "
            f"and an item in the test split they did not take there); {protocol} leaves 0: of the {test_users} "
            f"user(s) in the test split, {known['user_id'].n_unique()} have training history and none takes a "
            f"new item (catalog: {n_items} items). Add users with interactions over a longer time, or more items."
        )


def _fresh_known_pairs(pairs: pl.DataFrame, train: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``pairs`` (user_id, item_id) whose user has rows in ``train`` and whose pair is
    not among them. An anti or semi join keeps or drops each row whatever the repeats on either
    side, so neither side needs a unique() pass."""
    return (pairs.join(train.select(_PAIR), on=_PAIR, how="anti")
            .join(train.select("user_id"), on="user_id", how="semi"))


def _check_text_examples(src: str, protocol: str, per_user: pl.DataFrame) -> None:
    """per_user: ``user_id, n_rows`` of the text window's feature window (rows per user, each >= 1)."""
    examples = int(per_user["n_rows"].sum()) - per_user.height  # every interaction after a user's first
    if examples < 2:
        raise DataValidationError(
            f"{src}: fine-tuning the text model needs at least 2 next-item examples (interactions after a user's "
            f"first) in the feature window; {protocol} leaves {examples} ({int((per_user['n_rows'] >= 2).sum())} "
            f"of {per_user.height} feature-window user(s) have 2+ interactions). Add users with more interactions."
        )


def label_users(feature: pl.DataFrame, feature_rows: pl.DataFrame, label: pl.DataFrame, n_items: int,
                feature_cold: pl.Series | None, label_impressions: pl.DataFrame | None) -> tuple[pl.Series, np.ndarray]:
    """The label users, sorted by id (users with feature-window rows and a label-window item they
    did not take there), and bool (n,) whether each has a negative for a ranker query: an unseen
    catalog item they did not take in the label window, a cold item taken and one not (cold-items
    protocol), or a shown-with-a-click label impression.

    feature_rows: ``user_id, n_rows`` per feature-window user. Distinct-item counts are needed
    only where the row counts leave the catalog test open (rows of both windows >= catalog size).
    """
    fresh = label.select(_PAIR).filter(~pairs_seen(label, feature))  # repeats kept
    users = (rows_per_key(fresh, "user_id", "n_fresh_rows")
             .join(feature_rows, on="user_id", how="inner")
             .sort("user_id"))
    usable = (users["n_rows"] + users["n_fresh_rows"] < n_items).to_numpy()
    tight = users.filter(pl.col("n_rows") + pl.col("n_fresh_rows") >= n_items)["user_id"]
    if tight.len():
        distinct = (users.select("user_id")
                    .join(_distinct_items(feature, tight, "n_seen"), on="user_id", how="left")
                    .join(_distinct_items(fresh, tight, "n_fresh"), on="user_id", how="left")
                    .sort("user_id"))
        usable |= ((distinct["n_seen"] + distinct["n_fresh"]) < n_items).fill_null(False).to_numpy()
    # The other two ways to a negative are looked for only among the users still without one
    # (at scale, none: the row counts settle every user).
    if feature_cold is not None and feature_cold.len() and not usable.all():
        rest = users["user_id"].filter(pl.Series(~usable))
        cold = (fresh.filter(pl.col("user_id").is_in(rest.implode()) & pl.col("item_id").is_in(feature_cold.implode()))
                .unique().group_by("user_id").len("cold_taken"))
        taken = users.select("user_id").join(cold, on="user_id", how="left").sort("user_id")["cold_taken"].fill_null(0)
        usable |= ((taken >= 1) & (taken < feature_cold.len())).to_numpy()
    if label_impressions is not None and label_impressions.height and not usable.all():
        rest = users["user_id"].filter(pl.Series(~usable))
        mixed = (label_impressions.filter(pl.col("user_id").is_in(rest.implode()))
                 .group_by("impression_id", "user_id")
                 .agg(pl.col("clicked").max().alias("hi"), pl.col("clicked").min().alias("lo"))
                 .filter((pl.col("hi") == 1) & (pl.col("lo") == 0))["user_id"].unique())
        usable |= users["user_id"].is_in(mixed.implode()).to_numpy()
    return users["user_id"], usable


def _distinct_items(events: pl.DataFrame, users: pl.Series, name: str) -> pl.DataFrame:
    return (events.filter(pl.col("user_id").is_in(users.implode()))
            .group_by("user_id").agg(pl.col("item_id").n_unique().alias(name)))


def _check_label_users(src: str, protocol: str, config: PipelineConfig, feature: pl.DataFrame,
                       feature_rows: pl.DataFrame, label: pl.DataFrame, label_impressions: pl.DataFrame | None,
                       feature_cold: pl.Series | None, n_items: int, train_users: pl.Series) -> None:
    users, usable = label_users(feature, feature_rows, label, n_items, feature_cold, label_impressions)
    n_label = users.len()
    if n_label < 2:
        label_window_users = label["user_id"].unique()
        with_history = label_window_users.is_in(feature_rows["user_id"].implode()).sum()
        raise DataValidationError(
            f"{src}: the ranker needs at least 2 label users (users with interactions in the feature window and "
            f"an item in the label window they did not take before; at least 1 is held out for validation); "
            f"{protocol} leaves {n_label}: of the {label_window_users.len()} user(s) in the label window, "
            f"{with_history} have feature-window history (training window: {train_users.n_unique()} users; "
            f"catalog: {n_items} items). Add users with interactions over a longer time, or more items."
        )
    keep = windows.sample_positions(n_label, config.ranker_max_users, config.seed + windows.RANKER_SAMPLE_SEED)
    if keep is not None:  # training.evaluate.sample_users
        usable, n_label = usable[keep], len(keep)
    held = np.zeros(n_label, dtype=bool)
    held[windows.held_out_positions(n_label, config.seed + windows.VALIDATION_SEED)] = True
    n_held_usable, n_rest_usable = int((usable & held).sum()), int((usable & ~held).sum())
    if n_held_usable == 0 or n_rest_usable == 0:
        side = "held out for validation" if n_held_usable == 0 else "left to train on"
        raise DataValidationError(
            f"{src}: the ranker needs label users with a negative to rank below their label-window item (a catalog "
            f"item they took in neither window), both among the users held out for validation and the rest; "
            f"{protocol} leaves {int(usable.sum())} such user(s) of {n_label} label user(s), none of the "
            f"{int(held.sum() if n_held_usable == 0 else (~held).sum())} {side} (catalog: {n_items} items). "
            "Add items or users."
        )
