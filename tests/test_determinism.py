"""Same data, config and seed -> the same numbers: stage-1 fits, fine-tuning, tie order in
histories, and whole `recsys train` runs (metrics file byte for byte, `recsys rank` rows exactly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from features.cf import fit_cf
from features.text_interest import history_weights
from recsys.demo_data import DemoSpec, generate_demo
from tests.conftest import all_cores, tiny_config_dict
from training.text_finetune import next_item_examples

T0 = datetime(2026, 1, 1)


def _random_user_items(n_users: int = 300, n_items: int = 200, density: float = 0.05) -> sp.csr_matrix:
    """(n_users, n_items) float32 CSR of ones, seeded."""
    return sp.random(n_users, n_items, density=density, format="csr", dtype=np.float32,
                     random_state=np.random.default_rng(5), data_rvs=np.ones)


@pytest.mark.parametrize("name", ["als", "bpr"])
def test_cf_fit_repeats_exactly(name):
    user_items = _random_user_items()
    fits = [fit_cf(name, user_items, n_users=300, n_items=200, factors=16, iterations=15, seed=3) for _ in range(3)]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.user_factors, fits[0].user_factors)
        np.testing.assert_array_equal(other.item_factors, fits[0].item_factors)


def test_history_ties_follow_input_order():
    """Two events at the same time: the later row of the input is the more recent one."""
    events = pl.DataFrame({"user_idx": [0, 0, 0], "item_idx": [0, 1, 2],
                           "timestamp": [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1)]})
    for order in ([0, 1, 2], [0, 2, 1], [2, 1, 0]):
        shuffled = events[order]
        w = history_weights(shuffled, n_users=1, n_items=3, history_len=5, half_life=1.0).toarray()[0]
        later, earlier = shuffled.filter(pl.col("item_idx") > 0)["item_idx"].to_list()[::-1]
        assert w[later] == pytest.approx(1.0) and w[earlier] == pytest.approx(0.5) and w[0] == pytest.approx(0.25)


def test_next_item_examples_break_time_ties_by_input_order():
    events = pl.DataFrame({"user_idx": [0, 0, 0, 0], "item_idx": [3, 1, 2, 0],
                           "timestamp": [T0 + timedelta(days=1), T0, T0, T0]})  # three ties, then a later one
    out = next_item_examples(events, history_len=5)
    assert out["history"].to_list() == [[1], [1, 2], [1, 2, 0]]
    assert out["target"].to_list() == [2, 0, 3]


@pytest.mark.slow
def test_finetune_is_seeded_and_leaves_global_random_state_alone():
    import torch

    from features.state import with_indices
    from features.text_encoder import TextEncoder, item_texts
    from recsys.config import TextModelConfig
    from recsys.idmap import IdMap
    from training.text_finetune import finetune

    data = generate_demo(DemoSpec(n_users=60, n_items=60, days=10, seed=4))
    users = IdMap(kind="user").fit(data.interactions["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    examples = next_item_examples(with_indices(data.interactions, users, items), history_len=10)
    config = TextModelConfig(steps=4, batch_size=16, max_length=24, trainable_layers=1)
    results = []
    for global_seed in (1, 2):  # the caller's global state must not matter either
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        results.append(finetune(TextEncoder(max_length=24), item_texts(data.items), examples, config, seed=0,
                                eval_every=2, progress=False))
        assert torch.equal(torch.get_rng_state(), before), "finetune changed torch's global random state"
    a, b = results
    assert a.train_losses == b.train_losses and a.val_losses == b.val_losses
    np.testing.assert_array_equal(a.finetuned_vectors, b.finetuned_vectors)
    np.testing.assert_array_equal(a.pooling.query, b.pooling.query)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ (NaN equals NaN), as 'key: a != b' lines."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}/")
        elif not (x == y or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))):
            out.append(f"{prefix}{key}: {x!r} != {y!r}")
    return out


def _recsys(work: Path, args: list[str], hash_seed: int) -> None:
    """Run the `recsys` command line in a fresh process in ``work`` (its own MLflow store)."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONHASHSEED=str(hash_seed), HF_HUB_OFFLINE="1")
    with all_cores():  # the multi-core paths (variants at once, ranking in parts), also under `make test`
        done = subprocess.run([sys.executable, "-m", "recsys.cli", "-q", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, f"recsys {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _train_and_rank_twice(work: Path, data_dirs: tuple[Path, Path], config_file: Path, k: int, seed: int) -> None:
    """`recsys train` twice, in two processes with different hash seeds (versions 1 and 2 of model
    'det'), on ``data_dirs[0]`` then ``data_dirs[1]``, and `recsys rank` each; asserts equal
    metrics files and identical rankings (rows and score bits)."""
    for run, data_dir in zip((1, 2), data_dirs, strict=True):
        _recsys(work, ["train", "--data", str(data_dir), "--config", str(config_file), "--k", str(k), "--seed",
                       str(seed), "--register", "det", "--metrics-out", f"metrics{run}.json"], hash_seed=run)
        _recsys(work, ["rank", "--model", f"models:/det/{run}", "--out", f"ranked{run}.parquet", "--k", str(k)],
                hash_seed=run)
    first, second = (json.loads((work / f"metrics{run}.json").read_text()) for run in (1, 2))
    assert first["test"]["ranker"][f"ndcg@{k}"] > first["test"]["random"][f"ndcg@{k}"]
    differ = _differences(first, second)
    assert not differ, f"{len(differ)} metric(s) differ between two runs, e.g.\n" + "\n".join(differ[:20])
    assert (work / "metrics1.json").read_bytes() == (work / "metrics2.json").read_bytes()
    ranked = [pl.read_parquet(work / f"ranked{run}.parquet") for run in (1, 2)]
    assert ranked[0].height > 0
    assert ranked[0].equals(ranked[1]), "the two models rank differently"  # every row, every score's bits
    # The files differ only in their provenance (version, run id, time): each says which model ranked it.
    meta = [pl.read_parquet_metadata(work / f"ranked{run}.parquet") for run in (1, 2)]
    assert (meta[0]["recsys.model"], meta[1]["recsys.model"]) == ("models:/det/1", "models:/det/2")
    per_run = {"recsys.model_uri", "recsys.model", "recsys.model_version", "recsys.run_id", "recsys.ranked_at"}
    assert {k: v for k, v in meta[0].items() if k not in per_run} == \
        {k: v for k, v in meta[1].items() if k not in per_run}


def _write_folder(folder: Path, items: pl.DataFrame, data) -> Path:
    folder.mkdir()
    items.write_parquet(folder / "items.parquet")
    data.interactions.write_parquet(folder / "interactions.parquet")
    data.impressions.write_parquet(folder / "impressions.parquet")
    return folder


@pytest.mark.slow
def test_two_training_runs_give_identical_metrics_and_rankings_whatever_the_catalog_row_order(tmp_path):
    """Same data, config and seed, in two processes, the second with the rows of items.parquet
    shuffled: identical metrics files and identical `recsys rank` rows (no run-to-run noise,
    no catalog-order signal)."""
    data = generate_demo(DemoSpec(n_users=100, n_items=100, days=15, seed=8))
    shuffled = data.items.sample(fraction=1.0, shuffle=True, seed=1)
    assert shuffled["item_id"].to_list() != data.items["item_id"].to_list()
    folders = (_write_folder(tmp_path / "as_given", data.items, data),
               _write_folder(tmp_path / "shuffled", shuffled, data))
    config = tiny_config_dict()
    config["text"]["steps"] = 4
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    _train_and_rank_twice(tmp_path, folders, tmp_path / "tiny.json", k=5, seed=11)
    # The runs took the concurrent path whose sameness this test is about: the three ranker
    # variants fitted at once wherever there are two cores (a silent fall back to one fit at a
    # time would still give equal runs).
    from mlflow.tracking import MlflowClient

    from features.rank_workers import usable_cores
    from training.tracking import STORE_FILE

    # (in_threads running its jobs at once: tests/test_variants.py.) On one core there is no such path.
    from training.variants import VARIANTS

    with all_cores():
        cores = usable_cores()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / STORE_FILE}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    fits_at_once = [r.data.metrics["ranker/fits_at_once"] for r in runs if "ranker/fits_at_once" in r.data.metrics]
    assert len(fits_at_once) == 2, fits_at_once
    if cores >= 2:
        assert fits_at_once == [float(len(VARIANTS))] * 2, fits_at_once


# MovieLens 100K: tests/test_shared_data.py trains the documented config twice (the second time on a
# shuffled catalog) and asserts identical metrics and identical rankings of every user.
