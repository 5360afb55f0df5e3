"""Batch ranking split across worker threads: the split, the workers' flag, and the same answers."""

import os
import threading

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import features.rank_workers as rank_workers
import serving.recommend as recommend
from features.rank_workers import in_worker, map_parts, part_slices
from recsys.errors import RecsysError


@pytest.mark.parametrize("n_users, workers, min_part, sizes", [
    (1000, 2, 256, [500, 500]),
    (1024, 4, 256, [256, 256, 256, 256]),
    (1001, 4, 256, [334, 333, 334]),    # four parts would be under min_part
    (700, 4, 256, [350, 350]),       # a third part would be under min_part
    (300, 2, 256, [300]),            # too small to split
    (5000, 1, 256, [5000]),
    (0, 2, 256, [0]),
])
def test_parts_are_contiguous_near_equal_and_cover_every_user(n_users, workers, min_part, sizes):
    slices = part_slices(n_users, workers, min_part)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == n_users
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:], strict=False))


def test_parts_run_on_worker_threads_in_order_and_know_they_are_workers():
    seen = []

    def rank(part):
        seen.append((threading.current_thread().name, in_worker()))
        return list(range(part.start, part.stop))

    out = map_parts(rank, 1000, workers=2, min_part=100)
    assert out == [list(range(0, 500)), list(range(500, 1000))]
    assert {flag for _, flag in seen} == {True}
    assert all(name.startswith("recsys-rank") for name, _ in seen)
    assert not in_worker()  # the caller's thread is not a worker


def test_one_part_runs_in_the_callers_thread():
    out = map_parts(lambda part: (threading.current_thread().name, in_worker()), 1000, workers=1)
    assert out == [(threading.current_thread().name, False)]


def test_a_split_inside_a_worker_runs_in_that_worker():
    def rank(part):
        return map_parts(lambda inner: threading.current_thread().name, 1000, workers=2, min_part=100)

    outer = map_parts(rank, 1000, workers=2, min_part=100)  # would deadlock on the lock if it split again
    assert [len(names) for names in outer] == [1, 1]
    assert all(names[0].startswith("recsys-rank") for names in outer)


def test_an_error_in_a_worker_reaches_the_caller():
    def rank(part):
        if part.start > 0:
            raise ValueError(f"part at {part.start} failed")
        return part

    with pytest.raises(ValueError, match="part at 500 failed"):
        map_parts(rank, 1000, workers=2, min_part=100)


@pytest.mark.parametrize("value", ["0", "two", "-1", "1_000", "2.0"])
def test_a_bad_worker_count_is_refused_with_what_to_set(monkeypatch, value):
    monkeypatch.setenv("RECSYS_RANK_WORKERS", value)
    with pytest.raises(RecsysError, match="RECSYS_RANK_WORKERS=.* is not a worker count; set a whole number"):
        rank_workers.rank_workers()


def test_the_worker_count_comes_from_the_environment_or_the_cores(monkeypatch, tmp_path):
    monkeypatch.setattr(rank_workers, "CGROUP_ROOT", tmp_path)  # no quota here, whatever the machine's
    monkeypatch.setenv("RECSYS_RANK_WORKERS", "3")
    assert rank_workers.rank_workers() == 3
    monkeypatch.delenv("RECSYS_RANK_WORKERS")
    assert rank_workers.rank_workers() == len(os.sched_getaffinity(0))


def test_a_worker_count_below_one_is_refused():
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        map_parts(lambda part: part, 1000, workers=0)


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_workers_run_blas_on_one_thread_and_the_limit_is_lifted_after_an_error():
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        inside = []

        def rank(part):
            inside.append(_blas_threads())
            if part.start > 0:
                raise RuntimeError("boom")
            return part

        with pytest.raises(RuntimeError, match="boom"):
            map_parts(rank, 1000, workers=2, min_part=100)
        assert inside == [{1}, {1}]
        assert _blas_threads() == before == {2}


def test_trees_run_on_one_thread_inside_a_worker(small_bundle):
    """Frames of 20,000+ rows use every core in the caller's thread, one core in a worker."""
    from dataclasses import replace

    import numpy as np

    calls = []

    class RecordingTrees:
        def predict(self, matrix, threads=0):
            calls.append(threads)
            return np.zeros(matrix.shape[0])

    bundle = replace(small_bundle, _compiled=RecordingTrees(), _compile_tried=True, prior_weights={})
    arrays = {name: np.zeros(20_000, dtype=np.float32) for name in bundle.feature_columns}
    bundle.score(arrays)
    map_parts(lambda part: bundle.score(arrays), 1000, workers=2, min_part=100)
    assert calls == [0, 1, 1]


def test_a_split_batch_ranks_exactly_as_one_thread(small_bundle, monkeypatch):
    users = [*small_bundle.state.users.ids.to_list(), "nobody-1", "nobody-2"]
    one_thread = recommend.recommend_users(small_bundle, users, 7, workers=1)
    calls = []
    real = recommend._recommend_part
    monkeypatch.setattr(rank_workers, "MIN_PART_USERS", 8)
    monkeypatch.setattr(recommend, "_recommend_part",
                        lambda bundle, ids, k: calls.append(len(ids)) or real(bundle, ids, k))
    split = recommend.recommend_users(small_bundle, users, 7, workers=3)
    assert len(calls) == 3 and sum(calls) == len(users)
    assert split.equals(one_thread)
    assert split["user_id"].unique(maintain_order=True).to_list() == users  # users in input order


def _cgroup(tmp_path, files: dict[str, str], own: str = "0::/\n"):
    """A cgroup file system under tmp_path/fs with ``files`` and a /proc/self/cgroup listing ``own``."""
    root = tmp_path / "fs"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "cgroup"
    proc.write_text(own)
    return root, proc


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "150000 100000\n"}, 2),    # v2: 1.5 cores of quota -> 2 threads (rounded up)
    ({"cpu.max": "120000 100000\n"}, 2),    # 1.2 -> 2: up, not to the nearest
    ({"cpu.max": "250000 50000\n"}, 5),     # the period is read, not assumed
    ({"cpu.max": "50000 100000\n"}, 1),     # under one core still runs one
    ({"cpu.max": "max 100000\n"}, None),    # v2 without a quota
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),   # v1 without a quota
    ({"cpu.max": "200000 100000\n", "cpu/cpu.cfs_quota_us": "500000\n",
      "cpu/cpu.cfs_period_us": "100000\n"}, 2),  # a v2 cpu.max at the root wins over v1 files
    ({"cpu.max": "lots\n"}, None),          # unreadable: affinity decides
    ({}, None),                             # no cgroup files at all
])
def test_a_cgroup_cpu_quota_is_read_as_whole_cores(tmp_path, files, expected):
    root, proc = _cgroup(tmp_path, files, own="0::/\n1:cpu,cpuacct:/\n")
    assert rank_workers.quota_cores(root, proc) == expected


def test_the_quota_of_the_process_own_cgroup_and_its_parents_counts(tmp_path):
    # v2, a nested cgroup (a systemd slice): the root has no cpu.max; the tightest level wins.
    root, proc = _cgroup(tmp_path, {"app.slice/cpu.max": "400000 100000\n",
                                    "app.slice/job.service/cpu.max": "200000 100000\n",
                                    "other.slice/cpu.max": "100000 100000\n"},
                         own="0::/app.slice/job.service\n")
    assert rank_workers.quota_cores(root, proc) == 2
    (root / "app.slice/cpu.max").write_text("100000 100000\n")  # a parent's quota is tighter
    assert rank_workers.quota_cores(root, proc) == 1


def test_v1_reads_the_cpu_controller_path_and_walks_up_to_a_container_root(tmp_path):
    files = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
             "cpu/batch/cpu.cfs_quota_us": "150000\n", "cpu/batch/cpu.cfs_period_us": "100000\n"}
    root, proc = _cgroup(tmp_path, files, own="4:memory:/other\n3:cpu,cpuacct:/batch\n0::/\n")
    assert rank_workers.quota_cores(root, proc) == 2
    # In a container the listing names the host's path, absent from its own mount: the walk up
    # reaches the mount's root, which holds the container's quota.
    (root / "cpu/cpu.cfs_quota_us").write_text("300000\n")
    proc.write_text("3:cpu,cpuacct:/docker/0123abcd\n")
    assert rank_workers.quota_cores(root, proc) == 3


@pytest.fixture
def four_cores(monkeypatch):
    """An affinity of four cores whatever this machine has (or the test runner pinned it to), so
    a cap of one core can be told from no cap."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    return 4


def test_without_a_quota_the_usable_cores_are_this_process_affinity(tmp_path):
    root, proc = _cgroup(tmp_path, {})
    assert rank_workers.usable_cores(root, proc) == len(os.sched_getaffinity(0))


def test_the_usable_cores_are_the_affinity_capped_by_the_quota(tmp_path, four_cores):
    root, proc = _cgroup(tmp_path, {})
    assert rank_workers.usable_cores(root, proc) == 4  # no quota files
    (root / "cpu.max").write_text("900000 100000\n")
    assert rank_workers.usable_cores(root, proc) == 4  # a quota above the affinity changes nothing
    (root / "cpu.max").write_text("100000 100000\n")
    assert rank_workers.usable_cores(root, proc) == 1


def test_the_system_quota_is_read_once_per_process(monkeypatch, tmp_path, four_cores):
    # The server asks for the worker count on every request: the default location is read once.
    root, proc = _cgroup(tmp_path, {"cpu.max": "100000 100000\n"})
    monkeypatch.setattr(rank_workers, "CGROUP_ROOT", root)
    monkeypatch.setattr(rank_workers, "PROC_CGROUP", proc)
    first = rank_workers.usable_cores()
    assert first == 1
    (root / "cpu.max").write_text("max 100000\n")
    assert rank_workers.usable_cores() == first  # not read again
    assert rank_workers.usable_cores(root, proc) == 4  # an explicit root is read
