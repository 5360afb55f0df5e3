"""serving/batcher.py: requests that arrive together are ranked together, each gets its own answer."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from recsys.errors import DataValidationError
from serving.batcher import RequestBatcher, RequestWaitedTooLongError
from serving.requests import RecommendRequest


def _request(user: str, k: int = 3, candidates=None) -> RecommendRequest:
    return RecommendRequest(user_id=user, k=k, candidates=candidates, history=(), exclude=())


class SlowRanker:
    """A stand-in for the model: rows name the user; the first call blocks until released, so the
    callers that come meanwhile queue up; a user named 'bad' fails the whole call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, requests, deadline):
        users = [r.user_id for r in requests]
        self.calls.append(users)
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.release.wait(30)
        if "bad" in users:
            raise DataValidationError(f"cannot rank {users}")
        return [{"user_id": r.user_id, "item_ids": [f"{r.user_id}-{i}" for i in range(r.k)]} for r in requests]


def _submit_while_busy(batcher, ranker, groups, deadline=None):
    """Start one caller that holds the model, then one caller per group; release; return
    {group index: rows or the exception}."""
    results: dict[int, object] = {}

    def call(index, requests):
        try:
            results[index] = batcher.rank(requests, deadline)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[index] = exc

    # Daemon threads: a deadlock fails the joins' check below instead of hanging pytest.
    first = threading.Thread(target=call, args=(-1, [_request("first")]), daemon=True)
    first.start()
    assert ranker.first_started.wait(30)
    threads = [threading.Thread(target=call, args=(i, group), daemon=True) for i, group in enumerate(groups)]
    for queued, thread in enumerate(threads, start=1):
        thread.start()
        # Each caller queued before the next starts: the queue order is the groups' order, whatever
        # the scheduler does with threads started close together.
        queued_by = time.monotonic() + 30  # not `deadline`: the callers read that one
        while len(batcher._queue) < queued:
            assert time.monotonic() < queued_by, f"caller {queued - 1} never queued"
            time.sleep(0.005)
    ranker.release.set()
    for thread in [first, *threads]:
        thread.join(30)
        assert not thread.is_alive(), "a caller never got its answer"
    return results


def test_requests_queued_behind_a_batch_are_ranked_together_and_each_gets_its_own_rows():
    ranker = SlowRanker()
    batcher = RequestBatcher(ranker)
    groups = [[_request("a", 2)], [_request("b", 1), _request("c", 3)], [_request("d")]]
    results = _submit_while_busy(batcher, ranker, groups)
    assert ranker.calls == [["first"], ["a", "b", "c", "d"]]  # one batch for the four users
    assert [row["user_id"] for row in results[1]] == ["b", "c"]
    assert results[0] == [{"user_id": "a", "item_ids": ["a-0", "a-1"]}]
    assert results[1][1]["item_ids"] == ["c-0", "c-1", "c-2"] and results[2][0]["user_id"] == "d"
    assert batcher.batches == 2 and batcher.largest_batch == 3


def test_a_batch_takes_queued_requests_oldest_first_while_their_users_fit():
    ranker = SlowRanker()
    batcher = RequestBatcher(ranker, max_batch_users=3)
    groups = [[_request("a"), _request("b")], [_request("c")], [_request("d"), _request("e")]]
    results = _submit_while_busy(batcher, ranker, groups)
    assert ranker.calls == [["first"], ["a", "b", "c"], ["d", "e"]]
    assert [row["user_id"] for row in results[2]] == ["d", "e"]


def test_when_a_shared_batch_fails_each_request_is_ranked_alone_and_gets_only_its_own_error():
    ranker = SlowRanker()
    batcher = RequestBatcher(ranker)
    results = _submit_while_busy(batcher, ranker, [[_request("a")], [_request("bad")], [_request("b")]])
    assert ranker.calls[1] == ["a", "bad", "b"] and sorted(map(tuple, ranker.calls[2:])) == [("a",), ("b",), ("bad",)]
    assert results[0][0]["user_id"] == "a" and results[2][0]["user_id"] == "b"
    assert isinstance(results[1], DataValidationError) and "['bad']" in str(results[1])


def test_a_request_still_queued_at_its_deadline_leaves_the_queue_unranked():
    ranker = SlowRanker()
    batcher = RequestBatcher(ranker)
    holder = threading.Thread(target=batcher.rank, args=([_request("first")],), daemon=True)
    holder.start()
    assert ranker.first_started.wait(30)
    with pytest.raises(RequestWaitedTooLongError, match=r"server busy: the request waited 0.1 s for its turn"):
        batcher.rank([_request("late")], time.monotonic() + 0.1, wait_s=0.1)
    assert batcher._queue == []
    ranker.release.set()
    holder.join(5)
    assert ranker.calls == [["first"]]  # the late request was never ranked


def test_a_request_past_its_deadline_is_not_ranked_even_when_it_finds_the_model_free():
    ranker = SlowRanker()
    ranker.release.set()
    batcher = RequestBatcher(ranker)
    with pytest.raises(RequestWaitedTooLongError, match=r"waited 2 s for its turn"):
        batcher.rank([_request("late")], time.monotonic() - 1, wait_s=2)
    assert ranker.calls == [] and batcher._queue == []
    assert batcher.rank([_request("next")], time.monotonic() + 5)[0]["user_id"] == "next"


def test_a_request_with_its_own_candidates_is_ranked_alone():
    """Generated and explicit candidates get their source scores computed differently when they
    share a call, so a caller's list must not share a call with another caller's users."""
    ranker = SlowRanker()
    batcher = RequestBatcher(ranker)
    groups = [[_request("a")], [_request("b", candidates=("x", "y"))], [_request("c")], [_request("d")]]
    results = _submit_while_busy(batcher, ranker, groups)
    assert ranker.calls == [["first"], ["a"], ["b"], ["c", "d"]]
    assert results[1][0]["user_id"] == "b"


def test_batched_answers_equal_one_by_one_answers_on_a_real_model(small_bundle):
    """The model ranks a user the same whatever else is in the batch (the tie rule keys on the
    user): requests with their own k, history and exclusions and an unknown user, one batch vs
    one by one (a request with its own candidates is never batched with others)."""
    from serving.requests import parse_requests, rank_requests

    users, items = small_bundle.state.users.ids.to_list(), small_bundle.state.items.ids.to_list()
    rows = [{"user_id": users[0], "k": 5}, {"user_id": users[1], "k": 2, "exclude": [items[0]]},
            {"user_id": "someone-new", "k": 4, "history": [items[1], items[2]]},
            {"user_id": users[2], "k": 3, "exclude": [items[3], "NOPE"]}, {"user_id": users[3]}]
    requests = parse_requests(pd.DataFrame(rows), small_bundle.config.k, 0)
    together = rank_requests(small_bundle, requests)
    alone = [rank_requests(small_bundle, [r])[0] for r in requests]
    assert together == alone
    assert [len(r["item_ids"]) for r in together][:2] == [5, 2]
