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


def test_median_interval_brackets_the_median_and_narrows_with_agreeing_pairs():
    spread = np.array([1.00, 1.02, 1.04, 1.10, 1.30])
    median, low, high = paired_growth.median_interval(spread)
    assert median == pytest.approx(1.04)
    assert 1.00 <= low <= median <= high <= 1.30
    assert paired_growth.median_interval(np.full(7, 1.05)) == pytest.approx((1.05, 1.05, 1.05))


def test_median_interval_is_the_same_for_the_same_seed():
    values = np.random.default_rng(3).normal(1.1, 0.05, 15)
    assert paired_growth.median_interval(values) == paired_growth.median_interval(values)


def _main(monkeypatch, *args: str) -> None:
    monkeypatch.setattr("sys.argv", ["paired_growth.py", *args])
    paired_growth.main()


def test_refuses_fewer_than_four_pairs(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit):
        _main(monkeypatch, str(tmp_path), str(tmp_path), "--pairs", "3")
    assert "--pairs 3: give at least 4" in capsys.readouterr().err


def test_refuses_a_folder_without_interactions(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit):
        _main(monkeypatch, str(tmp_path / "small"), str(tmp_path / "large"))
    assert "small has no interactions.parquet: make it with `recsys generate" in capsys.readouterr().err
