"""EASE / cosine item-to-item models, within-query ranks, text popularity and cold-item picking."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from features.item_item import fit_item_item
from features.ranking_frame import rank_within_query
from features.text_popularity import fit_text_popularity, predict_text_popularity
from recsys.cold_items import pick_cold_items, without_items
from recsys.errors import ConfigError


@pytest.fixture
def user_items() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = (rng.random((60, 12)) < 0.3).astype(np.float32) * rng.integers(1, 6, (60, 12))  # ratings as weights
    return sp.csr_matrix(dense)


def test_ease_matches_the_closed_form_on_the_binary_matrix(user_items):
    model = fit_item_item(user_items, kind="ease", regularization=5.0, neighbours=12)
    x = (user_items.toarray() > 0).astype(np.float64)
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(12))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights.toarray(), b, atol=1e-5)
    np.testing.assert_allclose(model.user_scores(sp.csr_matrix(x)), x @ b, atol=1e-4)


def test_pruning_keeps_each_items_strongest_votes(user_items):
    full = fit_item_item(user_items, kind="ease", regularization=5.0, neighbours=12).weights.toarray()
    pruned = fit_item_item(user_items, kind="ease", regularization=5.0, neighbours=3).weights
    assert np.diff(pruned.indptr).max() == 3
    row = full[0]
    kept = set(np.argsort(-np.abs(row))[:3])
    assert set(pruned[0].indices) == kept


def test_pair_scores_equal_the_dense_scores_and_unknown_users_are_nan(user_items):
    model = fit_item_item(user_items, kind="cosine", neighbours=12)
    history = sp.csr_matrix((user_items.toarray() > 0).astype(np.float32))
    dense = model.user_scores(history)
    users = np.array([3, -1, 3, 59, 0])
    items = np.array([1, 2, 11, 0, 5])
    out = model.pair_scores(history, users, items)
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3, 4]], dense[users[[0, 2, 3, 4]], items[[0, 2, 3, 4]]], rtol=1e-6)
    cos = model.weights.toarray()
    np.testing.assert_allclose(cos, cos.T, atol=1e-6)
    assert np.all(np.diag(cos) == 0)


def test_pair_scores_split_into_many_user_blocks_equal_the_dense_scores(user_items, monkeypatch):
    from features import item_item

    model = fit_item_item(user_items, kind="ease", regularization=5.0, neighbours=12)
    history = sp.csr_matrix((user_items.toarray() > 0).astype(np.float32))
    dense = model.user_scores(history)
    rng = np.random.default_rng(4)
    users, items = rng.integers(0, 60, 500), rng.integers(0, 12, 500)
    monkeypatch.setattr(item_item, "_BLOCK_ENTRIES", 30)  # a few users per block
    np.testing.assert_allclose(model.pair_scores(history, users, items), dense[users, items], rtol=1e-5, atol=1e-6)
    sparse = model.user_scores_sparse(history[:5])
    assert sp.issparse(sparse) and sparse.dtype == np.float32
    np.testing.assert_allclose(sparse.toarray(), dense[:5], atol=1e-6)


def test_ease_falls_back_to_cosine_above_max_items(user_items):
    assert fit_item_item(user_items, kind="ease", max_items=10).kind == "cosine"
    with pytest.raises(ConfigError, match="unknown item-to-item model 'knn'"):
        fit_item_item(user_items, kind="knn")


def test_new_items_get_zero_weights(user_items):
    model = fit_item_item(user_items, kind="ease", regularization=5.0).with_new_items(2)
    assert model.weights.shape == (14, 14)
    assert model.weights[12:].nnz == 0 and model.weights[:, 12:].nnz == 0


def test_rank_within_query_is_a_share_of_the_query_best_first_and_keeps_nan():
    query = np.array([0, 0, 1, 0, 1, 1])
    values = np.array([0.2, 0.9, 5.0, np.nan, -1.0, 7.0])
    ranks = rank_within_query(query, values)
    # (rank - 0.5) / known values in the query: 2 known in query 0, 3 in query 1.
    assert ranks[[1, 0]].tolist() == pytest.approx([0.25, 0.75]) and np.isnan(ranks[3])
    assert ranks[[5, 2, 4]].tolist() == pytest.approx([1 / 6, 3 / 6, 5 / 6])


def test_text_popularity_learns_a_linear_signal_and_ignores_unseen_items():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    counts = np.expm1(np.clip(2.0 + vectors[:, 0], 0, None)).round()
    counts[:50] = 0  # unseen: left out of the fit, still predicted
    weights = fit_text_popularity(vectors, counts, regularization=1.0)
    predicted = predict_text_popularity(vectors, weights)
    assert weights.shape == (9,)
    assert np.corrcoef(predicted[:50], vectors[:50, 0])[0, 1] > 0.9
    # Unseen items take no part in the fit: the intercept is the seen items' mean log count
    # (with them, the zeros would pull it down to about 1.77).
    assert weights[-1] == pytest.approx(np.log1p(counts[counts > 0]).mean(), rel=1e-6)
    assert weights[-1] == pytest.approx(2.1344, abs=1e-4)
    assert np.all(fit_text_popularity(vectors, np.zeros(400)) == 0)


def test_cold_items_are_a_seeded_share_of_interacted_items():
    events = pl.DataFrame({"item_id": [f"i{n}" for n in range(10)] * 2, "user_id": ["u"] * 20})
    cold = pick_cold_items(events, 0.3, seed=4)
    assert cold.len() == 3 and cold.to_list() == pick_cold_items(events, 0.3, seed=4).to_list()
    assert cold.to_list() == sorted(cold.to_list()) and set(cold) <= set(events["item_id"])
    # The seed picks them: over ten seeds of 3 of 10 items, not one fixed set.
    assert len({tuple(pick_cold_items(events, 0.3, seed=s).to_list()) for s in range(10)}) > 5
    assert without_items(events, cold).height == 14
    assert without_items(None, cold) is None
    with pytest.raises(ConfigError, match="leaves 0 cold items"):
        pick_cold_items(events, 0.01, seed=4)


def test_edlae_dropout_adds_a_popularity_penalty_to_lambda(user_items):
    model = fit_item_item(user_items, kind="ease", regularization=5.0, neighbours=12, dropout=0.5)
    x = (user_items.toarray() > 0).astype(np.float64)
    gram = x.T @ x
    p = np.linalg.inv(gram + np.diag(5.0 + 1.0 * np.diag(gram)))  # p / (1 - p) = 1 at p = 0.5
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights.toarray(), b, atol=1e-5)
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\), got 1.0"):
        fit_item_item(user_items, dropout=1.0)


def test_session_co_occurrence_joins_the_user_co_occurrence(user_items):
    rng = np.random.default_rng(1)
    sessions = sp.csr_matrix((rng.random((25, 12)) < 0.25).astype(np.float32) * 3)  # weights: only 0/1 counts
    model = fit_item_item(user_items, kind="ease", regularization=5.0, neighbours=12, sessions=sessions,
                          session_weight=2.0)
    x = (user_items.toarray() > 0).astype(np.float64)
    s = (sessions.toarray() > 0).astype(np.float64)
    p = np.linalg.inv(x.T @ x + 2.0 * s.T @ s + 5.0 * np.eye(12))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights.toarray(), b, atol=1e-5)
    cosine = fit_item_item(user_items, kind="cosine", neighbours=12, sessions=sessions, session_weight=2.0)
    co = x.T @ x + 2.0 * s.T @ s
    expected = co / np.sqrt(np.outer(np.diag(co), np.diag(co)))
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(cosine.weights.toarray(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="sessions have 5 item columns, user_items 12"):
        fit_item_item(user_items, sessions=sp.csr_matrix((3, 5), dtype=np.float32))


def test_sessions_break_where_a_users_gap_exceeds_the_limit():
    from datetime import datetime, timedelta

    from features.user_items import build_session_items
    from recsys.idmap import IdMap

    t0 = datetime(2024, 1, 1)
    seconds = {"u1": [0, 30, 50, 200, 230], "u2": [10, 500]}
    order = {"u1": ["a", "b", "a", "c", "d"], "u2": ["b", "c"]}
    rows = [(u, i, t0 + timedelta(seconds=s)) for u in seconds for i, s in zip(order[u], seconds[u], strict=True)]
    events = pl.DataFrame(rows[::-1], schema=["user_id", "item_id", "timestamp"], orient="row")  # any row order
    items = IdMap(kind="item").fit(pl.Series(["a", "b", "c", "d"]))
    sessions = build_session_items(events, items, gap_seconds=60)
    # u1: {a, b} (a twice counts once), {c, d}; u2: {b}, {c} (490 s apart)
    assert sessions.toarray().tolist() == [[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert build_session_items(events, items, gap_seconds=1000).shape == (2, 4)
    with pytest.raises(ValueError, match="gap_seconds must be positive, got 0"):
        build_session_items(events, items, gap_seconds=0)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("item_item_dropout", 1.0, r"item_item_dropout must be in \[0, 1\), got 1.0"),
    ("item_item_session_gap_seconds", -5.0, "item_item_session_gap_seconds must be 0 \\(off\\) or positive, got -5.0"),
    ("item_item_session_weight", -1.0, "item_item_session_weight must be 0 \\(off\\) or positive, got -1.0"),
])
def test_item_to_item_settings_are_validated(key, value, message):
    from recsys.config import PipelineConfig

    with pytest.raises(ConfigError, match=message):
        PipelineConfig.from_dict({key: value})


@pytest.mark.parametrize("block_entries", [1, 40, 10**9])  # a row per block, a few rows, one block
def test_cosine_in_blocks_of_item_rows_equals_the_whole_matrix_cosine_pruned(block_entries):
    from features.item_item import _cosine_weights, _prune_rows, binary

    ui = sp.random(300, 120, density=0.08, random_state=1, format="csr", dtype=np.float32)
    sessions = sp.random(500, 120, density=0.05, random_state=2, format="csr", dtype=np.float32)
    ui, sessions = ui.tolil(), sessions.tolil()
    ui[:, 17] = 0  # a cold item: no users or sessions, an all-zero row and column
    sessions[:, 17] = 0
    ui, sessions = ui.tocsr(), sessions.tocsr()
    x, s = binary(ui), binary(sessions)
    # The whole-matrix computation this replaces, as it was: the same kept values and columns.
    whole = (x.T @ x).tocsr()
    whole = (whole + 0.7 * (s.T @ s)).tocsr()
    norm32 = np.sqrt(whole.diagonal()).astype(np.float32)
    norm32[norm32 == 0] = 1.0
    whole = (sp.diags(1.0 / norm32) @ whole @ sp.diags(1.0 / norm32)).tocsr().astype(np.float32)
    whole.setdiag(0.0)
    whole.eliminate_zeros()
    reference = _prune_rows(whole, 8)
    reference.sort_indices()
    counts = (x.T @ x + 0.7 * (s.T @ s)).toarray().astype(np.float64)
    norm = np.sqrt(np.diag(counts))
    norm[norm == 0] = 1.0
    cosine = counts / norm[:, None] / norm[None, :]
    np.fill_diagonal(cosine, 0.0)
    got, pairs = _cosine_weights(x, s, 0.7, neighbours=8, block_entries=block_entries)
    # every block's pairs add up to the whole counts' stored entries off the diagonal
    counts = (x.T @ x + 0.7 * (s.T @ s)).tocsr()
    assert pairs == counts.nnz - np.count_nonzero(counts.diagonal()) > got.nnz
    assert counts.diagonal()[17] == 0 and np.count_nonzero(counts.diagonal()) == 119  # the cold item has none
    assert got.shape == (120, 120) and got.dtype == np.float32
    assert got.diagonal().tolist() == [0.0] * 120
    one_block, one_block_pairs = _cosine_weights(x, s, 0.7, neighbours=8, block_entries=10**9, threads=1)
    assert one_block_pairs == pairs
    assert (got != one_block).nnz == 0 and (got.indices == one_block.indices).all()  # bit for bit, same order
    for threads in (1, 3):  # blocks on one thread, and on three at once
        other, _ = _cosine_weights(x, s, 0.7, neighbours=8, block_entries=block_entries, threads=threads)
        assert (other != one_block).nnz == 0 and (other.indices == one_block.indices).all()
    assert _cosine_weights(x, s, 0.7, neighbours=0, block_entries=block_entries)[0].nnz == 0
    ordered = got.copy()
    ordered.sort_indices()
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(ordered, name), getattr(reference, name)), name
    assert got.getrow(17).nnz == 0 and got.getcol(17).nnz == 0
    for item in range(120):  # each row keeps its 8 largest cosines (values to float32 rounding)
        row = got.getrow(item)
        strongest = np.sort(cosine[item])[::-1][:8]
        assert row.nnz == min(8, np.count_nonzero(cosine[item]))
        np.testing.assert_allclose(np.sort(row.data)[::-1], strongest[:row.nnz], rtol=1e-5)


@pytest.mark.parametrize("neighbours", [37, 400, 450])
def test_item_to_item_and_cooccurrence_from_one_fit_equal_their_separate_fits(neighbours):
    from features.item_item import COOCCURRENCE_NEIGHBOURS, fit_item_item, fit_with_cooccurrence

    # 600 items with rows of ~500 co-occurring items: both prunings cut, with ties (0/1 counts).
    ui = sp.random(700, 600, density=0.3, random_state=3, format="csr", dtype=np.float32)
    model, baseline = fit_with_cooccurrence(ui, kind="ease", neighbours=neighbours, max_items=100)
    alone = fit_item_item(ui, kind="ease", neighbours=neighbours, max_items=100)
    baseline_alone = fit_item_item(ui, kind="cosine", neighbours=COOCCURRENCE_NEIGHBOURS)
    assert model.kind == "cosine" and baseline is not None
    assert np.diff(model.weights.indptr).max() == neighbours
    for got, want in ((model, alone), (baseline, baseline_alone)):
        got_w, want_w = got.weights.copy(), want.weights.copy()
        got_w.sort_indices()
        want_w.sort_indices()
        for name in ("indptr", "indices", "data"):
            assert np.array_equal(getattr(got_w, name), getattr(want_w, name)), name


def test_no_shared_cooccurrence_for_ease_or_sessions():
    from features.item_item import fit_with_cooccurrence

    ui = sp.random(200, 80, density=0.1, random_state=4, format="csr", dtype=np.float32)
    model, baseline = fit_with_cooccurrence(ui, kind="ease", neighbours=10, max_items=100)
    assert (model.kind, baseline) == ("ease", None)
    sessions = sp.random(300, 80, density=0.05, random_state=5, format="csr", dtype=np.float32)
    model, baseline = fit_with_cooccurrence(ui, kind="cosine", neighbours=10, sessions=sessions, session_weight=0.5)
    assert (model.kind, baseline) == ("cosine", None)


def _lexsort_pruned(matrix: sp.csr_matrix, keep: int, first_row: int) -> sp.csr_matrix:
    """The per-row sort this pruning replaced: strongest magnitudes, ties by the tie rule."""
    from features.ties import tie_keys

    rows, cols, vals = [], [], []
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        values, columns = matrix.data[start:stop], matrix.indices[start:stop]
        top = np.lexsort((tie_keys(0, first_row + row, columns), -np.abs(values)))[:keep]
        rows += [row] * len(top)
        cols += list(columns[top])
        vals += list(values[top])
    out = sp.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=matrix.shape)
    out.sort_indices()
    return out


@pytest.mark.parametrize("keep", [1, 3, 6, 50])
def test_pruning_keeps_the_strongest_entries_with_ties_by_the_tie_rule(keep):
    from features.item_item import _prune_rows

    rng = np.random.default_rng(keep)
    dense = rng.integers(-3, 4, (40, 30)).astype(np.float32) / 4  # many ties in magnitude, both signs
    dense[rng.random((40, 30)) < 0.3] = 0
    matrix = sp.csr_matrix(dense)
    got = _prune_rows(matrix, keep, first_row=1000)
    want = _lexsort_pruned(matrix, keep, first_row=1000)
    got.sort_indices()
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert got.dtype == np.float32 and np.diff(got.indptr).max() == min(keep, np.diff(matrix.indptr).max())
    assert _prune_rows(matrix, 0).nnz == 0
    unpruned = _prune_rows(matrix, 100)  # nothing to cut: a copy, sharing no array with the input
    assert (unpruned != matrix).nnz == 0 and not np.shares_memory(unpruned.indices, matrix.indices)
    # Another block offset is another tie rule draw: the tied entries kept differ somewhere.
    if keep in (3, 6):
        other = _prune_rows(matrix, keep, first_row=0)
        other.sort_indices()
        assert not np.array_equal(other.indices, got.indices)
