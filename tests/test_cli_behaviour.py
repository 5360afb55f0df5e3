"""The command line behaves like the tools people know: --version, -q after the subcommand, help
with descriptions and defaults, `config show`, `serve --host`, `runs --k` warnings, and no empty
MLflow store started by a command that only reads one."""

from __future__ import annotations

import re

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from recsys import __version__
from recsys.cli import build_parser, main, serve_command
from recsys.config import PipelineConfig, field_docs


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"recsys {__version__}"


def test_quiet_is_accepted_before_and_after_the_subcommand():
    assert build_parser().parse_args(["-q", "runs"]).quiet is True
    assert build_parser().parse_args(["runs", "-q"]).quiet is True
    assert build_parser().parse_args(["runs"]).quiet is False


COMMANDS = ["demo", "train", "rank", "serve", "promote", "rollback", "add-items", "import", "generate", "runs",
            "config"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_help_has_a_description_and_shows_defaults(capsys, name):
    with pytest.raises(SystemExit):
        main([name, "-h"])
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert description.strip() and not description.lstrip().startswith(("options", "positional"))
    if name in ("demo", "rank", "serve", "runs"):
        assert "(default: " in text


def test_defaults_are_shown_with_their_values(capsys):
    with pytest.raises(SystemExit):
        main(["rank", "-h"])
    text = " ".join(capsys.readouterr().out.split())
    assert "users per chunk (memory is flat in users) (default: 2048)" in text
    assert "--k K items per user (default: 10)" in text


def test_config_show_prints_every_setting_with_its_value_and_meaning(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"k": 20, "text": {"steps": 7}}')
    assert main(["config", "show", "--config", str(tmp_path / "c.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"# effective configuration: defaults, then {tmp_path / 'c.json'}"
    settings = {line.split(" = ")[0]: line for line in lines[1:]}
    assert set(settings) == set(PipelineConfig().flat())
    assert re.match(r"k = 20 +# list length K of the metrics and of served lists$", settings["k"])
    assert re.match(r"text\.steps = 7 +# optimizer steps$", settings["text.steps"])
    assert re.match(r"candidates\.n_text = 100 +# candidates from the text interest score per user$",
                    settings["candidates.n_text"])


def test_every_setting_has_a_meaning():
    docs = field_docs()
    assert [key for key in PipelineConfig().flat() if not docs.get(key)] == []


def test_serve_listens_where_it_is_told():
    assert build_parser().parse_args(["serve", "--model", "m"]).host == "127.0.0.1"
    command = serve_command(5001, 2, "0.0.0.0")
    assert command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--workers") + 1] == "2"


@pytest.fixture
def empty_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("args", [["runs"], ["rollback", "--name", "m"], ["promote", "--name", "m", "--version", "1"],
                                  ["rank", "--model", "models:/m@champion", "--out", "o.parquet"],
                                  ["serve", "--model", "models:/m@champion"]])
def test_reading_commands_outside_a_project_do_not_start_an_empty_store(empty_folder, capsys, args):
    assert main(["-q", *args]) == 2
    assert re.search(r"no MLflow store: no mlflow.db in .* or its parents, and MLFLOW_TRACKING_URI is not set",
                     capsys.readouterr().err)
    assert not (empty_folder / "mlflow.db").exists()


def test_the_store_is_found_from_a_subfolder_and_runs_warns_about_an_unused_k(empty_folder, monkeypatch, capsys,
                                                                             fresh_store):
    uri = fresh_store
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient().create_experiment("e")
    with mlflow.start_run(experiment_id=experiment, run_name="r1"):
        mlflow.log_params({"k": 10, "split": "temporal", "seed": 1})
        mlflow.log_metric("ndcg_at_10", 0.25)
    mlflow.set_tracking_uri(None)
    (empty_folder / "deeper" / "down").mkdir(parents=True)
    monkeypatch.chdir(empty_folder / "deeper" / "down")
    assert main(["runs", "--k", "10"]) == 0
    out = capsys.readouterr().out
    assert "r1" in out and "0.2500" in out and "warning" not in out
    assert main(["runs", "--k", "5"]) == 0
    assert "warning: no run here was evaluated at k=5 (they used k = 10), so the @5 columns are empty; pass --k 10" \
        in capsys.readouterr().out
    assert not (empty_folder / "deeper" / "down" / "mlflow.db").exists()


def test_runs_shows_the_version_each_run_registered_and_its_aliases(empty_folder, capsys, fresh_store):
    uri = fresh_store
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # an earlier test may have left another registry set
    client = MlflowClient()
    experiment = client.create_experiment("e")
    client.create_registered_model("m")
    run_ids = []
    for name in ("first", "second", "unregistered"):
        with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
            mlflow.log_params({"k": 10, "split": "temporal", "seed": 1})
            run_ids.append(run.info.run_id)
    for run_id in run_ids[:2]:
        client.create_model_version("m", source=str(empty_folder), run_id=run_id)
    client.set_registered_model_alias("m", "champion", "1")
    client.set_registered_model_alias("m", "challenger", "2")
    mlflow.set_tracking_uri(None)
    assert main(["runs"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert "m/1 @champion" in rows["first"] and "m/2 @challenger" in rows["second"]
    assert rows["unregistered"].split()[4] == "-"
