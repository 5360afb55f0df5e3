"""Training examples of the text model: next-item pairs and hard negatives from impressions."""

from datetime import datetime, timedelta

import polars as pl

from training.text_finetune import next_item_examples

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
