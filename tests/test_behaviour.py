"""Behaviour features against a hand-computed table; point-in-time: later events are ignored."""

import polars as pl
import pytest

from features import behaviour
from features.state import with_indices
from recsys.idmap import IdMap
from tests.conftest import day


@pytest.fixture
def indexed(interactions):
    users = IdMap(kind="user").fit(["u1", "u2", "u3"])
    items = IdMap(kind="item").fit(["a", "b", "c", "d"])
    return with_indices(interactions, users, items), users, items


def test_item_features_hand_computed(indexed):
    events, users, items = indexed
    impressions = with_indices(pl.DataFrame({
        "impression_id": ["s1", "s1", "s2", "s2", "s3"],
        "user_id": ["u1", "u1", "u2", "u2", "u1"],
        "timestamp": [day(0), day(0), day(1), day(1), day(4.9)],  # the last one is after ref_time
        "item_id": ["a", "a", "b", "b", "a"],
        "clicked": [1, 0, 0, 0, 1],
    }), users, items)
    feats = behaviour.item_features(events.lazy(), impressions.lazy(), n_items=4, ref_time=day(4.5),
                                    ctr_prior_strength=4.0)
    rows = {r["item_idx"]: r for r in feats.to_dicts()}
    a, b, c, d = rows[0], rows[1], rows[2], rows[3]
    assert (a["item_pop_all"], a["item_pop_7d"], a["item_pop_1d"]) == (2, 2, 0)
    assert a["item_age_days"] == pytest.approx(4.5)
    assert a["item_days_since_last"] == pytest.approx(2.5)
    assert c["item_mean_weight"] == pytest.approx(2.0)
    assert d["item_pop_1d"] == 1
    # global CTR 1/4; smoothed (clicks + 4 * 0.25) / (shows + 4)
    assert a["item_ctr"] == pytest.approx(2 / 6)
    assert b["item_ctr"] == pytest.approx(1 / 6)
    assert c["item_ctr"] == pytest.approx(0.25)
    assert feats.schema["item_ctr"] == pl.Float32


def test_events_after_the_reference_time_are_ignored(indexed):
    events, _, _ = indexed
    before = behaviour.item_features(events.lazy(), None, n_items=4, ref_time=day(4.5), ctr_prior_strength=1.0)
    later = events.vstack(events.head(1).with_columns(pl.lit(day(9)).alias("timestamp")))
    again = behaviour.item_features(later.lazy(), None, n_items=4, ref_time=day(4.5), ctr_prior_strength=1.0)
    assert before.equals(again)


def test_user_features_and_affinity(indexed):
    events, _, _ = indexed
    users = behaviour.user_features(events.lazy(), n_users=3, ref_time=day(4.5))
    u1 = users.row(0, named=True)
    assert (u1["user_history_len"], u1["user_active_7d"]) == (2, 2)
    assert u1["user_days_since_last"] == pytest.approx(3.5)
    category = pl.DataFrame({"item_idx": [0, 1, 2, 3], "category_idx": [0, 1, 2, 3]}).cast(pl.Int32)
    aff = behaviour.user_category_affinity(events.lazy(), category, ref_time=day(4.5))
    u2 = aff.filter(pl.col("user_idx") == 1)
    assert u2["category_idx"].to_list() == [0, 2]
    assert u2["user_category_affinity"].to_list() == [0.5, 0.5]
