"""Wall time per pipeline stage, exclusive of nested stages, for the scaling benchmarks.

A top-level stage also logs, as it ends, the cores it kept busy on average (CPU seconds of every
thread of the process per wall second: 2.0 = both cores of a 2-core machine) and the memory it
left: where a stage runs below the machine's cores, work can overlap.

Code marks its stages with ``with stage("cf"): ...``; a run collects them with
``with collect() as times: ...``. A stage inside another is charged to itself only (its time is
taken out of the outer stage), so the stage times add up to the run's wall time, and a stage
that runs several times (candidates for the feature window, the full window and evaluation)
adds up. Outside ``collect`` the markers cost nothing and record nothing.

Code whose cost grows with a size other than the data's rows records that size with
``add_work("pairs", n)``; like time, it is charged to the stage open in the calling thread
(``item_item/pairs``; the bare name outside any stage) and summed per key over the run
(``work()`` reads them), so a benchmark can give a stage's growth against the work it did as
well as against the data.

Work on other threads (batch ranking's and evaluation's parts, the ranker variants fitted at
once, BPR beside the rest of the feature state) records no stage of its own: its wall time is
charged to the stage open in the thread that started it (``worker_context``), so evaluation's
candidates and ranking frames, ranked on worker threads, count as ``evaluation``.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger(__name__)
_current: ContextVar[_Collector | None] = ContextVar("recsys_stage_timer", default=None)


class _Collector:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.nested: list[float] = []  # per open stage: seconds spent in its nested stages
        self.open: list[str] = []  # names of the open stages, innermost last
        self.work: dict[str, float] = defaultdict(float)  # add_work's sizes, summed per "<stage>/<name>"


def worker_context() -> contextvars.Context:
    """A copy of the caller's context for a job on another thread, without the run's stage
    collector: stages inside the job record nothing (one collector's stack of open stages cannot
    be shared by threads), and the job's time falls to the caller's open stage."""
    context = contextvars.copy_context()
    context.run(_current.set, None)
    return context


@contextmanager
def collect() -> Iterator[dict[str, float]]:
    """Collect the stages run inside the block: yields a dict stage -> seconds, filled as they end.

    Inside another ``collect`` block it joins that one (the outer caller sees every stage).
    """
    if (active := _current.get()) is not None:
        yield active.seconds
        return
    collector = _Collector()
    token = _current.set(collector)
    try:
        yield collector.seconds
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge the block's wall time, less its nested stages, to ``name``."""
    collector = _current.get()
    if collector is None:
        yield
        return
    start, cpu_start = time.perf_counter(), time.process_time()
    collector.nested.append(0.0)
    collector.open.append(name)
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        collector.open.pop()
        inner = collector.nested.pop()
        collector.seconds[name] += elapsed - inner
        if collector.nested:
            collector.nested[-1] += elapsed
        else:  # a top-level stage of the run: say so, as a progress line, with the cores it kept busy
            # (the process's CPU seconds, every thread's, per wall second) and the memory it left
            cores = (time.process_time() - cpu_start) / elapsed if elapsed > 0 else 0.0
            now, peak = memory_gb()
            log.info("stage %s done in %.1fs (%.1f cores busy, resident %.1f GB, peak so far %.1f GB)", name, elapsed,
                     cores, now, peak)


def add_work(name: str, amount: float) -> None:
    """Add ``amount`` units of work done (pairs counted, items encoded) under ``name`` to the
    innermost open stage, as ``<stage>/<name>`` (``name`` alone outside any stage); nothing
    outside ``collect`` or on a worker thread, as for time."""
    collector = _current.get()
    if collector is not None:
        collector.work[f"{collector.open[-1]}/{name}" if collector.open else name] += amount


def work() -> dict[str, float]:
    """``add_work``'s sums so far in the open ``collect`` block, by ``<stage>/<name>`` (a copy;
    empty outside one)."""
    collector = _current.get()
    return {} if collector is None else dict(collector.work)


def memory_gb() -> tuple[float, float]:
    """(resident set now, the process's peak resident set so far), in GB (1e9 bytes); NaN for
    what this platform does not report (the current value is read from /proc on Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            now = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except OSError:
        now = float("nan")
    try:
        import resource
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        peak = peak_kb * 1024 / 1e9 if sys.platform != "darwin" else peak_kb / 1e9  # bytes on macOS
    except ImportError:  # Windows
        peak = float("nan")
    if not (math.isnan(now) or math.isnan(peak)):
        # statm and ru_maxrss come from different kernel counters (per-CPU approximations on
        # recent Linux): read together, the peak can be a few hundred KB below the current value.
        peak = max(peak, now)
    return now, peak
