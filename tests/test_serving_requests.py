"""The endpoint's request handling attacked with bad input, and its three serving paths."""

import numpy as np
import pandas as pd
import pytest

from recsys.errors import DataValidationError, RequestTooLargeError
from serving.recommend import recommend_requests, recommend_users
from serving.requests import MAX_USERS_PER_REQUEST, parse_requests


def _req(rows):
    return parse_requests(pd.DataFrame(rows), default_k=10)


@pytest.mark.parametrize("rows, message", [
    ([{"k": 3}], "needs a 'user_id' column"),
    ([{"user_id": "u", "k": 0}], "k must be between 1 and 100, got 0"),
    ([{"user_id": "u", "k": 2.5}], "k must be an integer between 1 and 100, got 2.5"),
    ([{"user_id": "u"}, {"user_id": "u"}], "duplicate user_id 'u'"),
    ([{"user_id": ""}], "user_id must be a non-empty string"),
    ([{"user_id": "u", "candidates": "N1"}], "'candidates' must be a list of item ids, got str"),
    ([{"user_id": "u", "history": [1, 2]}], "'history' must hold item ids as strings, got 1"),
    ([{"user_id": "u", "colour": "red"}], r"unknown request field\(s\) \['colour'\]"),
])
def test_bad_requests_are_rejected_with_a_reason(rows, message):
    with pytest.raises(DataValidationError, match=message):
        _req(rows)


def test_too_many_users_is_rejected():
    rows = [{"user_id": f"u{i}"} for i in range(MAX_USERS_PER_REQUEST + 1)]
    with pytest.raises(DataValidationError, match=f"at most {MAX_USERS_PER_REQUEST} per request"):
        _req(rows)


def test_missing_optional_fields_take_defaults():
    requests = _req([{"user_id": "a", "k": 3, "candidates": ["x", "x", "y"]}, {"user_id": "b"}])
    assert (requests[0].k, requests[0].candidates) == (3, ("x", "y"))
    assert (requests[1].k, requests[1].candidates, requests[1].history) == (10, None, ())


def test_paths_and_unknown_ids(small_bundle):
    state = small_bundle.state
    known_user = state.users.ids[0]
    items = state.items.ids.to_list()
    requests = _req([
        {"user_id": known_user, "k": 5},
        {"user_id": "new-with-history", "k": 5, "history": items[:3]},
        {"user_id": "new", "k": 5},
        {"user_id": "picky", "k": 2, "candidates": [items[10], "NOPE", items[11], items[12]],
         "exclude": [items[12]]},
    ])
    out = recommend_requests(small_bundle, requests)
    assert [r["path"] for r in out] == ["personalized", "history-only", "cold-start", "cold-start"]
    assert all(len(r["item_ids"]) == r_k for r, r_k in zip(out, [5, 5, 5, 2], strict=True))
    assert not set(out[1]["item_ids"]) & set(items[:3])  # history items are not recommended back
    assert set(out[3]["item_ids"]) == {items[10], items[11]} and out[3]["unknown_ids"] == ["NOPE"]
    assert all(np.all(np.diff(r["scores"]) <= 1e-6) for r in out)


def test_endpoint_and_batch_paths_agree(small_bundle):
    users = small_bundle.state.users.ids.head(4).to_list()
    batch = recommend_users(small_bundle, users, 7)
    served = recommend_requests(small_bundle, _req([{"user_id": u, "k": 7} for u in users]))
    for row in served:
        expected = batch.filter(batch["user_id"] == row["user_id"]).sort("rank")
        assert row["item_ids"] == expected["item_id"].to_list()
        np.testing.assert_allclose(row["scores"], expected["score"].to_list(), rtol=1e-6)


def test_unknown_users_are_ranked_by_trend_and_history_text(small_bundle):
    from dataclasses import replace

    from features.bundle import RankingBundle

    state = small_bundle.state
    items = state.items.ids.to_list()
    pop1 = state.item_features["item_pop_1d_rel"].to_numpy()
    pop7 = state.item_features["item_pop_7d_rel"].to_numpy()
    trend = 0.5 * np.log1p(pop1) / np.log1p(pop1.max()) + 0.5 * np.log1p(pop7) / np.log1p(pop7.max())
    # The history is one item h; x, among the least trending items, gets a near copy of h's text vector.
    h, x = (int(i) for i in np.argsort(trend, kind="stable")[:2])
    vectors = state.item_vectors.copy()
    vectors[x] = vectors[h]
    edited = replace(state, item_vectors=vectors, _text_popularity=None)
    bundle = RankingBundle(config=small_bundle.config, state=edited, booster=small_bundle.booster,
                           feature_columns=small_bundle.feature_columns, prior_weights=small_bundle.prior_weights)
    cold, with_history = recommend_requests(bundle, _req([
        {"user_id": "nobody", "k": 5}, {"user_id": "reader", "k": 5, "history": [items[h]]}]))
    expected = np.asarray(trend[state.items.to_index(cold["item_ids"])], dtype=np.float32)
    np.testing.assert_allclose(cold["scores"], expected, rtol=1e-5)
    assert items[x] not in cold["item_ids"]
    # With a history: 0.4 x trend + 0.6 x the text score of the history's interest vector, so the
    # item whose text matches the history comes first although almost nothing trends less.
    assert with_history["item_ids"][0] == items[x]
    assert with_history["scores"][0] == pytest.approx(0.4 * trend[x] + 0.6, abs=1e-4)
    picked = state.items.to_index(with_history["item_ids"])
    text = vectors[picked] @ (vectors[h] / np.linalg.norm(vectors[h]))
    np.testing.assert_allclose(with_history["scores"], 0.4 * trend[picked] + 0.6 * text, rtol=1e-5, atol=1e-6)
    assert items[h] not in with_history["item_ids"]  # the history is not recommended back


def test_request_history_is_cut_to_the_history_len_training_uses(small_bundle):
    """A history longer than ``history_len`` counts its newest ``history_len`` items only, as the
    training path does: the same answer as sending just those (with the older ones excluded)."""
    state = small_bundle.state
    n = state.history_len
    items = state.items.ids.to_list()
    history = items[: n + 5]
    long, cut = recommend_requests(small_bundle, _req([
        {"user_id": "long", "k": 10, "history": history},
        {"user_id": "cut", "k": 10, "history": history[5:], "exclude": history[:5]}]))
    assert long["item_ids"] == cut["item_ids"]
    np.testing.assert_array_equal(long["scores"], cut["scores"])


@pytest.mark.parametrize("candidates", [[], ["NOPE1", "NOPE2"]])
def test_an_explicit_candidate_list_is_explicit_even_when_nothing_in_it_is_known(small_bundle, candidates):
    """The README: "rank exactly these items". No known item -> an empty list, never the model's picks."""
    user = small_bundle.state.users.ids[0]
    out = recommend_requests(small_bundle, _req([{"user_id": user, "k": 5, "candidates": candidates},
                                                  {"user_id": "other", "k": 3}]))
    assert out[0]["item_ids"] == [] and out[0]["scores"] == []
    assert out[0]["unknown_ids"] == candidates
    assert len(out[1]["item_ids"]) == 3  # the other user in the same request still gets the model's picks
    alone = recommend_requests(small_bundle, _req([{"user_id": user, "candidates": candidates}]))
    assert alone[0]["item_ids"] == []


@pytest.mark.parametrize("k", [float("inf"), float("-inf"), 1e400, 1.5, 10**400])
def test_a_k_that_is_not_a_finite_integer_is_a_clear_400(k):
    with pytest.raises(DataValidationError, match="k must be an integer between 1 and 100, got"):
        _req([{"user_id": "u", "k": k}])


def test_the_work_of_one_request_is_bounded_before_it_starts():
    """1,000 users x 3,000 explicit candidates (3M pairs) is refused up front; the same users with
    the model's own candidates (a budget of 450) fit, and one more per user does not."""
    ids = [f"i{j}" for j in range(3000)]
    big = pd.DataFrame({"user_id": [f"u{i}" for i in range(1000)], "candidates": [ids] * 1000})
    with pytest.raises(RequestTooLargeError, match=r"asks to score 3,000,000 \(user, item\) pairs; at most 450,000"):
        parse_requests(big, default_k=10, candidate_budget=450)
    assert len(parse_requests(big.drop(columns="candidates"), default_k=10, candidate_budget=450)) == 1000
    with pytest.raises(RequestTooLargeError, match="asks to score 451,000"):
        parse_requests(big.drop(columns="candidates"), default_k=10, candidate_budget=451)


def test_a_request_past_its_deadline_stops_instead_of_working_on(small_bundle):
    import time

    from recsys.errors import RequestDeadlineError
    from serving.requests import predict_frame

    frame = pd.DataFrame({"user_id": small_bundle.state.users.ids.head(5).to_list()})
    with pytest.raises(RequestDeadlineError, match="stopped after its deadline, 0 of 5 users ranked"):
        predict_frame(small_bundle, frame, deadline=time.monotonic() - 1)
    assert len(predict_frame(small_bundle, frame, deadline=time.monotonic() + 60)) == 5


def test_chunked_answers_equal_one_pass(small_bundle, monkeypatch):
    from serving import requests as request_module

    frame = pd.DataFrame({"user_id": [*small_bundle.state.users.ids.head(30).to_list(), "cold-1"], "k": 6})
    whole = request_module.predict_frame(small_bundle, frame)
    monkeypatch.setattr(request_module, "CHUNK_PAIRS", 1)  # one user per chunk
    chunked = request_module.predict_frame(small_bundle, frame)
    pd.testing.assert_frame_equal(whole, chunked)


def test_a_request_past_its_deadline_between_chunks_stops_there(small_bundle, monkeypatch):
    """The deadline is checked between chunks: work stops part-way, it does not run to the end."""
    from recsys.errors import RequestDeadlineError
    from serving import requests as request_module

    clock = iter([0.0, 0.0, 0.0, 100.0, 100.0, 100.0])  # the third chunk starts after the deadline
    monkeypatch.setattr(request_module.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(request_module, "CHUNK_PAIRS", 1)  # one user per chunk
    frame = pd.DataFrame({"user_id": small_bundle.state.users.ids.head(5).to_list()})
    with pytest.raises(RequestDeadlineError, match="stopped after its deadline, 3 of 5 users ranked"):
        request_module.predict_frame(small_bundle, frame, deadline=50.0)
