"""benchmarks/paired_growth.py: the median exponent's interval, and what it refuses to time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "paired_growth", Path(__file__).resolve().parents[1] / "benchmarks" / "paired_growth.py")
paired_growth = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(paired_growth)


def test_the_interval_is_the_order_statistics_that_cover_the_median_95_percent():
    # n = 15: the 4th smallest to the 4th largest, 1 - 2 (1 + 15 + 105 + 455) / 2**15 = 96.5%;
    # the 5th would cover 88.2%
    values = np.random.default_rng(3).permutation(np.arange(1.0, 16.0))
    assert paired_growth.median_interval(values) == (8.0, 4.0, 12.0)
    assert paired_growth.interval_rank(15) == (4, pytest.approx(1 - 2 * 576 / 2**15))
    # n = 6: only the extremes cover 95% (1 - 2 / 64 = 96.9%)
    assert paired_growth.median_interval(np.array([1.3, 1.0, 1.2, 1.1, 1.05, 1.15])) == (
        pytest.approx(1.125), 1.0, 1.3)


def test_too_few_values_for_an_interval_are_refused():
    with pytest.raises(ValueError, match="5 values are too few for a 95% interval of their median; give 6"):
        paired_growth.median_interval(np.ones(5))


def _main(monkeypatch, *args: str) -> None:
    monkeypatch.setattr("sys.argv", ["paired_growth.py", *args])
    paired_growth.main()


def test_refuses_fewer_than_seven_pairs(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit):
        _main(monkeypatch, str(tmp_path), str(tmp_path), "--pairs", "6")
    assert "--pairs 6: give at least 7 (one warm-up and 6 for the median's 95% interval)" in capsys.readouterr().err


def test_refuses_a_folder_without_interactions(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit):
        _main(monkeypatch, str(tmp_path / "small"), str(tmp_path / "large"))
    assert "small has no interactions.parquet: make it with `recsys generate" in capsys.readouterr().err
