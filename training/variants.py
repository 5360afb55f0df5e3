"""The ranker variants a run fits, their validation users, and the choice of the one it ships.

Three variants learn from the same label window (windows, with ``label_cuts`` > 1: their frames
are stacked by ``stacked_frames``): text features from the fine-tuned encoder, from the
pretrained encoder, and no text at all (no text features and no text candidates).
A seeded 15% of the first cut's label USERS (all of a user's queries, of every cut, on one side)
validates them: early stopping (with ``early_stopping_min_delta``, the least gain a tree must
bring) watches those users' queries (with ``ranker.folds`` > 1 it watches folds of the other
users instead: ``training.ranker_folds``), and a full-ranking evaluation of the first cut's
feature-window models on those users' label-window items decides which variant ships (a text
variant only when its paired lift over no text excludes zero: ``choose_variant``). The test
split takes no part in any of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import polars as pl

from features.candidates import generate_candidates
from features.rank_workers import usable_cores
from features.ranking_frame import (
    TEXT_FEATURES,
    build_ranking_frame,
    feature_matrix,
    frame_feature_columns,
    group_sizes,
)
from features.sources import candidate_counts, text_reading_names
from features.sources import feature_columns as source_feature_columns
from features.state import FeatureState, with_indices
from features.ties import tie_keys
from recsys import windows
from recsys.config import PipelineConfig
from recsys.errors import FitStopped
from recsys.progress import progress as progress_bar
from recsys.stage_timer import worker_context
from training.evaluate import paired_lift, sample_users, test_relevance
from training.ranker import LambdaRanker
from training.ranker_folds import fit_fold_ensemble, fit_seed_ensemble, folds_from_data

log = logging.getLogger(__name__)

FINETUNED, PRETRAINED, NO_TEXT = "ranker_finetuned_text", "ranker_pretrained_text", "ranker_no_text"
# Preference order among variants tied on validation: the simpler model wins a tie.
VARIANTS = (NO_TEXT, PRETRAINED, FINETUNED)
VALIDATION_USER_SHARE = windows.VALIDATION_USER_SHARE
T = TypeVar("T")
SHIPPED = "ranker"  # the name the shipped variant takes in every table, plot and registry tag


def variant_config(name: str, config: PipelineConfig) -> PipelineConfig:
    """The config a variant's bundle carries: ``ranker_no_text`` proposes no text candidates (of
    the text interest score or of a registered source that reads text)."""
    if name == NO_TEXT:
        text_sources = {name: {**config.sources[name], "candidates": 0} for name in text_reading_names()}
        return replace(config, candidates=replace(config.candidates, n_text=0),
                       sources={**config.sources, **text_sources})
    return config


def no_text_columns() -> tuple[str, ...]:
    """The columns the no-text variant never splits on: the text features and the columns of
    every registered source that reads text."""
    return TEXT_FEATURES + source_feature_columns(text_reading_names())


def states_by_variant(state: FeatureState, pretrained_state: FeatureState) -> dict[str, FeatureState]:
    """The state each variant reads: the pretrained-text variant its own (pretrained item and user
    vectors), the others the fine-tuned one."""
    return {FINETUNED: state, PRETRAINED: pretrained_state, NO_TEXT: state}


def label_users(state: FeatureState, label_events: pl.DataFrame, config: PipelineConfig,
                counts: dict[str, int] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The users the ranker learns from: label-window positives and a profile in the state.

    Users with no history in the feature window are served by the fallback path (as unknown
    users are), so they are not label users either. Above ``config.ranker_max_users`` a seeded
    sample. Returns user_idx int (n,) sorted and per user the relevant item indices; ``counts``,
    when given, receives ``label_users`` (with a profile, before sampling), ``label_users_used``
    and ``label_users_without_history``.
    """
    user_idx, relevant = test_relevance(state, label_events)
    profiled = state.has_profile(user_idx)
    if not profiled.all():
        log.info("%d label user(s) have no feature-window history: the fallback path serves them, "
                 "so the ranker does not learn on them", int((~profiled).sum()))
    user_idx, relevant = user_idx[profiled], [r for r, keep in zip(relevant, profiled, strict=True) if keep]
    n_all = len(user_idx)
    user_idx, relevant = sample_users(user_idx, relevant, config.ranker_max_users,
                                      config.seed + windows.RANKER_SAMPLE_SEED)
    if len(user_idx) < n_all:
        log.info("the ranker learns from %d of %d label users (ranker_max_users)", len(user_idx), n_all)
    if counts is not None:
        counts.update(label_users=n_all, label_users_used=len(user_idx),
                      label_users_without_history=int((~profiled).sum()))
    return user_idx, relevant


def validation_users(user_idx: np.ndarray, seed: int) -> np.ndarray:
    """A seeded ``VALIDATION_USER_SHARE`` of the label users (sorted int array), at least one."""
    return np.sort(user_idx[windows.held_out_positions(len(user_idx), seed)])


def labelled_frame(state: FeatureState, users: tuple[np.ndarray, list[np.ndarray]],
                   label_impressions: pl.DataFrame | None, config: PipelineConfig,
                   cold_items: pl.Series | None = None) -> pl.DataFrame:
    """Ranking frame with ``label`` (0/1) built on the label window.

    users: ``label_users``' output. Kinds of query: one per label user over the candidates the
    state generates (the serving distribution; label 1 = interacted in the label window);
    where impressions exist, one per label-window impression of a label user over the items
    actually shown (label = clicked); and, with ``cold_items`` (ids without behaviour in the
    state's window), one per label user over those items only, so the ranker learns to order
    items that have nothing but text. Queries without both a positive and a negative are
    dropped: LambdaRank learns nothing from them.
    """
    user_idx, relevant = users
    with progress_bar(total=len(user_idx), desc="candidates", unit="user") as bar:
        candidates = generate_candidates(state, user_idx, config.candidates, seed=config.seed,
                                         source_counts=candidate_counts(config))
        bar.update(len(user_idx))
    positives = pl.DataFrame({
        "query_idx": np.repeat(np.arange(len(user_idx)), [len(r) for r in relevant]).astype(np.int32),
        "item_idx": (np.concatenate(relevant) if relevant else np.zeros(0)).astype(np.int32),
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
        shown = (with_indices(label_impressions, state.users, state.items)
                 .filter(pl.col("user_idx").is_in(pl.Series(user_idx, dtype=pl.Int32).implode()))
                 .group_by("impression_id", "user_idx", "item_idx", maintain_order=True)
                 .agg(pl.col("clicked").max().alias("label"))
                 .with_columns((pl.col("impression_id").rank("dense") - 1 + next_query).cast(pl.Int32)
                               .alias("query_idx"))
                 .select("query_idx", "user_idx", "item_idx", pl.col("label").cast(pl.Int8)))
        parts.append(shown)
    frame = pl.concat(parts)
    # Within a query, rows in tie-rule order, never item order: LambdaRank's first gradients and
    # LightGBM's validation nDCG order tied scores by row position.
    keys = tie_keys(config.seed, frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy())
    frame = frame.with_columns(pl.Series("_tie", keys)).sort("query_idx", "_tie").drop("_tie")
    has_both = (pl.col("label").max().over("query_idx") == 1) & (pl.col("label").min().over("query_idx") == 0)
    return build_ranking_frame(state, frame.filter(has_both))


def fit_plan(n_fits: int, cores: int) -> tuple[int, int]:
    """(fits at a time, LightGBM threads per fit) for ``n_fits`` independent fits on ``cores``.

    One fit on two threads keeps about 1.5 cores busy (the boosting loop's per-round work between
    the parallel histogram passes runs on one), so with several fits and few cores every fit runs
    at once on ``cores // n_fits`` threads (at least one): three fits on two cores run as three
    single-threaded fits the system shares out. The trees do not depend on the plan. LightGBM's
    thread count is one setting for the whole process, so fits that run at once share one count,
    and no other LightGBM call may run beside them."""
    if n_fits <= 1 or cores <= 1:
        return 1, max(1, cores)
    return n_fits, max(1, cores // n_fits)


def fit_rankers(frames: dict[str, pl.DataFrame], held_out_users: np.ndarray, config: PipelineConfig,
                log_metric=None, *, label_users: np.ndarray, concurrent: bool = True) -> dict[str, LambdaRanker]:
    """One LambdaRanker per variant frame, early-stopped on the queries of ``held_out_users``
    (with ``ranker.folds`` > 1: a fold ensemble of the other users, ``training.ranker_folds``,
    which the held-out users take no part in).

    frames: variant name (``VARIANTS``) -> labelled frame; every query of a held-out user (its
    candidate, cold-item and impression queries alike) is validation, the rest training.
    ``ranker_no_text`` never splits on the text features. Logs under ``ranker/<variant>/`` each
    variant's learning curves, training and validation rows, fit seconds and row-iterations per
    second; with folds, each member's kept trees and early-stopping nDCG (``fold<k>_*``), the
    merged model's trees and the members' total fit seconds. ``ranker.folds`` 0 takes the number
    of folds from the data (``ranker_folds.folds_from_data``) and logs it as ``ranker/folds``; each
    ranker's ``members`` says what it got. label_users: int (n,) the first label cut's users
    (``label_users``), held-out ones included; the count goes by those outside ``held_out_users``,
    not by the frames, so every variant, every tune trial (whatever its candidates) and the
    pipeline get the same number of folds on the same data.

    concurrent: the variants are fitted at the same time on threads (``fit_plan`` over the usable
    cores, logged as ``ranker/fits_at_once`` and ``ranker/threads_per_fit``), else one after
    another on every core; the rankers are the same either way. Fitted at once, each variant's
    ``fit_seconds`` (and ``rows_per_s``) is its own wall time while the others run beside it. One
    variant's error (or Ctrl-C) ends the other fits at their next boosting round.
    """
    n_training_users = int(np.setdiff1d(label_users, held_out_users).size)
    n_folds = folds_from_data(config.ranker.folds, n_training_users)
    if config.ranker.folds == 0:
        log.info("ranker: %d fold(s) from the data (%d training label users; ranker.folds 0)", n_folds,
                 n_training_users)
    config = replace(config, ranker=replace(config.ranker, folds=n_folds))
    if log_metric:
        log_metric("ranker/folds", float(n_folds), 0)
    workers, threads = fit_plan(len(frames) if concurrent else 1, usable_cores())
    if log_metric:
        log_metric("ranker/fits_at_once", float(workers), 0)
        log_metric("ranker/threads_per_fit", float(threads), 0)
    stop = threading.Event()  # set when one fit fails (or Ctrl-C): the others end at their next round

    def fit(name: str, frame: pl.DataFrame):
        train, val = split_by_users(frame, held_out_users)
        short = name.removeprefix("ranker_")
        unused = tuple(c for c in no_text_columns() if c in frame.columns) if name == NO_TEXT else ()
        if n_folds > 1:
            return fit_fold_ensemble(train, config, seed=config.seed + windows.RANKER_FOLD_SEED,
                                     unused_features=unused, eval_at=(config.k,), progress_name=short,
                                     threads=threads, should_stop=stop.is_set)
        columns = frame_feature_columns(train)
        ranker = LambdaRanker(feature_names=columns, config=config.ranker, seed=config.seed, threads=threads)
        sets = ranker.dataset(feature_matrix(train, columns), train["label"].to_numpy(), group_sizes(train),
                              X_val=feature_matrix(val, columns), y_val=val["label"].to_numpy(),
                              groups_val=group_sizes(val))
        rows = {"train_rows": float(sets.n_rows), "train_curve_queries": float(sets.curve_queries),
                "validation_rows": float(val.height)}
        if config.ranker.seeds > 1:
            ranker, members = fit_seed_ensemble(sets, config, unused_features=unused, eval_at=(config.k,),
                                                progress_name=short, threads=threads, should_stop=stop.is_set)
            return ranker, {**rows, "members": members}
        ranker.fit_dataset(sets, unused_features=unused, eval_at=(config.k,), progress_name=short,
                           should_stop=stop.is_set)
        return ranker, rows

    jobs = [functools.partial(fit, name, frame) for name, frame in frames.items()]
    results = dict(zip(frames, in_threads(jobs, workers, stop), strict=True))
    rankers = {}
    for name, (ranker, extra) in results.items():
        rankers[name] = ranker
        if not log_metric:
            continue
        short = name.removeprefix("ranker_")
        if n_folds > 1:
            _log_members(log_metric, f"ranker/{short}/fold", ranker, extra, config.k)
            log_metric(f"ranker/{short}/fit_seconds", ranker.fit_seconds, 0)
            continue
        seed_members = extra.pop("members", [])
        if seed_members:
            _log_members(log_metric, f"ranker/{short}/seed", ranker, seed_members, config.k)
        # A seed ensemble's curves are its first member's (the merged model has no rounds of its own).
        (seed_members[0] if seed_members else ranker).log_curves(
            lambda key, value, step, short=short:
            log_metric(key.replace("ranker/", f"ranker/{short}/", 1), value, step))
        for key, value in extra.items():
            log_metric(f"ranker/{short}/{key}", value, 0)
        log_metric(f"ranker/{short}/fit_seconds", ranker.fit_seconds, 0)
        log_metric(f"ranker/{short}/rows_per_s",
                   extra["train_rows"] * ranker.best_iteration / max(ranker.fit_seconds, 1e-9), 0)
    return rankers


def _log_members(log_metric, prefix: str, ranker: LambdaRanker, members: list[LambdaRanker], k: int) -> None:
    """An ensemble's kept trees and early-stopping nDCG@k per member (``<prefix><i>_trees``,
    ``<prefix><i>_valid_ndcg_at_<k>``, i from 1) and the merged model's trees (``trees``, beside the prefix)."""
    for i, member in enumerate(members, start=1):
        log_metric(f"{prefix}{i}_trees", float(member.best_iteration), 0)
        log_metric(f"{prefix}{i}_valid_ndcg_at_{k}", member.evals["valid"][f"ndcg@{k}"][member.best_iteration - 1], 0)
    log_metric(f"{prefix.rsplit('/', 1)[0]}/trees", float(ranker.best_iteration), 0)


def in_threads(jobs: list[Callable[[], T]], workers: int, stop: threading.Event | None = None) -> list[T]:
    """Each job's result, in job order: run in this thread when ``workers`` is 1, else on up to
    ``workers`` threads, each in a copy of the caller's context (``stage_timer.worker_context``:
    ``quiet_progress`` holds there, stages record nothing). On the first job's error, or an error
    (Ctrl-C) in this thread while it waits, ``stop`` is set (jobs that read it end early) and,
    once every job has ended, the first job's error in job order (or this thread's) is raised."""
    if workers <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="ranker-fit") as pool:
        futures = [pool.submit(worker_context().run, job) for job in jobs]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            if stop is not None and not all(f.done() and f.exception() is None for f in futures):
                stop.set()  # a job failed, or this thread is leaving: the others need not finish
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, FitStopped)]
    if errors:
        raise (real or errors)[0]
    return [future.result() for future in futures]


def stacked_frames(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Labelled frames of several label cuts as one: each frame's ``query_idx`` shifted past the
    previous frames', so queries stay distinct; rows and their order kept."""
    out, offset = [], 0
    for frame in frames:
        out.append(frame.with_columns(pl.col("query_idx") + offset))
        if frame.height:
            offset += int(frame["query_idx"].max()) + 1
    return pl.concat(out)


def split_by_users(frame: pl.DataFrame, held_out_users: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training rows, validation rows) of a labelled frame: every row of a held-out user (all of
    that user's queries) on the validation side, row order kept."""
    is_val = frame["user_idx"].is_in(pl.Series(held_out_users, dtype=pl.Int32).implode())
    return frame.filter(~is_val), frame.filter(is_val)


@dataclass(frozen=True)
class Choice:
    """The shipped variant and why: its validation metric against the others'. ``best``: the
    variant with the highest mean; ``lift``: its paired lift over ``ranker_no_text`` (mean, 95%
    interval low, high) when the choice tested it."""

    shipped: str
    metric: str
    values: dict[str, float]
    best: str = ""
    lift: tuple[float, float, float] | None = None
    pinned: bool = False  # shipped because the config's ranker.ship names it
    text_only: str = ""  # chosen among the text variants only: why ("ranker.ship", or "new items")
    scored_on: str = "held-out label users, feature-window models"  # whose validation values these are

    @property
    def shipped_by(self) -> str:
        """How the shipped variant was picked, in a few words (the ``shipped_variant_by`` tag)."""
        if self.pinned:
            return "ranker.ship (pinned)"
        return "validation, text variants only" if self.text_only else "validation"

    def reason(self) -> str:
        ranked = ", ".join(f"{name} {value:.4f}" for name, value in
                           sorted(self.values.items(), key=lambda kv: (-kv[1], VARIANTS.index(kv[0]))))
        where = self.scored_on
        if self.pinned:
            return (f"{self.shipped} is shipped: pinned by ranker.ship, not chosen on validation "
                    f"(validation {self.metric}: {ranked}; {where})")
        if self.text_only:
            why = ("ranker.ship is \"text\"" if self.text_only == "ranker.ship"
                   else "the run takes items without behaviour (cold_item_fraction above 0)")
            return (f"{self.shipped} is shipped: the best validation {self.metric} of the text variants ({ranked}; "
                    f"{where}); {NO_TEXT} was not a candidate, as it cannot rank items without behaviour "
                    f"from their text and {why}")
        if self.lift is None:
            return f"{self.shipped} is shipped: the best validation {self.metric} of the variants ({ranked}; {where})"
        mean, low, high = self.lift
        if self.shipped != NO_TEXT:
            interval = f"paired lift over {NO_TEXT} {mean:+.4f}, 95% CI {low:+.4f} to {high:+.4f}"
            lead = "the best" if self.shipped == self.best else f"after {self.best}, whose text did not earn its place,"
            return (f"{self.shipped} is shipped: {lead} validation {self.metric} of the variants ({ranked}; "
                    f"{where}), and its text earns its place ({interval})")
        interval = f"{self.best}'s paired lift over {NO_TEXT} {mean:+.4f}, 95% CI {low:+.4f} to {high:+.4f}"
        return (f"{self.shipped} is shipped: {self.best} has the best validation {self.metric} ({ranked}; {where}) "
                f"but no text variant earns its place ({interval}, an interval that does not exclude 0)")


def choose_variant(validation: dict[str, dict[str, float]], k: int,
                   per_user: dict[str, np.ndarray] | None = None, seed: int = 0, ship: str = "auto",
                   new_items: bool = False) -> Choice:
    """The variant with the highest validation nDCG@k (ties go to the simpler, ``VARIANTS``
    order), provided its text earns its place. With ``per_user`` (variant -> float (n_users,)
    validation nDCG@k per user, same users and order for every variant), the text variants are
    tried best mean first and the first whose paired lift over ``ranker_no_text`` has a 95%
    bootstrap interval above zero ships; when none has, ``ranker_no_text`` ships. A text variant
    adds an encoder and features to serve, and a validation margin smaller than its noise would
    choose between them by luck. ``ship`` (``ranker.ship``) other than "auto" pins the variant
    ``ranker_<ship>`` instead, except "text": the text variant with the higher validation mean
    ships, with no test against ``ranker_no_text``, which then is no candidate. ``new_items``
    (the run's protocol takes items without behaviour: ``cold_item_fraction`` > 0) makes "auto"
    act as "text": the no-text variant ranks such items by their categories at best, and by
    chance on a catalog of titles."""
    metric = f"ndcg@{k}"
    values = {name: validation[name][metric] for name in VARIANTS if name in validation}
    order = sorted(values, key=lambda name: (-values[name], VARIANTS.index(name)))
    best = order[0]
    text_variants = [name for name in order if name != NO_TEXT]
    if (ship == "text" or (ship == "auto" and new_items)) and text_variants:
        return Choice(shipped=text_variants[0], metric=metric, values=values, best=best,
                      text_only="ranker.ship" if ship == "text" else "new items")
    if ship == "auto" and new_items:
        log.warning("the run takes items without behaviour but fitted no text variant: the choice is among %s",
                    sorted(values))
    if ship == "text":
        raise ValueError(f"ranker.ship='text' but this run fitted no text variant (it fitted {sorted(values)}); "
                         "set ranker.ship to \"auto\", or give the items text")
    if ship != "auto":
        pinned = f"ranker_{ship}"
        if pinned not in values:
            raise ValueError(f"ranker.ship={ship!r} but this run fitted no {pinned} (it fitted {sorted(values)}); "
                             f"set ranker.ship to \"auto\" or to one of those")
        return Choice(shipped=pinned, metric=metric, values=values, best=best, pinned=True)
    if (per_user is None or best == NO_TEXT or NO_TEXT not in per_user
            or not len(per_user[NO_TEXT]) or any(name not in per_user for name in order)):
        return Choice(shipped=best, metric=metric, values=values, best=best)
    first_lift = None
    for name in order:
        if name == NO_TEXT:
            continue
        lift = paired_lift(per_user[name], per_user[NO_TEXT], seed=seed)
        first_lift = first_lift or lift
        if lift[1] > 0:
            return Choice(shipped=name, metric=metric, values=values, best=best, lift=lift)
    return Choice(shipped=NO_TEXT, metric=metric, values=values, best=best, lift=first_lift)


def shipped_names(names, shipped: str) -> dict[str, str]:
    """Old name -> table name: the shipped variant becomes ``ranker``, the others keep theirs."""
    return {name: SHIPPED if name == shipped else name for name in names}


# The settings that decide which users and items validate, and what the models saw before them.
DIGEST_SETTINGS = ("split", "test_fraction", "label_fraction", "seed", "cold_item_fraction", "ranker_max_users",
                   "eval_max_users", "k")


def validation_digest(label_events: pl.DataFrame, held_out_ids: pl.Series, feature_window: pl.DataFrame,
                      config: PipelineConfig) -> str:
    """sha256 of the validation users' label-window events (user, item, time; sorted), the size
    of the feature window and the settings that define both (``DIGEST_SETTINGS``): two runs
    whose validation metrics may be compared have the same digest."""
    table = (label_events.filter(pl.col("user_id").is_in(held_out_ids.implode()))
             .select("user_id", "item_id", pl.col("timestamp").cast(pl.Int64))
             .sort("user_id", "item_id", "timestamp"))
    settings = {name: getattr(config, name) for name in DIGEST_SETTINGS}
    header = json.dumps({"feature_window_rows": feature_window.height, **settings}, sort_keys=True)
    return hashlib.sha256((header + "\n" + table.write_csv()).encode()).hexdigest()
