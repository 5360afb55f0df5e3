"""The text-neighbours source (``features.text_neighbours``) and the registry's text-reading rules."""

import numpy as np
import pytest

from features import text_neighbours
from features.text_neighbours import TextNeighbours, nearest_by_text
from recsys.demo_data import DemoSpec, generate_demo
from recsys.split import split_interactions


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_each_item_keeps_its_nearest_positive_cosines_without_itself(monkeypatch):
    rng = np.random.default_rng(3)
    vectors = _unit(rng.normal(size=(40, 8)))
    monkeypatch.setattr(text_neighbours, "_BLOCK", 7)  # several blocks, one short
    got = nearest_by_text(vectors, neighbours=5).toarray()
    sims = vectors @ vectors.T
    for a in range(40):
        others = np.delete(np.arange(40), a)
        best = others[np.argsort(-sims[a, others], kind="stable")[:5]]
        best = best[sims[a, best] > 0]
        assert set(np.flatnonzero(got[a]).tolist()) == set(best.tolist())
        np.testing.assert_allclose(got[a, best], sims[a, best], rtol=1e-6)
    monkeypatch.setattr(text_neighbours, "_BLOCK", 1024)  # one block: the same links
    np.testing.assert_array_equal(nearest_by_text(vectors, neighbours=5).toarray(), got)


def test_ties_at_the_cut_follow_the_tie_rule_not_the_catalog_order():
    from features.ties import tie_keys

    base = _unit(np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2]]))
    # Item 0, a closer item 1, and two copies of one text (items 2 and 3) that tie for item 0's second place.
    vectors = np.vstack([base[0], base[1], base[2], base[2]])
    kept = np.flatnonzero(nearest_by_text(vectors, neighbours=2)[0].toarray())
    winner = np.array([2, 3])[np.argmin(tie_keys(0, 0, np.array([2, 3])))]
    assert winner == 3  # so catalog order (item 2) would fail this test
    assert kept.tolist() == [1, winner]
    assert nearest_by_text(np.zeros((3, 4), dtype=np.float32)).nnz == 0  # all-zero rows: no neighbours


def test_a_crowd_of_identical_vectors_gets_no_neighbours_and_is_no_ones():
    rng = np.random.default_rng(5)
    distinct = _unit(np.abs(rng.normal(size=(6, 8))))  # positive entries: every pair has a positive cosine
    empty_text = distinct[0] * 0.5 + distinct[1] * 0.5
    crowd = np.repeat(_unit(empty_text[None, :]), 4, axis=0)  # four items whose texts encode alike
    vectors = np.vstack([distinct, crowd])
    links = nearest_by_text(vectors, neighbours=3).toarray()
    assert not links[6:].any() and not links[:, 6:].any()
    assert (links[:6] > 0).sum(axis=1).tolist() == [3] * 6
    pair = nearest_by_text(vectors[:8], neighbours=3).toarray()  # two alike are not a crowd: each other's best
    assert pair[6, 7] == pytest.approx(1.0) and pair[7, 6] == pytest.approx(1.0)


def test_auto_turns_it_on_for_next_item_protocols_and_catalogs_it_can_afford():
    from features.sources import is_on
    from recsys.config import PipelineConfig

    assert PipelineConfig().sources["text_neighbours"]["use"] == "auto"  # the default
    settings = PipelineConfig().sources
    assert is_on(TextNeighbours, settings, "temporal", 10_000) and is_on(TextNeighbours, settings, "leave-last-out",
                                                                          text_neighbours.MAX_AUTO_ITEMS)
    assert not is_on(TextNeighbours, settings, "stratified", 1_000)
    assert not is_on(TextNeighbours, settings, "temporal", text_neighbours.MAX_AUTO_ITEMS + 1)


def test_the_no_text_variant_leaves_it_out_and_the_pretrained_variant_reads_its_own_vectors(small_bundle):
    from features.state import with_text_vectors
    from training.variants import NO_TEXT, no_text_columns, variant_config

    config = small_bundle.config
    plain = variant_config(NO_TEXT, config)
    assert plain.sources["text_neighbours"]["candidates"] == 0 and plain.candidates.n_text == 0
    assert plain.sources["transitions"] == config.sources["transitions"]  # reads no text: untouched
    assert {"recent_text_score_query_rank", "recent_text_score_query_z", "text_score"} <= set(no_text_columns())
    assert not {"transition_score_query_rank", "transition_score_query_z"} & set(no_text_columns())

    state = small_bundle.state
    rng = np.random.default_rng(0)
    other = _unit(rng.normal(size=state.item_vectors.shape))
    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))  # small_bundle's world and split
    window = split_interactions(data.interactions, kind="temporal", test_fraction=0.25).train
    swapped = with_text_vectors(state, window, other)
    assert swapped.sources["transitions"] is state.sources["transitions"]
    rebuilt = swapped.sources["text_neighbours"]
    assert (rebuilt.similar != nearest_by_text(other)).nnz == 0
    assert (rebuilt.similar != state.sources["text_neighbours"].similar).nnz > 0
    assert (rebuilt.recent != state.sources["text_neighbours"].recent).nnz == 0  # who took what last: unchanged
    # The pretrained variant's features read the rebuilt neighbours.
    from features.ranking_frame import feature_arrays

    users, items = np.repeat(np.arange(30), 150), np.tile(np.arange(150), 30)
    arrays = feature_arrays(swapped, users, items, query_idx=users)
    expected = rebuilt.pair_scores(users, items)
    np.testing.assert_array_equal(arrays["recent_text_score"], np.where(expected > 0, expected, np.nan))


def test_new_items_become_neighbours_at_once_and_the_baseline_can_pick_items_nobody_took(small_bundle, tmp_path):
    import polars as pl

    from features.catalog_update import add_items
    from training import evaluate

    state = small_bundle.state
    source = state.sources["text_neighbours"]
    user = int(np.flatnonzero(np.diff(source.recent.indptr) > 0)[0])
    last = source.recent[user].indices[np.argmax(source.recent[user].data)]  # the user's most recent item
    twin = state.item_vectors[last:last + 1]  # a new item whose text is that item's
    grown = add_items(state, pl.DataFrame({"item_id": ["twin"], "category": ["c-new"]}), twin)
    scores = grown.sources["text_neighbours"].user_scores(np.array([user]))[0]
    assert scores[-1] > 0 and scores[-1] == scores.max()  # the new twin is the user's best text neighbour
    assert grown.sources["transitions"].follows.shape == (state.n_items + 1, state.n_items + 1)

    unseen = np.flatnonzero(~grown.item_has_history())
    picks = evaluate.baseline_scorers(grown, seed=0)["text_neighbours"](np.array([user]))[0]
    assert np.isfinite(picks[unseen]).any()  # items nobody took are not hidden from it
    assert np.isnan(evaluate.baseline_scorers(grown, seed=0)["transitions"](np.array([user]))[0][unseen]).all()


def test_a_catalog_past_its_limit_leaves_it_out_of_the_run_and_the_baselines(small_bundle, monkeypatch):
    from dataclasses import replace

    from features.sources import enabled_names
    from training import evaluate

    monkeypatch.setattr(TextNeighbours, "max_items", small_bundle.state.n_items - 1)
    assert "text_neighbours" not in enabled_names(small_bundle.config, small_bundle.state.n_items)
    forced = replace(small_bundle.config, sources={"text_neighbours": {"use": "on"}})
    assert "text_neighbours" in enabled_names(forced, small_bundle.state.n_items)  # "on" still turns it on
    without = replace(small_bundle.state, sources={})
    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    window = split_interactions(data.interactions, kind="temporal", test_fraction=0.25).train
    scorers = evaluate.baseline_scorers(without, seed=0, window=window)
    assert "transitions" in scorers and "text_neighbours" not in scorers



def test_with_the_source_off_its_baseline_is_fitted_on_the_window_the_state_saw(small_bundle):
    from dataclasses import replace

    from training import evaluate

    state = small_bundle.state
    without = replace(state, sources={k: v for k, v in state.sources.items() if k != "text_neighbours"})
    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))  # small_bundle's world and split
    window = split_interactions(data.interactions, kind="temporal", test_fraction=0.25).train
    users = np.arange(30)
    got = evaluate.baseline_scorers(without, seed=small_bundle.config.seed, window=window)["text_neighbours"](users)
    own = state.sources["text_neighbours"].user_scores(users)  # fitted on that window with the same vectors
    assert (own > 0).any()
    np.testing.assert_array_equal(np.nan_to_num(got), own)
    assert np.isnan(got[own == 0]).all()
