"""Splits: each protocol's shape, seeding, and the leakage guard."""

import polars as pl
import pytest

from recsys.errors import ConfigError, LeakageError
from recsys.split import Split, check_no_leakage, split_interactions
from tests.conftest import day


def _events(n_users=5, per_user=8):
    rows = [{"user_id": f"u{u}", "item_id": f"i{(u + j) % 11}", "timestamp": day(j + u / 10), "weight": 1.0}
            for u in range(n_users) for j in range(per_user)]
    return pl.DataFrame(rows)


def test_temporal_split_puts_the_last_share_of_time_in_test():
    events = _events()
    split = split_interactions(events, kind="temporal", test_fraction=0.25)
    assert split.train["timestamp"].max() < split.test["timestamp"].min()
    assert split.train.height + split.test.height == events.height


def test_leave_last_out_takes_exactly_the_last_event_of_each_user():
    events = _events()
    split = split_interactions(events, kind="leave-last-out")
    assert split.test.height == 5
    last = events.group_by("user_id").agg(pl.col("timestamp").max())
    assert split.test.select("user_id", "timestamp").sort("user_id").equals(last.sort("user_id"))


def test_stratified_split_is_seeded_and_per_user():
    events = _events()
    a = split_interactions(events, kind="stratified", test_fraction=0.25, seed=3)
    b = split_interactions(events, kind="stratified", test_fraction=0.25, seed=3)
    c = split_interactions(events, kind="stratified", test_fraction=0.25, seed=4)
    assert a.test.equals(b.test)
    assert not a.test.equals(c.test)
    assert a.test.group_by("user_id").len()["len"].to_list() == [2] * 5  # 25% of 8 per user


def test_overlapping_split_is_refused():
    events = _events()
    bad = Split(kind="stratified", train=events, test=events.head(3), impressions_train=None, impressions_test=None)
    with pytest.raises(LeakageError, match="in both train and test"):
        check_no_leakage(bad)


def test_temporal_overlap_is_refused():
    events = _events().sort("timestamp").with_row_index()
    train = events.filter(pl.col("index") % 2 == 0).drop("index")
    test = events.filter(pl.col("index") % 2 == 1).drop("index")  # disjoint rows, interleaved times
    bad = Split(kind="temporal", train=train, test=test, impressions_train=None, impressions_test=None)
    with pytest.raises(LeakageError, match="test must start after train ends"):
        check_no_leakage(bad)


def test_unknown_split_kind_is_rejected():
    with pytest.raises(ConfigError, match="unknown split 'random'"):
        split_interactions(_events(), kind="random")
