"""Progress and logs: bars become periodic log lines when stderr is not a terminal, one log
format for the CLI and the model server, and no MLflow download bars for a local store."""

from __future__ import annotations

import json
import logging

import pytest

from recsys import logs
from recsys.progress import LogProgress, progress, quiet_progress


def test_without_a_terminal_a_bar_is_log_lines_with_counts_and_rate(caplog, capsys, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    caplog.set_level(logging.INFO, logger="recsys.progress")
    with progress(total=10, desc="evaluate", unit="user") as bar:
        assert isinstance(bar, LogProgress)
        bar.interval = 0.0  # every update logs, as if 10 s had passed each time
        bar.update(4)
        bar.update(6)
    lines = [r.getMessage() for r in caplog.records if r.name == "recsys.progress"]
    assert lines[0].startswith("evaluate: 4/10 users (40%), ") and "s left" in lines[0]
    assert lines[-1].startswith("evaluate: 10/10 users (100%), ") and "done in" in lines[-1]
    assert len(lines) == 3
    assert "\r" not in capsys.readouterr().err


def test_log_lines_come_at_most_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="recsys.progress")
    bar = LogProgress(total=1000, desc="rank users", unit="user", interval=3600)
    for _ in range(1000):
        bar.update(1)
    bar.set_postfix(loss="0.123")
    bar.close()
    bar.close()  # closing twice logs once
    lines = [r.getMessage() for r in caplog.records if r.name == "recsys.progress"]
    assert lines == [lines[0]] and lines[0].startswith("rank users: 1,000/1,000 users (100%)")
    assert lines[0].endswith("[loss=0.123]")


def test_quiet_progress_turns_every_bar_off(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    caplog.set_level(logging.INFO, logger="recsys.progress")
    with quiet_progress():
        with progress(total=3, desc="fit features", unit="part") as bar:
            bar.update(3)
    with quiet_progress(False):
        assert isinstance(progress(total=1, desc="x", unit="y"), LogProgress)
    assert not [r for r in caplog.records if r.name == "recsys.progress"]


def test_the_model_server_logs_in_the_cli_format():
    config = json.loads(open(logs.uvicorn_log_config()).read())
    assert config["formatters"]["plain"]["format"] == logs.LOG_FORMAT
    assert {"uvicorn", "uvicorn.access", "recsys"} <= set(config["loggers"])
    from recsys.cli import serve_command

    command = serve_command(5001)
    assert command[command.index("--log-config") + 1] == logs.uvicorn_log_config()


@pytest.mark.parametrize("uri, quiet", [("sqlite:////tmp/x/mlflow.db", "false"), ("http://127.0.0.1:5000", None)])
def test_a_local_store_has_no_download_bars(monkeypatch, uri, quiet):
    from training.tracking import configure_tracking

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "unset")  # recorded, so restored afterwards
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        configure_tracking()
        import os

        assert os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR") == quiet
    finally:
        import mlflow

        mlflow.set_tracking_uri(None)
