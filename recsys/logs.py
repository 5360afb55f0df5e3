"""One log format for every command: the CLI's own lines, progress lines and the model server's.

``LOG_FORMAT`` is used by ``configure`` (the CLI) and by ``uvicorn_log_config`` (``recsys serve``
passes it to uvicorn with ``--log-config``, so server and access lines look the same).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
NOISY = ("mlflow", "alembic", "urllib3", "httpx", "transformers")


def configure(quiet: bool) -> None:
    """INFO (WARNING when ``quiet``) in ``LOG_FORMAT``; third-party chatter at WARNING: MLflow's
    own INFO lines (its own format) and the Hugging Face "Loading weights" bars are off (set
    ``MLFLOW_LOGGING_LEVEL`` or ``HF_HUB_DISABLE_PROGRESS_BARS`` yourself to keep them)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers reads it at import too
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=LOG_FORMAT, datefmt=DATE_FORMAT)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config() -> str:
    """Path of a uvicorn ``--log-config`` JSON that writes uvicorn's and this project's loggers in
    ``LOG_FORMAT`` to stderr (written once per content, so an exec'd server can read it)."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    config = {"version": 1, "disable_existing_loggers": False,
              "formatters": {"plain": {"format": LOG_FORMAT, "datefmt": DATE_FORMAT}},
              "handlers": {"stderr": handler},
              "loggers": {name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
                          for name in ("uvicorn", "uvicorn.access", "recsys")},
              "root": {"handlers": ["stderr"], "level": "WARNING"}}
    text = json.dumps(config, indent=1, sort_keys=True)
    folder = Path(tempfile.gettempdir()) / f"recsys-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid():  # someone else's folder: not a config to trust
        folder = Path(tempfile.mkdtemp(prefix="recsys-"))
    path = folder / f"recsys-uvicorn-log-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not path.exists() or path.read_text() != text:
        partial = path.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(path)
    return str(path)
