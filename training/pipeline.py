"""The whole training run, inside one MLflow run.

split -> nested split of the training window (feature window | label window)
-> fine-tune the text model on the feature window
-> stage-1 state on the feature window -> labelled ranking frame on the label window
-> LightGBM LambdaRank (and the no-text and pretrained-text ablations), early-stopped on held-out label users
-> stage-1 state refitted on the whole training window -> evaluation on test vs baselines
-> MLflow: params, metrics, curves, plots, the pyfunc model, a registry version.

The text model is fine-tuned once, on the feature window only, so the label window stays
unseen by every stage-1 model; the refit on the whole window is CF and behaviour features.
"""

from __future__ import annotations

import json
import logging
import resource
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from features.bundle import RankingBundle
from features.candidates import generate_candidates
from features.ranking_frame import FEATURE_COLUMNS, TEXT_FEATURES, build_ranking_frame, feature_matrix, group_sizes
from features.state import FeatureState, fit_feature_state, with_indices, with_text_vectors
from features.text_encoder import TextEncoder, item_texts
from recsys.cold_items import pick_cold_items, without_items
from recsys.config import PipelineConfig
from recsys.dataset import Dataset
from recsys.idmap import IdMap
from recsys.split import split_interactions
from recsys.stage_timer import collect, stage
from training import plots, registry, tracking
from training.cold_start_eval import cold_item_evaluation
from training.evaluate import evaluate_all, sample_users, test_relevance
from training.ranker import LambdaRanker
from training.slices import slice_metrics
from training.text_finetune import finetune, next_item_examples

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    registered_name: str | None
    version: str | None
    became_champion: bool
    metrics: dict[str, dict[str, float]]
    timings: dict[str, float] = field(default_factory=dict)
    # The main ranker: trees kept by early stopping and the prior's weights (source -> weight).
    ranker_trees: int = 0
    prior_weights: dict[str, float] = field(default_factory=dict)


def labelled_frame(state: FeatureState, label_events: pl.DataFrame, label_impressions: pl.DataFrame | None,
                   config: PipelineConfig, cold_items: pl.Series | None = None, log_metric=None) -> pl.DataFrame:
    """Ranking frame with ``label`` (0/1) built on the label window.

    Two kinds of query: one per label user over the candidates the state generates (the
    serving distribution; label 1 = interacted in the label window), and, where impressions
    exist, one per label-window impression over the items actually shown (label = clicked),
    which teaches the ranker to tell apart items that all looked plausible. Above
    ``config.ranker_max_users`` label users, a seeded sample of them makes both kinds. Queries without
    both a positive and a negative are dropped: LambdaRank learns nothing from them.
    ``cold_items`` (ids with no behaviour in the state's window) make one more query per label
    user: those items only, so the ranker learns to order items that have nothing but text
    (the cold-items protocol, and a "new arrivals" shelf). ``log_metric(key, value, step)``, when
    given, receives the label user counts (``data/label_users``, ``data/label_users_used``).
    """
    user_idx, relevant = test_relevance(state, label_events)
    n_label_users = len(user_idx)
    user_idx, relevant = sample_users(user_idx, relevant, config.ranker_max_users, config.seed + 2)
    sampled = len(user_idx) < n_label_users
    if sampled:
        log.info("the ranker learns from %d of %d label users (ranker_max_users)", len(user_idx), n_label_users)
    if log_metric:
        log_metric("data/label_users", float(n_label_users), 0)
        log_metric("data/label_users_used", float(len(user_idx)), 0)
    candidates = generate_candidates(state, user_idx, config.candidates)
    positives = pl.DataFrame({
        "query_idx": np.repeat(np.arange(len(user_idx)), [len(r) for r in relevant]).astype(np.int32),
        "item_idx": np.concatenate(relevant).astype(np.int32),
        "label": np.ones(sum(len(r) for r in relevant), dtype=np.int8),
    })
    parts = [candidates.join(positives, on=["query_idx", "item_idx"], how="left", maintain_order="left")
             .with_columns(pl.col("label").fill_null(0))]
    next_query = len(user_idx)
    if cold_items is not None and cold_items.len():
        cold_idx = np.asarray(state.items.to_index(cold_items), dtype=np.int32)
        cold = pl.DataFrame({"query_idx": np.repeat(np.arange(len(user_idx), dtype=np.int32), len(cold_idx)),
                             "user_idx": np.repeat(user_idx.astype(np.int32), len(cold_idx)),
                             "item_idx": np.tile(cold_idx, len(user_idx))})
        parts.append(cold.join(positives, on=["query_idx", "item_idx"], how="left", maintain_order="left")
                     .with_columns(pl.col("label").fill_null(0), pl.col("query_idx") + next_query))
        next_query += len(user_idx)
    if label_impressions is not None and label_impressions.height:
        shown = with_indices(label_impressions, state.users, state.items)
        shown = (shown.filter(pl.col("user_idx").is_in(pl.Series(user_idx).implode()) if sampled
                              else pl.col("user_idx") >= 0)
                 .group_by("impression_id", "user_idx", "item_idx").agg(pl.col("clicked").max().alias("label"))
                 .with_columns((pl.col("impression_id").rank("dense") - 1 + next_query).cast(pl.Int32)
                               .alias("query_idx"))
                 .select("query_idx", "user_idx", "item_idx", pl.col("label").cast(pl.Int8)))
        parts.append(shown)
    frame = pl.concat(parts).sort("query_idx", "item_idx")
    has_both = (pl.col("label").max().over("query_idx") == 1) & (pl.col("label").min().over("query_idx") == 0)
    return build_ranking_frame(state, frame.filter(has_both))


def fit_rankers(frame: pl.DataFrame, config: PipelineConfig, log_metric,
                pretrained_frame: pl.DataFrame | None = None) -> dict[str, LambdaRanker]:
    """The full ranker and its ablations, early-stopped on the same 15% of the label queries.

    ``ranker_no_text`` never splits on the text features (zero split gain) and trains on the
    ranker's own LightGBM sets, so their bins are built once; ``ranker_pretrained_text`` trains on
    ``pretrained_frame`` (text features from the encoder before fine-tuning). Logs the main
    ranker's training rows, fit seconds and row-iterations per second (rows x trees / s).
    """
    rng = np.random.default_rng(config.seed)
    queries = frame["query_idx"].unique().sort().to_numpy()
    val_queries = pl.Series(rng.choice(queries, size=max(1, len(queries) * 15 // 100), replace=False)).implode()

    def new_ranker() -> LambdaRanker:
        return LambdaRanker(feature_names=FEATURE_COLUMNS, config=config.ranker, seed=config.seed)

    def sets_of(data: pl.DataFrame):
        is_val = data["query_idx"].is_in(val_queries)
        train, val = data.filter(~is_val), data.filter(is_val)
        return new_ranker().dataset(
            feature_matrix(train, FEATURE_COLUMNS), train["label"].to_numpy(), group_sizes(train),
            X_val=feature_matrix(val, FEATURE_COLUMNS), y_val=val["label"].to_numpy(), groups_val=group_sizes(val))

    sets = sets_of(frame)
    rankers = {
        "ranker": new_ranker().fit_dataset(sets, eval_at=(config.k,), log_metric=log_metric),
        # Same binned sets: the ablation only never splits on the text features.
        "ranker_no_text": new_ranker().fit_dataset(sets, unused_features=TEXT_FEATURES, eval_at=(config.k,)),
    }
    if pretrained_frame is not None:
        rankers["ranker_pretrained_text"] = new_ranker().fit_dataset(sets_of(pretrained_frame), eval_at=(config.k,))
    if log_metric:
        main, rows = rankers["ranker"], sets.n_rows
        log_metric("ranker/train_rows", float(rows), 0)
        log_metric("ranker/fit_seconds", main.fit_seconds, 0)
        log_metric("ranker/rows_per_s", rows * main.best_iteration / max(main.fit_seconds, 1e-9), 0)
    return rankers


def train(dataset: Dataset, config: PipelineConfig, *, experiment: str, register_name: str | None,
          workdir: Path | None = None, progress: bool = True) -> TrainResult:
    """Run the pipeline in one MLflow run; register the model when ``register_name`` is given."""
    workdir = Path(workdir or Path.cwd())
    tracking.configure_tracking(workdir)
    tracking.ensure_experiment(experiment, workdir)
    with collect() as timings, \
            mlflow.start_run(run_name=tracking.run_name(config), tags=tracking.environment_tags()) as run, \
            tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
        metric_log = tracking.MetricBuffer(run.info.run_id)
        mlflow.log_params({**config.flat(), **{f"data.{k}": v for k, v in dataset.summary().items()},
                           "data.source": dataset.source})
        with stage("split"):
            split = split_interactions(dataset.interactions, kind=config.split, test_fraction=config.test_fraction,
                                       seed=config.seed, impressions=dataset.impressions)
            cold_items = feature_cold = None
            if config.cold_item_fraction > 0:
                cold_items = pick_cold_items(split.train, config.cold_item_fraction, config.seed + 7)
                split = replace(split, train=without_items(split.train, cold_items),
                                impressions_train=without_items(split.impressions_train, cold_items))
            nested = split_interactions(split.train, kind=config.split, test_fraction=config.label_fraction,
                                        seed=config.seed + 1, impressions=split.impressions_train)
            if cold_items is not None:  # the ranker must see items without behaviour while it learns
                feature_cold = pick_cold_items(nested.train, config.cold_item_fraction, config.seed + 8)
                nested = replace(nested, train=without_items(nested.train, feature_cold),
                                 impressions_train=without_items(nested.impressions_train, feature_cold))
            users = IdMap(kind="user").fit(split.train["user_id"])
            items = IdMap(kind="item").fit(dataset.items["item_id"])
        validation_digest = tracking.log_datasets(dataset, split)
        mlflow.log_metrics({"data/train_rows": split.train.height, "data/test_rows": split.test.height,
                            "data/feature_window_rows": nested.train.height,
                            "data/label_window_rows": nested.test.height})
        with stage("text_model"):
            encoder_dir = Path(tmp) / "encoder"
            shown = (None if nested.impressions_train is None
                     else with_indices(nested.impressions_train, users, items))
            text = _fit_text(dataset.items, with_indices(nested.train, users, items), shown, config, encoder_dir,
                             metric_log, progress)
        with stage("features"):
            state_feat = fit_feature_state(catalog=dataset.items, interactions=nested.train,
                                           impressions=nested.impressions_train,
                                           item_vectors=text.finetuned_vectors, users=users, items=items,
                                           config=config, pooling=text.pooling)
            frame = labelled_frame(state_feat, nested.test, nested.impressions_test, config, feature_cold,
                                   log_metric=metric_log)
            state_feat_pretrained = with_text_vectors(state_feat, nested.train, text.pretrained_vectors)
            frame_pretrained = labelled_frame(state_feat_pretrained, nested.test, nested.impressions_test, config,
                                              feature_cold)
        mlflow.log_metrics({"data/ranker_rows": frame.height, "data/ranker_queries": frame["query_idx"].n_unique()})
        with stage("ranker"):
            rankers = fit_rankers(frame, config, metric_log, pretrained_frame=frame_pretrained)
        del frame, frame_pretrained, state_feat, state_feat_pretrained  # the largest tables: free them before the refit
        with stage("features"):
            state = fit_feature_state(catalog=dataset.items, interactions=split.train,
                                      impressions=split.impressions_train, item_vectors=text.finetuned_vectors,
                                      users=users, items=items, config=config, pooling=text.pooling)
            state_pretrained = with_text_vectors(state, split.train, text.pretrained_vectors)
        bundles = {name: RankingBundle(config=config, state=state_pretrained if "pretrained" in name else state,
                                       booster=r.booster, feature_columns=r.feature_names,
                                       prior_weights=r.prior_weights)
                   for name, r in rankers.items()}
        with stage("evaluation"):
            evaluation = evaluate_all(bundles, split, config, pretrained_state=state_pretrained)
            if cold_items is not None:
                cold = cold_item_evaluation(bundles, split.test, cold_items, config)
                for name, values in cold.items():
                    evaluation.metrics.setdefault(name, {}).update(values)
            for name, ranked in evaluation.ranked.items():
                evaluation.metrics[name].update(
                    slice_metrics(ranked, evaluation.relevant, state, evaluation.user_idx, config.k))
            results = evaluation.metrics
        mlflow.log_metrics({"data/test_users": evaluation.n_users_total,
                            "data/test_users_evaluated": len(evaluation.user_idx)})
        with stage("logging"):
            _log_results(evaluation, rankers["ranker"], text, metric_log, config)
            tracking.log_child_runs(results, config)
            bundle_dir = bundles["ranker"].save(Path(tmp) / "bundle", encoder_dir=encoder_dir)
            info = tracking.log_pyfunc_model(bundle_dir, register_name, users.ids.head(2).to_list())
            became_champion = False
            if register_name:
                version = str(info.registered_model_version)
                tracking.tag_version(register_name, version, results, config, dataset, validation_digest)
                if registry.current_champion(register_name) is None:
                    registry.promote(register_name, version)
                    became_champion = True
        mlflow.log_metrics({f"time/{k}_s": v for k, v in timings.items()})
        mlflow.log_metric("memory/peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        version = str(info.registered_model_version) if register_name else None
        uri = f"models:/{register_name}/{version}" if register_name else info.model_uri
        return TrainResult(run_id=run.info.run_id, model_uri=uri, registered_name=register_name, version=version,
                           became_champion=became_champion, metrics=results, timings=dict(timings),
                           ranker_trees=rankers["ranker"].best_iteration,
                           prior_weights=dict(rankers["ranker"].prior_weights))


def _fit_text(catalog: pl.DataFrame, feature_events: pl.DataFrame, impressions: pl.DataFrame | None,
              config: PipelineConfig, encoder_dir: Path, metric_log, progress: bool):
    encoder = TextEncoder(max_length=config.text.max_length)
    examples = next_item_examples(feature_events.filter(pl.col("user_idx") >= 0), config.text.history_len,
                                  impressions=impressions)
    mlflow.log_metric("text/examples_with_hard_negatives", float((examples["negatives"].list.len() > 0).sum()))
    result = finetune(encoder, item_texts(catalog), examples, config.text, seed=config.seed,
                      progress=progress, log_metric=metric_log)
    encoder.save(encoder_dir)
    mlflow.log_metrics({"text/best_step": result.best_step, "text/best_val_loss": min(result.val_losses),
                        "text/pretrained_val_loss": result.val_losses[0],
                        "text/pooling_slope": result.pooling.slope,
                        "text/pooling_query_norm": float(np.linalg.norm(result.pooling.query))})
    return result


def _log_results(evaluation, ranker: LambdaRanker, text, metric_log, config: PipelineConfig) -> None:
    """Metrics (ranker plain, ``baseline/<name>/...``, ``ablation/no_text/...``) and plots."""
    results = evaluation.metrics
    metric_log.flush()
    flat = {}
    for name, values in results.items():
        prefix = ("" if name == "ranker" else f"ablation/{name.removeprefix('ranker_')}/" if name.startswith("ranker_")
                  else f"baseline/{name}/")
        flat.update({prefix + tracking.mlflow_key(k): v for k, v in values.items() if np.isfinite(v)})
    mlflow.log_metrics(flat)
    mlflow.log_metric("ranker/best_iteration", ranker.best_iteration)
    mlflow.log_metrics({f"ranker/prior_weight/{source}": w for source, w in ranker.prior_weights.items()})
    if evaluation.best_baseline:
        mlflow.set_tag("best_baseline", evaluation.best_baseline)
    metric = f"ndcg@{config.k}"
    mlflow.log_figure(plots.feature_importance_figure(ranker.feature_importance()), "plots/feature_importance.png")
    mlflow.log_figure(plots.model_comparison_figure(results, metric), "plots/model_comparison.png")
    mlflow.log_figure(plots.loss_curve_figure(text.train_losses, text.val_losses, text.val_steps),
                      "plots/text_loss_curve.png")
    mlflow.log_figure(plots.slice_figure(results, config.k), "plots/metric_by_slice.png")
    mlflow.log_figure(plots.score_distribution_figure(evaluation.ranker_scores, evaluation.ranker_labels),
                      "plots/score_distribution.png")
    plots.close_all()
    mlflow.log_dict(results, "metrics/all_models.json")
    mlflow.log_text(json.dumps(ranker.feature_importance(), indent=2), "metrics/feature_importance.json")
