"""Train/test splits of interaction logs, checked for leakage.

- ``temporal``: one global time cutoff; test = the last ``test_fraction`` of the time span.
- ``leave-last-out``: per user, the last interaction in time is test (ties in time: the later
  row of the input is the later interaction).
- ``stratified``: per user, a seeded random ``test_fraction`` of rows is test.

Impressions follow the interactions: a user's impressions before their first test
interaction go to train, the rest to test (for ``temporal`` that is the global cutoff).
A test impression row whose (user, item) the user already interacted with in train is
dropped (counted in ``Split.impressions_dropped``): scoring the model on showing a user what
the training data says they already took would reward memorising the training window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataValidationError, LeakageError
from recsys.streamed import rows_matching

log = logging.getLogger(__name__)

_PAIR = ["user_id", "item_id"]


@dataclass(frozen=True)
class Split:
    """Interactions (and impressions, when present) divided into train and test.

    impressions_dropped: test impression rows removed because the user interacted with that
    item in ``train`` (0 without impressions).
    """

    kind: str
    train: pl.DataFrame
    test: pl.DataFrame
    impressions_train: pl.DataFrame | None
    impressions_test: pl.DataFrame | None
    impressions_dropped: int = 0


def split_interactions(interactions: pl.DataFrame, *, kind: str, test_fraction: float = 0.2,
                       seed: int = 0, impressions: pl.DataFrame | None = None,
                       name: str = "interactions") -> Split:
    """Split ``interactions`` (canonical schema) into train and test, then check for leakage.

    Row order is kept within train, test and both impression tables. A split that would leave
    train or test empty raises :class:`DataValidationError` saying what the protocol needs and
    what the data has (``name`` leads the message: the file or window being split).
    """
    if interactions.height == 0:
        raise DataValidationError(f"{name}: cannot split an empty interaction table. Add interactions.")
    if kind == "temporal":
        is_test = _temporal_mask(interactions, test_fraction)
    elif kind == "leave-last-out":
        is_test = _leave_last_out_mask(interactions)
    elif kind == "stratified":
        is_test = _stratified_mask(interactions, test_fraction, seed)
    else:
        raise ConfigError(f"unknown split {kind!r}; use temporal, leave-last-out or stratified")
    train = interactions.filter(~is_test)
    test = interactions.filter(is_test)
    if train.height == 0 or test.height == 0:
        raise DataValidationError(f"{name}: {_empty_side_reason(interactions, kind, test_fraction, train, test)}")
    imp_train = imp_test = None
    dropped = 0
    if impressions is not None:
        imp_train, imp_test = _split_impressions(impressions, test, kind)
        imp_test, dropped = drop_seen_impressions(imp_test, train)
        if dropped:
            log.info("%s split: dropped %d test impression row(s) of items the user interacted with in train",
                     kind, dropped)
    split = Split(kind=kind, train=train, test=test, impressions_train=imp_train, impressions_test=imp_test,
                  impressions_dropped=dropped)
    check_no_leakage(split, test_impressions_checked=True)
    return split


def min_rows_for_stratified_test(test_fraction: float) -> int:
    """The fewest interactions a user needs for the stratified split to give them a test row:
    the smallest n with n - ceil(n * (1 - test_fraction)) >= 1 (the rule of ``_stratified_mask``)."""
    n = max(1, math.floor(1.0 / test_fraction) - 2)
    while n - math.ceil(n * (1.0 - test_fraction)) < 1:
        n += 1
    return n


def _empty_side_reason(df: pl.DataFrame, kind: str, test_fraction: float, train: pl.DataFrame,
                       test: pl.DataFrame) -> str:
    """Why a split left a side empty: what the protocol needs and the count the data falls short on."""
    counts = f"left train={train.height} and test={test.height} of {df.height} interaction(s)"
    per_user = df.group_by("user_id").len()["len"]
    if kind == "temporal":
        ts = df["timestamp"]
        if ts.n_unique() == 1:
            return (f"the temporal split (test = the last {test_fraction:.0%} of the time span) needs interactions "
                    f"at 2 or more distinct times; all {df.height} are at {ts[0]}, so it {counts}. "
                    "Add interactions at other times, or use the leave-last-out or stratified split.")
        return (f"the temporal split with test_fraction={test_fraction:g} {counts}: the time span "
                f"{ts.min()} .. {ts.max()} is too short to cut. Add interactions over a longer period.")
    if kind == "leave-last-out":
        return (f"the leave-last-out split needs at least 1 user with 2+ interactions (their last one is test); "
                f"found 0 of {per_user.len()} user(s) (the most any user has: {per_user.max()}), so it {counts}. "
                "Add users with more interactions, or use the temporal split.")
    need = min_rows_for_stratified_test(test_fraction)
    return (f"the stratified split with test_fraction={test_fraction:g} needs at least 1 user with {need}+ "
            f"interactions (fewer give a user no test row); found 0 of {per_user.len()} user(s) (the most any "
            f"user has: {per_user.max()}), so it {counts}. Add users with more interactions, or raise "
            "the fraction.")


def _temporal_mask(df: pl.DataFrame, test_fraction: float) -> pl.Series:
    ts = df["timestamp"]
    start, end = ts.min(), ts.max()
    cutoff = start + (end - start) * (1.0 - test_fraction)
    return ts >= cutoff


def _leave_last_out_mask(df: pl.DataFrame) -> pl.Series:
    """Bool (rows,): each user's last row in (timestamp, input position) order, for users with >= 2 rows."""
    ranked = (
        df.select("user_id", "timestamp").with_row_index("_row")
        .sort("timestamp", "_row")
        .with_columns(
            (pl.int_range(pl.len(), 0, -1).over("user_id") == 1).alias("_last"),
            pl.len().over("user_id").alias("_n"),
        )
        .sort("_row")
    )
    return ranked.select((pl.col("_last") & (pl.col("_n") >= 2)).alias("is_test"))["is_test"]


def _stratified_mask(df: pl.DataFrame, test_fraction: float, seed: int) -> pl.Series:
    rng = np.random.default_rng(seed)
    keyed = df.select("user_id").with_columns(pl.Series("_r", rng.random(df.height)))
    return keyed.select(
        (pl.col("_r").rank("ordinal").over("user_id") > (pl.len().over("user_id") * (1 - test_fraction)).ceil())
        .alias("is_test")
    )["is_test"]


def _split_impressions(impressions: pl.DataFrame, test: pl.DataFrame,
                       kind: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test) impression rows, each in input order: before / from the user's first test time."""
    if kind == "temporal":
        cutoff = test["timestamp"].min()
        return impressions.filter(pl.col("timestamp") < cutoff), impressions.filter(pl.col("timestamp") >= cutoff)
    first_test = test.group_by("user_id").agg(pl.col("timestamp").min().alias("_first_test"))
    joined = impressions.join(first_test, on="user_id", how="left", maintain_order="left")
    before = pl.col("_first_test").is_null() | (pl.col("timestamp") < pl.col("_first_test"))
    return joined.filter(before).drop("_first_test"), joined.filter(~before).drop("_first_test")


def drop_seen_impressions(impressions: pl.DataFrame, train: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``impressions`` without rows whose (user_id, item_id) is among ``train``'s interactions.

    Returns the kept rows (input order, same schema) and the number of rows dropped.
    """
    seen = pairs_seen(impressions, train)
    dropped = int(seen.sum())
    return (impressions.filter(~seen) if dropped else impressions), dropped


def pairs_seen(frame: pl.DataFrame, other: pl.DataFrame) -> pl.Series:
    """Bool (frame.height,): whether each row's (user_id, item_id) pair is among ``other``'s rows.

    The tables are matched on a 64-bit hash of each pair (:func:`pair_hashes`), a streamed semi
    join of integers (``recsys.streamed.rows_matching``) rather than a join on two string
    columns; only the rows whose hash matches are compared as pairs, so a hash collision never
    marks a row seen.
    """
    seen = np.zeros(frame.height, dtype=bool)
    if frame.height and other.height:
        shown, taken = pair_hashes(frame), pair_hashes(other)
        hit = np.zeros(frame.height, dtype=bool)
        hit[rows_matching(shown, taken).to_numpy()] = True
        if hit.any():  # exact pairs, on the matching rows and the rows of ``other`` sharing their hashes
            matched = frame.select(_PAIR).with_row_index("_row").filter(hit)
            shared = other.select(_PAIR)[rows_matching(taken, shown.filter(hit)).sort()]
            seen[matched.join(shared, on=_PAIR, how="semi")["_row"].to_numpy()] = True
    return pl.Series("seen", seen)


def pair_hashes(frame: pl.DataFrame) -> pl.Series:
    """UInt64 (rows,) hash of each row's (user_id, item_id), equal for equal pairs (string ids)."""
    return frame.select(pl.struct([pl.col(c).cast(pl.String) for c in _PAIR]).hash(seed=0))[:, 0]


def check_no_leakage(split: Split, *, test_impressions_checked: bool = False) -> None:
    """Refuse splits where test rows also sit in train, where (temporal) times overlap, or where a
    test impression shows a user an item they interacted with in train.

    test_impressions_checked: the caller built ``impressions_test`` with :func:`drop_seen_impressions`
    against this ``train`` (as ``split_interactions`` does), so the last check would only repeat
    that join (tens of millions of rows at scale).
    """
    if split.kind == "temporal":
        # Times first: when train ends before test starts, no row can be in both, and the row
        # join below (the costliest check at scale) has nothing to find.
        if split.train["timestamp"].max() >= split.test["timestamp"].min():
            raise LeakageError(
                f"temporal split: train ends at {split.train['timestamp'].max()} but test starts at "
                f"{split.test['timestamp'].min()}; test must start after train ends"
            )
    else:
        keys = ["user_id", "item_id", "timestamp"]
        shared = split.train.select(keys).join(split.test.select(keys), on=keys, how="inner")
        if shared.height:
            raise LeakageError(
                f"{split.kind} split: {shared.height} interaction(s) are in both train and test, e.g. "
                f"{shared.row(0, named=True)}; drop exact duplicates before splitting"
            )
    if split.impressions_train is not None and split.impressions_train.height and split.kind == "temporal":
        if split.impressions_train["timestamp"].max() >= split.test["timestamp"].min():
            raise LeakageError("temporal split: training impressions reach into the test period")
    if not test_impressions_checked:
        _check_test_impressions(split)


def _check_test_impressions(split: Split) -> None:
    if split.impressions_test is None or split.impressions_test.height == 0:
        return
    seen = split.impressions_test.select(_PAIR).join(split.train.select(_PAIR), on=_PAIR, how="semi")
    if seen.height:
        raise LeakageError(
            f"{split.kind} split: {seen.height} test impression row(s) show a user an item they interacted "
            f"with in train, e.g. {seen.row(0, named=True)}; drop them (split_interactions does) "
            "so the test does not reward recalling the training window"
        )
