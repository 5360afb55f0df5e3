"""The one tie rule (features/ties.py) and the catalog-order guarantees that rest on it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from features.bundle import head_k
from features.candidates import top_n, top_n_entries
from features.ranking_frame import rank_within_query
from features.ties import tie_keys


def test_tie_keys_depend_on_seed_query_and_item_only():
    items = np.arange(50)
    a = tie_keys(3, 7, items)
    assert a.dtype == np.uint64 and len(np.unique(a)) == 50
    np.testing.assert_array_equal(a, tie_keys(3, np.full(50, 7), items))  # scalar query = broadcast
    np.testing.assert_array_equal(a[::-1], tie_keys(3, 7, items[::-1]))  # a key belongs to its item, not its row
    assert not np.array_equal(a, tie_keys(4, 7, items))
    assert not np.array_equal(a, tie_keys(3, 8, items))
    # Not the item order in disguise: the ranks of the keys are far from 0..49.
    assert abs(np.corrcoef(np.argsort(np.argsort(a)), items)[0, 1]) < 0.5


def test_rank_within_query_shares_ties_and_scales_by_query_size():
    query = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    values = np.array([3.0, 1.0, 3.0, np.nan, *np.arange(10, 0, -1, dtype=float)])
    ranks = rank_within_query(query, values)
    # Query 0: three known values, the two 3.0 share positions 1 and 2 -> midrank 1.5.
    assert ranks[:3].tolist() == pytest.approx([(1.5 - 0.5) / 3, (3 - 0.5) / 3, (1.5 - 0.5) / 3])
    assert np.isnan(ranks[3])
    # Query 1 (10 rows): the best is 0.05, the worst 0.95 -- the same as in any other query size.
    assert ranks[4] == pytest.approx(0.05) and ranks[13] == pytest.approx(0.95)
    big = rank_within_query(np.zeros(300, dtype=np.int64), np.arange(300, 0, -1, dtype=float))
    assert big[0] == pytest.approx(0.5 / 300) and big[149] == pytest.approx(149.5 / 300)


def test_rank_within_query_ignores_row_order():
    rng = np.random.default_rng(0)
    query = rng.integers(0, 5, 200)
    values = rng.integers(0, 4, 200).astype(float)  # many ties
    perm = rng.permutation(200)
    np.testing.assert_array_equal(rank_within_query(query, values)[perm], rank_within_query(query[perm], values[perm]))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # +-1e39 as float32, in both paths
def test_rank_within_query_of_grouped_queries_equals_the_one_sort(monkeypatch):
    """Contiguous queries (the ranking frame's layout) are ranked on a padded grid of short sorts;
    on ties, 0.0 against -0.0, +-inf, values that overflow float32, subnormals, NaN and unequal
    query sizes it gives the one sort's values bit for bit."""
    from features import ranking_frame

    rng = np.random.default_rng(1)
    specials = [np.inf, 1e39, 1e-45, -1e-45, 0.0, -0.0]
    cases = []
    for trial in range(300):
        sizes = rng.integers(5, 9, size=rng.integers(1, 40))  # close sizes: the grid path
        query = np.repeat(rng.permutation(1000)[:len(sizes)] if trial % 2 else np.arange(len(sizes)), sizes)
        values = rng.integers(-3, 4, len(query)).astype(float) if trial % 3 == 0 else rng.random(len(query))
        if trial % 7 == 0:
            values = values * 0.0 * np.sign(rng.random(len(query)) - 0.5)  # 0.0 and -0.0 mixed
        if trial % 5 == 1:
            values[rng.random(len(query)) < 0.3] = rng.choice(specials)
        if trial % 50 == 0:
            values[rng.random(len(query)) < 0.2] = -np.inf if trial % 100 else -1e39  # -inf as float32
        values[rng.random(len(query)) < 0.1] = np.nan
        cases.append((query, values))
    on_grid = sum(ranking_frame._grouped_ranks(q[~np.isnan(v)], v[~np.isnan(v)]) is not None for q, v in cases)
    assert on_grid >= 280  # all but the -inf cases and the rare ones NaN leaves mostly padding
    assert ranking_frame._grouped_ranks(np.array([1, 2, 1]), np.array([0.5, 0.1, 0.2])) is None  # not contiguous
    grouped = [rank_within_query(q, v) for q, v in cases]
    monkeypatch.setattr(ranking_frame, "_grouped_ranks", lambda *a: None)
    for (query, values), fast in zip(cases, grouped, strict=True):
        np.testing.assert_array_equal(fast, rank_within_query(query, values))


def test_top_n_breaks_ties_by_the_seeded_hash_not_the_index():
    scores = np.zeros((2, 40), dtype=np.float32)
    scores[:, 39] = 1.0  # one clear winner, then 39 tied items
    query = np.array([5, 6])
    picked = top_n(scores, 6, seed=0, query=query)
    assert picked[:, 0].tolist() == [39, 39]
    expected = [list(np.argsort(tie_keys(0, q, np.arange(39)), kind="stable")[:5]) for q in query]
    assert picked[:, 1:].tolist() == expected
    assert picked[0, 1:].tolist() != [0, 1, 2, 3, 4]  # not index order
    assert picked[0].tolist() != picked[1].tolist()  # each query has its own order
    assert top_n(scores, 6, seed=1, query=query).tolist() != picked.tolist()


def test_top_n_pads_with_minus_one_and_never_picks_nan():
    scores = np.array([[np.nan, 2.0, -np.inf, 1.0]], dtype=np.float32)
    assert top_n(scores, 4, seed=0, query=np.array([0])).tolist() == [[1, 3, -1, -1]]


def test_top_n_entries_matches_a_full_sort_reference():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=(30, 500)).astype(np.float32)  # heavy ties
    query = np.arange(30) * 3
    rows, cols = top_n_entries(scores, 20, seed=9, query=query)
    for r in range(30):
        keys = tie_keys(9, query[r], np.arange(500))
        reference = np.lexsort((keys, -scores[r]))[:20]
        assert cols[rows == r].tolist() == reference.tolist()


def test_head_k_is_the_same_whatever_the_row_order_and_batch_position():
    rng = np.random.default_rng(2)
    frame = pl.DataFrame({"query_idx": np.repeat([0, 1], 30).astype(np.int32),
                          "user_idx": np.repeat([11, 4], 30).astype(np.int32),
                          "item_idx": np.tile(np.arange(30), 2).astype(np.int32),
                          "score": rng.integers(0, 3, 60).astype(np.float32)})
    top = head_k(frame, 5, seed=0)
    shuffled = head_k(frame.sample(fraction=1.0, shuffle=True, seed=1), 5, seed=0)
    assert top.equals(shuffled)
    # User 4 alone in a batch (query 0 instead of 1) gets the same list.
    alone = head_k(frame.filter(pl.col("user_idx") == 4).with_columns(pl.lit(0, dtype=pl.Int32).alias("query_idx")),
                   5, seed=0)
    assert alone["item_idx"].to_list() == top.filter(pl.col("query_idx") == 1)["item_idx"].to_list()
    best = frame.filter(pl.col("query_idx") == 0)["score"].max()
    assert top.filter(pl.col("query_idx") == 0)["score"][0] == best


def test_order_by_score_equals_the_three_key_sort_with_signed_zeros_and_infinities():
    from features.ties import order_by_score

    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(1, 3000))
        query = rng.integers(0, 30, n)
        values = rng.choice(np.array([-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0, np.inf], dtype=np.float32),
                            n)
        users, items = rng.integers(-1, 50, n), rng.permutation(n)
        reference = np.lexsort((tie_keys(trial, users, items), -values.astype(np.float64), query))
        got = order_by_score(query, values, seed=trial, key_query=users, key_item=items)
        np.testing.assert_array_equal(got, reference)
