"""Splits: each protocol's shape, seeding, and the leakage guard."""

import polars as pl
import pytest

from recsys.errors import ConfigError, DataValidationError, LeakageError
from recsys.split import Split, check_no_leakage, min_rows_for_stratified_test, split_interactions
from tests.conftest import day


def _events(n_users=5, per_user=8):
    rows = [{"user_id": f"u{u}", "item_id": f"i{(u + j) % 11}", "timestamp": day(j + u / 10), "weight": 1.0}
            for u in range(n_users) for j in range(per_user)]
    return pl.DataFrame(rows)


@pytest.mark.parametrize(("fraction", "test_rows", "first_test_day"), [(0.25, 10, 6), (0.5, 20, 4), (0.1, 5, 7)])
def test_temporal_split_puts_the_last_share_of_time_in_test(fraction, test_rows, first_test_day):
    events = _events()  # 5 users x 8 events, event j of user u at day j + u / 10
    split = split_interactions(events, kind="temporal", test_fraction=fraction)
    assert split.train["timestamp"].max() < split.test["timestamp"].min()
    assert split.train.height + split.test.height == events.height
    # The last share of the 40 rows in time: the latest days of every user.
    assert (split.test.height, split.test["timestamp"].min()) == (test_rows, day(first_test_day))


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


def _impressions(rows):
    """rows: (impression_id, user_id, day, item_id, clicked) -> canonical impressions frame."""
    return pl.DataFrame(
        [{"impression_id": i, "user_id": u, "timestamp": day(d), "item_id": it, "clicked": c}
         for i, u, d, it, c in rows],
        schema={"impression_id": pl.String, "user_id": pl.String, "timestamp": pl.Datetime("us"),
                "item_id": pl.String, "clicked": pl.Int8},
    )


def _clicks(rows):
    """rows: (user_id, item_id, day) -> canonical interactions frame (weight 1)."""
    return pl.DataFrame([{"user_id": u, "item_id": i, "timestamp": day(d), "weight": 1.0} for u, i, d in rows])


def test_test_impressions_of_items_clicked_in_train_are_dropped_and_counted(caplog):
    clicks = _clicks([("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 3), ("u2", "a", 0), ("u2", "d", 2)])
    shown = _impressions([
        ("i0", "u1", 0.5, "b", 1), ("i0", "u1", 0.5, "a", 0),  # before u1's test time: train, kept as is
        ("i1", "u1", 3, "a", 0), ("i1", "u1", 3, "c", 1), ("i1", "u1", 3, "x", 0),  # a: clicked by u1 in train
        ("i2", "u2", 2, "a", 0), ("i2", "u2", 2, "d", 1), ("i2", "u2", 2, "b", 0),  # a: clicked by u2 in train
    ])
    with caplog.at_level("INFO", logger="recsys.split"):
        split = split_interactions(clicks, kind="leave-last-out", impressions=shown)
    assert split.test.select("user_id", "item_id").rows() == [("u1", "c"), ("u2", "d")]
    assert split.impressions_dropped == 2
    assert split.impressions_test.select("impression_id", "item_id").rows() == [
        ("i1", "c"), ("i1", "x"), ("i2", "d"), ("i2", "b")]
    assert split.impressions_train.height == 2  # training impressions are not filtered
    assert "dropped 2 test impression row(s)" in caplog.text


@pytest.mark.parametrize("buckets", [None, 3, 1])  # the real hash; collisions in 3 buckets; every pair collides
def test_seen_impressions_are_matched_on_exact_pairs_whatever_the_hash_collides(monkeypatch, buckets):
    import recsys.split as split_module

    real = split_module.pair_hashes
    if buckets is not None:  # a coarse hash: unseen pairs share hashes with seen ones
        monkeypatch.setattr(split_module, "pair_hashes", lambda frame: real(frame) % buckets)
    train = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["a", "b", "a", "c"]})
    shown = pl.DataFrame({"user_id": ["u1", "u2", "u1", "u2", "u3", "u3", "u1", "u4"],
                          "item_id": ["a", "b", "c", "a", "c", "a", "a", "a"],
                          "clicked": [0, 1, 2, 3, 4, 5, 6, 7]})
    kept, dropped = split_module.drop_seen_impressions(shown, train)
    want = shown.join(train, on=["user_id", "item_id"], how="anti", maintain_order="left")
    assert kept.rows() == want.rows() == [("u2", "b", 1), ("u1", "c", 2), ("u3", "a", 5), ("u4", "a", 7)]
    assert dropped == 4 and kept.schema == shown.schema
    unchanged, none = split_module.drop_seen_impressions(shown, train.head(0))
    assert none == 0 and unchanged.equals(shown)


@pytest.mark.parametrize("kind", ["temporal", "leave-last-out", "stratified"])
def test_no_split_kind_leaves_a_test_impression_of_a_training_interaction(kind):
    from recsys.demo_data import DemoSpec, generate_demo

    data = generate_demo(DemoSpec(n_users=60, n_items=40, days=10, seed=2))
    split = split_interactions(data.interactions, kind=kind, test_fraction=0.3, seed=1, impressions=data.impressions)
    seen = {(u, i) for u, i in split.train.select("user_id", "item_id").iter_rows()}
    kept = split.impressions_test.select("user_id", "item_id").rows()
    assert not [pair for pair in kept if pair in seen]
    # Dropped + kept test rows = the impressions that fall in test by time: nothing else is lost.
    before = split.impressions_train.height + split.impressions_test.height + split.impressions_dropped
    assert before == data.impressions.height
    assert split.impressions_dropped > 0  # the demo re-shows clicked items: the rule is exercised


def test_test_impression_of_a_training_click_is_refused():
    train = _clicks([("u1", "a", 0), ("u1", "b", 1)])
    test = _clicks([("u1", "c", 2)])
    shown = _impressions([("i1", "u1", 2, "c", 1), ("i1", "u1", 2, "a", 0)])
    bad = Split(kind="leave-last-out", train=train, test=test, impressions_train=None, impressions_test=shown)
    with pytest.raises(LeakageError, match=r"1 test impression row\(s\) show a user an item they interacted with"):
        check_no_leakage(bad)


def test_leave_last_out_breaks_time_ties_by_input_position_not_by_sort_order():
    # Unsorted input: u1's latest time is shared by rows 0 and 1; row 1 comes later, so it is the last.
    clicks = _clicks([("u1", "a", 2), ("u1", "c", 2), ("u1", "b", 1), ("u2", "a", 0), ("u2", "b", 0)])
    split = split_interactions(clicks, kind="leave-last-out")
    assert split.test.select("user_id", "item_id").rows() == [("u1", "c"), ("u2", "b")]


# --- issue 17: a split with an empty side says what the protocol needs and what the data has ---

@pytest.mark.parametrize(("kind", "events", "message"), [
    ("temporal", _events(3, 2).with_columns(pl.lit(day(1)).alias("timestamp")),
     r"data\.csv: the temporal split .* needs interactions at 2 or more distinct times; all 6 are at 2026-01-02"),
    ("leave-last-out", _events(3, 1),
     r"data\.csv: the leave-last-out split needs at least 1 user with 2\+ interactions .*found 0 of 3 user\(s\) "
     r"\(the most any user has: 1\), so it left train=3 and test=0 of 3"),
    ("stratified", _events(4, 3),
     r"data\.csv: the stratified split with test_fraction=0\.2 needs at least 1 user with 5\+ interactions .*found "
     r"0 of 4 user\(s\) \(the most any user has: 3\), so it left train=12 and test=0"),
])
def test_split_with_an_empty_side_names_what_the_protocol_needs(kind, events, message):
    with pytest.raises(DataValidationError, match=message):
        split_interactions(events, kind=kind, test_fraction=0.2, name="data.csv")


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.9])
def test_min_rows_for_stratified_test_is_the_exact_threshold(fraction):
    need = min_rows_for_stratified_test(fraction)
    enough = _events(1, need)
    assert split_interactions(enough, kind="stratified", test_fraction=fraction).test.height >= 1
    if need > 1:
        with pytest.raises(DataValidationError, match=f"needs at least 1 user with {need}\\+ interactions"):
            split_interactions(_events(1, need - 1), kind="stratified", test_fraction=fraction)


def _sequences(n_users: int = 6, length: int = 12) -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [f"u{u}" for u in range(n_users) for _ in range(length)],
        "item_id": [f"i{(u * 5 + t) % 40}" for u in range(n_users) for t in range(length)],
        "timestamp": [day(u * 0.01 + t) for u in range(n_users) for t in range(length)],
        "weight": [1.0] * (n_users * length),
    })


@pytest.mark.parametrize("kind", ["temporal", "leave-last-out", "stratified"])
def test_extra_label_cuts_cut_each_feature_window_again(kind):
    from recsys.config import PipelineConfig
    from recsys.windows import extra_label_cuts, label_cut, test_cut

    config = PipelineConfig(split=kind, seed=3, label_cuts=3)
    split, _ = test_cut(_sequences(), None, config)
    nested, _ = label_cut(split, config)
    cuts = extra_label_cuts(nested, config)
    assert len(cuts) == 2
    pairs = lambda df: set(zip(df["user_id"], df["item_id"], df["timestamp"], strict=True))  # noqa: E731
    previous = nested
    for cut in cuts:
        # Each cut splits the previous feature window, whole: nothing lost, nothing added.
        assert pairs(cut.train) | pairs(cut.test) == pairs(previous.train)
        assert not pairs(cut.train) & pairs(cut.test) and cut.test.height > 0
        previous = cut
    if kind == "leave-last-out":  # each user's second-to-last item labels the second cut
        assert cuts[0].test.height == nested.test.height == 6
    again = extra_label_cuts(nested, config)
    assert all(a.test.equals(b.test) for a, b in zip(cuts, again, strict=True))
    assert extra_label_cuts(nested, PipelineConfig(split=kind, seed=3)) == []


@pytest.mark.parametrize("cuts", [0, 6])
def test_label_cuts_out_of_range_are_refused(cuts):
    from recsys.config import PipelineConfig

    with pytest.raises(ConfigError, match=rf"label_cuts must be 1\.\.5, got {cuts}"):
        PipelineConfig(label_cuts=cuts)


def test_a_temporal_split_sharing_a_row_is_refused_by_its_times():
    events = _events().sort("timestamp")
    train, test = events.head(30), events.tail(events.height - 29)  # row 29 is on both sides
    bad = Split(kind="temporal", train=train, test=test, impressions_train=None, impressions_test=None)
    with pytest.raises(LeakageError, match="test must start after train ends"):
        check_no_leakage(bad)


def test_split_drops_test_impressions_of_training_pairs_once_each_whatever_the_repeats():
    train = _clicks([("u1", "a", 0), ("u1", "a", 1), ("u1", "b", 2), ("u2", "c", 3)])
    test = _clicks([("u1", "c", 5), ("u2", "a", 6)])
    shown = _impressions([("i1", "u1", 5, "c", 1), ("i1", "u1", 5, "a", 0), ("i1", "u1", 5, "d", 0),
                          ("i2", "u2", 6, "a", 1), ("i2", "u2", 6, "c", 0)])
    split = split_interactions(pl.concat([train, test]), kind="temporal", test_fraction=0.3, impressions=shown)
    # u1 clicked "a" twice in train: its test impression goes once; u2's "c" goes too.
    assert split.impressions_dropped == 2
    assert split.impressions_test.select("user_id", "item_id").rows() == [("u1", "c"), ("u1", "d"), ("u2", "a")]
