"""Stage times: exclusive of nested stages, added up over repeats, silent outside a collect block.

The stage timer reads ``time.perf_counter``; the tests give it a fake clock that only moves when
the test says so, so the expected times are exact and no assertion depends on this machine's speed.
"""

import os
from types import SimpleNamespace

import pytest

from recsys import stage_timer
from recsys.stage_timer import collect, stage


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter and process_time for the stage timer; ``clock.sleep(s)`` advances the
    wall clock by s seconds, ``clock.work(s)`` the process's CPU seconds."""
    now, cpu = [1000.0], [50.0]
    fake = SimpleNamespace(perf_counter=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
                           process_time=lambda: cpu[0], work=lambda s: cpu.__setitem__(0, cpu[0] + s))
    monkeypatch.setattr(stage_timer, "time", fake)
    return fake


def test_nested_stage_time_is_taken_out_of_the_outer_stage(clock):
    with collect() as times:
        with stage("outer"):
            clock.sleep(0.02)
            with stage("inner"):
                clock.sleep(0.3)
            clock.sleep(0.01)
        with stage("inner"):
            clock.sleep(0.05)
    assert times["inner"] == pytest.approx(0.35)  # both runs of the stage add up
    assert times["outer"] == pytest.approx(0.03)  # without the 0.3 s spent in the nested stage
    assert set(times) == {"outer", "inner"}


def test_decorated_function_is_charged_and_a_nested_collect_joins_the_outer_one(clock):
    @stage("work")
    def work():
        clock.sleep(0.02)
        return 3

    with collect() as outer:
        with collect() as inner:
            assert work() == 3
        assert inner is outer
    assert outer == {"work": pytest.approx(0.02)}
    assert work() == 3  # outside a collect block nothing is recorded, and nothing fails
    assert outer == {"work": pytest.approx(0.02)}


def test_a_failing_stage_is_still_charged_and_the_error_propagates(clock):
    with collect() as times:
        with pytest.raises(ValueError, match="bad input"), stage("load"):
            clock.sleep(0.4)
            raise ValueError("bad input")
    assert times == {"load": pytest.approx(0.4)}


def test_a_top_level_stage_logs_its_time_the_cores_it_kept_busy_and_the_memory_it_leaves(clock, caplog):
    caplog.set_level("INFO", logger="recsys.stage_timer")
    with collect():
        with stage("load"):
            clock.sleep(2.5)
            clock.work(1.0)
            with stage("inner"):  # a nested stage is not a progress line
                clock.sleep(0.5)
                clock.work(0.95)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    # 1.95 CPU seconds over 3.0 wall seconds, the nested stage's included
    assert lines[0].startswith("stage load done in 3.0s (0.7 cores busy, resident ")
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("the current resident set is read from /proc (Linux)")
    now, peak = stage_timer.memory_gb()
    assert 0.01 < now <= peak  # this test process holds tens of MB at least, and the peak is a maximum


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc (Linux)")
def test_the_peak_is_never_reported_below_the_current_resident_set(monkeypatch):
    """statm and ru_maxrss are separate kernel counters: a peak read a little below the current
    value is raised to it; a platform without the current value passes the peak through."""
    import resource

    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=100))  # 100 KiB
    now, peak = stage_timer.memory_gb()
    assert now > 100 * 1024 / 1e9 and peak == now
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=10**9))  # ~1 TB
    assert stage_timer.memory_gb()[1] == pytest.approx(10**9 * 1024 / 1e9)

    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path) == "/proc/self/statm":
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    now, peak = stage_timer.memory_gb()
    assert now != now and peak == pytest.approx(10**9 * 1024 / 1e9)  # NaN now; the peak as reported


def test_a_stage_on_a_worker_thread_records_nothing_and_its_time_falls_to_the_callers_stage(clock):
    import threading

    from recsys.progress import _enabled, quiet_progress

    seen = []

    def job():
        seen.append(_enabled.get())
        with stage("inner"):
            clock.sleep(2.0)

    with collect() as times, stage("outer"), quiet_progress():
        clock.sleep(1.0)
        worker = threading.Thread(target=stage_timer.worker_context().run, args=(job,))
        worker.start()
        worker.join()
    assert times == {"outer": pytest.approx(3.0)}
    assert seen == [False]  # the caller's quiet progress holds on the worker


def test_work_is_charged_to_the_innermost_open_stage_and_recorded_only_inside_collect():
    import threading

    stage_timer.add_work("pairs", 5)  # outside collect: dropped
    assert stage_timer.work() == {}
    with collect():
        stage_timer.add_work("pairs", 1)  # no stage open: the bare name
        with stage("item_item"):
            stage_timer.add_work("pairs", 3)
            with stage("inner"):
                stage_timer.add_work("pairs", 10)
            stage_timer.add_work("pairs", 4)  # the inner stage has ended: item_item again
            worker = threading.Thread(target=stage_timer.worker_context().run,
                                      args=(lambda: stage_timer.add_work("pairs", 100),))
            worker.start()
            worker.join()
        with stage("evaluation"), collect():  # a nested collect joins the outer one
            stage_timer.add_work("pairs", 2)
        seen = stage_timer.work()
        seen["item_item/pairs"] = -1  # a copy: the collector keeps its own
        assert stage_timer.work() == {"pairs": 1, "item_item/pairs": 7, "inner/pairs": 10, "evaluation/pairs": 2}
    assert stage_timer.work() == {}


def test_the_cosine_item_item_fit_records_its_co_occurring_pairs_and_ease_none():
    import numpy as np
    import scipy.sparse as sp

    from features.item_item import fit_item_item

    # users {0,1}, {1,2}, {0,1}: pairs of different items (0,1) (1,0) (1,2) (2,1); 0 and 2 never meet
    ui = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 1, 0]], dtype=np.float32))
    sessions = sp.csr_matrix(np.array([[1, 0, 1]], dtype=np.float32))  # a session brings (0,2) and (2,0)
    for kind, extra, expected in (("cosine", None, {"item_item/pairs": 4}),
                                  ("cosine", sessions, {"item_item/pairs": 6}),
                                  ("ease", None, {})):  # EASE's cost is its dense inverse: no pairs
        with collect(), stage("item_item"):
            fit_item_item(ui, kind=kind, neighbours=2, sessions=extra)
            assert stage_timer.work() == expected, (kind, extra)
