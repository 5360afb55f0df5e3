"""Sequential rules (``features.transitions``) against votes counted by hand."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.transitions import fit_sequential_rules

A, B, C, D, E = range(5)
T0 = datetime(2024, 1, 1)


def _events(rows):
    return pl.DataFrame({"user_idx": [r[0] for r in rows], "item_idx": [r[1] for r in rows],
                         "timestamp": [T0 + timedelta(hours=r[2]) for r in rows]},
                        schema={"user_idx": pl.Int32, "item_idx": pl.Int32, "timestamp": pl.Datetime("us")})


ROWS = [(0, A, 1), (0, B, 2), (0, C, 3),  # A then B then C
        (1, A, 1), (1, C, 2),  # A then C
        (2, D, 5), (2, E, 5)]  # D and E at the same time


def test_votes_and_recent_weights_match_a_hand_count():
    model = fit_sequential_rules(_events(ROWS), n_users=4, n_items=5, seed=0, steps=2, recent=2)
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[A, B] = 1.0  # user 0, gap 1
    expected[B, C] = 1.0  # user 0, gap 1
    expected[A, C] = 0.5 + 1.0  # user 0 at gap 2, user 1 at gap 1
    expected[D, E] = expected[E, D] = 1.0  # same time: both ways
    np.testing.assert_array_equal(model.follows.toarray(), expected)
    recent = model.recent.toarray()
    np.testing.assert_array_equal(recent[0], [0, 0.5, 1, 0, 0])  # C most recent, then B
    np.testing.assert_array_equal(recent[1], [0.5, 0, 1, 0, 0])
    assert recent[3].sum() == 0  # no events: no votes
    scores = model.user_scores(np.array([1, 0, 3]))
    np.testing.assert_allclose(scores[0], 0.5 * expected[A] + expected[C])  # B 0.5, C 0.75
    assert scores[0, B] == pytest.approx(0.5) and scores[0].argmax() == C
    np.testing.assert_allclose(scores[1], 0.5 * expected[B] + expected[C])
    assert scores.dtype == np.float32 and not scores[2].any()


def test_input_row_order_changes_nothing_and_steps_reach_as_far_as_set():
    shuffled = _events([ROWS[i] for i in np.random.default_rng(3).permutation(len(ROWS))])
    one = fit_sequential_rules(_events(ROWS), n_users=4, n_items=5, seed=0)
    two = fit_sequential_rules(shuffled, n_users=4, n_items=5, seed=0)
    np.testing.assert_array_equal(one.follows.toarray(), two.follows.toarray())
    np.testing.assert_array_equal(one.recent.toarray(), two.recent.toarray())
    near = fit_sequential_rules(_events(ROWS), n_users=4, n_items=5, seed=0, steps=1)
    assert near.follows[A, C] == 1.0  # only user 1's direct step; user 0's gap of 2 is out of reach


def test_an_item_following_itself_casts_no_vote():
    model = fit_sequential_rules(_events([(0, A, 1), (0, A, 2), (0, B, 3)]), n_users=1, n_items=5, seed=0)
    assert model.follows[A, A] == 0 and model.follows[A, B] == 1.0 + 0.5


def test_bad_input_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="drop events of users or items outside"):
        fit_sequential_rules(_events([(0, A, 1), (-1, B, 2)]), n_users=2, n_items=5, seed=0)
    with pytest.raises(ValueError, match="need a 'timestamp' column"):
        fit_sequential_rules(_events(ROWS).drop("timestamp"), n_users=4, n_items=5, seed=0)
    with pytest.raises(ValueError, match="steps and recent must be at least 1"):
        fit_sequential_rules(_events(ROWS), n_users=4, n_items=5, seed=0, steps=0)
    model = fit_sequential_rules(_events(ROWS), n_users=4, n_items=5, seed=0)
    with pytest.raises(IndexError, match="mask unknown users"):
        model.user_scores(np.array([0, -1]))


def test_thetime_order_is_the_three_key_lexsort():
    from features.ties import tie_keys
    from features.transitions import time_order

    rng = np.random.default_rng(5)
    user, item, time = rng.integers(0, 30, 2000), rng.integers(0, 50, 2000), rng.integers(0, 20, 2000)
    expected = np.lexsort((tie_keys(9, user, item), time, user))
    np.testing.assert_array_equal(time_order(user, item, time, seed=9), expected)


def test_the_source_feeds_candidates_and_features_and_survives_save_load_and_new_items(small_bundle, tmp_path):
    import polars as pl

    from features.candidates import generate_candidates
    from features.catalog_update import add_items
    from features.ranking_frame import feature_arrays, feature_columns_of
    from features.state import FeatureState

    state = small_bundle.state
    rules = state.sources["transitions"]
    assert rules.follows.shape == (state.n_items, state.n_items)
    columns = feature_columns_of(state)
    assert columns[columns.index("transition_score_query_rank"):][:2] == ("transition_score_query_rank",
                                                                          "transition_score_query_z")
    assert small_bundle.feature_columns == feature_columns_of(state)  # the ranker learned on them
    users = np.arange(40, dtype=np.int32)
    cands = generate_candidates(state, users, small_bundle.config.candidates, seed=0, with_scores=True)
    u, i = cands["user_idx"].to_numpy(), cands["item_idx"].to_numpy()
    votes = rules.pair_scores(u, i)
    assert (votes > 0).any() and (votes == 0).any()
    # The carried score is the source's where it has something to say (a vote), else unknown.
    np.testing.assert_array_equal(cands["transition_score"].to_numpy(), np.where(votes > 0, votes, np.nan))
    # Each user's strongest unseen follower is a candidate.
    scores = rules.user_scores(users)
    scores[state.seen[users].toarray() > 0] = 0
    for row in np.flatnonzero(scores.max(axis=1) > 0):
        best = np.flatnonzero(scores[row] == scores[row].max())
        assert set(best.tolist()) & set(i[u == row].tolist())
    arrays = feature_arrays(state, u, i, query_idx=cands["query_idx"].to_numpy())
    votes = rules.pair_scores(u, i)
    assert np.isnan(arrays["transition_score_query_z"][votes == 0]).all()
    assert (arrays["transition_score_query_rank"][votes > 0] > 0).all()

    state.save(tmp_path / "state")
    loaded = FeatureState.load(tmp_path / "state")
    assert list(loaded.sources) == list(state.sources) and "transitions" in loaded.sources
    assert (loaded.sources["transitions"].follows != rules.follows).nnz == 0
    assert (loaded.sources["transitions"].recent != rules.recent).nnz == 0

    grown = add_items(state, pl.DataFrame({"item_id": ["new-a"], "category": ["c-new"]}),
                      np.eye(1, state.item_vectors.shape[1], dtype=np.float32))
    grown_rules = grown.sources["transitions"]
    assert grown_rules.follows.shape == (state.n_items + 1, state.n_items + 1)
    np.testing.assert_array_equal(grown_rules.user_scores(users)[:, :-1], rules.user_scores(users))
    assert not grown_rules.user_scores(users)[:, -1].any()  # nobody has taken the new item yet


def test_a_stratified_split_leaves_the_source_out_unless_asked(small_bundle):
    from dataclasses import replace

    from features.sources import enabled_names
    from recsys.config import PipelineConfig
    from recsys.errors import ConfigError

    config = small_bundle.config
    n_items = small_bundle.state.n_items
    assert "transitions" in enabled_names(config, n_items)  # temporal
    assert "transitions" not in enabled_names(replace(config, split="stratified"), n_items)
    forced = replace(config, split="stratified", sources={"transitions": {"use": "on"}})
    assert "transitions" in enabled_names(forced, n_items)
    assert "transitions" not in enabled_names(replace(config, sources={"transitions": {"use": "off"}}), n_items)
    with pytest.raises(ConfigError, match=r"sources.transitions.use must be one of .*got 'yes'"):
        PipelineConfig.from_dict({"sources": {"transitions": {"use": "yes"}}})
    with pytest.raises(ConfigError, match=r"sources.transitions.candidates must be a whole number >= 0, got -1"):
        PipelineConfig.from_dict({"sources": {"transitions": {"candidates": -1}}})
    with pytest.raises(ConfigError, match=r"sources.transitions has no settings \['steps'\]"):
        PipelineConfig.from_dict({"sources": {"transitions": {"steps": 2}}})
    with pytest.raises(ConfigError, match=r"sources \['sessions'\] are not registered score sources"):
        PipelineConfig.from_dict({"sources": {"sessions": {}}})
    # A config saved before the registry (a registered model's config.json) reads as it meant.
    legacy = PipelineConfig.from_dict({"transitions": "off", "candidates": {"n_cf": 9, "n_transitions": 7}})
    assert legacy.sources["transitions"] == {"use": "off", "candidates": 7} and legacy.candidates.n_cf == 9


def test_a_requests_history_is_the_newest_evidence_and_batching_changes_no_answer(small_bundle):
    import polars as pl
    import scipy.sparse as sp

    from serving.recommend import recommend_requests
    from serving.requests import RecommendRequest

    state = small_bundle.state
    rules = state.sources["transitions"]
    items = state.items.to_ids(np.arange(state.n_items)).to_list()
    known = state.users.to_ids(np.array([4])).to_list()[0]
    # An item some other item is followed by, so that a history of it gets votes.
    leader = int(np.argmax(np.diff(rules.follows.indptr)))
    alone = RecommendRequest(known, 10)
    fresh = RecommendRequest("nobody-we-know", 10, history=(items[leader],))
    both = recommend_requests(small_bundle, [alone, fresh])
    assert both[0] == recommend_requests(small_bundle, [alone])[0]  # its batch neighbour changes nothing
    history = pl.DataFrame({"query_idx": [1], "item_idx": [leader]},
                           schema={"query_idx": pl.Int32, "item_idx": pl.Int32})
    recent = rules.request_rows(np.array([4, -1]), history, 2)
    assert (recent[0] != rules.recent[4]).nnz == 0  # the stored row, exactly
    assert recent[1].indices.tolist() == [leader] and recent[1].data.tolist() == [1.0]
    votes = sp.csr_matrix(recent[1] @ rules.follows)
    assert votes.nnz > 0  # the unknown user's history votes for what followed it
    best = set(votes.indices[votes.data == votes.data.max()].tolist()) - {leader}
    cands, arrays = small_bundle.candidate_features(np.array([-1], dtype=np.int32),
                                                    source_rows={"transitions": recent[1]})
    assert best and best <= set(cands["item_idx"].to_list())
    assert np.isfinite(arrays["transition_score"]).any()
    _, without = small_bundle.candidate_features(np.array([-1], dtype=np.int32))
    assert np.isnan(without["transition_score"]).all()  # an unknown user without a history: no votes


def test_a_known_users_history_comes_before_the_stored_items(small_bundle):
    import polars as pl

    rules = small_bundle.state.sources["transitions"]
    user = int(np.flatnonzero(np.diff(rules.recent.indptr) == 3)[0])  # a user with three stored recent items
    row = rules.recent[user]
    stored_newest_first = row.indices[np.argsort(-row.data, kind="stable")].tolist()
    fresh = [i for i in range(small_bundle.state.n_items) if i not in stored_newest_first][:2]  # oldest first
    history = pl.DataFrame({"query_idx": [0, 0], "item_idx": fresh},
                           schema={"query_idx": pl.Int32, "item_idx": pl.Int32})
    recent = rules.request_rows(np.array([user]), history, 1)
    weights = dict(zip(recent.indices.tolist(), recent.data.tolist(), strict=True))
    assert weights == {fresh[1]: 1.0, fresh[0]: 0.5, stored_newest_first[0]: pytest.approx(1 / 3)}


def test_a_bundle_whose_state_lost_the_rules_is_refused_at_load(small_bundle, tmp_path):
    import json

    from features.bundle import RankingBundle

    small_bundle.save(tmp_path / "bundle")
    assert "transitions" in RankingBundle.load(tmp_path / "bundle").state.sources
    (tmp_path / "bundle" / "state" / "transitions_recent.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"score source 'transitions' is missing \['transitions_recent.npz'\]"):
        RankingBundle.load(tmp_path / "bundle")
    # A state saved before its meta listed the sources is read by the files present.
    meta_path = tmp_path / "bundle" / "state" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("sources")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"reads \['transition_score_query_rank', 'transition_score_query_z'\]"):
        RankingBundle.load(tmp_path / "bundle")
    meta["sources"] = ["sessions"]  # saved by code with a source this code lacks
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"holds the score source 'sessions', which this code does not register"):
        RankingBundle.load(tmp_path / "bundle")
