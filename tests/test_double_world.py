"""benchmarks/double_world.py: every user twice, in time order, written whole or not at all."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "double_world", Path(__file__).resolve().parents[1] / "benchmarks" / "double_world.py")
double_world = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(double_world)


def _events(users: list[str], minutes: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": users, "item_id": [f"I{m}" for m in minutes],
                         "timestamp": [datetime(2026, 1, 1, 0, m) for m in minutes]})


def test_doubled_interleaves_the_copy_in_time_order():
    frame = _events(["a", "b", "a", "c"], [1, 2, 2, 3]).with_columns(weight=pl.Series([1.0, 2.0, 3.0, 4.0]))
    out = double_world.doubled(frame, ["user_id"])
    # each row, then its copy; rows at the same time (b, a at minute 2) keep their order
    expected = pl.DataFrame({"user_id": ["a", "x2-a", "b", "a", "x2-b", "x2-a", "c", "x2-c"],
                             "item_id": ["I1", "I1", "I2", "I2", "I2", "I2", "I3", "I3"],
                             "timestamp": [datetime(2026, 1, 1, 0, m) for m in (1, 1, 2, 2, 2, 2, 3, 3)],
                             "weight": [1.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 4.0]})
    assert out.equals(expected)


def test_doubled_refuses_tables_out_of_time_order():
    with pytest.raises(ValueError, match="must be in time order"):
        double_world.doubled(_events(["a", "b"], [2, 1]), ["user_id"])


def test_double_folder_writes_twice_the_rows_and_users(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pl.DataFrame({"item_id": ["I1", "I2"], "title": ["one", "two"]}).write_parquet(src / "items.parquet")
    _events(["a", "b"], [1, 2]).write_parquet(src / "interactions.parquet")
    (_events(["a", "a", "b"], [1, 1, 2]).with_columns(impression_id=pl.Series(["s1", "s1", "s2"]),
                                                     clicked=pl.Series([1, 0, 1], dtype=pl.Int8))
     .write_parquet(src / "impressions.parquet"))
    (src / "import.json").write_text(json.dumps({"n_users": 2, "seed": 7}))
    dst = tmp_path / "dst"
    counts = double_world.double_folder(src, dst)
    assert counts == {"interactions": 4, "impressions": 6}
    impressions = pl.read_parquet(dst / "impressions.parquet")
    assert impressions["impression_id"].to_list() == ["s1", "s1", "x2-s1", "x2-s1", "s2", "x2-s2"]
    assert pl.read_parquet(dst / "items.parquet").equals(pl.read_parquet(src / "items.parquet"))
    meta = json.loads((dst / "import.json").read_text())
    assert (meta["n_users"], meta["n_interactions"], meta["seed"]) == (4, 4, 7)
    with pytest.raises(FileExistsError, match="exists"):
        double_world.double_folder(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_a_failed_write_leaves_no_folder_behind(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pl.DataFrame({"item_id": ["I1"], "title": ["one"]}).write_parquet(src / "items.parquet")
    _events(["a"], [1]).write_parquet(src / "interactions.parquet")
    _events(["a"], [1]).write_parquet(src / "impressions.parquet")  # no impression_id column: fails
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        double_world.double_folder(src, tmp_path / "out" / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert list((tmp_path / "out").iterdir()) == []  # neither dst nor the temporary folder
