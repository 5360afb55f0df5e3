"""Stage times: exclusive of nested stages, added up over repeats, silent outside a collect block."""

import time

import pytest

from recsys.stage_timer import collect, stage


def test_nested_stage_time_is_taken_out_of_the_outer_stage():
    with collect() as times:
        with stage("outer"):
            time.sleep(0.02)
            with stage("inner"):
                time.sleep(0.3)
        with stage("inner"):
            time.sleep(0.05)
    assert times["inner"] >= 0.35  # both runs of the stage add up
    assert 0.02 <= times["outer"] < 0.2  # without the 0.3 s spent in the nested stage


def test_decorated_function_is_charged_and_a_nested_collect_joins_the_outer_one():
    @stage("work")
    def work():
        time.sleep(0.02)
        return 3

    with collect() as outer:
        with collect() as inner:
            assert work() == 3
        assert inner is outer
    assert set(outer) == {"work"} and outer["work"] >= 0.02
    assert work() == 3  # outside a collect block nothing is recorded, and nothing fails
    assert set(outer) == {"work"}


def test_a_failing_stage_is_still_charged_and_the_error_propagates():
    with collect() as times:
        with pytest.raises(ValueError, match="bad input"), stage("load"):
            raise ValueError("bad input")
    assert "load" in times
