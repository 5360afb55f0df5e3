"""Candidate generation and the ranking frame on a small generated world (no language model:
random unit item vectors stand in for the encoder)."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from features.candidates import generate_candidates, item_item_scores, sparse_top_n_entries, top_n, top_n_entries
from features.ranking_frame import FEATURE_COLUMNS, build_ranking_frame, group_sizes
from features.state import FeatureState, fit_feature_state
from recsys.config import CandidateConfig, PipelineConfig
from recsys.demo_data import DemoSpec, generate_demo
from recsys.idmap import IdMap
from tests.conftest import tiny_config_dict


@pytest.fixture(scope="module")
def state() -> FeatureState:
    data = generate_demo(DemoSpec(n_users=60, n_items=80, days=15, seed=3))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(80, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    users = IdMap(kind="user").fit(data.interactions["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    return fit_feature_state(catalog=data.items, interactions=data.interactions, impressions=data.impressions,
                             item_vectors=vectors, users=users, items=items,
                             config=PipelineConfig.from_dict(tiny_config_dict()))


def test_sparse_top_n_is_the_dense_top_n_of_positive_unseen_scores():
    rng = np.random.default_rng(2)
    for trial in range(40):
        n_rows, n_cols, n = int(rng.integers(1, 10)), int(rng.integers(1, 300)), int(rng.integers(0, 60))
        stored = rng.random((n_rows, n_cols)) < 0.3
        dense = np.where(stored, rng.integers(-3, 6, (n_rows, n_cols)), 0).astype(np.float32)
        seen = rng.random((n_rows, n_cols)) < 0.1
        scores = sp.csr_matrix(dense)
        scores.sort_indices()
        query = np.arange(n_rows) + 7
        rows, cols = sparse_top_n_entries(scores, seen, n, seed=trial, query=query)
        reference = np.where((dense > 0) & ~seen, dense, -np.inf)
        ref_rows, ref_cols = top_n_entries(reference, n, seed=trial, query=query)
        assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == \
            sorted(zip(ref_rows.tolist(), ref_cols.tolist(), strict=True)), trial


def test_item_item_proposes_only_items_its_neighbours_vote_for(state):
    users = np.array([0, 5, -1], dtype=np.int32)
    scores = item_item_scores(state, users)
    dense = state.item_item.user_scores(state.history()[[0, 5]])
    np.testing.assert_allclose(scores.toarray()[:2], dense, atol=1e-6)
    assert scores[2].nnz == 0
    only = CandidateConfig(n_cf=0, n_item_item=500, n_text=0, n_popular=0, n_recent=0)
    candidates = generate_candidates(state, users, only, seed=0, source_counts={name: 0 for name in state.sources})
    for q in (0, 1):
        got = set(candidates.filter(pl.col("query_idx") == q)["item_idx"].to_list())
        seen = set(state.seen[users[q]].indices.tolist())
        assert got == set(np.flatnonzero(dense[q] > 0).tolist()) - seen
    assert candidates.filter(pl.col("query_idx") == 2).height == 0


def test_top_n_returns_best_first():
    scores = np.array([[0.1, 0.9, 0.5, -np.inf], [3.0, 2.0, 1.0, 0.0]])
    assert top_n(scores, 2, seed=0, query=np.array([0, 1])).tolist() == [[1, 2], [0, 1]]


@pytest.mark.parametrize("integer_scores", [False, True])
def test_top_n_entries_is_the_sorted_top_n_with_ties_by_the_tie_rule(integer_scores):
    from features.ties import tie_keys

    rng = np.random.default_rng(1)
    for trial in range(60):
        n_rows, n_cols, n = int(rng.integers(1, 12)), int(rng.integers(1, 900)), int(rng.integers(0, 150))
        scores = (rng.integers(0, 5, size=(n_rows, n_cols)) if integer_scores
                  else rng.standard_normal((n_rows, n_cols))).astype(np.float32)
        scores[rng.random(scores.shape) < 0.3] = -np.inf
        rows, cols = top_n_entries(scores, n, seed=trial, query=np.arange(n_rows))
        expected = set()
        for r in range(n_rows):
            keys = tie_keys(trial, r, np.arange(n_cols))
            best = sorted(range(n_cols), key=lambda c, r=r, keys=keys: (-scores[r, c], keys[c]))[:n]
            expected |= {(r, c) for c in best if np.isfinite(scores[r, c])}
        assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected, trial
        assert len(rows) == len(expected)


def test_one_row_top_n_gives_the_general_paths_entries_in_its_order():
    """A request's single row takes a shorter path; it must pick and order exactly as the
    multi-row path does (ties, NaN, -inf, fewer finite entries than n)."""
    rng = np.random.default_rng(4)
    for trial in range(80):
        n_rows, n_cols, n = int(rng.integers(2, 6)), int(rng.integers(1, 700)), int(rng.integers(1, 120))
        scores = rng.integers(0, 6, size=(n_rows, n_cols)).astype(np.float32) * np.float32(0.5)
        scores[rng.random(scores.shape) < 0.3] = -np.inf
        scores[rng.random(scores.shape) < 0.05] = np.nan
        query = rng.integers(-1, 50, size=n_rows)
        rows, cols = top_n_entries(scores, n, seed=trial, query=query)
        for r in range(n_rows):
            one_rows, one_cols = top_n_entries(scores[r:r + 1], n, seed=trial, query=query[r:r + 1])
            assert one_cols.tolist() == cols[rows == r].tolist(), (trial, r)
            assert set(one_rows.tolist()) <= {0}


def test_candidates_exclude_seen_items_and_are_unique(state):
    config = CandidateConfig(n_cf=10, n_item_item=10, n_text=10, n_popular=5, n_recent=5)
    cands = generate_candidates(state, np.arange(10, dtype=np.int32), config, seed=0,
                                source_counts={"transitions": 5, "text_neighbours": 5})
    seen = state.seen.tocoo()
    seen_pairs = set(zip(seen.row.tolist(), seen.col.tolist(), strict=True))
    pairs = list(zip(cands["user_idx"].to_list(), cands["item_idx"].to_list(), strict=True))
    assert not seen_pairs & set(pairs)
    assert len(pairs) == len(set(pairs))
    assert cands["query_idx"].unique().sort().to_list() == list(range(10))
    # the union of the seven sources: at least one source's 10, at most 10 + 10 + 10 + 5 + 5 + 5 + 5 per user
    per_user = cands.group_by("query_idx").len()["len"]
    assert {"text_neighbours", "transitions"} <= set(state.sources)
    assert per_user.min() >= 10 and per_user.max() <= 45 + 5 * (len(state.sources) - 1)


def test_unknown_user_gets_only_non_personal_candidates(state):
    config = CandidateConfig(n_cf=10, n_text=10, n_popular=5, n_recent=5)
    cands = generate_candidates(state, np.array([-1], dtype=np.int32), config, seed=0)
    got = set(cands["item_idx"].to_list())
    assert cands.height == len(got) > 0
    assert cands["user_idx"].to_list() == [-1] * cands.height
    # Each popularity column gives its 5 best items. Ties at the 5th value may be broken either way,
    # so: every item strictly above the 5th value is in, and 5 items at or above it are in.
    allowed = set()
    for column in ("item_pop_all", "item_pop_1d"):
        values = state.item_features[column].to_numpy()
        fifth = np.sort(values)[::-1][4]
        assert set(np.flatnonzero(values > fifth).tolist()) <= got, column
        assert len(got & set(np.flatnonzero(values >= fifth).tolist())) >= 5, column
        allowed |= set(np.flatnonzero(values >= fifth).tolist())
    assert got <= allowed  # nothing personal (CF, item-to-item, text) for a user the model does not know
    assert 5 <= len(got) <= 10


def test_ranking_frame_keeps_row_order_and_marks_unknowns(state):
    pairs = pl.DataFrame({"query_idx": [0, 0, 1], "user_idx": [3, 3, -1], "item_idx": [5, 2, 5],
                          "label": [1, 0, 0]}).cast({"query_idx": pl.Int32, "user_idx": pl.Int32,
                                                      "item_idx": pl.Int32})
    frame = build_ranking_frame(state, pairs)
    assert frame.select("query_idx", "user_idx", "item_idx", "label").equals(pairs)
    assert all(frame.schema[c] == pl.Float32 for c in FEATURE_COLUMNS)
    known, unknown = frame.row(0, named=True), frame.row(2, named=True)
    assert np.isfinite(known["als_score_query_rank"]) and np.isfinite(known["text_score"])
    assert np.isnan(unknown["als_score_query_rank"]) and np.isnan(unknown["user_history_rel"])
    assert "als_score" not in frame.columns  # raw stage-1 scores change scale with the window: never features
    expected_text = float(state.user_text[3] @ state.item_vectors[5])
    assert known["text_score"] == pytest.approx(expected_text, rel=1e-5)
    assert 0.0 <= known["user_category_affinity"] <= 1.0


def test_group_sizes_require_contiguous_queries():
    frame = pl.DataFrame({"query_idx": [0, 0, 1, 1, 1]})
    assert group_sizes(frame).tolist() == [2, 3]
    with pytest.raises(ValueError, match="must be contiguous"):
        group_sizes(pl.DataFrame({"query_idx": [0, 1, 0]}))


def test_scores_carried_from_candidate_generation_equal_the_computed_features(small_bundle):
    from features.candidates import SOURCE_FEATURES
    from features.ranking_frame import feature_arrays

    state = small_bundle.state
    users = np.array([0, 3, -1, 7], dtype=np.int32)
    carried = generate_candidates(state, users, small_bundle.config.candidates, seed=0, with_scores=True)
    plain = generate_candidates(state, users, small_bundle.config.candidates, seed=0)
    assert carried.select("query_idx", "user_idx", "item_idx").equals(plain)
    scored = (*SOURCE_FEATURES.values(), *(type(source).score_column for source in state.sources.values()))
    assert {"transition_score", "recent_text_score"} <= set(scored)
    known = {name: carried[name].to_numpy() for name in scored}
    args = (state, plain["user_idx"].to_numpy(), plain["item_idx"].to_numpy())
    reused = feature_arrays(*args, query_idx=plain["query_idx"].to_numpy(), known=known)
    computed = feature_arrays(*args, query_idx=plain["query_idx"].to_numpy())
    for name in scored:
        assert np.isfinite(computed[name]).any(), name
        np.testing.assert_allclose(reused[name], computed[name], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
    assert np.isnan(reused["als_score"][plain["user_idx"].to_numpy() == -1]).all()


def test_carried_scores_are_not_computed_again(small_bundle, monkeypatch):
    from features.candidates import SOURCE_FEATURES
    from features.ranking_frame import feature_arrays

    state = small_bundle.state
    carried = generate_candidates(state, np.array([0, 3], dtype=np.int32), small_bundle.config.candidates, seed=0,
                                  with_scores=True)
    scored = (*SOURCE_FEATURES.values(), *(type(source).score_column for source in state.sources.values()))
    known = {name: carried[name].to_numpy() for name in scored}

    def guard(model):
        original = type(model).pair_scores

        def pair_scores(self, *args, **kwargs):
            if self is model:
                raise AssertionError(f"the carried {type(model).__name__} score was computed again")
            return original(self, *args, **kwargs)
        monkeypatch.setattr(type(model), "pair_scores", pair_scores)

    guard(state.als)
    guard(state.item_item)
    for source in state.sources.values():
        guard(source)
    arrays = feature_arrays(state, carried["user_idx"].to_numpy(), carried["item_idx"].to_numpy(),
                            query_idx=carried["query_idx"].to_numpy(), known=known)
    # The carried score is used as it is, except that "no co-occurrence" (0) becomes unknown (NaN).
    carried_item_item = known["item_item_score"]
    expected = np.where(carried_item_item == 0, np.nan, carried_item_item)
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    assert np.array_equal(arrays["item_item_score"], expected, equal_nan=True)


def test_state_round_trips_its_learned_pooling(small_bundle, tmp_path):
    from dataclasses import replace

    from features.state import FeatureState
    from features.text_interest import HistoryPooling

    pooling = HistoryPooling(query=np.linspace(-1, 1, small_bundle.state.item_vectors.shape[1]).astype(np.float32),
                             slope=-0.2)
    replace(small_bundle.state, pooling=pooling).save(tmp_path / "state")
    loaded = FeatureState.load(tmp_path / "state")
    np.testing.assert_array_equal(loaded.pooling.query, pooling.query)
    assert loaded.pooling.slope == -0.2
    small_bundle.state.save(tmp_path / "plain")
    assert FeatureState.load(tmp_path / "plain").pooling is None


@pytest.mark.parametrize("shuffle", [False, True])
def test_head_k_orders_by_score_with_ties_by_the_tie_rule(shuffle):
    from features.bundle import head_k
    from features.ties import tie_keys

    rng = np.random.default_rng(2)
    query = np.repeat(np.arange(50), 30).astype(np.int32)
    item = np.tile(np.arange(30), 50).astype(np.int32)
    score = rng.integers(0, 5, len(query)).astype(np.float32)  # many ties
    user = (query + 100).astype(np.int32)
    scored = pl.DataFrame({"query_idx": query, "user_idx": user, "item_idx": item, "score": score})
    if shuffle:
        scored = scored.sample(fraction=1.0, shuffle=True, seed=3)
    top = head_k(scored, 4, seed=5)
    keyed = scored.with_columns(pl.Series("key", tie_keys(5, scored["user_idx"].to_numpy(),
                                                          scored["item_idx"].to_numpy())))
    expected = (keyed.sort(["query_idx", "score", "key"], descending=[False, True, False])
                .group_by("query_idx", maintain_order=True).head(4))
    assert top.select("query_idx", "item_idx").equals(expected.select("query_idx", "item_idx"))
    assert top["rank"].to_list() == [1, 2, 3, 4] * 50


def test_dense_and_sparse_item_item_picks_give_the_same_candidates_and_scores(state, monkeypatch):
    import features.candidates as candidates

    users = np.array([0, 3, 5, -1, 7, 11], dtype=np.int32)
    config = CandidateConfig(n_cf=5, n_item_item=7, n_text=4, n_popular=3, n_recent=2)
    frames = {}
    for share in (0.0, 2.0):  # every chunk dense, every chunk sparse
        monkeypatch.setattr(candidates, "DENSE_ITEM_ITEM_SHARE", share)
        frames[share] = generate_candidates(state, users, config, seed=4, with_scores=True)
    assert frames[0.0].height > 0
    assert frames[0.0].equals(frames[2.0])


def test_popular_order_is_sorted_once_and_again_when_the_popularity_changes(state):
    """The popularity sources walk a global order: the items by popularity descending, ties by the
    tie rule with one shared key; it is cached per column and seed, and values that change (a
    catalog update) sort again."""
    from dataclasses import replace

    from features.ties import tie_keys

    pop = state.item_features["item_pop_all"].to_numpy()
    order = state.popular_order("item_pop_all", 7)
    items = np.arange(len(pop))
    assert np.array_equal(order, np.lexsort((tie_keys(7, 0, items), -pop)))
    assert np.all(np.diff(pop[order]) <= 0)
    assert state.popular_order("item_pop_all", 7) is order  # cached
    assert not np.array_equal(state.popular_order("item_pop_all", 8), order)  # another seed, other ties
    flipped = replace(state, item_features=state.item_features.with_columns(pl.col("item_pop_all") * -1))
    assert np.array_equal(flipped.popular_order("item_pop_all", 7), np.lexsort((tie_keys(7, 0, items), pop)))


def test_csr_row_entries_are_the_rows_entries_with_minus_one_as_an_empty_row():
    from features.candidates import csr_row_entries

    matrix = sp.random(30, 40, density=0.2, format="csr", random_state=2)
    rows = np.array([5, -1, 5, 0, 29, -1])
    positions, cols = csr_row_entries(matrix, rows)
    for i, row in enumerate(rows):
        expected = [] if row < 0 else matrix[row].indices.tolist()
        assert cols[positions == i].tolist() == expected, i
    assert np.all(np.diff(positions) >= 0)
    assert csr_row_entries(matrix, np.zeros(0, dtype=np.int64))[1].size == 0


def test_nonzero_2d_is_numpys_nonzero():
    from features.candidates import nonzero_2d

    rng = np.random.default_rng(3)
    for shape in [(0, 5), (5, 0), (1, 1), (7, 1), (1, 9), (64, 300), (300, 64)]:
        mask = rng.random(shape) < 0.3
        if shape == (300, 64):
            mask = mask.T  # a Fortran-ordered view
        rows, cols = nonzero_2d(mask)
        expected = np.nonzero(mask)
        np.testing.assert_array_equal(rows, expected[0])
        np.testing.assert_array_equal(cols, expected[1])


@pytest.mark.parametrize("width", [1, 7, 19, 20, 66])
def test_block_maxima_of_narrow_and_wide_blocks(width):
    from features.candidates import _block_max

    scores = np.random.default_rng(width).random((5, 3 * width + 2)).astype(np.float32)
    scores[1, :width] = -np.inf
    scores[2, width] = np.nan  # skipped: its block's maximum is of the other scores
    scores[3, 2 * width:3 * width] = np.nan  # a block of NaN only: NaN
    expected = np.fmax.reduce(scores[:, :3 * width].reshape(5, 3, width), axis=2)
    np.testing.assert_array_equal(_block_max(scores, 3, width), expected)
    assert np.isnan(expected[2, 1]) == (width == 1) and np.isnan(expected[3, 2])  # NaN only for all-NaN blocks


def _count_sorted_entries(monkeypatch) -> list[int]:
    """Record how many entries each call of top_n's sort receives (the list fills as it runs)."""
    from features import candidates

    sizes = []
    order_by_score = candidates.order_by_score

    def counting(rows, values, **kwargs):
        sizes.append(len(rows))
        return order_by_score(rows, values, **kwargs)

    monkeypatch.setattr(candidates, "order_by_score", counting)
    return sizes


def test_top_n_sorts_only_the_scores_near_the_top_when_nan_is_in_every_block(monkeypatch):
    """A model silent on some items (NaN) in every block must not turn the bound into -inf,
    which would send every finite score of the row to the sort (the same answer, far slower)."""
    from features import candidates

    rng = np.random.default_rng(5)
    scores = rng.random((4, 4_000)).astype(np.float32)
    scores[:, ::37] = np.nan  # 40 blocks of 100 columns for n = 10: each holds a NaN
    sorted_sizes = _count_sorted_entries(monkeypatch)
    top = candidates.top_n(scores, 10, seed=0, query=np.arange(4))
    reference = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")[:, :10]
    assert top.tolist() == reference.tolist()  # random floats: no ties
    assert sorted_sizes[0] < 0.1 * np.isfinite(scores).sum()


def test_top_n_sorts_only_the_scores_near_the_top_when_scores_grow_along_the_columns(monkeypatch):
    """Scores in column order (items indexed by publication, ranked newest first) put whole
    blocks above the block bound; those rows take an exact bound: same answer, few entries sorted."""
    from features import candidates

    rng = np.random.default_rng(6)
    scores = np.tile(np.arange(20_000, dtype=np.float32) // 3, (5, 1))  # ties in threes
    scores[:, rng.choice(20_000, 500, replace=False)] = np.nan
    scores[1, -40:] = -np.inf  # this user has seen the newest items
    sorted_sizes = _count_sorted_entries(monkeypatch)
    rows, cols = candidates.top_n_entries(scores, 10, seed=3, query=np.arange(5))
    monkeypatch.setattr(candidates, "_LOOSE_BOUND_FACTOR", 10**9)  # the block bound alone
    rows_block, cols_block = candidates.top_n_entries(scores, 10, seed=3, query=np.arange(5))
    assert rows.tolist() == rows_block.tolist() and cols.tolist() == cols_block.tolist()
    assert sorted_sizes[0] <= 5 * 12 < sorted_sizes[1] / 100  # each row's 10 and its ties, not whole blocks
    finite = np.where(np.isnan(scores), -np.inf, scores)
    for r in range(5):
        mine = cols[rows == r]
        assert len(mine) == 10 and np.isfinite(finite[r, mine]).all()
        assert finite[r, mine].min() >= np.sort(finite[r])[-10]  # the 10 best values
