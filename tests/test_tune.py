"""recsys tune: validation-only search, nested MLflow runs, a config train takes as it is."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import polars as pl
import pytest

from recsys.config import PipelineConfig
from recsys.dataset import Dataset
from recsys.demo_data import DemoSpec, generate_demo
from recsys.errors import ConfigError
from tests.conftest import tiny_config_dict
from training.tune_space import STAGES, base_values, with_overrides
from training.tuning import tune


@pytest.fixture(scope="module")
def clicks() -> Dataset:
    """A small generated catalog with clicks only (no impressions): seconds per stage-1 trial."""
    demo = generate_demo(DemoSpec(n_users=150, n_items=120, days=20, seed=5))
    return Dataset.from_frames(items=demo.items, interactions=demo.interactions, source="tune-test")


def _config(**overrides) -> PipelineConfig:
    return PipelineConfig.from_dict({**tiny_config_dict(), "seed": 3, **overrides})


def _with_garbage_test_rows(dataset: Dataset, config: PipelineConfig) -> tuple[Dataset, int]:
    """The same data with every test-split row's item and weight replaced by random values.
    The temporal split cuts on time alone, so the training window stays exactly the same."""
    ts = dataset.interactions["timestamp"]
    cutoff = ts.min() + (ts.max() - ts.min()) * (1.0 - config.test_fraction)
    is_test = (ts >= cutoff).to_numpy()
    rng = np.random.default_rng(0)
    catalog = dataset.items["item_id"].to_numpy()
    items = dataset.interactions["item_id"].to_numpy().copy()
    items[is_test] = rng.choice(catalog, size=int(is_test.sum()))
    weights = dataset.interactions["weight"].to_numpy().copy()
    weights[is_test] = rng.uniform(1.0, 50.0, size=int(is_test.sum()))
    garbled = dataset.interactions.with_columns(pl.Series("item_id", items), pl.Series("weight", weights))
    return Dataset.from_frames(items=dataset.items, interactions=garbled, source=dataset.source), int(is_test.sum())


def _trial_values(run_id: str) -> list[tuple[str, float]]:
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{run_id}'", search_all_experiments=True,
                              order_by=["attributes.start_time ASC"])
    return sorted(zip(runs["tags.mlflow.runName"], runs["metrics.validation/ndcg_at_10"], strict=True))


@pytest.mark.slow
def test_the_test_split_is_never_read(clicks, tmp_path, fresh_store):
    """Garbage in every test row changes nothing: same trials, same values, same best config."""
    config = _config(split="temporal")
    garbled, n_garbage = _with_garbage_test_rows(clicks, config)
    assert n_garbage > 100
    results = []
    for name, data in (("clean", clicks), ("garbage", garbled)):
        result = tune(data, config, experiment=f"tune-{name}", out=tmp_path / f"{name}.json",
                      stages=("als", "item_item"), max_trials=4, budget_minutes=30, workdir=tmp_path,
                      progress=False)
        results.append((result, _trial_values(result.run_id)))
    (clean, clean_trials), (garbage, garbage_trials) = results
    assert len(clean_trials) == 8
    assert clean_trials == garbage_trials
    assert (tmp_path / "clean.json").read_text() == (tmp_path / "garbage.json").read_text()
    # The test rows themselves are really different (the check above is not vacuous).
    assert not clicks.interactions.equals(garbled.interactions)


@pytest.mark.slow
def test_every_stage_logs_nested_trials_and_a_config_train_takes(clicks, tmp_path, fresh_store):
    from recsys.cli import load_config

    config = _config(split="stratified")
    out = tmp_path / "best_config.json"
    # One trial per stage (the starting settings, tiny ones): the text stage's sampled trials would
    # fine-tune for 50+ steps.
    result = tune(clicks, config, experiment="tune-all", out=out, max_trials=1, budget_minutes=30,
                  workdir=tmp_path, progress=False)
    assert [s.name for s in result.stages] == ["als", "bpr", "item_item", "text", "candidates", "ranker"]
    # Each stage's first trial is the settings it started from.
    assert result.config == config
    trials = _trial_values(result.run_id)
    assert len(trials) == sum(s.trials for s in result.stages) == 6
    assert {name.rsplit("-", 1)[0] for name, _ in trials} == {s.name for s in STAGES}
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert "best_config.json" in artifacts
    assert "plots/als_history.png" in plots
    parent = client.get_run(result.run_id)
    assert parent.data.metrics["tune/ranker/trials"] == 1
    assert parent.data.metrics["tune/als/best_ndcg_at_10"] == pytest.approx(result.stages[0].best_value)
    # The written file is the whole config, as `recsys train --config` reads it.
    assert load_config(str(out)) == result.config
    assert json.loads(out.read_text())["split"] == "stratified"
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.slow
def test_the_budget_ends_each_stage_after_its_first_trial(clicks, tmp_path, fresh_store):
    result = tune(clicks, _config(split="temporal"), experiment="tune-budget", out=tmp_path / "b.json",
                  stages=("als", "item_item"), max_trials=20, budget_minutes=1e-4, workdir=tmp_path, progress=False)
    assert [s.trials for s in result.stages] == [1, 1]
    # One trial each: the starting settings, kept as they were.
    assert result.config == _config(split="temporal")


def test_unknown_stage_and_bad_budget_are_refused(clicks, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown tune stage\(s\) \['ease'\]"):
        tune(clicks, _config(), experiment="x", out=tmp_path / "x.json", stages=("ease",), workdir=tmp_path)
    with pytest.raises(ConfigError, match="--budget-minutes must be positive"):
        tune(clicks, _config(), experiment="x", out=tmp_path / "x.json", budget_minutes=0, workdir=tmp_path)


def test_base_values_reproduce_the_config():
    config = with_overrides(PipelineConfig(als_factors=8, cf_use_weights=False), {"ranker.prior_sources": ()})
    als = base_values(STAGES[0], config)
    assert als["als_factors"] == 8  # below the space's 16..256: run as it is
    assert als["cf_use_weights"] is False
    ranker = next(s for s in STAGES if s.name == "ranker")
    assert base_values(ranker, config)["ranker.prior"] == "none"
    assert base_values(ranker, PipelineConfig())["ranker.prior"] == "stage1"
    with_prior = with_overrides(config, {"ranker.prior_sources": ("als_score",)})
    assert "ranker.prior" not in base_values(ranker, with_prior)  # not a choice of the space: left to the sampler


def test_with_overrides_reaches_the_sections():
    config = with_overrides(PipelineConfig(), {"text.steps": 50, "ranker.num_leaves": 7, "als_factors": 20})
    assert (config.text.steps, config.ranker.num_leaves, config.als_factors) == (50, 7, 20)
    assert config.candidates == PipelineConfig().candidates


def test_the_pipeline_chooses_the_item_item_model_and_bpr_epochs_from_the_data():
    from types import SimpleNamespace

    from recsys.idmap import IdMap
    from training.pipeline import data_choices

    train = pl.DataFrame({"user_id": [f"u{i % 50}" for i in range(2_000)], "item_id": [f"i{i}" for i in range(2_000)]})
    windows = SimpleNamespace(items=IdMap(kind="item").fit(pl.Series([f"i{i}" for i in range(6_000)])),
                              split=SimpleNamespace(train=train))
    small = PipelineConfig(bpr_iterations=100, bpr_max_samples=50_000)
    assert data_choices(windows, small) == {"data_choice.item_item": "cosine", "data_choice.bpr_epochs": 25}
    roomy = PipelineConfig(item_item_max_items=10_000)
    assert data_choices(windows, roomy) == {"data_choice.item_item": "ease", "data_choice.bpr_epochs": 100}
