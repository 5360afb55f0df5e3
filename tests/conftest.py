"""Shared fixtures: tiny hand-made tables, a tiny generated demo, the shared data folder."""

from __future__ import annotations

import os
import sys

# Set once an xdist worker is pinned: the cores (within the quota) it had before.
ALL_CORES_ENV = "RECSYS_TEST_ALL_CORES"


def _one_share_of_the_cores_per_xdist_worker() -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2``), pin each worker to its own share of the
    cores before numpy, torch, polars or LightGBM start their thread pools, which size themselves
    from the affinity. Two workers that each start a pool per core would put twice as many busy
    threads as cores on the machine, and spinning OpenMP threads make that far slower than the
    serial run. A test that needs more threads than its share asks for them itself."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not (worker and count and hasattr(os, "sched_setaffinity")) or ALL_CORES_ENV in os.environ:
        return  # not a worker, or pinned already (a test module imports this file again as tests.conftest)
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit()):
        return  # a worker id of another naming: leave the cores as they are
    early = [name for name in ("numpy", "torch", "polars", "lightgbm") if name in sys.modules]
    if early:  # their pools are sized already: pinning now would leave them oversubscribed
        raise RuntimeError(f"tests/conftest.py: {early} imported before the xdist worker was pinned")
    from features.rank_workers import quota_cores  # imports none of them

    cores = sorted(os.sched_getaffinity(0))
    quota = quota_cores()  # a container's CPU quota: only that many cores' worth to share out
    usable = cores[:quota] if quota else cores
    share = usable[int(worker.removeprefix("gw")) % len(usable)::min(int(count), len(usable))]
    os.sched_setaffinity(0, share)
    os.environ[ALL_CORES_ENV] = ",".join(map(str, usable))


_one_share_of_the_cores_per_xdist_worker()

import contextlib  # noqa: E402
import tempfile  # noqa: E402
from datetime import datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402
import pytest  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Compiled ranker trees go to a cache of this test session, not the user's home.
os.environ.setdefault("RECSYS_CACHE_DIR", tempfile.mkdtemp(prefix="recsys-test-cache-"))

# Property tests (Hypothesis) explore new examples locally; under CI they replay a fixed sequence,
# so a CI run fails only on a change, never on the luck of the draw.
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    if os.environ.get("CI") == "true":
        _hypothesis_settings.load_profile("ci")
except ImportError:  # hypothesis is a dev dependency; the property tests import it themselves
    pass

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
T0 = datetime(2026, 1, 1)

# Process-wide settings that code under test sets for good (`recsys rank` pins polars to one
# thread, the Spark batch job every pool): put back as they were when the session started after
# each test, so no test runs slower, or differently, because of the tests (or module fixtures)
# that ran before it.
PROCESS_WIDE_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS",
                    "RECSYS_RANK_WORKERS", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")
_ENV_AT_START = {name: os.environ.get(name) for name in PROCESS_WIDE_ENV}


@pytest.fixture(autouse=True)
def _restore_process_wide_env():
    yield
    for name, value in _ENV_AT_START.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


@pytest.fixture
def items() -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["Goal in the derby", "Stocks rally", "Pasta recipe", "Mars launch"],
        "description": ["striker scores", "", "chef bakes", "rocket orbit"],
        "category": ["sports", "business", "lifestyle", "science"],
    })


@pytest.fixture
def interactions() -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u1"],
        "item_id": ["a", "b", "a", "c", "d", "c"],
        "timestamp": [day(0), day(1), day(2), day(3), day(4), day(5)],
        "weight": [1.0, 1.0, 1.0, 2.0, 1.0, 1.0],
    })


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (data tests need ../shared/data)")
    return SHARED_DATA


def tiny_config_dict() -> dict:
    """A PipelineConfig small enough for a test run with the real MiniLM (seconds, not minutes)."""
    return {
        "als_factors": 16, "als_iterations": 5, "bpr_factors": 16, "bpr_iterations": 10,
        "text": {"steps": 6, "batch_size": 16, "max_length": 32, "encode_batch_size": 64, "sequence_epochs": 2},
        "candidates": {"n_cf": 30, "n_text": 30, "n_popular": 20, "n_recent": 20},
        "ranker": {"num_boost_round": 30, "early_stopping_rounds": 10, "min_data_in_leaf": 5},
    }


@pytest.fixture(scope="session")
def small_bundle():
    """A real RankingBundle on a small generated world, without the language model (random unit
    item vectors) so it builds in a second: state + LambdaRank trained on a label window."""
    import numpy as np

    from features.bundle import RankingBundle
    from features.state import fit_feature_state
    from recsys.config import PipelineConfig
    from recsys.demo_data import DemoSpec, generate_demo
    from recsys.idmap import IdMap
    from recsys.split import split_interactions
    from training.variants import FINETUNED, fit_rankers, label_users, labelled_frame, validation_users

    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    config = PipelineConfig.from_dict(tiny_config_dict())
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(150, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    split = split_interactions(data.interactions, kind="temporal", test_fraction=0.25, impressions=data.impressions)
    users = IdMap(kind="user").fit(split.train["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    state = fit_feature_state(catalog=data.items, interactions=split.train, impressions=split.impressions_train,
                              item_vectors=vectors, users=users, items=items, config=config)
    label = label_users(state, split.test, config)
    frame = labelled_frame(state, label, split.impressions_test, config)
    ranker = fit_rankers({FINETUNED: frame}, validation_users(label[0], seed=0), config,
                         label_users=label[0])[FINETUNED]
    return RankingBundle(config=config, state=state, booster=ranker.booster, feature_columns=ranker.feature_names,
                         prior_weights=ranker.prior_weights)


@pytest.fixture(scope="session")
def small_pyfunc(small_bundle, tmp_path_factory):
    """``small_bundle`` saved and loaded back as the real MLflow pyfunc model (signature included),
    as `recsys serve` loads a registered version: (loaded PyFuncModel, model folder)."""
    import mlflow

    from training.tracking import save_pyfunc_model

    work = tmp_path_factory.mktemp("pyfunc")
    small_bundle.save(work / "bundle")
    model_dir = work / "model"
    save_pyfunc_model(model_dir, work / "bundle", small_bundle.state.users.ids.head(2).to_list(),
                      small_bundle.state.items.ids.head(5).to_list(), small_bundle.config.k)
    return mlflow.pyfunc.load_model(str(model_dir)), model_dir


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created (schema migrations: seconds) once per session."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def fresh_store(_empty_store, tmp_path) -> str:
    """The tracking URI of a new, empty SQLite store ``tmp_path/mlflow.db`` (a copy of the template)."""
    import shutil

    shutil.copyfile(_empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, modules with ``data`` tests first, then modules with ``slow`` tests, then
    the rest, each group in file order. ``make test`` hands out whole modules (``--dist loadfile``,
    so a module's fixtures are built once) in this order, so the longest work starts first and
    the two workers end close together. A serial run keeps the file order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def weight(item) -> int:
        marks = {mark.name for mark in item.iter_markers()}
        return 0 if "data" in marks else 1 if "slow" in marks else 2

    module_weight: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    for i, item in enumerate(items):
        module_weight[str(item.path)] = min(module_weight.get(str(item.path), 2), weight(item))
        first_seen.setdefault(str(item.path), i)
    items.sort(key=lambda item: (module_weight[str(item.path)], first_seen[str(item.path)]))


@contextlib.contextmanager
def all_cores():
    """Inside an xdist worker pinned to its share: every core the run started with, for this thread,
    the threads and processes it starts from here (they inherit the affinity) and torch's pool, so
    the code under test takes its multi-core paths (variants fitted at once, ranking split into
    parts, threaded kernels) as on the serial run. Outside a pinned worker: nothing changes."""
    cores = os.environ.get(ALL_CORES_ENV)
    if not cores:
        yield
        return
    import torch

    before, threads = os.sched_getaffinity(0), torch.get_num_threads()
    wanted = {int(core) for core in cores.split(",")}
    os.sched_setaffinity(0, wanted)
    torch.set_num_threads(len(wanted))  # new pool threads start from this thread: on every core
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, before)
