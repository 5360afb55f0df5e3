"""Interest vectors computed when read (``features.text_interest.UserVectors``) equal the full
table row for row, bit for bit, wherever the pipeline reads them."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from features.pair_scores import pair_dot, scores_against
from features.ranking_frame import pair_text_scores
from features.state import FeatureState
from features.text_interest import UserVectors, user_vectors


def _weights(n_users=300, n_items=50, seed=0, dim=16) -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)).astype(np.float32)
    dense[dense < 0.8] = 0
    dense[[5, 17, 200]] = 0  # users without history: all-zero vectors
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    return sp.csr_matrix(dense), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("kept", [False, True])  # computed per read; the whole table kept (materialize)
def test_rows_equal_the_full_table_exactly_for_every_way_of_reading(kept):
    weights, items = _weights()
    full = user_vectors(weights, items)
    lazy = UserVectors(weights, items)
    assert lazy.materialize(300 * 16 * 4 if kept else 300 * 16 * 4 - 1) is kept
    assert lazy.shape == full.shape and len(lazy) == 300 and lazy.dtype == np.float32
    rows = np.array([299, 0, 17, 17, 42])
    np.testing.assert_array_equal(lazy[rows], full[rows])
    np.testing.assert_array_equal(lazy[10:20], full[10:20])
    np.testing.assert_array_equal(lazy[7], full[7])
    mask = np.zeros(300, dtype=bool)
    mask[[3, 250]] = True
    np.testing.assert_array_equal(lazy[mask], full[mask])
    np.testing.assert_array_equal(np.asarray(lazy), full)
    assert lazy[np.array([], dtype=np.int64)].shape == (0, 16)
    assert not lazy[5].any()


@pytest.mark.parametrize("kept", [False, True])
def test_unknown_user_rows_and_mismatched_vectors_are_refused(kept):
    weights, items = _weights()
    lazy = UserVectors(weights, items)
    lazy.materialize(None if kept else 0)
    with pytest.raises(IndexError, match="mask unknown users"):
        lazy[np.array([0, -1])]
    with pytest.raises(IndexError, match=r"must have shape \(300,\), not \(299,\)"):
        lazy[np.ones(299, dtype=bool)]
    with pytest.raises(IndexError, match="1-d int array"):
        lazy[np.array([0.0, 1.0])]
    with pytest.raises(ValueError, match="pooling weights cover 50 items but 49"):
        UserVectors(weights, items[:49])


def test_a_kept_table_is_never_handed_out_to_be_changed():
    weights, items = _weights()
    lazy = UserVectors(weights, items)
    assert lazy.materialize()
    before = lazy[0:10].copy()
    for read in (lazy[0:10], lazy[np.arange(10)], np.asarray(lazy)):
        read[:] = 7
    np.testing.assert_array_equal(lazy[0:10], before)


def test_warming_a_bundle_keeps_a_small_table_and_ranks_the_same(small_bundle):
    state = small_bundle.state
    fresh = UserVectors(state.user_text.weights, state.user_text.item_vectors)
    bundle = replace(small_bundle, state=replace(state, user_text=fresh))
    users = np.arange(min(state.n_users, 40), dtype=np.int32)
    before = bundle.score_candidates(users)
    bundle.warm()
    assert fresh._dense is not None
    after = bundle.score_candidates(users)
    assert before.equals(after)


@pytest.mark.parametrize("n_items", [50, 3000])  # pair_dot's dense path, its gather path
def test_pair_text_scores_from_the_weights_equal_pair_dot_on_the_full_table(n_items):
    weights, items = _weights(n_items=n_items, dim=384)
    rng = np.random.default_rng(1)
    users = rng.integers(-1, 300, size=5000)  # -1: unknown; 5, 17, 200: no history -> NaN
    item_idx = rng.integers(0, n_items, size=5000)
    full = user_vectors(weights, items)
    expected = pair_dot(full, items, users, item_idx, valid_left=np.any(full != 0, axis=1))
    got = pair_text_scores(UserVectors(weights, items), items, users, item_idx)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[(users == -1) | np.isin(users, [5, 17, 200])]).all()
    known = (users >= 0) & ~np.isin(users, [5, 17, 200])
    np.testing.assert_allclose(got[known], np.einsum("ij,ij->i", full[users[known]], items[item_idx[known]]),
                               rtol=1e-5, atol=1e-6)


def test_a_saved_state_keeps_the_weights_and_loads_the_same_vectors(small_bundle, tmp_path):
    state = small_bundle.state
    assert isinstance(state.user_text, UserVectors)
    state.save(tmp_path / "lazy")
    assert (tmp_path / "lazy" / "user_text_weights.npz").exists()
    assert not (tmp_path / "lazy" / "user_text.npy").exists()
    loaded = FeatureState.load(tmp_path / "lazy")
    everyone = np.arange(state.n_users)
    np.testing.assert_array_equal(loaded.user_text[everyone], state.user_text[everyone])
    # A state saved with the array (before UserVectors) still loads, as the array.
    replace(state, user_text=np.asarray(state.user_text)).save(tmp_path / "array")
    old = FeatureState.load(tmp_path / "array")
    assert isinstance(old.user_text, np.ndarray)
    np.testing.assert_array_equal(old.user_text, state.user_text[everyone])

    # Saving the other format into the same folder leaves one file, the one load reads.
    replace(state, user_text=np.asarray(state.user_text)).save(tmp_path / "lazy")
    assert not (tmp_path / "lazy" / "user_text_weights.npz").exists()
    assert isinstance(FeatureState.load(tmp_path / "lazy").user_text, np.ndarray)


def test_bundles_of_both_formats_load_and_unknown_ones_are_refused(small_bundle, tmp_path):
    import json

    from features.bundle import FORMAT_VERSION, RankingBundle
    assert FORMAT_VERSION == 3
    small_bundle.save(tmp_path / "b")
    manifest = tmp_path / "b" / "manifest.json"
    for version, ok in ((1, True), (2, True), (3, True), (4, False)):
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": version}))
        if ok:
            assert RankingBundle.load(tmp_path / "b").state.n_users == small_bundle.state.n_users
        else:
            with pytest.raises(ValueError, match=r"bundle format 4 is not supported \(this code reads 1, 2, 3\)"):
                RankingBundle.load(tmp_path / "b")


def test_a_catalog_update_pools_the_same_rows_without_a_second_copy_of_the_vectors(small_bundle):
    import polars as pl

    from features.catalog_update import add_items
    state = small_bundle.state
    rng = np.random.default_rng(3)
    new = rng.normal(size=(2, state.item_vectors.shape[1])).astype(np.float32)
    items = pl.DataFrame({"item_id": ["new-a", "new-b"], "category": ["c-new", "c-new"]})
    updated = add_items(state, items, new / np.linalg.norm(new, axis=1, keepdims=True))
    everyone = np.arange(state.n_users)
    np.testing.assert_array_equal(updated.user_text[everyone], state.user_text[everyone])
    assert np.shares_memory(updated.user_text.item_vectors, updated.item_vectors)


@pytest.mark.parametrize("dim", [64, 128, 384])  # BPR/ALS factors, text vectors
@pytest.mark.parametrize("n_rows", [1, 2, 4, 32, 33, 64, 200])
def test_both_forms_of_scores_against_give_the_same_bits(n_rows, dim):
    """The few-row form changes no value: for the same rows it agrees bit for bit with the direct
    form on this BLAS build, so switching form at ``_FEW_ROWS`` moves no score. (A row's bits can
    still differ between a product of one row and of many, BLAS's own gemv/gemm choice, as before.)"""
    rng = np.random.default_rng(n_rows + dim)
    table = rng.normal(size=(3000, dim)).astype(np.float32)
    rows = rng.normal(size=(n_rows, dim)).astype(np.float32)
    got = scores_against(rows, table)
    assert got.shape == (n_rows, 3000) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, rows @ table.T)
    np.testing.assert_array_equal(got, np.ascontiguousarray((table @ rows.T).T))
