"""The text-neighbours source (``features.text_neighbours``) and the registry's text-reading rules."""

import numpy as np

from features import text_neighbours
from features.text_neighbours import TextNeighbours, nearest_by_text


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
    monkeypatch.setattr(text_neighbours, "_BLOCK", 1024)
    assert (nearest_by_text(vectors, neighbours=5) != nearest_by_text(vectors, neighbours=5)).nnz == 0
    np.testing.assert_array_equal(nearest_by_text(vectors, neighbours=5).toarray(), got)


def test_ties_at_the_cut_follow_the_tie_rule_not_the_catalog_order():
    base = _unit(np.array([[1.0, 0.0], [1.0, 0.2]]))
    # Item 0 and four copies of one text: the copies tie for item 0's two neighbour places.
    vectors = np.vstack([base[0], np.repeat(base[1:], 4, axis=0)])
    kept = np.flatnonzero(nearest_by_text(vectors, neighbours=2)[0].toarray())
    from features.ties import tie_keys

    expected = sorted(np.array([1, 2, 3, 4])[np.argsort(tie_keys(0, 0, np.array([1, 2, 3, 4])), kind="stable")[:2]])
    assert kept.tolist() == expected
    assert nearest_by_text(np.zeros((3, 4), dtype=np.float32)).nnz == 0  # items without text: no neighbours


def test_auto_turns_it_on_for_next_item_protocols_and_catalogs_it_can_afford():
    assert TextNeighbours.auto_on("temporal", 10_000) and TextNeighbours.auto_on("leave-last-out", 50_000)
    assert not TextNeighbours.auto_on("stratified", 1_000)
    assert not TextNeighbours.auto_on("temporal", text_neighbours.MAX_AUTO_ITEMS + 1)


def test_the_no_text_variant_leaves_it_out_and_the_pretrained_variant_reads_its_own_vectors(small_bundle):
    from features.state import with_text_vectors
    from recsys.demo_data import DemoSpec, generate_demo
    from recsys.split import split_interactions
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
    assert (rebuilt.recent != state.sources["text_neighbours"].recent).nnz == 0

