"""Gated promotion and rollback of the champion alias, on a real (SQLite) MLflow registry."""

import json

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from recsys.errors import RecsysError
from training import registry

BASE = np.random.default_rng(0).uniform(0.0, 0.6, size=300)  # per-user nDCG of version 1 (mean 0.30)


def add_version(client, folder, value: float, digest: str, per_user: np.ndarray | None) -> str:
    """A registered version of 'm' as training leaves it: validation tags and, unless None, a run
    artifact with its per-user validation nDCG (users u0..u299) named by the validation.per_user tag."""
    with mlflow.start_run() as run:
        if per_user is not None:
            path = folder / f"per_user_{run.info.run_id}.parquet"
            pl.DataFrame({"user_id": [f"u{i}" for i in range(len(per_user))], "ndcg": per_user}).write_parquet(path)
            mlflow.log_artifact(str(path), "validation")
    version = client.create_model_version("m", source=str(folder / "artifacts"), run_id=run.info.run_id).version
    tags = {registry.METRIC_TAG: "ndcg_at_10", registry.VALUE_TAG: str(value), registry.DIGEST_TAG: digest}
    if per_user is not None:
        tags[registry.PER_USER_TAG] = f"runs:/{run.info.run_id}/validation/per_user_{run.info.run_id}.parquet"
    for key, tag in tags.items():
        client.set_model_version_tag("m", version, key, tag)
    return str(version)


@pytest.fixture
def model(tmp_path, monkeypatch, fresh_store):
    monkeypatch.chdir(tmp_path)  # run artifacts (./mlruns) stay in the test's folder
    uri = fresh_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    client.create_registered_model("m")
    (tmp_path / "artifacts").mkdir()
    mlflow.set_experiment("registry-test")
    for shift, digest in ((0.0, "d1"), (-0.05, "d1"), (0.05, "d1"), (0.20, "other")):
        add_version(client, tmp_path, 0.30 + shift, digest, BASE + shift)
    client.tmp_path = tmp_path
    yield client
    mlflow.set_tracking_uri(None)


def test_promotion_refuses_a_worse_model_and_accepts_a_better_one(model):
    assert registry.promote("m", 1).to_version == "1"  # first champion
    with pytest.raises(RecsysError, match=r"refused: m version 2 vs champion version 1: ndcg_at_10 0.2500 vs 0.3000, "
                                          r"paired lift -0.0500 \(95% CI -0.0500 to -0.0500\) on the same 300 "
                                          r"validation users; the interval does not clear zero"):
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
    weakest = add_version(model, model.tmp_path, 0.20, "d1", BASE - 0.10)
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


def test_a_gap_within_the_noise_is_refused_and_a_clear_one_promoted(model):
    """The gate is the paired 95% interval on the validation users, not the point estimates."""
    registry.promote("m", 1)
    noise = np.random.default_rng(1).normal(0.0, 0.1, size=300)
    noisy = add_version(model, model.tmp_path, 0.3020, "d1", BASE + 0.002 + noise - noise.mean())
    with pytest.raises(RecsysError, match=r"paired lift \+0\.0020 \(95% CI -0\.0\d+ to \+0\.0\d+\) on the same 300 "
                                          r"validation users; the interval does not clear zero"):
        registry.promote("m", noisy)
    move = registry.promote("m", 3)
    assert move.to_version == "3" and "paired lift +0.0500 (95% CI +0.0500 to +0.0500)" in move.reason


def test_a_version_without_per_user_scores_cannot_pass_the_gate(model):
    registry.promote("m", 1)
    old = add_version(model, model.tmp_path, 0.40, "d1", None)
    with pytest.raises(RecsysError, match=f"m version {old} has no per-user validation scores .* use --force"):
        registry.promote("m", old)
    assert registry.promote("m", old, force=True).to_version == old


def test_versions_validated_on_different_users_are_not_paired(model):
    registry.promote("m", 1)
    fewer = add_version(model, model.tmp_path, 0.40, "d1", (BASE + 0.1)[:299])  # one validation user short
    with pytest.raises(RecsysError, match=rf"m versions {fewer} and 1 were validated on different users \(299 and "
                                          r"300, 299 shared\); use --force"):
        registry.promote("m", fewer)


def test_model_cards_show_champion_challenger_and_the_promotion_history(model):
    """Every alias move re-renders the registered model's card (aliases, figures, the whole
    history) and the history section of the versions it touched, keeping the rest of their card."""
    model.update_model_version("m", "3", description="# m version 3\n\nthe run summary")
    model.set_model_version_tag("m", "3", "validation.ndcg_at_10", "0.3500")
    registry.promote("m", 1)
    assert registry.register_outcome("m", "3") == (registry.CHALLENGER, "1")
    card = model.get_registered_model("m").description
    assert "| champion | 1 |" in card and "| challenger | 3 | 0.3500 |" in card
    assert "| promote | - | 1 | first champion (ndcg_at_10 0.3000) |" in card
    assert "Not promoted yet: `recsys promote --name m --version 3`" in model.get_model_version("m", "3").description
    registry.promote("m", 3)
    card = model.get_registered_model("m").description
    assert "| challenger |" not in card and "| champion | 3 | 0.3500 |" in card
    history_rows = [line for line in card.splitlines() if line.startswith("| 20")]
    assert [row.split(" | ")[2:4] for row in history_rows] == [["1", "3"], ["-", "1"]]  # newest first
    version_card = model.get_model_version("m", "3").description
    assert version_card.startswith("# m version 3\n\nthe run summary\n\n## Promotion history")
    assert version_card.count("## Promotion history") == 1
    assert "| promote | 1 | 3 | m version 3 vs champion" in version_card
    assert "| 1 | 3 |" in model.get_model_version("m", "1").description  # the old champion's card shows its move
