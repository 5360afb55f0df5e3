"""``recsys tune``: Optuna searches of the pipeline's settings on validation data, stage by stage.

Stages run cheapest first (``training.tune_space.STAGES``): ALS, BPR and EASE each on its own
validation nDCG@k, the text model on its text score alone, then the candidate counts and the
ranker on the ranker's validation nDCG@k. Each stage starts from the best settings of the stages
before it, enqueues the current settings as its first trial (so it never ends below them), then
lets a seeded TPE sampler propose the rest; BPR trials are pruned (median rule) on their nDCG
after a share of their epochs. Every measurement is on data cut from the training window
(``training.tune_validation``): the test split is never read.

One MLflow parent run holds the search: each trial is a nested run (its settings and validation
nDCG@k), the parent logs each stage's best and starting values, the search's plots (history,
parameter importance) and ``best_config.json``, a complete config ``recsys train --config`` takes.

Same data, seed and trial counts give the same best config; a ``--budget-minutes`` that ends a
stage early makes the trial count, and so the result, depend on the machine's speed. The budget
is shared out among the stages still to run; a stage stops when its next trial would not fit, and
once the budget is spent the stages left are not run (they keep their starting settings), so the
search overruns its budget by at most one trial (and, before the candidates stage, the variant
choice's three scorings, plus each stage's plots).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import optuna
import polars as pl

from features.cf import als_input, mean_user_sum
from features.state import with_text_vectors
from features.text_encoder import TextEncoder, item_texts
from recsys import windows
from recsys.config import PipelineConfig
from recsys.data_checks import check_trainable
from recsys.dataset import Dataset
from recsys.errors import ConfigError
from recsys.progress import progress as progress_bar
from recsys.progress import quiet_progress
from training import tracking, tune_validation, variants
from training.pipeline import window_text, with_user_tower
from training.ranker_folds import folds_from_data
from training.tune_space import STAGE_NAMES, STAGES, Stage, base_values, with_overrides

log = logging.getLogger(__name__)

BPR_REPORT_EVERY = 10  # epochs between the pruner's looks at a BPR trial
BPR_PRUNE_AFTER = 40  # epochs before the pruner may stop a BPR trial


@dataclass
class StageResult:
    """One stage's search: its best overrides and value, and the value of the settings it started from."""

    name: str
    best: dict[str, object]
    best_value: float
    base_value: float
    trials: int
    pruned: int
    seconds: float
    study: optuna.Study | None = field(default=None, repr=False)


@dataclass
class TuneResult:
    run_id: str
    config: PipelineConfig
    stages: list[StageResult]
    seconds: float
    skipped: tuple[str, ...] = ()  # stages not run because the budget was spent (starting settings kept)

    def summary(self) -> str:
        lines = [f"{'stage':<11} {'trials':>6} {'pruned':>6} {'start':>7} {'best':>7} {'time':>7}"]
        for s in self.stages:
            lines.append(f"{s.name:<11} {s.trials:>6} {s.pruned:>6} {s.base_value:>7.4f} {s.best_value:>7.4f} "
                         f"{s.seconds:>6.0f}s")
        if self.skipped:
            lines.append(f"not run, the budget was spent (starting settings kept): {', '.join(self.skipped)}")
        return "\n".join(lines)


class _Tuner:
    """The state a search carries from stage to stage: the validation data, the config so far and
    the text vectors the later stages read."""

    def __init__(self, dataset: Dataset, config: PipelineConfig, progress: bool,
                 cuts: windows.Cuts | None = None) -> None:
        self.dataset = dataset
        self.config = config
        self.progress = progress
        self.data = tune_validation.validation_data(dataset, config, cuts)
        self.config = config = _confidence_from_the_data(config, self.data)
        self.vectors: np.ndarray | None = None  # the text model's item vectors (pretrained until the text stage)
        self.pooling = None
        self.text = None  # the text stage's best trial (``_finetuned``): the extra cuts refit its tower
        self.state = self.who = self.frame = None
        # Extra label cuts: their states (and the feature-window state they follow), and their
        # frames by variant (and the candidate settings they follow).
        self._extra_states_of, self._extra_states = None, []
        self._extra_key, self._extra = None, {}
        self._pretrained_state = None  # (state, that state with the pretrained encoder's vectors)
        self._pretrained: np.ndarray | None = None  # the pretrained encoder's item vectors
        # The ranker variant the candidates and ranker stages score (``scored_variant``).
        self.variant: variants.Choice | None = None

    def objective(self, stage: Stage, config: PipelineConfig, trial: optuna.Trial) -> float:
        data, k, seed = self.data, config.k, config.seed
        if stage.name in ("als", "bpr"):
            report = None
            if stage.name == "bpr":
                def report(epochs, users, items):
                    trial.report(tune_validation.ndcg_of_scores(data, lambda u: users[u] @ items.T, k, seed), epochs)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
            scorer = tune_validation.cf_scorer(data, stage.name, config, report, report_every=BPR_REPORT_EVERY)
            return tune_validation.ndcg_of_scores(data, scorer, k, seed)
        if stage.name == "item_item":
            return tune_validation.ndcg_of_scores(data, tune_validation.item_item_scorer(data, config), k, seed)
        if stage.name == "text":
            text, vectors, pooling = self._finetuned(config)
            self._text_trials[trial.number] = (text, vectors, pooling)
            return tune_validation.ndcg_of_scores(data, tune_validation.text_scorer(data, vectors, config, pooling),
                                                  k, seed)
        variant = self.variant.shipped
        state = self._variant_state(config, variant)
        who = self._who(self._state(config), config)
        if stage.name == "candidates":
            value, _ = tune_validation.ranker_ndcg(data, state, who, config,
                                                   extra_frames=self._extra_frames(config, variant), variant=variant)
            return value
        value, self.frame = tune_validation.ranker_ndcg(data, state, who, config, frame=self.frame,
                                                        extra_frames=self._extra_frames(config, variant),
                                                        variant=variant)
        return value

    def scored_variant(self, config: PipelineConfig) -> variants.Choice:
        """The ranker variant the pipeline would ship with ``config``, chosen as ``recsys train``
        chooses (``variants.choose_variant``: the significance rule, ``ranker.ship``, new items)
        on this validation data: each variant's ranker learnt on the label users and scored per
        user (out of fold for a fold ensemble). The candidates and ranker stages then score that
        variant, so they tune the model that ships rather than the fine-tuned-text one whatever
        ships (a no-text ranker proposes no text candidates and never splits on text)."""
        who = self._who(self._state(config), config)
        per_user = {}
        for name in variants.VARIANTS:
            per_user[name], _ = tune_validation.ranker_per_user(
                self.data, self._variant_state(config, name), who, config,
                extra_frames=self._extra_frames(config, name), variant=name)
        metric = f"ndcg@{config.k}"
        validation = {name: {metric: float(values.mean()) if len(values) else math.nan}
                      for name, values in per_user.items()}
        choice = variants.choose_variant(validation, config.k, per_user, seed=config.seed + windows.VARIANT_CHOICE_SEED,
                                         ship=config.ranker.ship, new_items=config.cold_item_fraction > 0)
        folds = folds_from_data(config.ranker.folds, int(np.setdiff1d(who.users[0], who.held_out).size))
        scored_on = ("the tune's label users, out of fold, feature-window models" if folds > 1
                     else "the tune's held-out label users, feature-window models")
        return dataclasses.replace(choice, scored_on=scored_on)

    def _variant_state(self, config: PipelineConfig, variant: str):
        """The state ``variant`` reads, as in ``recsys train`` (``variants.states_by_variant``): the
        pretrained-text variant the feature-window state with the pretrained encoder's vectors
        (built once per state), the others the state itself."""
        state = self._state(config)
        if variant != variants.PRETRAINED:
            return state
        if self._pretrained_state is None or self._pretrained_state[0] is not state:
            self._pretrained_state = (state, with_text_vectors(state, self.data.windows.nested.train,
                                                               self.encoder_vectors()))
        return self._pretrained_state[1]

    def _extra_frames(self, config: PipelineConfig, variant: str) -> list:
        """The labelled frames of label cuts 2..``label_cuts`` (the starting config's: no stage
        searches it) for ``variant``, as ``recsys train`` builds them: one state per cut (fitted
        once per feature-window state), read by the pretrained-text variant with the pretrained
        vectors; each variant's frames built once per candidate settings, so the ranker stage
        reuses them."""
        cuts = self.data.windows.extra_cuts
        if not cuts:
            return []
        if self._extra_states_of is not self.state:
            self._extra_states_of = self.state
            self._extra_states = []
            for cut in cuts:
                vectors, user_model = self._cut_text(cut, config)
                self._extra_states.append(tune_validation.extra_cut_state(self.data, cut, vectors, config, user_model))
            self._extra_key = None
        if config.candidates != self._extra_key:
            self._extra_key, self._extra = config.candidates, {}
        if variant not in self._extra:
            states = self._extra_states if variant != variants.PRETRAINED else \
                [with_text_vectors(state, cut.train, self.encoder_vectors())
                 for state, cut in zip(self._extra_states, cuts, strict=True)]
            variant_config = variants.variant_config(variant, config)
            self._extra[variant] = [tune_validation.extra_cut_frame(state, cut, variant_config)
                                    for state, cut in zip(states, cuts, strict=True)]
        return self._extra[variant]

    def _cut_text(self, cut, config: PipelineConfig) -> tuple:
        """(item vectors, user model) of an extra cut's state, as ``recsys train`` fits them: the
        tower refitted on the cut's window (``pipeline.window_text``); pretrained until the text stage."""
        if self.text is None:
            return self.item_vectors(), self.pooling
        return window_text(self.data.windows, cut, self.text, config)

    def _finetuned(self, config: PipelineConfig):
        """The text trial's model, as ``recsys train`` fits it (``pipeline._fit_text``): the
        fine-tuned encoder and the ordered tower on the text window. Returns (the
        ``FinetuneResult``, the feature window's item vectors, its user model: the tower
        refitted on that window, ``pipeline.window_text``)."""
        from features.state import with_indices
        from training.text_finetune import finetune, next_item_examples

        # As recsys train: with extra label cuts the text model learns on the last cut's feature
        # window, which holds none of the label windows (the extra cuts' frames read its vectors).
        w = self.data.windows
        window = w.text_window
        events = self.data.events if window is w.nested else \
            with_indices(window.train, w.users, w.items).filter(pl.col("user_idx") >= 0)
        shown = None if window.impressions_train is None else with_indices(window.impressions_train, w.users,
                                                                            w.items)
        examples = next_item_examples(events, config.text.history_len, impressions=shown)
        result = finetune(TextEncoder(max_length=config.text.max_length), item_texts(w.catalog), examples,
                          config.text, seed=config.seed, progress=False)
        with_user_tower(result, events, w, config, progress=False)
        return (result, *window_text(w, w.nested, result, config))

    def encoder_vectors(self) -> np.ndarray:
        """(n_items, 384) float32: the pretrained encoder's item vectors, encoded once."""
        if self._pretrained is None:
            encoder = TextEncoder(max_length=self.config.text.max_length)
            self._pretrained = encoder.encode(item_texts(self.data.windows.catalog), progress=False)
        return self._pretrained

    def item_vectors(self) -> np.ndarray:
        """The item vectors the state reads: the text stage's best trial's, pretrained until then."""
        return self.encoder_vectors() if self.vectors is None else self.vectors

    def _state(self, config: PipelineConfig):
        """The feature-window state for the ranker stages: fitted once (stage-1 settings are fixed by then)."""
        if self.state is None:
            self.state = tune_validation.feature_state(self.data, self.item_vectors(), config, self.pooling)
        return self.state

    def _who(self, state, config: PipelineConfig):
        if self.who is None:
            self.who = tune_validation.label_users(self.data, state, config)
        return self.who

    def run_stage(self, stage: Stage, *, max_trials: int, seconds: float, parent_id: str) -> StageResult:
        """Search ``stage`` for at most ``max_trials`` trials or ``seconds`` (its first trial always
        runs), each a nested MLflow run; ``self.config`` takes the best settings."""
        started = time.perf_counter()
        base = self.config
        self._text_trials: dict[int, tuple] = {}
        if stage.name == "ranker":
            self.frame = None  # candidates may have changed
        if stage.name in ("candidates", "ranker") and self.variant is None:
            self.variant = self.scored_variant(base)
            log.info("tune: the %s stage scores %s, the variant recsys train would ship here: %s", stage.name,
                     self.variant.shipped, self.variant.reason())
            client = mlflow.MlflowClient()
            client.log_param(parent_id, "tune.scored_variant", self.variant.shipped)
            client.set_tag(parent_id, "tune.scored_variant_reason", self.variant.reason())
        if stage.name == "candidates" and self.variant.shipped == variants.NO_TEXT:
            # The no-text ranker takes no text candidates: their count keeps its starting value
            # rather than whatever the best trial drew for a setting its score never read.
            stage = _holding(stage, {"candidates.n_text": base.candidates.n_text})
        # The stage's own seed (not its position among the stages run): --stages changes no stage's draws.
        sampler = optuna.samplers.TPESampler(seed=base.seed * 100 + STAGE_NAMES.index(stage.name),
                                             n_startup_trials=min(8, max_trials))
        # BPR's learning rate decays over each trial's own epochs, so early reports favour short
        # schedules: the pruner compares trials only from epoch BPR_PRUNE_AFTER on.
        study = optuna.create_study(direction="maximize", sampler=sampler, study_name=stage.name,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=4,
                                                                       n_warmup_steps=BPR_PRUNE_AFTER))
        study.enqueue_trial(base_values(stage, base))
        deadline = started + seconds  # checked after each trial: the first (starting) one always runs
        bar = progress_bar(total=max_trials, desc=f"tune {stage.name}", unit="trial", enabled=self.progress)

        trial_seconds: list[float] = []  # every trial's wall time, pruned ones too

        def objective(trial: optuna.Trial) -> float:
            called = time.perf_counter()
            mlflow.start_run(run_name=f"{stage.name}-{trial.number:03d}", nested=True, parent_run_id=parent_id,
                             tags={"tune.stage": stage.name})
            status = "FAILED"
            try:
                overrides = stage.suggest(trial)
                config = with_overrides(base, overrides)
                mlflow.log_params({key: _param(value) for key, value in overrides.items()})
                trial_started = time.perf_counter()
                try:
                    with quiet_progress(True):  # the stage's bar is the one to watch
                        value = self.objective(stage, config, trial)
                except optuna.TrialPruned:
                    mlflow.set_tag("tune.state", "pruned")
                    status = "KILLED"  # stopped by the pruner, not an error
                    raise
                mlflow.log_metrics({f"validation/ndcg_at_{base.k}": _finite(value),
                                    "time/trial_s": time.perf_counter() - trial_started})
                mlflow.set_tag("tune.state", "complete")
                status = "FINISHED"
            finally:
                mlflow.end_run(status=status)
                trial_seconds.append(time.perf_counter() - called)
            return _finite(value)

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            bar.update(1)
            completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            best = f"{study.best_value:.4f}" if completed else "-"
            bar.set_postfix(best=best, left=f"{max(0.0, deadline - time.perf_counter()):.0f}s")
            if completed and stage.name == "text":  # keep the best trial's vectors only
                for number in [n for n in self._text_trials if n != study.best_trial.number]:
                    del self._text_trials[number]
            # Stop when the next trial would not fit: trials of a stage can differ several-fold in
            # cost (text steps x layers), so the longest one so far is the estimate.
            if time.perf_counter() + max(trial_seconds, default=0.0) >= deadline:
                study.stop()

        with bar:
            study.optimize(objective, n_trials=max_trials, callbacks=[after_trial], catch=(ConfigError,))
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            raise ConfigError(f"tune: no {stage.name} trial completed; see the log for the errors")
        best_trial = study.best_trial
        best = {key: value for key, value in _overrides_of(stage, best_trial.params).items()}
        self.config = with_overrides(base, best)
        if stage.name == "text":
            self.text, self.vectors, self.pooling = self._text_trials[best_trial.number]
        self._text_trials = {}
        if stage.name in ("als", "bpr", "item_item", "text"):
            self.state = self.who = self.variant = None  # the ranker stages refit the state with these settings
        return StageResult(name=stage.name, best=best, best_value=study.best_value,
                           base_value=study.trials[0].value if study.trials[0].value is not None else math.nan,
                           trials=len(study.trials),
                           pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
                           seconds=time.perf_counter() - started, study=study)


class _HeldTrial:
    """A trial whose parameters named in ``held`` keep the given values instead of being searched."""

    def __init__(self, trial, held: dict[str, object]) -> None:
        self._trial, self._held = trial, held

    def __getattr__(self, name: str):
        return getattr(self._trial, name)

    def _suggest(self, kind: str, name: str, *args, **kwargs):
        return self._held[name] if name in self._held else getattr(self._trial, kind)(name, *args, **kwargs)

    def suggest_int(self, name: str, *args, **kwargs):
        return self._suggest("suggest_int", name, *args, **kwargs)

    def suggest_float(self, name: str, *args, **kwargs):
        return self._suggest("suggest_float", name, *args, **kwargs)

    def suggest_categorical(self, name: str, *args, **kwargs):
        return self._suggest("suggest_categorical", name, *args, **kwargs)


def _holding(stage: Stage, held: dict[str, object]) -> Stage:
    """``stage`` with the parameters in ``held`` fixed at the given values (not searched, not in
    its trials' parameters, and so not among the overrides its best trial gives)."""
    return dataclasses.replace(stage, suggest=lambda trial: stage.suggest(_HeldTrial(trial, held)))


def _overrides_of(stage: Stage, params: dict[str, object]) -> dict[str, object]:
    """The flat config overrides a finished trial's parameters stand for."""
    return stage.suggest(optuna.trial.FixedTrial(params))


def _param(value: object) -> object:
    return ",".join(value) if isinstance(value, tuple) else value


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _confidence_from_the_data(config: PipelineConfig, data: tune_validation.ValidationData) -> PipelineConfig:
    """``config`` with a fixed ``als_alpha`` restated as the ``als_user_confidence`` that gives the same
    alpha on the feature window (the ALS stage searches the latter, with alpha from the data), so
    the search's first trial is the starting settings."""
    if config.als_alpha <= 0:
        return config
    values, _ = als_input(data.user_items, config)
    confidence = config.als_alpha * mean_user_sum(values)
    log.info("tune: als_alpha %g is als_user_confidence %.4g on this data (alpha from the data from here on)",
             config.als_alpha, confidence)
    return dataclasses.replace(config, als_alpha=0.0, als_user_confidence=confidence)


def tune(dataset: Dataset, config: PipelineConfig, *, experiment: str, out: Path, stages: tuple[str, ...] = STAGE_NAMES,
         budget_minutes: float = 30.0, max_trials: int = 30, workdir: Path | None = None,
         progress: bool = True) -> TuneResult:
    """Search ``stages`` on validation data within ``budget_minutes``, write the best config to
    ``out`` (whole, atomically) and log the search as one MLflow run with nested trial runs."""
    unknown = sorted(set(stages) - set(STAGE_NAMES))
    if unknown:
        raise ConfigError(f"unknown tune stage(s) {unknown}; use some of {list(STAGE_NAMES)}")
    if budget_minutes <= 0 or max_trials < 1:
        raise ConfigError("--budget-minutes must be positive and --trials at least 1")
    started = time.perf_counter()
    cuts = check_trainable(dataset, config)  # the validation data reuses them: the data is cut once
    tracking.configure_tracking(Path(workdir or Path.cwd()))
    tracking.ensure_experiment(experiment)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The starting settings may lie outside a stage's search space; Optuna runs them as they are.
    warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
    chosen = [s for s in STAGES if s.name in stages]
    budget = budget_minutes * 60.0
    with quiet_progress(not progress), mlflow.start_run(run_name=f"tune-{config.split}-seed{config.seed}",
                                                        tags={**tracking.environment_tags(), "tune": "parent"}) as run:
        mlflow.log_params({"tune.stages": ",".join(s.name for s in chosen), "tune.budget_minutes": budget_minutes,
                           "tune.max_trials": max_trials, "split": config.split, "seed": config.seed,
                           "k": config.k, "data.source": dataset.source,
                           **{f"data.{key}": value for key, value in dataset.summary().items()}})
        tuner = _Tuner(dataset, config, progress, cuts)
        results = []
        skipped: list[str] = []
        for index, stage in enumerate(chosen):
            left = budget - (time.perf_counter() - started)
            if left <= 0:  # the budget is spent: the remaining stages keep their starting settings
                skipped = [s.name for s in chosen[index:]]
                log.warning("tune: the %.1f-minute budget is spent; stage(s) %s not run, their settings kept "
                            "as they were. Give more --budget-minutes to search them.", budget_minutes,
                            ",".join(skipped))
                mlflow.set_tag("tune.skipped_stages", ",".join(skipped))
                break
            share = stage.share / sum(s.share for s in chosen[index:])
            result = tuner.run_stage(stage, max_trials=max_trials, seconds=left * share,
                                     parent_id=run.info.run_id)
            results.append(result)
            log.info("tune %s: validation nDCG@%d %.4f -> %.4f in %d trials (%.0f s)", stage.name, config.k,
                     result.base_value, result.best_value, result.trials, result.seconds)
            mlflow.log_metrics({f"tune/{stage.name}/best_ndcg_at_{config.k}": result.best_value,
                                f"tune/{stage.name}/start_ndcg_at_{config.k}": _finite(result.base_value),
                                f"tune/{stage.name}/trials": result.trials,
                                f"tune/{stage.name}/pruned": result.pruned,
                                f"tune/{stage.name}/time_s": result.seconds})
            mlflow.log_params({f"best.{key}": _param(value) for key, value in result.best.items()})
            _log_plots(result)
        best = tuner.config
        seconds = time.perf_counter() - started
        mlflow.log_metric("time/total_s", seconds)
        with tempfile.TemporaryDirectory(prefix="recsys-tune-") as tmp:
            path = Path(tmp) / "best_config.json"
            best.save(path)
            mlflow.log_artifact(str(path))
        _write_atomically(out, best)
        mlflow.set_tag("mlflow.note.content", _note(results, config, out, skipped))
        return TuneResult(run_id=run.info.run_id, config=best, stages=results, seconds=seconds,
                          skipped=tuple(skipped))


def _write_atomically(out: Path, config: PipelineConfig) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    config.save(part)
    os.replace(part, out)


def _log_plots(result: StageResult) -> None:
    """The stage's optimisation history and (with two or more finished trials) parameter importances."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    completed = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    ax = optuna_plots.plot_optimization_history(result.study)
    ax.set_title(f"{result.name}: validation nDCG by trial")
    mlflow.log_figure(ax.figure, f"plots/{result.name}_history.png")
    if len(completed) >= 2 and len({t.value for t in completed}) > 1:
        try:
            ax = optuna_plots.plot_param_importances(result.study)
            ax.set_title(f"{result.name}: parameter importance")
            mlflow.log_figure(ax.figure, f"plots/{result.name}_importance.png")
        except (RuntimeError, ValueError) as err:  # too few distinct trials for fANOVA
            log.info("no importance plot for %s: %s", result.name, err)
    plt.close("all")


def _note(results: list[StageResult], config: PipelineConfig, out: Path, skipped: list[str]) -> str:
    rows = "\n".join([f"| {r.name} | {r.trials} | {r.pruned} | {r.base_value:.4f} | {r.best_value:.4f} | "
                      f"{r.seconds:.0f} s |" for r in results]
                     + [f"| {name} | not run: budget spent | | | | |" for name in skipped])
    return (f"Validation-only search (split {config.split}, seed {config.seed}, k {config.k}); the test split "
            f"is never read.\n\n| stage | trials | pruned | start nDCG@{config.k} | best nDCG@{config.k} | time |\n"
            f"|---|---|---|---|---|---|\n{rows}\n\nBest settings: `best_config.json` (also written to {out}); "
            f"train with `recsys train --config best_config.json`.")


def summary_json(result: TuneResult) -> dict:
    return {"run_id": result.run_id, "seconds": result.seconds, "skipped": list(result.skipped),
            "stages": [{"name": s.name, "trials": s.trials, "pruned": s.pruned, "start": s.base_value,
                        "best": s.best_value, "seconds": s.seconds, "best_settings": {k: _param(v) for k, v in
                                                                                      s.best.items()}}
                       for s in result.stages]}

