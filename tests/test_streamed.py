import numpy as np
import polars as pl

from recsys.streamed import all_in, distinct, rows_matching, rows_per_key


def test_rows_per_key_counts_every_row_of_each_key():
    frame = pl.DataFrame({"user_id": ["u2", "u1", "u2", None, "u3", "u2", None], "item_id": list("abcdefg")})
    counts = rows_per_key(frame, "user_id", "n_rows").sort("user_id", nulls_last=True)
    assert counts.rows() == [("u1", 1), ("u2", 3), ("u3", 1), (None, 2)]
    assert counts.columns == ["user_id", "n_rows"]
    assert counts.schema["n_rows"] == frame.group_by("user_id").len("n_rows").schema["n_rows"]  # the index dtype
    assert rows_per_key(frame.head(0), "user_id", "n_rows").height == 0


def test_distinct_keeps_each_value_once():
    column = pl.Series("user_id", ["b", "a", "b", None, "a", None])
    assert sorted(distinct(column).to_list(), key=str) == [None, "a", "b"]
    assert distinct(column).name == "user_id"
    assert distinct(column.head(0)).len() == 0


def test_rows_matching_gives_the_positions_of_values_the_other_side_holds():
    keys = pl.Series([5, 1, 7, 5, None, 2], dtype=pl.UInt64)
    other = pl.Series([5, 2, 2, 9, None], dtype=pl.UInt64)
    assert sorted(rows_matching(keys, other).to_list()) == [0, 3, 5]  # nulls match nothing, repeats once
    assert rows_matching(keys, other.head(0)).len() == 0
    assert rows_matching(keys.head(0), other).len() == 0


def test_all_in_is_false_when_one_value_is_missing_or_null():
    catalog = pl.Series(["a", "b", "c"])
    assert all_in(pl.Series("item_id", ["b", "a", "b"]), catalog)
    assert not all_in(pl.Series("item_id", ["b", "x", "b"]), catalog)
    assert not all_in(pl.Series("item_id", ["b", None]), catalog)
    assert all_in(pl.Series("item_id", [], dtype=pl.String), catalog)
    assert not all_in(pl.Series("item_id", ["a"]), catalog.head(0))


def test_streamed_results_equal_the_eager_ones_on_many_shuffled_rows():
    # Enough rows for the streaming engine to split the work into several morsels.
    rng = np.random.default_rng(0)
    users = pl.Series("user_id", [f"U{i}" for i in rng.integers(0, 20_000, 300_000)])
    frame = users.to_frame()
    want = frame.group_by("user_id").len("n").sort("user_id")
    assert rows_per_key(frame, "user_id", "n").sort("user_id").equals(want)
    assert distinct(users).sort().equals(users.unique().sort())
    keys = pl.Series(rng.integers(0, 1 << 40, 300_000, dtype=np.uint64))
    other = pl.concat([keys.sample(50_000, seed=1), pl.Series(rng.integers(0, 1 << 40, 100_000, dtype=np.uint64))])
    assert np.array_equal(np.sort(rows_matching(keys, other).to_numpy()),
                          np.flatnonzero(keys.is_in(other.implode()).to_numpy()))
    assert all_in(users, users.unique()) and not all_in(users, users.unique().slice(1))
