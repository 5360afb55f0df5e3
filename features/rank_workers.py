"""Batch ranking on every core: a large batch of users is split into parts that worker threads
rank at the same time.

Ranking a chunk of users is a chain of numpy, polars and compiled-tree calls that each release
the GIL, but most of them (selection, sorting, gathers, the trees) run on one core. Two parts
ranked by two threads keep both cores busy; each worker then runs its BLAS products and its
trees on one thread, so the workers do not fight over the cores. The result does not depend on
the split: a user's candidates, features and ties never depend on the other users of the batch.

``RECSYS_RANK_WORKERS`` sets the number of workers (default: the cores this process may run on,
:func:`usable_cores`); 1 ranks in the caller's thread, as Spark's executors do (they already run
one worker per core).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

from threadpoolctl import threadpool_limits

from recsys.errors import RecsysError

WORKERS_ENV = "RECSYS_RANK_WORKERS"
# A part smaller than this costs more in per-call overhead than a second core wins; the server's
# batches (at most 64 users) are always ranked in the caller's thread.
MIN_PART_USERS = 256

_in_worker: ContextVar[bool] = ContextVar("recsys_rank_worker", default=False)
_split_lock = threading.Lock()
T = TypeVar("T")


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """The cores this process may run on: its CPU affinity where the platform has one, capped by
    a cgroup CPU quota (:func:`quota_cores`; the system's is read once per process). A container
    started with ``--cpus=1`` on a 16-core host sees 16 cores in its affinity; 16 threads there
    would take turns on one core's time."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cgroup_root is None and proc_cgroup is None:
        quota = _system_quota(CGROUP_ROOT, PROC_CGROUP)
    else:
        quota = quota_cores(cgroup_root, proc_cgroup)
    return min(cores, quota) if quota else cores


@functools.lru_cache(maxsize=4)
def _system_quota(cgroup_root: Path, proc_cgroup: Path) -> int | None:
    """The machine's quota, read once per process: the server asks for the worker count on every
    request, and a few file reads there are a cost with nothing to gain (a cgroup's quota is set
    when its container starts)."""
    return quota_cores(cgroup_root, proc_cgroup)


def quota_cores(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> int | None:
    """Whole cores (rounded up, at least 1) of the tightest CPU quota over this process's cgroup
    and its parents, or None when none has a quota or none can be read (affinity alone decides).

    The cgroup file system is read at ``cgroup_root`` (default ``/sys/fs/cgroup``): v2 ``cpu.max``
    (``"max"`` = none), else v1 ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` (-1 = none).
    The process's cgroup path comes from ``proc_cgroup`` (default ``/proc/self/cgroup``); inside
    a container that mounts its own cgroup at the root, the path does not exist there and the
    walk up to the root finds the container's quota."""
    root = CGROUP_ROOT if cgroup_root is None else Path(cgroup_root)
    v2 = root / "cpu.max"
    if not v2.exists() and (root / "cpu").is_dir():  # v1 (or hybrid with cpu on v1)
        return _tightest(root / "cpu", _own_path(proc_cgroup, v1=True), _v1_quota)
    return _tightest(root, _own_path(proc_cgroup, v1=False), _v2_quota)


def _own_path(proc_cgroup: Path | None, v1: bool) -> str:
    """This process's cgroup path (``"/"`` when unknown) from a ``/proc/self/cgroup`` listing:
    the ``0::`` line for v2, the line whose controllers include ``cpu`` for v1."""
    try:
        lines = (PROC_CGROUP if proc_cgroup is None else Path(proc_cgroup)).read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if (v1 and "cpu" in controllers.split(",")) or (not v1 and hierarchy == "0" and controllers == ""):
            return path or "/"
    return "/"


def _tightest(mount: Path, path: str, read) -> int | None:
    """The smallest quota (whole cores) of the cgroup at ``path`` under ``mount`` and its parents."""
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    quotas = [read(mount.joinpath(*parts[:depth])) for depth in range(len(parts), -1, -1)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _v2_quota(folder: Path) -> int | None:
    try:
        fields = (folder / "cpu.max").read_text().split()
        if not fields or fields[0] == "max":
            return None
        return _whole_cores(int(fields[0]), int(fields[1]) if len(fields) > 1 else 100_000)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> int | None:
    try:
        return _whole_cores(int((folder / "cpu.cfs_quota_us").read_text()),
                            int((folder / "cpu.cfs_period_us").read_text()))
    except (OSError, ValueError):
        return None


def _whole_cores(quota: int, period: int) -> int | None:
    if quota <= 0 or period <= 0:  # v1 writes -1 for "no quota"
        return None
    return max(1, math.ceil(quota / period))


def rank_workers() -> int:
    """Worker threads for batch ranking: ``RECSYS_RANK_WORKERS``, else the usable cores."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return usable_cores()
    workers = int(value) if value.isascii() and value.isdigit() else 0
    if workers < 1:
        raise RecsysError(f"{WORKERS_ENV}={value!r} is not a worker count; set a whole number of at least 1 "
                          f"(1 = rank in one thread) or unset it to use every core")
    return workers


def in_worker() -> bool:
    """True inside a ranking worker thread: compute on this one thread (trees, BLAS)."""
    return _in_worker.get()


def part_slices(n_users: int, workers: int, min_part: int = MIN_PART_USERS) -> list[slice]:
    """Contiguous, near-equal slices covering range(n_users): at most ``workers`` of them, none
    under ``min_part`` users unless there is one slice."""
    n_parts = max(1, min(workers, n_users // max(1, min_part)))
    bounds = [round(i * n_users / n_parts) for i in range(n_parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(n_parts)]


def map_parts(rank: Callable[[slice], T], n_users: int, *, workers: int | None = None,
              min_part: int | None = None) -> list[T]:
    """``rank(part)`` for each slice of ``part_slices(n_users, ...)``, in slice order (defaults:
    ``rank_workers()`` workers, parts of at least ``MIN_PART_USERS``).

    With more than one slice the calls run on worker threads, BLAS held to one thread each
    (threadpoolctl, process-wide for the duration); an error in any part is raised here.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if in_worker():  # a split inside a worker would wait on the lock its own caller holds
        workers = 1
    slices = part_slices(n_users, rank_workers() if workers is None else workers,
                         MIN_PART_USERS if min_part is None else min_part)
    if len(slices) == 1:
        return [rank(slices[0])]

    def run(part: slice) -> T:
        _in_worker.set(True)  # each pool thread has its own context: this flag stays in the worker
        return rank(part)

    # threadpoolctl's limit is process-wide and restores what it found: callers that overlapped
    # could leave BLAS on one thread for good, so split batches take turns.
    with _split_lock, threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(len(slices), thread_name_prefix="recsys-rank") as pool:
        return list(pool.map(run, slices))
