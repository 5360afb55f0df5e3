"""Scratch arrays reused between chunks (features.array_pool), and the chunked ranking paths that
use them giving the one-chunk result (a stale value from the chunk before would change it)."""

import threading

import numpy as np
import pytest

from features import array_pool
from features.array_pool import give, reusing_arrays, take, take_filled


@pytest.fixture(autouse=True)
def _pool_every_size(monkeypatch):
    """The test arrays are kilobytes: pool them as the large ones are."""
    monkeypatch.setattr(array_pool, "MIN_POOLED_BYTES", 0)


def test_arrays_under_the_size_floor_are_never_pooled(monkeypatch):
    monkeypatch.setattr(array_pool, "MIN_POOLED_BYTES", 4096)
    with reusing_arrays():
        small = take((1023,), np.float32)  # 4,092 bytes
        give(small)
        assert not np.shares_memory(take((1023,), np.float32), small)
        large = take((1024,), np.float32)
        give(large)
        assert np.shares_memory(take((1024,), np.float32), large)
        assert not take_filled((1023,), bool, False).any() and take_filled((4096,), np.int8, 3).sum() == 3 * 4096


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
        next_one = take((100, 10), np.float32)  # ``again`` holds the given-back buffer: a new one
        assert not np.shares_memory(next_one, lent) and not np.shares_memory(next_one, again)


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


def test_threads_holding_arrays_at_the_same_time_never_share_a_buffer():
    n_threads, rounds = 4, 30
    held = threading.Barrier(n_threads)
    lock = threading.Lock()
    holding: list[list[np.ndarray]] = [[] for _ in range(rounds)]
    reused = []

    def work() -> None:
        with reusing_arrays():  # a worker's own block inside the job's, as evaluation and ranking parts open them
            for r in range(rounds):
                array = take((1024,), np.int64)
                with lock:
                    holding[r].append(array)
                    reused.append(any(np.shares_memory(array, a) for a in holding[r - 1]) if r else False)
                held.wait()  # every thread holds its array now
                held.wait()  # every thread has recorded its array: give back together
                give(array)

    with reusing_arrays():
        threads = [threading.Thread(target=work) for _ in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for arrays in holding:
        assert len(arrays) == n_threads
        assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])
    assert any(reused)  # the given-back buffers were handed out again


def _fresh_arrays_filled_with(monkeypatch, module, byte: int) -> None:
    """Every ``take`` in ``module`` a new array whose bytes are all ``byte`` (0xFF: NaN floats,
    true masks), its ``reusing_arrays`` a no-op: a read before write shows in the result."""
    import contextlib

    def filled(shape, dtype):
        return np.full(int(np.prod(shape)) * np.dtype(dtype).itemsize, byte, dtype=np.uint8).view(dtype).reshape(shape)

    monkeypatch.setattr(module, "reusing_arrays", contextlib.nullcontext)
    monkeypatch.setattr(module, "take", filled)


def _spy_on_takes(monkeypatch, module) -> list[np.ndarray]:
    taken = []

    def spied(shape, dtype, _take=module.take):
        taken.append(_take(shape, dtype))
        return taken[-1]

    monkeypatch.setattr(module, "take", spied)
    return taken


@pytest.mark.parametrize("chunk_size", [2, 40, 64])  # 40 and 64: past the few-rows product, BLAS writes into the array
def test_candidates_with_arrays_reused_equal_candidates_with_new_arrays(small_bundle, monkeypatch, chunk_size):
    from features import candidates

    state = small_bundle.state
    users = np.r_[np.arange(state.n_users)[::-1], -1].astype(np.int32)  # -1: a chunk with an unknown user
    config = small_bundle.config.candidates
    with monkeypatch.context() as patch:
        taken = _spy_on_takes(patch, candidates)
        reused = candidates.generate_candidates(state, users, config, seed=0, with_scores=True, chunk_size=chunk_size)
    assert any(np.shares_memory(a, b) for i, a in enumerate(taken) for b in taken[i + 1:])  # reuse happened
    runs = []
    for byte in (0x00, 0xFF):
        with monkeypatch.context() as patch:
            _fresh_arrays_filled_with(patch, candidates, byte)
            runs.append(candidates.generate_candidates(state, users, config, seed=0, with_scores=True,
                                                       chunk_size=chunk_size))
    assert runs[0].equals(runs[1]) and reused.equals(runs[0])
    assert reused["query_idx"].n_unique() == len(users) and reused["als_score"].is_not_nan().sum() > 0


@pytest.mark.parametrize("name", ["als", "popularity", "text"])
def test_baseline_top_k_with_arrays_reused_equals_top_k_with_new_arrays(small_bundle, monkeypatch, name):
    from features import candidates
    from training import evaluate

    state = small_bundle.state
    users = np.arange(state.n_users, dtype=np.int64)[::-1].copy()
    scorer = evaluate.baseline_scorers(state, seed=4)[name]
    reused = evaluate.topk_dense(state, users, scorer, 10, seed=0, chunk_size=40)
    runs = []
    for byte in (0x00, 0xFF):
        with monkeypatch.context() as patch:
            _fresh_arrays_filled_with(patch, evaluate, byte)
            _fresh_arrays_filled_with(patch, candidates, byte)  # the seen mask and the top-n mask
            runs.append(evaluate.topk_dense(state, users, scorer, 10, seed=0, chunk_size=40))
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(reused, runs[0])
    for row, user in zip(reused, users, strict=True):
        assert (row >= 0).sum() == 10
        assert not set(state.seen[user].indices.tolist()) & set(row.tolist())  # seen items never ranked


def test_scores_against_into_an_array_gives_the_same_values():
    from features.pair_scores import scores_against

    rng = np.random.default_rng(1)
    table = rng.standard_normal((500, 16), dtype=np.float32)
    for n_rows in (1, 32, 33, 200):
        rows = rng.standard_normal((n_rows, 16), dtype=np.float32)
        out = np.full((n_rows, 500), np.nan, dtype=np.float32)
        assert scores_against(rows, table, out=out) is out
        assert np.array_equal(out, scores_against(rows, table)), n_rows
