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
