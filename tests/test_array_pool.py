"""Scratch arrays reused between chunks (features.array_pool), and the chunked ranking paths that
use them giving the one-chunk result (a stale value from the chunk before would change it)."""

import threading

import numpy as np
import pytest

from features.array_pool import give, reusing_arrays, take, take_filled


def test_outside_a_block_every_take_is_a_new_array_and_give_does_nothing():
    first = take((4, 5), np.float32)
    give(first)
    second = take((4, 5), np.float32)
    assert second.shape == (4, 5) and second.dtype == np.float32 and second.flags.c_contiguous
    assert not np.shares_memory(first, second)
    assert np.array_equal(take_filled((3,), np.int64, 7), [7, 7, 7])
    assert not take_filled((2, 2), bool, False).any()


def test_inside_a_block_a_given_back_array_is_handed_out_again_and_a_lent_one_is_not():
    with reusing_arrays():
        first = take((100, 10), np.float32)
        lent = take((100, 10), np.float32)
        assert not np.shares_memory(first, lent)
        give(first)
        again = take((10, 100), np.int32)  # any shape and dtype that fits the bytes
        assert np.shares_memory(again, first) and not np.shares_memory(again, lent)
        assert again.shape == (10, 100) and again.dtype == np.int32
        assert not np.shares_memory(take((100, 10), np.float32), lent)


def test_the_smallest_buffer_that_holds_the_array_is_reused():
    with reusing_arrays():
        small, large = take((100,), np.uint8), take((1000,), np.uint8)
        give(large, small)
        assert np.shares_memory(take((50,), np.uint8), small)
        assert np.shares_memory(take((500,), np.uint8), large)
        assert not np.shares_memory(take((2000,), np.uint8), large)  # none holds it: a new one


def test_the_pool_is_emptied_when_the_outermost_block_ends():
    with reusing_arrays():
        with reusing_arrays():
            inner = take((64,), np.float64)
            give(inner)
        assert np.shares_memory(take((64,), np.float64), inner)  # the outer block still reuses
        outer = take((64,), np.float64)
        give(outer)
    with reusing_arrays():
        assert not np.shares_memory(take((64,), np.float64), outer)


def test_arrays_not_from_the_pool_are_ignored_by_give():
    with reusing_arrays():
        own = np.zeros(256, dtype=np.uint8)
        give(own, None)
        assert not np.shares_memory(take((256,), np.uint8), own)


def test_threads_never_hold_the_same_buffer_at_once():
    errors = []
    start = threading.Barrier(4)

    def work(tag: int) -> None:
        start.wait()
        for _ in range(200):
            array = take((1024,), np.int64)
            array.fill(tag)
            if not (array == tag).all():  # another thread wrote into it
                errors.append(tag)
            give(array)

    with reusing_arrays():
        threads = [threading.Thread(target=work, args=(tag,)) for tag in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def _without_reuse(monkeypatch, module) -> None:
    """Every ``take`` in ``module``'s chunk loop a new array (its ``reusing_arrays`` a no-op)."""
    import contextlib

    monkeypatch.setattr(module, "reusing_arrays", contextlib.nullcontext)


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_candidates_with_arrays_reused_equal_candidates_with_new_arrays(small_bundle, monkeypatch, chunk_size):
    from features import candidates

    state = small_bundle.state
    users = np.array([0, 3, -1, 7, 2, 9, 11, 5, 8], dtype=np.int32)  # -1: a chunk with an unknown user
    config = small_bundle.config.candidates
    reused = candidates.generate_candidates(state, users, config, seed=0, with_scores=True, chunk_size=chunk_size)
    _without_reuse(monkeypatch, candidates)
    new = candidates.generate_candidates(state, users, config, seed=0, with_scores=True, chunk_size=chunk_size)
    assert reused.equals(new)
    assert reused["query_idx"].n_unique() >= len(users) - 1 and reused["als_score"].is_not_nan().sum() > 0


@pytest.mark.parametrize("name", ["als", "popularity", "text"])
def test_baseline_top_k_with_arrays_reused_equals_top_k_with_new_arrays(small_bundle, monkeypatch, name):
    from training import evaluate

    state = small_bundle.state
    users = np.array([0, 3, 7, 2, 9, 11, 5, 8], dtype=np.int64)
    scorer = evaluate.baseline_scorers(state, seed=4)[name]
    reused = evaluate.topk_dense(state, users, scorer, 10, seed=0, chunk_size=3)
    _without_reuse(monkeypatch, evaluate)
    new = evaluate.topk_dense(state, users, scorer, 10, seed=0, chunk_size=3)
    assert np.array_equal(reused, new)
    for row, user in zip(reused, users, strict=True):
        assert (row >= 0).sum() == 10
        assert not set(state.seen[user].indices.tolist()) & set(row.tolist())  # seen items never ranked
