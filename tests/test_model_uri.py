"""Model URIs are resolved once, up front: a URI that names nothing is a clear exit 2 in `rank` and
`serve`, and an alias is pinned to the version it names now."""

import re

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.errors import RecsysError
from serving.model_uri import resolve_model


@pytest.fixture
def registry(tmp_path, monkeypatch, fresh_store):
    """A SQLite registry in tmp_path with model 'm': versions 1 and 2, champion -> 1."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = fresh_store
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path / "artifacts"), run_id=None)
    client.set_registered_model_alias("m", "champion", "1")
    yield client
    mlflow.set_tracking_uri(None)


def test_an_alias_is_pinned_to_the_version_it_names_now(registry):
    resolved = resolve_model("models:/m@champion")
    assert (resolved.pinned_uri, resolved.version) == ("models:/m/1", "1")
    registry.set_registered_model_alias("m", "champion", "2")
    assert resolve_model("models:/m@champion").pinned_uri == "models:/m/2"
    assert resolve_model("models:/m/1").pinned_uri == "models:/m/1"


@pytest.mark.parametrize("uri, message", [
    ("models:/m@prod", r"m has no alias 'prod'; its aliases: champion; its versions: 1, 2"),
    ("models:/m/7", r"m has no version 7; its aliases: champion; its versions: 1, 2"),
    ("models:/m/seven", r"version 'seven' is not a number"),
    ("models:/nope@champion", r"no registered model named 'nope'; registered models: m"),
    ("models:/", r"is not models:/NAME/VERSION or models:/NAME@ALIAS"),
    ("no/such/folder", r"neither a model URI .* nor a local model folder"),
])
def test_a_uri_that_names_nothing_says_what_exists(registry, uri, message):
    with pytest.raises(RecsysError, match=message):
        resolve_model(uri)


@pytest.mark.parametrize("command", [
    ["rank", "--out", "out.parquet"],
    ["serve", "--port", "5999"],
])
def test_rank_and_serve_exit_2_on_a_bad_model_uri(registry, capsys, command):
    code = main(["-q", command[0], "--model", "models:/m@prod", *command[1:]])
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(r"recsys: error: model URI 'models:/m@prod': m has no alias 'prod'", err)
    assert "Traceback" not in err


def test_serve_refuses_a_folder_that_is_not_a_model(registry, tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    assert main(["-q", "serve", "--model", str(tmp_path / "not-a-model")]) == 2
    assert re.search(r"recsys: error: model '.*not-a-model' \(.*\): no MLmodel file in .*not an MLflow model",
                     capsys.readouterr().err)


def test_serve_refuses_a_registered_version_whose_files_are_gone(registry, capsys):
    assert main(["-q", "serve", "--model", "models:/m@champion"]) == 2  # version 1's source folder never existed
    assert re.search(r"recsys: error: model 'models:/m@champion' \(m version 1 \(run None\)\): no MLmodel file",
                     capsys.readouterr().err)
