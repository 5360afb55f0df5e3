"""recsys tune: validation-only search, nested MLflow runs, a config train takes as it is."""

from __future__ import annotations

import json
from types import SimpleNamespace

import mlflow
import numpy as np
import polars as pl
import pytest

from features.sources import REGISTERED
from recsys.config import PipelineConfig
from recsys.dataset import Dataset
from recsys.demo_data import DemoSpec, generate_demo
from recsys.errors import ConfigError, DataValidationError
from tests.conftest import tiny_config_dict
from training.tune_space import STAGES, base_values, with_overrides
from training.tuning import tune


@pytest.fixture(scope="module")
def clicks() -> Dataset:
    """A small generated catalog with clicks only (no impressions): seconds per stage-1 trial."""
    demo = generate_demo(DemoSpec(n_users=150, n_items=120, days=20, seed=5))
    return Dataset.from_frames(items=demo.items, interactions=demo.interactions, source="tune-test")


@pytest.fixture(scope="module")
def shown() -> Dataset:
    """The same kind of catalog with its impressions (what the text and ranker stages read)."""
    demo = generate_demo(DemoSpec(n_users=150, n_items=120, days=20, seed=6))
    return Dataset.from_frames(items=demo.items, interactions=demo.interactions, impressions=demo.impressions,
                               source="tune-test")


def _config(**overrides) -> PipelineConfig:
    return PipelineConfig.from_dict({**tiny_config_dict(), "seed": 3, **overrides})


def _with_garbage_test_rows(dataset: Dataset, config: PipelineConfig) -> tuple[Dataset, int]:
    """The same data with every test-split row's item and weight replaced by random values, and
    the items of the test side's impressions too (temporal: the test period; otherwise each
    user's from their first test time on); for the temporal split each test row's user as well.
    The split finds the same test rows: temporal cuts on time alone, stratified on each user's
    row order, leave-last-out on each user's times."""
    from recsys.split import _leave_last_out_mask, _stratified_mask

    rows = dataset.interactions
    if config.split == "temporal":
        ts = rows["timestamp"]
        cutoff = ts.min() + (ts.max() - ts.min()) * (1.0 - config.test_fraction)
        is_test = (ts >= cutoff).to_numpy()
    elif config.split == "leave-last-out":
        is_test = _leave_last_out_mask(rows).to_numpy()
    else:
        is_test = _stratified_mask(rows, config.test_fraction, config.seed).to_numpy()
    rng = np.random.default_rng(0)
    catalog = dataset.items["item_id"].to_numpy()
    n = int(is_test.sum())

    def garbled(column: str, values) -> pl.Series:
        out = rows[column].to_numpy().copy()
        out[is_test] = values
        return pl.Series(column, out)

    items = rng.choice(catalog, size=n)
    # A garbage row must not duplicate a training row exactly (user, item, time): that is leakage,
    # which the split refuses. Redraw those.
    train_keys = set(zip(*(rows.filter(~pl.Series(is_test))[c].to_list() for c in ("user_id", "item_id", "timestamp")),
                         strict=True))
    test_rows = rows.filter(pl.Series(is_test))
    for i, (user, ts) in enumerate(zip(test_rows["user_id"].to_list(), test_rows["timestamp"].to_list(), strict=True)):
        while (user, items[i], ts) in train_keys:
            items[i] = rng.choice(catalog)
    columns = [garbled("item_id", items), garbled("weight", rng.uniform(1.0, 50.0, size=n))]
    impressions = dataset.impressions
    if config.split == "temporal":
        columns.append(garbled("user_id", rng.choice(rows["user_id"].unique().to_numpy(), size=n)))
        if impressions is not None:
            late = (impressions["timestamp"] >= cutoff).to_numpy()
    elif impressions is not None:  # the test side of the impressions: from each user's first test time on
        first_test = test_rows.group_by("user_id").agg(pl.col("timestamp").min().alias("_first"))
        late = (impressions.join(first_test, on="user_id", how="left", maintain_order="left")
                .select(pl.col("_first").is_not_null() & (pl.col("timestamp") >= pl.col("_first")))
                .to_series().to_numpy())
    if impressions is not None:
        assert late.sum() > 0
        shown_items = impressions["item_id"].to_numpy().copy()
        shown_items[late] = rng.choice(catalog, size=int(late.sum()))
        impressions = impressions.with_columns(pl.Series("item_id", shown_items))
    data = Dataset.from_frames(items=dataset.items, interactions=rows.with_columns(columns),
                               impressions=impressions, source=dataset.source)
    return data, n


def _trial_values(run_id: str) -> list[tuple[str, float | None]]:
    """(trial run name, validation nDCG@10) per nested run; None for a pruned trial (no metric)."""
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{run_id}'", search_all_experiments=True,
                              order_by=["attributes.start_time ASC"])
    values = [None if value != value else value for value in runs["metrics.validation/ndcg_at_10"]]  # NaN: pruned
    return sorted(zip(runs["tags.mlflow.runName"], values, strict=True), key=lambda pair: pair[0])


def _tune_both(clean: Dataset, config: PipelineConfig, tmp_path, **options):
    garbled, n_garbage = _with_garbage_test_rows(clean, config)
    assert n_garbage > 100
    assert not clean.interactions.equals(garbled.interactions)  # the comparison below is not vacuous
    out = []
    for name, data in (("clean", clean), ("garbage", garbled)):
        result = tune(data, config, experiment=f"tune-{name}", out=tmp_path / f"{name}.json", workdir=tmp_path,
                      progress=False, budget_minutes=30, **options)
        out.append((result, _trial_values(result.run_id)))
    return out


@pytest.mark.slow
def test_no_stage_reads_the_test_split_and_each_trial_is_a_nested_run(shown, tmp_path, fresh_store):
    """Garbage in every test row changes nothing in any stage (stratified split, data with
    impressions): the same trial values and the same best config, byte for byte. The search is
    one MLflow run with a nested run per trial, its plots and best_config.json, and the written
    file is the whole config as `recsys train --config` reads it."""
    from recsys.cli import load_config

    config = _config(split="stratified")
    # One trial per stage (the starting settings, tiny ones): sampled text trials fine-tune for 50+ steps.
    (clean, clean_trials), (_, garbage_trials) = _tune_both(shown, config, tmp_path, max_trials=1)
    assert [s.name for s in clean.stages] == ["als", "bpr", "item_item", "text", "candidates", "ranker"]
    assert len(clean_trials) == 6 and all(value > 0 for _, value in clean_trials)
    assert clean_trials == garbage_trials
    assert (tmp_path / "clean.json").read_text() == (tmp_path / "garbage.json").read_text()
    assert {name.rsplit("-", 1)[0] for name, _ in clean_trials} == {s.name for s in STAGES}
    client = mlflow.MlflowClient()
    assert "best_config.json" in {a.path for a in client.list_artifacts(clean.run_id)}
    assert "plots/als_history.png" in {a.path for a in client.list_artifacts(clean.run_id, "plots")}
    parent = client.get_run(clean.run_id)
    assert parent.data.metrics["tune/ranker/trials"] == 1
    assert parent.data.metrics["tune/als/best_ndcg_at_10"] == pytest.approx(clean.stages[0].best_value)
    assert load_config(str(tmp_path / "clean.json")) == clean.config == config
    assert json.loads((tmp_path / "clean.json").read_text())["split"] == "stratified"
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.slow
@pytest.mark.parametrize("split", ["temporal", "leave-last-out"])
def test_sampled_trials_repeat_and_each_stage_keeps_its_best(clicks, tmp_path, fresh_store, split):
    """Sampled trials, so the best config is not the start: garbage test rows still change no
    trial and no byte of best_config.json."""
    start = _config(split=split)
    (clean, clean_trials), (_, garbage_trials) = _tune_both(clicks, start, tmp_path,
                                                            stages=("als", "item_item"), max_trials=4)
    assert len(clean_trials) == 8
    assert clean_trials == garbage_trials
    assert any(stage.study.best_trial.number > 0 for stage in clean.stages)  # a sampled trial won: the
    assert clean.config != start  # file comparison below can fail
    assert (tmp_path / "clean.json").read_text() == (tmp_path / "garbage.json").read_text()
    for stage in clean.stages:
        values = [value for name, value in clean_trials if name.startswith(stage.name + "-")]
        assert stage.best_value == pytest.approx(max(values))
        best = stage.study.best_trial
        assert best.value == pytest.approx(max(values))
        for key, value in stage.best.items():  # the config carries the winning trial's settings
            assert clean.config.flat()[key] == value
    assert len({value for _, value in clean_trials}) > 2  # the sampler did try other settings


@pytest.mark.slow
def test_sampled_candidates_and_ranker_trials_never_read_the_test_split(shown, tmp_path, fresh_store):
    """The ranker stages with sampled trials, on data with impressions: garbage in the test rows
    and in the test side's impressions changes no trial and no byte of best_config.json."""
    start = _config(split="stratified")
    (clean, clean_trials), (_, garbage_trials) = _tune_both(shown, start, tmp_path, stages=("candidates", "ranker"),
                                                            max_trials=3)
    assert len(clean_trials) == 6
    assert clean_trials == garbage_trials
    assert any(stage.study.best_trial.number > 0 for stage in clean.stages)
    assert clean.config != start
    assert (tmp_path / "clean.json").read_text() == (tmp_path / "garbage.json").read_text()


@pytest.mark.slow
def test_a_spent_budget_runs_no_further_stage_and_keeps_the_starting_settings(clicks, tmp_path, fresh_store):
    # 60 ns: spent before the first stage starts (cutting the validation data alone takes longer).
    result = tune(clicks, _config(split="temporal"), experiment="tune-budget", out=tmp_path / "b.json",
                  stages=("als", "item_item"), max_trials=20, budget_minutes=1e-9, workdir=tmp_path, progress=False)
    assert result.stages == [] and result.skipped == ("als", "item_item")
    assert result.config == _config(split="temporal")
    assert "not run, the budget was spent (starting settings kept): als, item_item" in result.summary()
    assert mlflow.MlflowClient().get_run(result.run_id).data.tags["tune.skipped_stages"] == "als,item_item"
    assert PipelineConfig.from_dict(json.loads((tmp_path / "b.json").read_text())) == result.config


@pytest.mark.slow
def test_a_stage_stops_when_its_next_trial_would_not_fit(clicks, tmp_path, fresh_store, monkeypatch):
    """Each trial takes 10 s of a fake clock; a 25 s budget for one stage fits two trials."""
    import training.tuning as tuning

    clock = {"now": 0.0}
    real_objective = tuning._Tuner.objective

    def slow_objective(self, stage, config, trial):
        clock["now"] += 10.0
        return real_objective(self, stage, config, trial)

    monkeypatch.setattr(tuning, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    monkeypatch.setattr(tuning._Tuner, "objective", slow_objective)
    result = tune(clicks, _config(split="temporal"), experiment="tune-clock", out=tmp_path / "c.json",
                  stages=("als",), max_trials=20, budget_minutes=25 / 60, workdir=tmp_path, progress=False)
    assert [s.trials for s in result.stages] == [2] and result.skipped == ()


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
    assert base_values(ranker, PipelineConfig())["ranker.prior"] == "none"
    blend = ("item_item_score", "als_score", "bpr_score", "text_score")
    assert base_values(ranker, with_overrides(config, {"ranker.prior_sources": blend}))["ranker.prior"] == "stage1"
    with_prior = with_overrides(config, {"ranker.prior_sources": ("als_score",)})
    assert "ranker.prior" not in base_values(ranker, with_prior)  # not a choice of the space: left to the sampler


def test_with_overrides_reaches_the_sections():
    config = with_overrides(PipelineConfig(), {"text.steps": 50, "ranker.num_leaves": 7, "als_factors": 20})
    assert (config.text.steps, config.ranker.num_leaves, config.als_factors) == (50, 7, 20)
    assert config.candidates == PipelineConfig().candidates


def test_the_pipeline_chooses_the_item_item_model_bpr_epochs_and_als_confidence_from_the_data():
    from types import SimpleNamespace

    from recsys.idmap import IdMap
    from training.pipeline import data_choices

    # 50 users with 40 items each, every interaction of weight 1.5 (60 per user)
    train = pl.DataFrame({"user_id": [f"u{i % 50}" for i in range(2_000)], "item_id": [f"i{i}" for i in range(2_000)],
                          "weight": [1.5] * 2_000})
    windows = SimpleNamespace(items=IdMap(kind="item").fit(pl.Series([f"i{i}" for i in range(6_000)])),
                              users=IdMap(kind="user").fit(train["user_id"].unique().sort()),
                              split=SimpleNamespace(train=train))
    small = PipelineConfig(bpr_iterations=100, bpr_max_samples=50_000)
    choices = data_choices(windows, small)
    assert {k: choices[k] for k in ("data_choice.item_item", "data_choice.bpr_epochs", "data_choice.als_alpha")} \
        == {"data_choice.item_item": "cosine", "data_choice.bpr_epochs": 25, "data_choice.als_alpha": 3.75}  # 225 / 60
    assert {f"data_choice.{c.name}" for c in REGISTERED} <= set(choices)  # one per registered source
    assert choices["data_choice.transitions"] == "on"  # temporal: what comes next is tested
    assert choices["data_choice.text_neighbours"] == "on"  # auto: a next-item protocol, a catalog it can afford
    roomy = PipelineConfig(item_item_max_items=10_000, cf_use_weights=False, als_user_confidence=200.0,
                           split="stratified")
    choices = data_choices(windows, roomy)
    assert {k: choices[k] for k in ("data_choice.item_item", "data_choice.bpr_epochs", "data_choice.als_alpha")} \
        == {"data_choice.item_item": "ease", "data_choice.bpr_epochs": 100, "data_choice.als_alpha": 5.0}  # 200 / 40
    assert choices["data_choice.transitions"] == "off"  # random held-out positions
    assert choices["data_choice.text_neighbours"] == "off"
    forced = PipelineConfig(split="stratified", sources={"transitions": {"use": "on"}})
    assert data_choices(windows, forced)["data_choice.transitions"] == "on"
    many_items = IdMap(kind="item").fit(pl.Series([f"i{i}" for i in range(50_001)]))
    wide = SimpleNamespace(**{**vars(windows), "items": many_items})
    assert data_choices(wide, PipelineConfig())["data_choice.text_neighbours"] == "off"  # past its catalog limit
    asked = PipelineConfig(sources={"text_neighbours": {"use": "off"}})
    assert data_choices(windows, asked)["data_choice.text_neighbours"] == "off"
    assert data_choices(windows, PipelineConfig(als_alpha=2.0))["data_choice.als_alpha"] == 2.0


@pytest.mark.parametrize("overrides", [{}, {"cold_item_fraction": 0.1}, {"label_cuts": 2}])
def test_the_search_reuses_the_checked_cuts_and_they_give_the_same_validation_data(shown, monkeypatch, overrides):
    from recsys.data_checks import check_trainable
    from training import pipeline, tune_validation, tuning

    config = _config(split="temporal", **overrides)
    cut_again = tune_validation.validation_data(shown, config)
    cuts = check_trainable(shown, config)

    def no_second_cut(*args, **kwargs):
        raise AssertionError("the data was cut again")

    monkeypatch.setattr(pipeline.windows, "cut_all", no_second_cut)
    reused = tuning._Tuner(shown, config, progress=False, cuts=cuts).data
    assert (reused.user_items != cut_again.user_items).nnz == 0
    assert reused.windows.users.ids.equals(cut_again.windows.users.ids, check_dtypes=True)
    assert len(reused.windows.extra_cuts) == len(cut_again.windows.extra_cuts) == config.label_cuts - 1
    assert reused.events.equals(cut_again.events)
    np.testing.assert_array_equal(reused.user_idx, cut_again.user_idx)
    assert [r.tolist() for r in reused.relevant] == [r.tolist() for r in cut_again.relevant]
    with pytest.raises(AssertionError, match="the data was cut again"):
        tuning._Tuner(shown, config, progress=False)


def test_a_fixed_als_alpha_starts_the_search_as_the_same_alpha_from_the_data(clicks):
    from features.cf import als_alpha
    from training import tune_validation
    from training.tuning import _confidence_from_the_data

    fixed = _config(split="temporal", als_alpha=7.0)
    data = tune_validation.validation_data(clicks, fixed)
    restated = _confidence_from_the_data(fixed, data)
    assert restated.als_alpha == 0.0 and restated.als_user_confidence != fixed.als_user_confidence
    # the ALS stage's first trial (alpha from the data) fits the feature window with alpha 7 again,
    # so it scores what the fixed-alpha start scores
    assert als_alpha(0.0, restated.als_user_confidence, data.user_items) == 7.0

    def als_ndcg(config):
        return tune_validation.ndcg_of_scores(data, tune_validation.cf_scorer(data, "als", config), 10, 3)

    assert als_ndcg(restated) == als_ndcg(fixed) != als_ndcg(from_data := _config(split="temporal"))
    assert _confidence_from_the_data(from_data, data) is from_data


@pytest.mark.parametrize("use_weights", [True, False])
def test_the_logged_als_alpha_is_the_one_als_is_fitted_with(clicks, monkeypatch, use_weights):
    from types import SimpleNamespace

    import numpy as np

    import features.state as state_module
    from recsys.idmap import IdMap
    from training.pipeline import data_choices

    fitted = {}
    real_fit = state_module.fit_cf

    def spy(name, matrix, **kwargs):
        if name == "als":
            fitted["alpha"] = kwargs["alpha"]
        return real_fit(name, matrix, **kwargs)

    monkeypatch.setattr(state_module, "fit_cf", spy)
    events = clicks.interactions.with_columns((pl.int_range(pl.len()) % 5 + 1).cast(pl.Float32).alias("weight"))
    users = IdMap(kind="user").fit(events["user_id"])
    items = IdMap(kind="item").fit(clicks.items["item_id"])
    catalog = pl.DataFrame({"item_id": items.ids}).join(clicks.items, on="item_id", how="left", maintain_order="left")
    config = PipelineConfig(cf_use_weights=use_weights, als_factors=8, als_iterations=2, bpr_factors=8,
                            bpr_iterations=2)
    state_module.fit_feature_state(catalog=catalog, interactions=events, impressions=None,
                                   item_vectors=np.zeros((len(items), 384), dtype=np.float32), users=users,
                                   items=items, config=config)
    logged = data_choices(SimpleNamespace(items=items, users=users, split=SimpleNamespace(train=events)), config)
    per_user = (events.group_by("user_id", "item_id").agg(pl.col("weight").sum() if use_weights else pl.lit(1.0))
                .group_by("user_id").agg(pl.col("weight" if use_weights else "literal").sum()))[:, 1].mean()
    assert fitted["alpha"] == logged["data_choice.als_alpha"] == float(f"{225.0 / per_user:.3g}")


@pytest.mark.slow
def test_a_starting_config_with_label_cuts_tunes_the_ranker_on_every_cut(shown, tmp_path, fresh_store, monkeypatch):
    """label_cuts > 1 in the starting config: the ranker stage learns on the extra cuts' frames
    too (as recsys train does), keeps label_cuts as it was, and its text model learns on the last
    cut's feature window."""
    from recsys.windows import extra_label_cuts
    from training import tune_validation, tuning, variants
    from training.text_finetune import next_item_examples as real_examples

    built, example_rows = [], []

    def counting(*args, **kwargs):
        built.append(args[1])
        return real_extra(*args, **kwargs)

    def recording(events, *args, **kwargs):
        example_rows.append(events.height)
        return real_examples(events, *args, **kwargs)

    real_extra, real_state, real_text = tune_validation.extra_cut_frame, tune_validation.extra_cut_state, \
        tuning.window_text
    states = []
    monkeypatch.setattr(tune_validation, "extra_cut_frame", counting)
    monkeypatch.setattr(tune_validation, "extra_cut_state",
                        lambda *args, **kwargs: states.append(args[1]) or real_state(*args, **kwargs))
    monkeypatch.setattr("training.text_finetune.next_item_examples", recording)
    text_windows = []
    monkeypatch.setattr(tuning, "window_text",
                        lambda w, cut, *rest: text_windows.append(cut.train.height) or real_text(w, cut, *rest))
    config = _config(label_cuts=2)
    result = tune(shown, config, experiment="tune-cuts", out=tmp_path / "cuts.json", stages=("text", "ranker"),
                  max_trials=2, workdir=tmp_path, progress=False)
    assert result.config.label_cuts == 2 and json.loads((tmp_path / "cuts.json").read_text())["label_cuts"] == 2
    # One extra cut: its state fitted once, its frame built once per variant (the scored
    # variant's choice reads each) and reused by every ranker trial.
    assert len(states) == 1 and len(built) == len(variants.VARIANTS)
    data = tuning._Tuner(shown, config, progress=False).data
    cut = extra_label_cuts(data.windows.nested, config)[0]
    assert all(frame.test.equals(cut.test) for frame in built)
    # The text trials learned on the second cut's window, smaller than the first's.
    assert example_rows and set(example_rows) == {cut.train.filter(pl.col("user_id").is_in(
        data.windows.users.ids.implode())).height}
    assert cut.train.height < data.windows.nested.train.height
    # The text is asked for per window as recsys train asks (``pipeline.window_text``): the feature
    # window's in each text trial, then the extra cut's for its state (the refit is off here, so
    # each gets the text trial's own tower; test_sequence_tower checks what the refit gives).
    assert text_windows == [data.windows.nested.train.height] * 2 + [cut.train.height]


def test_out_of_fold_users_score_each_user_once_by_a_model_that_never_saw_them():
    from training.tune_validation import out_of_fold_users

    users = np.arange(10, 400, 3)
    folds = out_of_fold_users(users, 5, seed=11)
    assert len(folds) == 5
    scored = np.concatenate([s for _, _, s in folds])
    assert np.array_equal(np.sort(scored), users)  # every label user scored exactly once
    for k, (fit, stop, score) in enumerate(folds):
        assert len(fit) and len(stop) and len(score)
        assert not np.intersect1d(fit, stop).size and not np.intersect1d(fit, score).size
        assert not np.intersect1d(stop, score).size
        assert np.array_equal(np.sort(np.concatenate([fit, stop, score])), users)
        assert np.array_equal(stop, folds[(k + 1) % 5][2])  # the next fold stops the trees
    again = out_of_fold_users(users[::-1].copy(), 5, seed=11)  # the deal is by user, not by position
    assert [set(s.tolist()) for _, _, s in again] == [set(s.tolist()) for _, _, s in folds]
    three = out_of_fold_users(users, 3, seed=11)  # the fewest: each model fits on one fold
    assert all(len(fit) and not np.intersect1d(fit, np.concatenate([stop, score])).size for fit, stop, score in three)
    with pytest.raises(DataValidationError, match=r"out-of-fold scoring in 5 folds: the 3 label users leave a "
                                                  r"fold empty"):
        out_of_fold_users(np.array([1, 2, 3]), 5, seed=11)
    with pytest.raises(ValueError, match="out-of-fold scoring needs at least 3 folds"):
        out_of_fold_users(users, 2, seed=11)


@pytest.mark.parametrize("folds", [3, 2])
def test_a_fold_ensemble_run_scores_every_label_user_out_of_fold(shown, tmp_path, fresh_store, monkeypatch, folds):
    """With ranker.folds > 1 the ranker stage scores each label user (not only the held-out 15%)
    with a model whose fitting and early-stopping rows hold none of that user's queries."""
    from training import tune_validation, variants

    fitted, scored, given = [], [], {}
    real_fit, real_rank = variants.fit_rankers, tune_validation.rank_in_chunks

    def fit_spy(frames, held_out, config, log_metric=None, *, label_users):
        assert config.ranker.folds == 1  # one model per fold, stopped on the next fold
        fitted.append((set(next(iter(frames.values()))["user_idx"].unique().to_list()), set(held_out.tolist())))
        return real_fit(frames, held_out, config, log_metric, label_users=label_users)

    def rank_spy(bundles, user_idx, relevant, k, **kwargs):
        scored.append(set(user_idx.tolist()))
        given.update({int(u): r for u, r in zip(user_idx, relevant, strict=True)})
        return real_rank(bundles, user_idx, relevant, k, **kwargs)

    monkeypatch.setattr(variants, "fit_rankers", fit_spy)
    monkeypatch.setattr(tune_validation, "rank_in_chunks", rank_spy)
    config = _config(split="stratified", ranker={**tiny_config_dict()["ranker"], "folds": folds})
    result = tune(shown, config, experiment="tune-oof", out=tmp_path / "oof.json", stages=("ranker",),
                  max_trials=1, workdir=tmp_path, progress=False)
    tuner = tune_validation.label_users(*_validation_state(shown, config))
    label = set(tuner.users[0].tolist())
    # A 2-member ensemble is scored in 3 folds: once per variant to choose the scored one, then the trial.
    assert len(fitted) == len(scored) == 3 * (len(variants.VARIANTS) + 1)
    for start in range(0, len(scored), 3):
        block = scored[start:start + 3]
        assert set().union(*block) == label and sum(map(len, block)) == len(label)  # each once
    for (learnt, stop), users in zip(fitted, scored, strict=True):
        assert stop <= learnt and not learnt & users
        assert learnt - stop  # some users fit
    # Each scored user is judged against their own label-window items.
    for user, items in zip(tuner.users[0], tuner.users[1], strict=True):
        assert np.array_equal(given[int(user)], items)
    assert 0 < result.stages[0].best_value < 1


def _validation_state(dataset: Dataset, config: PipelineConfig):
    from training import tuning

    tuner = tuning._Tuner(dataset, config, progress=False)
    return tuner.data, tuner._state(tuner.config), tuner.config


def test_a_text_trial_scores_the_text_model_the_pipeline_ships(shown):
    """With the ordered user tower on, a text trial is scored as the state scores text: the tower's
    user vectors over the item vectors, not the pooled mean the tower starts from."""
    import torch

    from features.sequence_tower import SequenceTower, TowerShape
    from features.text_interest import HistoryPooling
    from training import tune_validation

    config = _config(split="stratified")
    data = tune_validation.validation_data(shown, config)
    vectors = np.random.default_rng(0).normal(size=(data.n_items, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    torch.manual_seed(0)
    tower = SequenceTower(TowerShape(item_dim=16, history_len=4, dim=8, layers=1, heads=2),
                          HistoryPooling.recency(2.0, 16))
    with torch.no_grad():  # a trained tower: away from the pooled mean it starts as
        for parameter in tower.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    tower.eval()
    state = tune_validation.feature_state(data, vectors, config, tower)
    users = data.user_idx[:25]
    want = np.asarray(state.user_text[users]) @ state.item_vectors.T
    got = tune_validation.text_scorer(data, vectors, config, tower)(users)
    np.testing.assert_allclose(got, want, atol=1e-5)
    pooled = tune_validation.text_scorer(data, vectors, config, HistoryPooling.recency(2.0, 16))(users)
    assert np.abs(pooled - want).max() > 1e-2  # the comparison above is not the pooled mean's


def test_a_text_trial_fits_the_tower_as_recsys_train_does(shown, monkeypatch):
    """The tune's text trial hands the tower what ``training.pipeline._fit_text`` hands it: the text
    window's events, the fine-tuned vectors and pooling, the text settings and the run's seed; the
    later stages get the feature window's refitted tower (``pipeline.window_text``, with
    ``text.sequence_refit``) and its adapted item vectors, else the fitted tower's."""
    from types import SimpleNamespace

    from features.state import with_indices
    from features.text_interest import HistoryPooling
    from training import pipeline, tuning
    from training.text_finetune import FinetuneResult

    config = with_overrides(_config(split="stratified"), {"text.sequence_refit": True})
    tuner = tuning._Tuner(shown, config, progress=False)
    w = tuner.data.windows
    n_items = len(w.items)
    encoder_vectors = np.eye(n_items, 8, dtype=np.float32)
    finetuned = FinetuneResult(pretrained_vectors=encoder_vectors, finetuned_vectors=encoder_vectors, train_losses=[],
                               val_losses=[1.0], val_steps=[0], best_step=0, pooling=HistoryPooling.recency(2.0, 8))
    calls, refits = [], []

    class Tower:
        def __init__(self, factor):
            self.factor = factor

        def item_vectors(self, vectors):
            return vectors * self.factor

    def fit_tower(events, **kwargs):
        calls.append((events, kwargs))
        return SimpleNamespace(tower=Tower(2), best_epoch=3)

    def refit_tower(events, **kwargs):
        refits.append((events, kwargs))
        return refitted

    refitted = Tower(5)
    monkeypatch.setattr("training.text_finetune.finetune", lambda *a, **k: finetuned)
    monkeypatch.setattr(pipeline, "fit_sequence_tower", fit_tower)
    monkeypatch.setattr(pipeline, "refit_sequence_tower", refit_tower)
    text, vectors, pooling = tuner._finetuned(tuner.config)
    assert text is finetuned and pooling is refitted
    np.testing.assert_array_equal(text.finetuned_vectors, encoder_vectors * 2)  # the early-stopping fit's
    np.testing.assert_array_equal(vectors, encoder_vectors * 5)
    (events, kwargs), = calls
    want = (with_indices(w.text_window.train, w.users, w.items).filter(pl.col("user_idx") >= 0)
            .select("user_idx", "item_idx", "timestamp"))
    assert events.select("user_idx", "item_idx", "timestamp").equals(want)
    assert kwargs["item_vectors"] is encoder_vectors and kwargs["pooling"] is finetuned.pooling
    assert (kwargs["config"], kwargs["seed"], kwargs["n_items"]) == (tuner.config.text, config.seed, n_items)
    (events, kwargs), = refits  # the feature window, which is the text window here (one label cut)
    want = (with_indices(w.nested.train, w.users, w.items).filter(pl.col("user_idx") >= 0)
            .select("user_idx", "item_idx", "timestamp"))
    assert events.equals(want) and kwargs["epochs"] == 3 and kwargs["item_vectors"] is encoder_vectors
    # The refit off (the default): the early-stopping fit's tower and adapted vectors.
    refits.clear()
    finetuned.finetuned_vectors, finetuned.tower, finetuned.tower_fit = encoder_vectors, None, None
    text, vectors, pooling = tuner._finetuned(with_overrides(tuner.config, {"text.sequence_refit": False}))
    assert pooling is text.tower and vectors is text.finetuned_vectors and not refits
    np.testing.assert_array_equal(vectors, encoder_vectors * 2)
    # Without the tower (sequence_layers 0) the fine-tuned vectors and the pooled mean, untouched.
    calls.clear()
    refits.clear()
    finetuned.finetuned_vectors, finetuned.tower, finetuned.tower_fit = encoder_vectors, None, None
    off = with_overrides(tuner.config, {"text.sequence_layers": 0})
    text, vectors, pooling = tuner._finetuned(off)
    assert vectors is encoder_vectors and pooling is finetuned.pooling and not calls and not refits


def test_the_ranker_stages_score_the_variant_recsys_train_would_ship(shown, monkeypatch):
    """The candidates and ranker stages tune the variant the pipeline's rule ships on the tune's
    validation users: a text variant only when its paired lift over no text clears zero, a pinned
    ``ranker.ship`` as pinned, a text variant when the run takes new items."""
    from training import tune_validation, tuning, variants

    base = np.random.default_rng(0).uniform(0.1, 0.3, size=400)
    swing = np.tile([0.02, -0.02], 200)  # per-user differences that average out

    def values(lift):
        def fake(data, state, who, config, frame=None, extra_frames=(), variant=variants.FINETUNED):
            return base + lift.get(variant, 0.0) + (swing if variant != variants.NO_TEXT else 0.0), None
        return fake

    tuner = tuning._Tuner(shown, _config(), progress=False)
    clear = {variants.FINETUNED: 0.02, variants.PRETRAINED: 0.01}
    monkeypatch.setattr(tune_validation, "ranker_per_user", values(clear))
    assert tuner.scored_variant(tuner.config).shipped == variants.FINETUNED
    # A mean ahead by less than its noise: no text ships, so no text is tuned.
    monkeypatch.setattr(tune_validation, "ranker_per_user", values({variants.FINETUNED: 0.0005}))
    choice = tuner.scored_variant(tuner.config)
    assert choice.best == variants.FINETUNED and choice.shipped == variants.NO_TEXT
    monkeypatch.setattr(tune_validation, "ranker_per_user", values(clear))
    pinned = with_overrides(tuner.config, {"ranker.ship": "no_text"})
    assert tuner.scored_variant(pinned).shipped == variants.NO_TEXT
    monkeypatch.setattr(tune_validation, "ranker_per_user", values({variants.NO_TEXT: 0.05, variants.FINETUNED: 0.01}))
    new_items = with_overrides(tuner.config, {"cold_item_fraction": 0.2})
    assert tuner.scored_variant(new_items).shipped == variants.FINETUNED  # the better text one, not no text


def test_every_candidates_and_ranker_trial_scores_the_chosen_variant(shown, tmp_path, fresh_store, monkeypatch):
    """Pinned to the pretrained-text ranker, every candidates and ranker trial scores it: the
    candidates stage's first trial (the starting settings) gives exactly the value the choice
    measured for that variant, not the fine-tuned-text one's."""
    from training import tune_validation, tuning, variants

    config = _config(ranker={**tiny_config_dict()["ranker"], "ship": "pretrained_text"})
    # Item vectors other than the encoder's, as a text stage would leave (here: rows shuffled).
    real_vectors = tuning._Tuner.encoder_vectors
    monkeypatch.setattr(tuning._Tuner, "item_vectors",
                        lambda self: real_vectors(self)[np.random.default_rng(0).permutation(len(real_vectors(self)))])
    tuner = tuning._Tuner(shown, config, progress=False)
    measured = tuner.scored_variant(tuner.config).values
    assert measured[variants.PRETRAINED] != measured[variants.FINETUNED]  # the test tells them apart

    scored = []
    real = tune_validation.ranker_ndcg

    def spy(*args, variant=variants.FINETUNED, **kwargs):
        scored.append(variant)
        return real(*args, variant=variant, **kwargs)

    monkeypatch.setattr(tune_validation, "ranker_ndcg", spy)
    result = tune(shown, config, experiment="tune-variant", out=tmp_path / "v.json", stages=("candidates", "ranker"),
                  max_trials=2, workdir=tmp_path, progress=False)
    assert len(scored) == 4 and set(scored) == {variants.PRETRAINED}
    assert result.stages[0].base_value == pytest.approx(measured[variants.PRETRAINED], abs=1e-12)
    run = mlflow.get_run(result.run_id)
    assert run.data.params["tune.scored_variant"] == variants.PRETRAINED
    reason = run.data.tags["tune.scored_variant_reason"]
    assert "pinned" in reason and "the tune's" in reason


def test_a_no_text_candidates_stage_keeps_the_text_count_it_started_from(shown, tmp_path, fresh_store):
    """The no-text ranker takes no text candidates: the candidates stage does not search their
    count, so best_config.json keeps the starting one."""
    config = _config(ranker={**tiny_config_dict()["ranker"], "ship": "no_text"},
                     candidates={**tiny_config_dict()["candidates"], "n_text": 35})
    result = tune(shown, config, experiment="tune-no-text", out=tmp_path / "nt.json", stages=("candidates",),
                  max_trials=4, workdir=tmp_path, progress=False)
    trials = result.stages[0].study.trials
    assert all("candidates.n_text" not in t.params for t in trials)
    assert any(t.params != trials[0].params for t in trials[1:])  # the other counts were searched
    assert result.config.candidates.n_text == 35


def test_a_saved_config_leaves_a_default_test_share_to_the_split_it_is_trained_with(tmp_path):
    from recsys.cli import load_config

    PipelineConfig(split="stratified").save(tmp_path / "default.json")
    assert json.loads((tmp_path / "default.json").read_text())["test_fraction"] is None
    assert load_config(str(tmp_path / "default.json")).test_fraction == 0.25
    assert load_config(str(tmp_path / "default.json"), split="temporal").test_fraction == 0.2
    PipelineConfig(split="stratified", test_fraction=0.3).save(tmp_path / "set.json")
    assert load_config(str(tmp_path / "set.json"), split="temporal").test_fraction == 0.3


@pytest.mark.slow
def test_pruned_and_failed_trials_end_their_own_nested_run_and_the_search_goes_on(clicks, tmp_path, fresh_store,
                                                                                monkeypatch):
    import optuna

    import training.tuning as tuning

    outcomes = iter([optuna.TrialPruned(), ConfigError("bad settings"), 0.5])

    def scripted(self, stage, config, trial):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(tuning._Tuner, "objective", scripted)
    result = tune(clicks, _config(split="temporal"), experiment="tune-status", out=tmp_path / "s.json",
                  stages=("als",), max_trials=3, workdir=tmp_path, progress=False)
    assert mlflow.active_run() is None  # the parent run was closed too, nothing left open
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
                              search_all_experiments=True, order_by=["attributes.start_time ASC"])
    assert list(runs["status"]) == ["KILLED", "FAILED", "FINISHED"]
    assert list(runs["tags.tune.state"].fillna("-")) == ["pruned", "-", "complete"]
    assert result.stages[0].best_value == 0.5 and result.stages[0].pruned == 1
    assert mlflow.MlflowClient().get_run(result.run_id).info.status == "FINISHED"


def test_tune_cli_passes_cold_items_into_the_config_it_starts_from(clicks, tmp_path, monkeypatch):
    import training.tuning as tuning
    from recsys import cli

    seen = {}

    def fake_tune(dataset, config, **options):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(cli, "load_data", lambda spec: clicks)
    monkeypatch.setattr(tuning, "tune", fake_tune)
    with pytest.raises(SystemExit):
        cli.main(["tune", "--data", "x", "--cold-items", "0.2", "--split", "leave-last-out",
                  "--out", str(tmp_path / "b.json")])
    assert seen["config"].cold_item_fraction == 0.2 and seen["config"].split == "leave-last-out"
