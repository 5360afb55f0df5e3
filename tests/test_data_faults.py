"""Too little data for the chosen split and protocol: a clear error up front (exit 2), naming the
count that is short and what the protocol needs, instead of a numpy error minutes into training."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recsys.cli import main
from recsys.config import PipelineConfig
from recsys.data_checks import check_trainable
from recsys.dataset import Dataset
from recsys.demo_data import DemoSpec, generate_demo
from recsys.errors import DataValidationError
from recsys.windows import VALIDATION_SEED, held_out_positions
from tests.conftest import tiny_config_dict

T0 = datetime(2026, 1, 1)


def _frames(rows: list[tuple[str, int, float]], n_items: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """rows: (user, item number, hour) -> (items with item_id/title, interactions user_id/item_id/timestamp)."""
    items = pl.DataFrame({"item_id": [f"i{j}" for j in range(n_items)], "title": [f"item {j}" for j in range(n_items)]})
    inter = pl.DataFrame([(u, f"i{i}", T0 + timedelta(hours=h)) for u, i, h in rows],
                         schema=["user_id", "item_id", "timestamp"], orient="row")
    return items, inter


def _dataset(rows, n_items: int, source: str = "tiny") -> Dataset:
    items, inter = _frames(rows, n_items)
    return Dataset.from_frames(items=items, interactions=inter, source=source)


def _folder(tmp_path, name: str, rows, n_items: int):
    folder = tmp_path / name
    folder.mkdir()
    items, inter = _frames(rows, n_items)
    items.write_parquet(folder / "items.parquet")
    inter.write_parquet(folder / "interactions.parquet")
    return folder


ONE_USER = [("u0", j, j) for j in range(10)]
TWO_ITEMS = [(f"u{u}", (u + j) % 2, u * 0.1 + j) for u in range(20) for j in range(4)]


@pytest.mark.parametrize(("rows", "n_items", "message"), [
    (ONE_USER, 10, r"one_user: the ranker needs at least 2 label users .*the temporal split \(test_fraction=0\.2, "
                   r"label_fraction=0\.2\) leaves 1: of the 1 user\(s\) in the label window"),
    (TWO_ITEMS, 2, r"two_items: the evaluation needs at least 1 test user .*leaves 0: of the 10 user\(s\) in the test "
                   r"split, 10 have training history and none takes a new item \(catalog: 2 items\)"),
])
def test_train_on_too_little_data_exits_2_naming_the_short_count(tmp_path, monkeypatch, capsys, rows, n_items,
                                                                 message):
    folder = _folder(tmp_path, "one_user" if rows is ONE_USER else "two_items", rows, n_items)
    monkeypatch.chdir(tmp_path)  # any MLflow store goes here, not into the checkout
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["-q", "train", "--data", str(folder), "--no-register"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recsys: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "mlruns").exists()  # refused before any run started


def test_split_windows_name_the_window_and_the_protocol_minimum():
    # Every user has two interactions: the test split works, but its training window has one per user,
    # so the nested leave-last-out split of that window finds no user with 2+.
    data = _dataset([(f"u{u}", (u + j) % 5, u + j) for u in range(4) for j in range(2)], 5, "pairs")
    with pytest.raises(DataValidationError, match=r"pairs \(training window of leave-last-out split, 4 interactions\): "
                                                  r"the leave-last-out split needs at least 1 user with 2\+ "
                                                  r"interactions .*found 0 of 4 user\(s\)"):
        check_trainable(data, PipelineConfig(split="leave-last-out"))
    same_time = _dataset([(f"u{u}", u % 5, 0) for u in range(6)], 5, "instant")
    with pytest.raises(DataValidationError, match=r"instant: the temporal split .* needs interactions at 2 or more "
                                                  r"distinct times; all 6 are at 2026-01-01 00:00:00"):
        check_trainable(same_time, PipelineConfig(split="temporal"))


def test_text_model_needs_two_next_item_examples_in_the_feature_window():
    # Temporal: test from hour 80, label window from hour 56 (0.8 of the training window's 0..70).
    rows = [("u0", 0, 0), ("u0", 1, 60), ("u0", 2, 100), ("u1", 1, 10), ("u1", 2, 70), ("u1", 3, 90)]
    with pytest.raises(DataValidationError, match=r"tiny: fine-tuning the text model needs at least 2 next-item "
                                                  r"examples .* leaves 0 \(0 of 2 feature-window user\(s\) have 2\+"):
        check_trainable(_dataset(rows, 6), PipelineConfig(split="temporal"))


# Three users take i0 and i1 early; u0 and u1 take i2 in the label window, u2 takes it in test.
NO_NEGATIVE = [("u0", 0, 0), ("u0", 1, 5), ("u0", 2, 60), ("u1", 0, 2), ("u1", 1, 8), ("u1", 2, 65),
               ("u2", 0, 1), ("u2", 1, 3), ("u2", 2, 100)]


def test_label_users_need_an_item_to_rank_below_their_label_item():
    with pytest.raises(DataValidationError, match=r"tiny: the ranker needs label users with a negative .* leaves 0 "
                                                  r"such user\(s\) of 2 label user\(s\), none of the 1 held out for "
                                                  r"validation \(catalog: 3 items\)"):
        check_trainable(_dataset(NO_NEGATIVE, 3), PipelineConfig(split="temporal"))
    check_trainable(_dataset(NO_NEGATIVE, 4), PipelineConfig(split="temporal"))  # one more item: a negative


@pytest.mark.parametrize("unusable", ["u0", "u1"])
def test_both_sides_of_the_validation_hold_out_need_a_usable_label_user(unusable):
    rows = NO_NEGATIVE + [(unusable, 3, 20)]  # this one has now taken every catalog item but its label item
    config = PipelineConfig(split="temporal")
    held = "u0" if held_out_positions(2, config.seed + VALIDATION_SEED).tolist() == [0] else "u1"
    side = "held out for validation" if unusable == held else "left to train on"
    with pytest.raises(DataValidationError, match=f"leaves 1 such user\\(s\\) of 2 label user\\(s\\), none of the 1 "
                                                  f"{side}"):
        check_trainable(_dataset(rows, 4), config)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7, 20, 33, 100])
def test_the_validation_draw_is_the_one_runs_always_made(n):
    """validation_users draws by position (recsys.windows, shared with the up-front check); it must
    equal the draw over the user indices themselves that earlier runs made, so figures repeat."""
    from training.variants import VALIDATION_USER_SHARE, validation_users

    user_idx = np.arange(n, dtype=np.int32) * 3 + 5
    for seed in (0, 46, 7):
        size = max(1, int(round(n * VALIDATION_USER_SHARE)))
        before = np.sort(np.random.default_rng(seed).choice(user_idx, size=size, replace=False))
        assert validation_users(user_idx, seed).tolist() == before.tolist()



@pytest.mark.parametrize("split", ["temporal", "leave-last-out", "stratified"])
def test_demo_worlds_pass_the_check(split):
    for spec in (DemoSpec(n_users=60, n_items=60, days=10, seed=4), DemoSpec(n_users=150, n_items=150, days=20,
                                                                             seed=21)):
        data = generate_demo(spec)
        for cold in (0.0, 0.2):
            check_trainable(data, PipelineConfig.from_dict({**tiny_config_dict(), "split": split,
                                                            "cold_item_fraction": cold}))


@pytest.mark.slow
def test_the_smallest_data_that_passes_the_check_trains(tmp_path, monkeypatch):
    """Not over-strict: the 4-item world of the negative test (the least that passes) trains end to end."""
    folder = _folder(tmp_path, "smallest", NO_NEGATIVE, 4)
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_config_dict()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["-q", "train", "--data", str(folder), "--config", "tiny.json", "--split", "temporal",
                 "--no-register", "--metrics-out", "metrics.json"]) == 0
    assert "ranker" in json.loads((tmp_path / "metrics.json").read_text())["test"]


@pytest.mark.parametrize("config", [
    PipelineConfig(split="temporal", label_cuts=2, cold_item_fraction=0.1, seed=3),
    PipelineConfig(split="stratified", seed=5),
])
def test_the_checked_cuts_are_the_cuts_a_run_makes(config):
    from recsys.windows import cut_all
    data = generate_demo(DemoSpec(n_users=120, n_items=60, seed=4))
    checked = check_trainable(data, config)
    made = cut_all(data.interactions, data.impressions, config)
    pairs = [(checked.split, made.split), (checked.nested, made.nested), *zip(checked.extra, made.extra, strict=True)]
    assert len(checked.extra) == config.label_cuts - 1
    for a, b in pairs:
        for table in ("train", "test", "impressions_train", "impressions_test"):
            assert getattr(a, table).equals(getattr(b, table)), table
    for a, b in ((checked.cold_items, made.cold_items), (checked.feature_cold, made.feature_cold)):
        assert (a is None and b is None) or a.equals(b)
    assert checked.cold_items is not None if config.cold_item_fraction > 0 else checked.cold_items is None


@pytest.mark.parametrize("config", [
    PipelineConfig(split="temporal", seed=3),
    PipelineConfig(split="temporal", label_cuts=2, seed=3),
    PipelineConfig(split="stratified", seed=5),
    PipelineConfig(split="leave-last-out", seed=1),
    PipelineConfig(split="temporal", cold_item_fraction=0.1, seed=3),
])
def test_the_user_id_map_is_every_training_user_sorted(config):
    from polars.testing import assert_series_equal

    from recsys.streamed import distinct
    from recsys.windows import cut_all
    data = generate_demo(DemoSpec(n_users=120, n_items=60, seed=4))
    checked = check_trainable(data, config)
    expected = distinct(checked.split.train["user_id"]).sort()
    assert checked.feature_users is not None
    # some training users have no feature-window row: the label window's users must be added
    if config.split == "temporal" and config.cold_item_fraction == 0:
        assert set(expected) - set(checked.feature_users)
    assert_series_equal(checked.training_users(), expected)
    # cuts made without the data checks have no counted users and hash the whole window
    made = cut_all(data.interactions, data.impressions, config)
    assert made.feature_users is None
    assert_series_equal(made.training_users(), expected)


def test_the_user_id_map_keeps_a_user_whose_feature_rows_were_all_cold_items():
    from datetime import datetime

    from polars.testing import assert_series_equal

    from recsys.split import Split
    from recsys.windows import Cuts

    def events(rows):
        return pl.DataFrame({"user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows],
                             "timestamp": [datetime(2026, 1, d) for _, _, d in rows]})

    train = events([("A", "cold", 1), ("B", "i1", 2), ("B", "i2", 9)])
    test = events([("B", "i3", 20)])
    # the label cut put B's i2 in the label window; the cold-items protocol took "cold" (A's only
    # feature-window row) out of the feature window, so A is in neither counted set
    nested = Split(kind="temporal", train=events([("B", "i1", 2)]), test=events([("B", "i2", 9)]),
                   impressions_train=None, impressions_test=None)
    cuts = Cuts(split=Split(kind="temporal", train=train, test=test, impressions_train=None, impressions_test=None),
                cold_items=None, nested=nested, feature_cold=pl.Series("item_id", ["cold"]), extra=[],
                feature_users=pl.Series("user_id", ["B"]))
    assert_series_equal(cuts.training_users(), pl.Series("user_id", ["A", "B"]))


def _label_users_reference(feature, label, n_items, feature_cold, label_impressions):
    """The check's label users as first written (distinct pairs, per-user item lists): the reference."""
    pair = ["user_id", "item_id"]
    seen = feature.select(pair).unique()
    fresh = label.select(pair).unique().join(seen, on=pair, how="anti")
    users = (fresh.filter(pl.col("user_id").is_in(seen["user_id"].unique().implode()))
             .group_by("user_id").agg(pl.len().alias("n_fresh"), pl.col("item_id"))
             .join(seen.group_by("user_id").len("n_seen"), on="user_id", how="left")
             .sort("user_id"))
    usable = users["n_seen"] + users["n_fresh"] < n_items
    if feature_cold is not None and feature_cold.len():
        cold_taken = users["item_id"].list.eval(pl.element().is_in(feature_cold.implode()).sum()).list.first()
        usable = usable | ((cold_taken >= 1) & (cold_taken < feature_cold.len()))
    if label_impressions is not None and label_impressions.height:
        mixed = (label_impressions.group_by("impression_id", "user_id")
                 .agg(pl.col("clicked").max().alias("hi"), pl.col("clicked").min().alias("lo"))
                 .filter((pl.col("hi") == 1) & (pl.col("lo") == 0))["user_id"].unique())
        usable = usable | users["user_id"].is_in(mixed.implode())
    return users["user_id"], usable.to_numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_cold", [False, True])
@pytest.mark.parametrize("with_impressions", [False, True])
def test_label_users_equal_the_distinct_pair_reference(seed, with_cold, with_impressions):
    """Repeated rows, users whose row counts reach the catalog size but whose distinct items do not
    (the exact recount), users who took every item, cold items and impressions."""
    from recsys.data_checks import label_users
    rng = np.random.default_rng(seed)
    n_items = 12

    def events(n):
        return pl.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, 40, n)],
                             "item_id": [f"i{i}" for i in rng.integers(0, n_items, n)]})
    feature, label = events(400), events(120)
    greedy = pl.DataFrame({"user_id": ["u99"] * (n_items - 1), "item_id": [f"i{i}" for i in range(n_items - 1)]})
    feature = pl.concat([feature, greedy, greedy.head(3)])  # u99 takes the last item next: no negative left
    label = pl.concat([label, pl.DataFrame({"user_id": ["u99", "u98"], "item_id": [f"i{n_items - 1}", "i1"]})])
    cold = pl.Series("item_id", ["i3", "i7"]) if with_cold else None
    impressions = None
    if with_impressions:
        n = 300
        impressions = pl.DataFrame({"impression_id": [f"m{m}" for m in rng.integers(0, 60, n)],
                                    "user_id": [f"u{u}" for u in rng.integers(0, 40, n)],
                                    "clicked": rng.integers(0, 2, n).astype(np.int8)})
    rows = feature.group_by("user_id").len("n_rows")
    users, usable = label_users(feature, rows, label, n_items, cold, impressions)
    ref_users, ref_usable = _label_users_reference(feature, label, n_items, cold, impressions)
    assert users.to_list() == ref_users.to_list()
    np.testing.assert_array_equal(usable, ref_usable)
    assert "u98" not in users.to_list()  # no feature-window history
    assert not usable[users.to_list().index("u99")]
    assert usable.sum() >= len(users) // 2


def test_a_fresh_test_pair_past_the_first_rows_is_still_found(monkeypatch):
    """The first look at the test split finds nothing here; the full pass still finds the one user."""
    import recsys.data_checks as checks
    monkeypatch.setattr(checks, "_FIRST_LOOK_ROWS", 2)
    train = pl.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["i1", "i1", "i1"]})
    test = pl.DataFrame({"user_id": ["a", "x", "c"], "item_id": ["i1", "i2", "i2"]})  # c takes a new item
    checks._check_test_users("t", "p", train, test, 3)
    with pytest.raises(DataValidationError, match=r"of the 2 user\(s\) in the test split, 1 have training history"):
        checks._check_test_users("t", "p", train, test.head(2), 3)
