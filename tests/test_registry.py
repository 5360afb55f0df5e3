"""Gated promotion and rollback of the champion alias, on a real (SQLite) MLflow registry."""

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from recsys.errors import RecsysError
from training import registry


@pytest.fixture
def model(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    client.create_registered_model("m")
    (tmp_path / "artifacts").mkdir()
    for value, digest in ((0.30, "d1"), (0.25, "d1"), (0.35, "d1"), (0.50, "other")):
        version = client.create_model_version("m", source=str(tmp_path / "artifacts")).version
        for key, tag in ((registry.METRIC_TAG, "ndcg_at_10"), (registry.VALUE_TAG, str(value)),
                         (registry.DIGEST_TAG, digest)):
            client.set_model_version_tag("m", version, key, tag)
    yield client
    mlflow.set_tracking_uri(None)


def test_promotion_refuses_a_worse_model_and_accepts_a_better_one(model):
    assert registry.promote("m", 1).to_version == "1"  # first champion
    with pytest.raises(RecsysError, match=r"refused: m version 2 has ndcg_at_10 0.2500, not better than champion "
                                          r"version 1 with 0.3000"):
        registry.promote("m", 2)
    assert registry.current_champion("m") == "1"
    move = registry.promote("m", 3)
    assert (move.from_version, move.to_version) == ("1", "3")
    assert model.get_model_version("m", "3").tags["promoted_from"] == "1"


def test_other_validation_data_cannot_be_compared(model):
    registry.promote("m", 1)
    with pytest.raises(RecsysError, match="validated on other data"):
        registry.promote("m", 4)


def test_force_is_recorded_and_rollback_walks_back(model):
    registry.promote("m", 1)
    registry.promote("m", 3)
    registry.promote("m", 2, force=True, reason="hotfix")
    history = json.loads(model.get_registered_model("m").tags[registry.HISTORY_TAG])
    assert [(h["from"], h["to"]) for h in history] == [(None, "1"), ("1", "3"), ("3", "2")]
    assert history[-1]["reason"] == "forced: hotfix"
    assert registry.rollback("m").to_version == "3"
    assert registry.rollback("m").to_version == "1"
    with pytest.raises(RecsysError, match="no previous champion"):
        registry.rollback("m")
    assert registry.current_champion("m") == "1"


@pytest.mark.parametrize("force", [False, True])
def test_promoting_a_missing_model_names_the_registered_ones(model, force):
    model.create_registered_model("other")
    with pytest.raises(RecsysError, match=r"^no registered model named 'nope'; registered models: m, other \("):
        registry.promote("nope", 1, force=force)


@pytest.mark.parametrize("force", [False, True])
def test_promoting_a_non_numeric_version_lists_the_versions(model, force):
    with pytest.raises(RecsysError, match=r"^version 'abc' is not a number; versions of m: 1, 2, 3, 4$"):
        registry.promote("m", "abc", force=force)
    assert registry.current_champion("m") is None


@pytest.mark.parametrize("force", [False, True])
def test_promoting_a_missing_version_lists_the_versions(model, force):
    with pytest.raises(RecsysError, match=r"^m has no version 7; its versions: 1, 2, 3, 4$"):
        registry.promote("m", 7, force=force)
    assert registry.current_champion("m") is None


def test_a_version_with_leading_zeros_is_the_same_version(model):
    registry.promote("m", 1)
    with pytest.raises(RecsysError, match="m version 1 is already the champion"):
        registry.promote("m", "01")


def test_rolling_back_a_missing_model_names_the_registered_ones(model):
    with pytest.raises(RecsysError, match=r"^no registered model named 'nope'; registered models: m \("):
        registry.rollback("nope")


@pytest.mark.parametrize(("argv", "message"), [
    (["promote", "--name", "nope", "--version", "1"], "no registered model named 'nope'; registered models: m"),
    (["promote", "--name", "nope", "--version", "1", "--force"], "no registered model named 'nope'"),
    (["promote", "--name", "m", "--version", "abc", "--force"], "version 'abc' is not a number; versions of m: 1, 2"),
    (["promote", "--name", "m", "--version", "7"], "m has no version 7; its versions: 1, 2, 3, 4"),
    (["promote", "--name", "m", "--version", "7", "--force"], "m has no version 7; its versions: 1, 2, 3, 4"),
    (["rollback", "--name", "nope"], "no registered model named 'nope'; registered models: m"),
])
def test_cli_reports_registry_mistakes_without_a_traceback(model, capsys, argv, message):
    from recsys.cli import main

    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"recsys: error: {message}")
    assert "Traceback" not in err


def test_history_records_the_kind_of_each_move(model):
    registry.promote("m", 1)
    registry.promote("m", 2, force=True, reason="hotfix")
    registry.promote("m", 3, force=True, reason="+5 items", kind=registry.CATALOG_UPDATE)
    registry.rollback("m")
    history = json.loads(model.get_registered_model("m").tags[registry.HISTORY_TAG])
    assert [(h["kind"], h["to"]) for h in history] == [("promote", "1"), ("forced", "2"), ("catalog-update", "3"),
                                                       ("rollback", "2")]
    assert model.get_model_version("m", "3").tags["promotion_kind"] == "catalog-update"
    with pytest.raises(ValueError, match="does not fit"):
        registry.promote("m", 4, kind=registry.ROLLBACK)


def test_a_promotion_whose_reason_says_rollback_is_not_replayed_as_one(model):
    weakest = str(model.create_model_version("m", source=model.get_model_version("m", "1").source).version)
    for key, tag in ((registry.METRIC_TAG, "ndcg_at_10"), (registry.VALUE_TAG, "0.20"), (registry.DIGEST_TAG, "d1")):
        model.set_model_version_tag("m", weakest, key, tag)
    registry.promote("m", weakest)
    registry.promote("m", 2, reason="rollback to be safe")  # a gated promotion: 0.25 beats 0.20
    registry.promote("m", 3)
    assert registry.rollback("m").to_version == "2"
    assert registry.current_champion("m") == "2"
    assert registry.rollback("m").to_version == weakest


def test_history_written_before_the_kind_field_replays_as_before():
    legacy = [{"time": "t", "from": None, "to": "1", "reason": "first champion (ndcg_at_10 0.3000)"},
              {"time": "t", "from": "1", "to": "3", "reason": "ndcg_at_10 0.3000 -> 0.3500"},
              {"time": "t", "from": "3", "to": "2", "reason": "forced: hotfix"},
              {"time": "t", "from": "2", "to": "3", "reason": "rollback from version 2"}]
    assert registry.champion_stack(legacy) == ["1", "3"]
    mixed = legacy + [{"time": "t", "kind": "promote", "from": "3", "to": "2", "reason": "rollback to be safe"}]
    assert registry.champion_stack(mixed) == ["1", "3", "2"]


def test_the_first_version_becomes_champion_and_later_ones_challenger(model):
    assert registry.register_outcome("m", "1") == (registry.CHAMPION, "1")
    assert registry.register_outcome("m", "2") == (registry.CHALLENGER, "1")
    assert registry.register_outcome("m", "3") == (registry.CHALLENGER, "1")  # the newest is the challenger
    aliases = model.get_registered_model("m").aliases
    assert (str(aliases[registry.CHAMPION]), str(aliases[registry.CHALLENGER])) == ("1", "3")
    registry.promote("m", 3)  # the challenger wins: champion, and no longer a challenger
    assert {a: str(v) for a, v in model.get_registered_model("m").aliases.items()} == {registry.CHAMPION: "3"}
