"""Training examples of the text model: next-item pairs and hard negatives from impressions."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from training.text_finetune import next_item_examples, with_hard_negatives

T0 = datetime(2026, 1, 1)


def test_examples_pair_each_click_with_its_history_and_the_unclicked_items_shown_beside_it():
    events = pl.DataFrame({"user_idx": [0, 0, 0, 1], "item_idx": [5, 6, 7, 5],
                           "timestamp": [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0]})
    impressions = pl.DataFrame({
        "impression_id": ["a", "a", "a", "b", "b"],
        "user_idx": [0, 0, 0, 0, 0],
        "item_idx": [6, 8, 9, 7, 6],
        "timestamp": [T0 + timedelta(hours=1)] * 3 + [T0 + timedelta(hours=2)] * 2,
        "clicked": [1, 0, 0, 1, 0],
    })
    out = next_item_examples(events, history_len=5, impressions=impressions)
    rows = {row["target"]: row for row in out.iter_rows(named=True)}
    assert rows[6]["history"] == [5] and sorted(rows[6]["negatives"]) == [8, 9]
    assert rows[7]["history"] == [5, 6] and rows[7]["negatives"] == [6]
    assert out.height == 2  # user 1 has a single click: no example


def test_without_impressions_negatives_are_empty():
    events = pl.DataFrame({"user_idx": [0, 0], "item_idx": [1, 2], "timestamp": [T0, T0 + timedelta(days=1)]})
    out = next_item_examples(events, history_len=5)
    assert out.columns == ["history", "target", "negatives"]
    assert out.row(0) == ([1], 2, [])


def test_length_buckets_partition_the_examples_into_length_bands():
    import numpy as np

    from training.text_finetune import _length_buckets

    lengths = np.array([30, 5, 12, 48, 7, 22, 40, 9])
    bands = _length_buckets(lengths, 4)
    assert sorted(np.concatenate(bands).tolist()) == list(range(8))
    assert [sorted(lengths[b].tolist()) for b in bands] == [[5, 7], [9, 12], [22, 30], [40, 48]]
    assert len(_length_buckets(lengths, 1)) == 1 and len(_length_buckets(lengths[:2], 4)) == 2


def test_attention_pooling_starts_as_the_recency_mean_and_attends_to_matching_items():
    import numpy as np

    from features.text_interest import HistoryPooling, vector_from_history

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    history = np.array([0, 3, 5])
    plain = vector_from_history(history, vectors, half_life=5.0)
    start = vector_from_history(history, vectors, half_life=5.0, pooling=HistoryPooling.recency(5.0, 8))
    np.testing.assert_allclose(start, plain, atol=1e-6)
    # a query aligned with the oldest item pulls the user vector towards it
    focused = vector_from_history(history, vectors, half_life=5.0,
                                  pooling=HistoryPooling(query=10 * vectors[0], slope=-0.1386))
    assert focused @ vectors[0] > plain @ vectors[0] + 0.1


def _exploded_lists_examples(events: pl.DataFrame, history_len: int,
                             impressions: pl.DataFrame | None = None) -> pl.DataFrame:
    """The first implementation of the histories (whole per-user lists exploded), kept as the
    reference; the hard negatives are added by the shared ``with_hard_negatives``."""
    examples = (
        events.sort("timestamp", maintain_order=True)
        .group_by("user_idx", maintain_order=True)
        .agg(pl.col("item_idx"), pl.col("timestamp"))
        .with_columns(pl.col("item_idx").list.len().alias("_n"))
        .filter(pl.col("_n") >= 2)
        .with_columns(pl.int_ranges(1, pl.col("_n")).alias("_pos"))
        .explode("_pos")
        .select(
            pl.col("item_idx").list.slice(pl.max_horizontal(pl.col("_pos") - history_len, 0),
                                          pl.min_horizontal(pl.col("_pos"), history_len)).alias("history"),
            pl.col("item_idx").list.get(pl.col("_pos")).alias("target"),
            pl.col("timestamp").list.get(pl.col("_pos")).alias("_time"),
            pl.col("user_idx").alias("_user"),
        )
    )
    return with_hard_negatives(examples, impressions)  # the negatives' join is shared, not re-implemented


@pytest.mark.parametrize("history_len", [0, 1, 3, 20])
def test_examples_equal_the_exploded_lists_reference_with_ties_and_many_users(history_len):
    rng = np.random.default_rng(history_len)
    n = 400
    events = pl.DataFrame({"user_idx": rng.integers(0, 30, n).astype(np.int32),
                           "item_idx": rng.integers(0, 50, n).astype(np.int32),
                           "timestamp": [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 40, n)]})  # many ties
    shown = events.sample(fraction=1.0, seed=1).with_columns(
        pl.format("s{}", pl.col("user_idx") * 100 + pl.col("timestamp").dt.hour()).alias("impression_id"),
        pl.lit(1, dtype=pl.Int8).alias("clicked"))
    extra = shown.with_columns(((pl.col("item_idx") + 7) % 50).alias("item_idx"),
                               pl.lit(0, dtype=pl.Int8).alias("clicked"))
    impressions = pl.concat([shown, extra]).select("impression_id", "user_idx", "item_idx", "timestamp", "clicked")
    for imp in (None, impressions):
        got = next_item_examples(events, history_len, impressions=imp)
        want = _exploded_lists_examples(events, history_len, impressions=imp)
        assert got.schema == want.schema
        assert got.equals(want)
    assert got.height == n - events["user_idx"].n_unique()
    empty = events.clear()
    assert next_item_examples(empty, history_len).equals(_exploded_lists_examples(empty, history_len))
    assert got["negatives"].list.len().sum() > 0  # the impression join is exercised


def test_ragged_rows_equal_the_list_column_row_for_row():
    """The training examples' histories and negatives live in one flat array each (no per-row objects)."""
    from training.text_finetune import _Ragged
    column = pl.Series("h", [[3, 1], [], [7], [2, 2, 9], []], dtype=pl.List(pl.Int32))
    rows = _Ragged(column)
    assert len(rows) == 5
    for i, expected in enumerate(column.to_list()):
        assert rows[i].dtype == np.int64
        assert rows[i].tolist() == expected
