import polars as pl

from recsys.streamed import all_in, distinct, rows_matching, rows_per_key


def test_rows_per_key_counts_every_row_of_each_key():
    frame = pl.DataFrame({"user_id": ["u2", "u1", "u2", "u3", "u2"], "item_id": list("abcde")})
    counts = rows_per_key(frame, "user_id", "n_rows").sort("user_id")
    assert counts.rows() == [("u1", 1), ("u2", 3), ("u3", 1)]
    assert counts.columns == ["user_id", "n_rows"]
    assert rows_per_key(frame.head(0), "user_id", "n_rows").height == 0


def test_distinct_keeps_each_value_once():
    column = pl.Series("user_id", ["b", "a", "b", None, "a", None])
    assert sorted(distinct(column).to_list(), key=str) == [None, "a", "b"]
    assert distinct(column).name == "user_id"


def test_rows_matching_gives_the_positions_of_values_the_other_side_holds():
    keys = pl.Series([5, 1, 7, 5, 2], dtype=pl.UInt64)
    other = pl.Series([5, 2, 2, 9], dtype=pl.UInt64)
    assert sorted(rows_matching(keys, other).to_list()) == [0, 3, 4]
    assert rows_matching(keys, other.head(0)).len() == 0


def test_all_in_is_false_when_one_value_is_missing_or_null():
    catalog = pl.Series(["a", "b", "c"])
    assert all_in(pl.Series("item_id", ["b", "a", "b"]), catalog)
    assert not all_in(pl.Series("item_id", ["b", "x", "b"]), catalog)
    assert not all_in(pl.Series("item_id", ["b", None]), catalog)
    assert all_in(pl.Series("item_id", [], dtype=pl.String), catalog)
