"""Command-line errors: exit status 2 and a message that says what was wrong."""

import json

import pytest

from recsys.cli import format_metrics_table, load_config, main
from recsys.errors import RecsysError


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"als_factorz": 8}))
    with pytest.raises(RecsysError, match="als_factorz"):
        load_config(str(path))


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"seed": 1, "text": {"steps": 3}}))
    config = load_config(str(path), seed=9)
    assert (config.seed, config.text.steps) == (9, 3)


def test_shipped_config_files_load_and_text_rich_changes_only_the_fine_tuning_steps():
    from dataclasses import replace
    from pathlib import Path

    from recsys.config import PipelineConfig

    folder = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(folder.glob("*.json"))
    assert {f.name for f in files} >= {"quick.json", "text-rich.json", "movielens-100k-tuned.json"}
    for path in files:
        load_config(str(path))  # every shipped file is a valid config
    defaults = PipelineConfig()
    rich = load_config(str(folder / "text-rich.json"))
    assert rich.text.steps == 4 * defaults.text.steps == 400
    assert rich == replace(defaults, text=replace(defaults.text, steps=400))


def test_train_flags_override_the_config_file_only_when_given(tmp_path, monkeypatch):
    from recsys import cli

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"split": "stratified", "k": 5, "seed": 3}))
    seen = {}

    def fake_load(config_path, **overrides):
        seen["config"] = load_config(config_path, **overrides)
        raise RecsysError("stop after the config")

    monkeypatch.setattr(cli, "load_config", fake_load)
    assert main(["-q", "train", "--data", "demo", "--config", str(path)]) == 2
    assert (seen["config"].split, seen["config"].k, seen["config"].seed) == ("stratified", 5, 3)
    assert main(["-q", "train", "--data", "demo", "--config", str(path), "--split", "temporal", "--seed", "8"]) == 2
    assert (seen["config"].split, seen["config"].k, seen["config"].seed) == ("temporal", 5, 8)
    assert main(["-q", "train", "--data", "demo"]) == 2
    assert (seen["config"].split, seen["config"].k, seen["config"].seed) == ("temporal", 10, 42)


def test_bad_k_exits_with_status_2(capsys):
    assert main(["train", "--data", "demo", "--k", "0"]) == 2
    assert "--k must be between 1 and 100, got 0" in capsys.readouterr().err


def test_missing_data_folder_exits_with_status_2(tmp_path, capsys):
    assert main(["-q", "train", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_metrics_table_sorted_by_ndcg():
    # Neither the names' order nor the insertion order is the nDCG order.
    table = format_metrics_table({"a": {"ndcg@10": 0.3}, "b": {"ndcg@10": 0.1}, "c": {"ndcg@10": 0.2}}, 10)
    assert [line.split()[0] for line in table.splitlines()[1:4]] == ["a", "c", "b"]


def test_a_bad_rank_worker_count_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_RANK_WORKERS", "lots")
    assert main(["-q", "rank", "--model", "models:/no-such-model/1", "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "RECSYS_RANK_WORKERS='lots' is not a worker count" in err and "no-such-model" not in err
