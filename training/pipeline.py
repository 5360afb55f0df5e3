"""The whole training run, inside one MLflow run.

split -> nested split of the training window (feature window | label window; with
   ``label_cuts`` > 1 the feature window is cut again, and every cut adds ranker queries)
-> fine-tune the text model on the feature window
-> stage-1 state on the feature window -> labelled ranking frames on the label window
-> three ranker variants (fine-tuned text, pretrained text, no text), early-stopped on held-out
   label users; a full-ranking evaluation on those users picks the variant that ships
-> stage-1 state refitted on the whole training window -> evaluation on test (reported only)
-> MLflow: params, metrics, curves, plots, the pyfunc model, a registry version.

The text model is fine-tuned once, on the (last cut's) feature window only, so the label windows stay
unseen by every stage-1 model; the refit on the whole window is CF and behaviour features.
Item indices follow the sorted item ids and every tie follows the seeded tie rule
(``features.ties``), so the run is a function of (data, config, seed), not of row order.
"""

from __future__ import annotations

import json
import logging
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
from mlflow.tracking import MlflowClient

from features.bundle import RankingBundle
from features.cf import als_input, bpr_epochs, mean_user_sum
from features.sources import REGISTERED, is_on
from features.state import FeatureState, fit_feature_state, with_indices, with_text_vectors
from features.text_encoder import TextEncoder, item_texts
from features.user_items import build_user_items
from recsys import windows
from recsys.config import PipelineConfig
from recsys.data_checks import check_trainable
from recsys.dataset import Dataset
from recsys.idmap import IdMap
from recsys.progress import quiet_progress
from recsys.split import Split
from recsys.stage_timer import collect, memory_gb, stage, work
from training import model_card, plots, registry, tracking, variants
from training.cold_start_eval import cold_item_evaluation
from training.evaluate import Evaluation, evaluate_all, per_user_ndcg
from training.ranker import LambdaRanker
from training.sequence_fit import fit_sequence_tower, refit_sequence_tower
from training.slices import slice_metrics
from training.text_finetune import finetune, next_item_examples

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced. ``metrics``: test metrics per model (reported, never used to choose);
    ``validation_metrics``: the same on the held-out label users (what chose the shipped variant)."""

    run_id: str
    model_uri: str
    registered_name: str | None
    version: str | None
    became_champion: bool
    metrics: dict[str, dict[str, float]]
    validation_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    shipped_variant: str = ""
    shipped_reason: str = ""
    shipped_by: str = ""  # how it was picked: "validation", "validation, text variants only", "ranker.ship (pinned)"
    best_baseline: str = ""  # the baseline the lifts are measured against, chosen on validation
    timings: dict[str, float] = field(default_factory=dict)
    # The shipped ranker: trees it scores with (kept by early stopping; with ranker.folds > 1 every
    # member's, so the count can exceed num_boost_round) and the prior's weights (source -> weight).
    ranker_trees: int = 0
    prior_weights: dict[str, float] = field(default_factory=dict)
    champion_version: str | None = None  # the registered model's champion after this run

    def metrics_document(self) -> dict:
        """What ``--metrics-out`` writes: a pure function of (data, config, seed)."""
        return {"shipped_variant": self.shipped_variant, "shipped_reason": self.shipped_reason,
                "best_baseline": self.best_baseline,
                "validation": self.validation_metrics, "test": self.metrics}


@dataclass
class Windows:
    """The run's data windows: ``split`` (training window | test), ``nested`` (feature window |
    label window, inside the training window), the cold items of each (cold-items protocol),
    the sorted catalog and the id maps."""

    catalog: pl.DataFrame
    split: Split
    nested: Split
    cold_items: pl.Series | None
    feature_cold: pl.Series | None
    users: IdMap
    items: IdMap
    extra_cuts: list[Split] = field(default_factory=list)  # label cuts 2..label_cuts (``windows.extra_label_cuts``)

    @property
    def text_window(self) -> Split:
        """The cut whose feature window the text model learns on: the last (smallest), which
        holds none of the label windows, so no label is seen by the text model either."""
        return self.extra_cuts[-1] if self.extra_cuts else self.nested


def window_state(w: Windows, window: Split, item_vectors: np.ndarray, config: PipelineConfig,
                 pooling=None, *, evaluated: bool = False) -> FeatureState:
    """The stage-1 state fitted on ``window.train`` (and its training impressions), with the run's
    catalog and id maps: every feature window, and the training window of the refit.
    evaluated: the state's baselines are evaluated (the validation and the test state), so it
    also keeps the co-occurrence baseline's model when its item-to-item fit gives it."""
    return fit_feature_state(catalog=w.catalog, interactions=window.train, impressions=window.impressions_train,
                             item_vectors=item_vectors, users=w.users, items=w.items, config=config, pooling=pooling,
                             with_cooccurrence=evaluated)


def window_text(w: Windows, window: Split, text, config: PipelineConfig) -> tuple[np.ndarray, object]:
    """The fine-tuned item vectors (n_items, 384) float32 and the user model that ``window``'s
    stage-1 state reads. With the ordered user tower and ``text.sequence_refit``: the tower
    refitted on the window's events for the epochs its early stopping chose on the text window
    (``sequence_fit.refit_sequence_tower``), so each user's newest window items are targets, as
    they are for every other stage-1 model of the window (the early-stopping fit held each
    user's last text-window item out). Otherwise (the default), or when the chosen epoch is 0
    (the pooled mean), the text stage's own, for every window."""
    if text.tower is None or not config.text.sequence_refit or text.tower_fit.best_epoch == 0:
        return text.finetuned_vectors, text.user_model
    events = with_indices(window.train, w.users, w.items).filter(pl.col("user_idx") >= 0)
    with stage("user_tower"):
        tower = refit_sequence_tower(events.select("user_idx", "item_idx", "timestamp"), n_users=len(w.users),
                                     n_items=len(w.items), item_vectors=text.encoder_vectors, pooling=text.pooling,
                                     config=config.text, seed=config.seed, epochs=text.tower_fit.best_epoch)
    return tower.item_vectors(text.encoder_vectors), tower


def split_windows(dataset: Dataset, config: PipelineConfig, cuts: windows.Cuts | None = None) -> Windows:
    """Test split, then the nested feature/label split of the training window (``cuts``: the
    ones ``check_trainable`` already made from this dataset and config, else cut here).

    Item and user indices follow the sorted ids, so the order of rows in the input files
    changes nothing downstream.
    """
    if cuts is None and dataset.events_released:
        raise ValueError("this dataset's event tables were released (Dataset.release_events); load it again")
    cuts = cuts or windows.cut_all(dataset.interactions, dataset.impressions, config)
    catalog = dataset.items.sort("item_id")
    return Windows(catalog=catalog, split=cuts.split, nested=cuts.nested, cold_items=cuts.cold_items,
                   feature_cold=cuts.feature_cold,
                   users=IdMap(kind="user").fit(cuts.training_users()),
                   items=IdMap(kind="item").fit(catalog["item_id"]), extra_cuts=cuts.extra)


def data_choices(w: Windows, config: PipelineConfig) -> dict[str, object]:
    """The settings the pipeline derives from the data, not from the config alone (logged as
    ``data_choice.*`` params): the item-to-item model by catalog size, BPR's epochs by the number
    of training-window pairs, ALS's confidence scale by the values per user (``als_alpha`` 0), and
    whether each registered score source feeds the ranker (``data_choice.<name>``: "on"/"off";
    ``use`` "auto" decides by the protocol).
    Both are the refit's, on the training window; the feature-window fit derives its own from
    its smaller window by the same rule."""
    n_items = len(w.items)
    user_items = build_user_items(w.split.train, w.users, w.items)
    pairs = user_items.nnz
    kind = "ease" if n_items <= config.item_item_max_items else "cosine"
    log.info("item-to-item model: %s (%d items; EASE up to item_item_max_items=%d)", kind, n_items,
             config.item_item_max_items)
    epochs = bpr_epochs(config.bpr_iterations, config.bpr_max_samples, pairs)
    if epochs < config.bpr_iterations:
        log.info("BPR: %d epochs instead of %d (%d training pairs; bpr_max_samples=%d)", epochs,
                 config.bpr_iterations, pairs, config.bpr_max_samples)
    values, alpha = als_input(user_items, config)
    if config.als_alpha <= 0:
        log.info("ALS: confidence scale alpha %.3g (als_user_confidence=%g over a mean of %.1f per user)", alpha,
                 config.als_user_confidence, mean_user_sum(values))
    choices = {"data_choice.item_item": kind, "data_choice.bpr_epochs": epochs, "data_choice.als_alpha": alpha}
    for source in REGISTERED:
        use = "on" if is_on(source, config.sources, config.split, n_items) else "off"
        log.info("score source %s: %s (use=%s, split %s)", source.name, use, config.sources[source.name]["use"],
                 config.split)
        choices[f"data_choice.{source.name}"] = use
    return choices


@dataclass
class Fitted:
    """The variants fitted on the feature window and their validation evaluation."""

    rankers: dict[str, LambdaRanker]
    validation: Evaluation
    choice: variants.Choice
    digest: str
    validation_rows: pl.DataFrame  # the held-out label-window rows of the validation users


def fit_variants(w: Windows, text, config: PipelineConfig, metric_log) -> Fitted:
    """Feature-window state, one labelled frame and ranker per variant, and the validation
    evaluation (full ranking on the held-out label users) that chooses the shipped one."""
    vectors, user_model = window_text(w, w.nested, text, config)
    state = window_state(w, w.nested, vectors, config, user_model, evaluated=True)
    state_pretrained = with_text_vectors(state, w.nested.train, text.pretrained_vectors)
    states = variants.states_by_variant(state, state_pretrained)
    counts: dict[str, int] = {}
    users = variants.label_users(state, w.nested.test, config, counts=counts)
    held_out = variants.validation_users(users[0], config.seed + windows.VALIDATION_SEED)
    metric_log.log_many({"data/label_users": counts["label_users"], "data/label_users_used": counts["label_users_used"],
                         "data/validation_users": len(held_out)})
    frames = {name: variants.labelled_frame(states[name], users, w.nested.impressions_test,
                                            variants.variant_config(name, config), w.feature_cold)
              for name in variants.VARIANTS}
    if w.extra_cuts:
        metric_log.log_many({"data/ranker_queries_cut1": frames[variants.FINETUNED]["query_idx"].n_unique()})
        frames = _with_extra_cuts(frames, w, text, config, metric_log)
    metric_log.log_many({"data/ranker_rows": frames[variants.FINETUNED].height,
                         "data/ranker_queries": frames[variants.FINETUNED]["query_idx"].n_unique()})
    with stage("ranker"):
        rankers = variants.fit_rankers(frames, held_out, config, metric_log, label_users=users[0])
    mlflow.log_param("data_choice.ranker_folds",
                     rankers[variants.FINETUNED].members if config.ranker.seeds == 1 else 1)
    del frames
    held_out_ids = w.users.to_ids(held_out)
    validation_split = Split(kind=w.nested.kind, train=w.nested.train,
                             test=w.nested.test.filter(pl.col("user_id").is_in(held_out_ids.implode())),
                             impressions_train=w.nested.impressions_train,
                             impressions_test=None if w.nested.impressions_test is None else
                             w.nested.impressions_test.filter(pl.col("user_id").is_in(held_out_ids.implode())))
    bundles = _bundles(rankers, states, config)
    with stage("evaluation"):
        validation = evaluate_all(bundles, validation_split, config, pretrained_state=state_pretrained,
                                  keep_scores="", baseline_state=state)
    per_user = {name: per_user_ndcg(validation, name, config.k) for name in variants.VARIANTS
                if name in validation.ranked}
    choice = variants.choose_variant(validation.metrics, config.k, per_user,
                                     seed=config.seed + windows.VARIANT_CHOICE_SEED, ship=config.ranker.ship,
                                     new_items=config.cold_item_fraction > 0)
    log.info("%s", choice.reason())
    return Fitted(rankers=rankers, validation=validation, choice=choice, validation_rows=validation_split.test,
                  digest=variants.validation_digest(w.nested.test, held_out_ids, w.nested.train, config))


def _with_extra_cuts(frames: dict[str, pl.DataFrame], w: Windows, text, config: PipelineConfig,
                     metric_log) -> dict[str, pl.DataFrame]:
    """Each variant's frame with the queries of the extra label cuts appended (their own
    feature-window state, label users and query numbers after the first cut's). The held-out
    users' queries of every cut validate, the others train (``variants.fit_rankers``)."""
    parts = {name: [frame] for name, frame in frames.items()}
    for c, cut in enumerate(w.extra_cuts, start=2):
        vectors, user_model = window_text(w, cut, text, config)
        state = window_state(w, cut, vectors, config, user_model)
        states = variants.states_by_variant(state, with_text_vectors(state, cut.train, text.pretrained_vectors))
        counts: dict[str, int] = {}
        users = variants.label_users(state, cut.test, config, counts=counts)
        metric_log.log_many({f"data/label_users_cut{c}": counts["label_users_used"]})
        for name in variants.VARIANTS:
            # No cold-item queries: the feature window's cold items are in no later cut's labels.
            parts[name].append(variants.labelled_frame(states[name], users, cut.impressions_test,
                                                       variants.variant_config(name, config)))
    return {name: variants.stacked_frames(frames) for name, frames in parts.items()}


def _bundles(rankers: dict[str, LambdaRanker], states: dict, config: PipelineConfig) -> dict[str, RankingBundle]:
    return {name: RankingBundle(config=variants.variant_config(name, config), state=states[name], booster=r.booster,
                                feature_columns=r.feature_names, prior_weights=r.prior_weights)
            for name, r in rankers.items()}


def evaluate_on_test(w: Windows, fitted: Fitted, text, config: PipelineConfig) -> tuple[Evaluation, dict]:
    """Refit the stage-1 state on the whole training window and evaluate every variant (the
    shipped one named ``ranker``) and baseline on test. Returns the evaluation and the bundles."""
    with stage("features"):
        vectors, user_model = window_text(w, w.split, text, config)
        state = window_state(w, w.split, vectors, config, user_model, evaluated=True)
        state_pretrained = with_text_vectors(state, w.split.train, text.pretrained_vectors)
    names = variants.shipped_names(fitted.rankers, fitted.choice.shipped)
    states = variants.states_by_variant(state, state_pretrained)
    by_variant = _bundles(fitted.rankers, states, config)
    # The shipped variant first: the relevance, baselines and candidate recall come from its state.
    order = [fitted.choice.shipped, *(n for n in variants.VARIANTS if n != fitted.choice.shipped)]
    bundles = {names[name]: by_variant[name] for name in order}
    with stage("evaluation"):
        versus = fitted.validation.best_baseline
        if not versus:  # no validation users: measure lifts against popularity rather than choose on test
            log.warning("no validation users to choose the baseline to beat; lifts are against popularity")
            versus = "popularity"
        evaluation = evaluate_all(bundles, w.split, config, pretrained_state=state_pretrained, versus=versus,
                                  baseline_state=state, shipped=fitted.choice.shipped)
        if w.cold_items is not None:
            cold = cold_item_evaluation(bundles, w.split.test, w.cold_items, config)
            for name, values in cold.items():
                evaluation.metrics.setdefault(name, {}).update(values)
        for name, ranked in evaluation.ranked.items():
            evaluation.metrics[name].update(
                slice_metrics(ranked, evaluation.relevant, state, evaluation.user_idx, config.k))
    return evaluation, bundles


def renamed(metrics: dict[str, dict[str, float]], shipped: str) -> dict[str, dict[str, float]]:
    """Validation metrics with the shipped variant under ``ranker``, as in the test table."""
    names = variants.shipped_names(metrics, shipped)
    return {names[name]: values for name, values in metrics.items()}


def train(dataset: Dataset, config: PipelineConfig, *, experiment: str, register_name: str | None,
          workdir: Path | None = None, progress: bool = True, release_events: bool = False) -> TrainResult:
    """Run the pipeline in one MLflow run; register the model when ``register_name`` is given.

    Stages: data checks (before any run), split, text model, variants on the feature window,
    test evaluation after the refit, model logging and registration, the run's headline.
    release_events: empty ``dataset``'s event tables once the windows are cut
    (``Dataset.release_events``), for a caller done with them; the windows hold copies."""
    started = time.perf_counter()
    cuts = check_trainable(dataset, config)  # too little data for the split and protocol: a clear error, no run
    check_s = time.perf_counter() - started
    now_gb, peak_gb = memory_gb()  # the checks make the run's cuts: a progress line like the stages'
    log.info("stage data_checks done in %.1fs (resident %.1f GB, peak so far %.1f GB)", check_s, now_gb, peak_gb)
    workdir = Path(workdir or Path.cwd())
    tracking.configure_tracking(workdir)
    tracking.ensure_experiment(experiment)
    with collect() as timings, quiet_progress(not progress), \
            mlflow.start_run(run_name=tracking.run_name(config), tags=tracking.environment_tags(),
                             log_system_metrics=True) as run, \
            tracking.child_run(run.info.run_id, tracking.DIAGNOSTICS_RUN, role=tracking.DIAGNOSTICS_RUN) as diag, \
            tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
        timings["data_checks"] = timings.get("data_checks", 0.0) + check_s  # before the run: no empty run on refusal
        # The parent run gets the headline figures only (at the end); everything else goes here.
        metric_log = tracking.MetricBuffer(diag)
        w, logged_data = _split_stage(dataset, config, metric_log, cuts)
        del cuts
        if release_events:
            dataset.release_events()
        with stage("text_model"):
            encoder_dir = Path(tmp) / "encoder"
            text = _fit_text(w, config, encoder_dir, metric_log, progress)
        with stage("features"):
            fitted = fit_variants(w, text, config, metric_log)
        validation = renamed(fitted.validation.metrics, fitted.choice.shipped)
        evaluation, bundles = evaluate_on_test(w, fitted, text, config)
        metric_log.log_many({"data/test_users": evaluation.n_users_total,
                             "data/test_users_evaluated": len(evaluation.user_idx)})
        with stage("logging"):
            logged = _log_model(w, fitted, evaluation, validation, bundles, text, config, dataset, metric_log,
                                Path(tmp), encoder_dir, register_name, run.info.run_id)
        metric_log.log_many({**{f"time/{k}_s": v for k, v in timings.items()},
                             **{f"work/{k}": v for k, v in work().items()},  # what some stages' cost grows with
                             "memory/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        metric_log.flush()
        _log_headline(w, fitted, evaluation, validation, config, dataset, logged_data, logged.model_id,
                      time.perf_counter() - started)
        shipped = fitted.rankers[fitted.choice.shipped]
        uri = f"models:/{register_name}/{logged.version}" if register_name else logged.model_uri
        return TrainResult(run_id=run.info.run_id, model_uri=uri, registered_name=register_name,
                           version=logged.version, became_champion=logged.became_champion,
                           champion_version=logged.champion_version, metrics=evaluation.metrics,
                           validation_metrics=validation, shipped_variant=fitted.choice.shipped,
                           shipped_reason=fitted.choice.reason(), shipped_by=fitted.choice.shipped_by,
                           best_baseline=fitted.validation.best_baseline,
                           timings=dict(timings), ranker_trees=shipped.best_iteration,
                           prior_weights=dict(shipped.prior_weights))


def _split_stage(dataset: Dataset, config: PipelineConfig, metric_log,
                 cuts: windows.Cuts) -> tuple[Windows, dict]:
    """Params, the windows (from the data check's ``cuts``), the logged data sets and the data
    choices; returns (windows, the logged MLflow data sets by role)."""
    mlflow.log_params({**config.flat(), **{f"data.{k}": v for k, v in dataset.summary().items()},
                       "data.source": dataset.source})
    with stage("split"):
        w = split_windows(dataset, config, cuts)
    logged_data = tracking.log_datasets(dataset, w.split)
    mlflow.log_params(data_choices(w, config))
    metric_log.log_many({"data/train_rows": w.split.train.height, "data/test_rows": w.split.test.height,
                         "data/feature_window_rows": w.nested.train.height,
                         "data/label_window_rows": w.nested.test.height,
                         "data/text_window_rows": w.text_window.train.height,
                         "data/test_impressions_dropped": w.split.impressions_dropped,
                         "data/label_impressions_dropped": w.nested.impressions_dropped})
    return w, logged_data


@dataclass
class _Logged:
    """What logging the shipped model gave: its model id and URI, the registry version (None
    without registration) and whether it became the champion."""

    model_id: str
    model_uri: str
    version: str | None = None
    became_champion: bool = False
    champion_version: str | None = None


def _log_model(w: Windows, fitted: Fitted, evaluation: Evaluation, validation: dict, bundles: dict, text,
               config: PipelineConfig, dataset: Dataset, metric_log, tmp: Path, encoder_dir: Path,
               register_name: str | None, run_id: str) -> _Logged:
    """Results, plots and the LightGBM model; the shipped bundle as the pyfunc model; the per-user
    validation artifact; with ``register_name``, the registry version, its tags and the outcome."""
    results = evaluation.metrics
    shipped = fitted.rankers[fitted.choice.shipped]
    mlflow.set_tags({"shipped_variant": fitted.choice.shipped, "shipped_reason": fitted.choice.reason()})
    _log_results(evaluation, validation, shipped, text, metric_log, config, fitted.choice.shipped)
    tracking.log_child_runs(results, config, validation)
    tracking.log_lightgbm_booster(shipped.booster, shipped.feature_names)
    bundle_dir = bundles["ranker"].save(tmp / "bundle", encoder_dir=_shipped_encoder(
        fitted.choice.shipped, encoder_dir, tmp / "pretrained_encoder", config))
    info = tracking.log_pyfunc_model(bundle_dir, register_name, w.users.ids.head(2).to_list(),
                                     w.catalog["item_id"].head(5).to_list(), config.k)
    per_user_uri = _log_per_user_validation(fitted, w, config, tmp, run_id)
    logged = _Logged(model_id=info.model_id, model_uri=info.model_uri)
    if register_name:
        version = logged.version = str(info.registered_model_version)
        tracking.tag_version(register_name, version, results, validation, config, dataset, fitted.digest,
                             fitted.choice, evaluation.best_baseline, w.users.ids.head(1).to_list())
        MlflowClient().set_model_version_tag(register_name, version, registry.PER_USER_TAG, per_user_uri)
        alias, logged.champion_version = registry.register_outcome(register_name, version)
        logged.became_champion = alias == registry.CHAMPION
    return logged


def _log_headline(w: Windows, fitted: Fitted, evaluation: Evaluation, validation: dict, config: PipelineConfig,
                  dataset: Dataset, logged_data: dict, model_id: str, total_s: float) -> None:
    """The parent run's headline figures (linked to the test and validation data sets) and its
    model-card note."""
    results = evaluation.metrics
    validation_data = tracking.log_dataset(dataset.source, "validation", fitted.validation_rows, "validation",
                                           w.split.kind)
    tracking.log_headline(results["ranker"], validation.get("ranker", {}), config.k, test_data=logged_data["test"],
                          validation_data=validation_data,
                          sizes={"size/train_rows": w.split.train.height,
                                 "size/test_users": len(evaluation.user_idx),
                                 "size/validation_users": len(fitted.validation.user_idx),
                                 "time/total_s": total_s}, model_id=model_id)
    mlflow.set_tag("mlflow.note.content", model_card.run_summary(results, validation, config, dataset,
                                                                 fitted.choice, evaluation.best_baseline))


def _log_per_user_validation(fitted: Fitted, w: Windows, config: PipelineConfig, tmp: Path, run_id: str) -> str:
    """The shipped variant's nDCG@k per held-out validation user, as the run artifact
    ``validation/per_user.parquet`` (user_id, ndcg); the promotion gate pairs two versions on it."""
    table = pl.DataFrame({"user_id": w.users.to_ids(fitted.validation.user_idx),
                          "ndcg": per_user_ndcg(fitted.validation, fitted.choice.shipped, config.k)})
    path = tmp / "per_user.parquet"
    table.write_parquet(path)
    mlflow.log_artifact(str(path), "validation")
    return f"runs:/{run_id}/validation/per_user.parquet"


def _shipped_encoder(shipped: str, finetuned_dir: Path, pretrained_dir: Path, config: PipelineConfig) -> Path:
    """The encoder the shipped bundle carries: the one its item vectors came from, so that
    ``recsys add-items`` puts new items in the same space (the pretrained MiniLM for the
    pretrained-text variant, the fine-tuned one otherwise)."""
    if shipped != variants.PRETRAINED:
        return finetuned_dir
    TextEncoder(max_length=config.text.max_length).save(pretrained_dir)
    return pretrained_dir


def _fit_text(w: Windows, config: PipelineConfig, encoder_dir: Path, metric_log, progress: bool):
    """Fine-tune the text model on the text window's next-item examples (its impressions give the
    hard negatives); save the encoder to ``encoder_dir``. Returns the ``FinetuneResult``."""
    window = w.text_window
    shown = None if window.impressions_train is None else with_indices(window.impressions_train, w.users, w.items)
    events = with_indices(window.train, w.users, w.items)
    encoder = TextEncoder(max_length=config.text.max_length)
    events = events.filter(pl.col("user_idx") >= 0).select("user_idx", "item_idx", "timestamp")  # the tower's too
    examples = next_item_examples(events, config.text.history_len, impressions=shown)
    del shown  # gigabytes at scale; fine-tuning reads the examples only
    metric_log.log_many({"text/examples_with_hard_negatives": float((examples["negatives"].list.len() > 0).sum())})
    result = finetune(encoder, item_texts(w.catalog), examples, config.text, seed=config.seed,
                      progress=progress, log_metric=metric_log)
    encoder.save(encoder_dir)
    mlflow.log_param("data_choice.text_catalog_dtype", result.catalog_dtype)
    metric_log.log_many({**{f"text/rows_{k}": v for k, v in result.rows_encoded.items()},
                         "text/best_step": result.best_step, "text/best_val_loss": min(result.val_losses),
                         "text/pretrained_val_loss": result.val_losses[0],
                         "text/pooling_slope": result.pooling.slope,
                         "text/pooling_query_norm": float(np.linalg.norm(result.pooling.query))})
    if config.text.sequence_layers and config.text.sequence_epochs:
        with stage("user_tower"):
            fit = with_user_tower(result, events, w, config, progress=progress, log_metric=metric_log)
        metric_log.log_many({"text/sequence_best_epoch": fit.best_epoch,
                             "text/sequence_pooled_val_ndcg": fit.val_ndcg[0],
                             "text/sequence_best_val_ndcg": fit.val_ndcg[fit.best_epoch],
                             "text/sequence_seconds": fit.seconds})
    return result


def with_user_tower(result, events: pl.DataFrame, w: Windows, config: PipelineConfig, *, progress: bool,
                    log_metric=None):
    """Fit the ordered user tower on the text window's ``events`` (``user_idx``, ``item_idx``,
    ``timestamp``) over ``result``'s fine-tuned vectors, choosing its epochs on each user's held-out
    last item, and put it on ``result``: ``tower``, ``tower_fit``, ``encoder_vectors`` (the vectors
    before its item adaptor), ``finetuned_vectors`` through the adaptor. Returns the
    ``SequenceFit``, or None (``result`` untouched) when ``text.sequence_layers`` or
    ``text.sequence_epochs`` is 0."""
    if not (config.text.sequence_layers and config.text.sequence_epochs):
        return None
    fit = fit_sequence_tower(events, n_users=len(w.users), n_items=len(w.items), item_vectors=result.finetuned_vectors,
                             pooling=result.pooling, config=config.text, seed=config.seed, progress=progress,
                             log_metric=log_metric)
    result.tower, result.tower_fit = fit.tower, fit
    result.encoder_vectors = result.finetuned_vectors
    result.finetuned_vectors = fit.tower.item_vectors(result.finetuned_vectors)
    return fit


def _log_results(evaluation: Evaluation, validation: dict[str, dict[str, float]], ranker: LambdaRanker, text,
                 metric_log, config: PipelineConfig, shipped: str) -> None:
    """The shipped ranker's full metric set (``tracking.model_metric_keys``: test, validation and
    slices), its trees and prior weights to the diagnostics run; plots and tables to the parent run."""
    results = evaluation.metrics
    metric_log.log_many({**tracking.model_metric_keys(results["ranker"], validation.get("ranker", {}), config.k),
                         "ranker/best_iteration": ranker.best_iteration,
                         **{f"ranker/prior_weight/{source}": w for source, w in ranker.prior_weights.items()}})
    if evaluation.best_baseline:
        mlflow.set_tag("best_baseline", evaluation.best_baseline)
    metric = f"ndcg@{config.k}"
    mlflow.log_figure(plots.feature_importance_figure(ranker.feature_importance()), "plots/feature_importance.png")
    mlflow.log_figure(plots.model_comparison_figure(results, metric, shipped), "plots/model_comparison.png")
    mlflow.log_figure(plots.loss_curve_figure(text.train_losses, text.val_losses, text.val_steps,
                                              best_step=text.best_step),
                      "plots/text_loss_curve.png")
    mlflow.log_figure(plots.slice_figure(results, config.k), "plots/metric_by_slice.png")
    mlflow.log_figure(plots.score_distribution_figure(evaluation.ranker_scores, evaluation.ranker_labels),
                      "plots/score_distribution.png")
    plots.close_all()
    mlflow.log_dict({"test": results, "validation": validation}, "metrics/all_models.json")
    mlflow.log_text(json.dumps(ranker.feature_importance(), indent=2), "metrics/feature_importance.json")
