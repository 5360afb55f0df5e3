"""Offline evaluation: the ranker and its baselines on the same test users and items.

Top-K metrics rank every catalog item the user has not interacted with in the training
window (full ranking, no sampled negatives). The ranker orders its candidates; items outside
the candidate set rank below every candidate, so candidate recall is reported too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from features.array_pool import give, reusing_arrays, take
from features.bundle import RankingBundle, head_k
from features.candidates import seen_mask, source_counts_of, top_n
from features.item_item import COOCCURRENCE_NEIGHBOURS, fit_item_item
from features.rank_workers import map_parts
from features.ranking_frame import feature_arrays
from features.sasrec import SASRecSettings, fit_sasrec
from features.score_source import SourceWindow
from features.sequence_tower import SequenceUserVectors
from features.sources import REGISTERED, candidate_counts
from features.state import FeatureState, with_indices
from features.ties import tie_keys
from recsys import metrics, windows
from recsys.config import PipelineConfig
from recsys.progress import progress as progress_bar
from recsys.split import Split

EVAL_CHUNK_USERS = 8_192  # users per ranking-frame chunk in evaluation: ~2.2M candidate rows
MAX_KEPT_SCORES = 2_000_000  # labelled candidate scores kept for the score-distribution plot
IMPRESSION_CHUNK_ROWS = 1_000_000  # shown rows per ranking-frame chunk of the impression metrics (whole impressions)
ScoreFn = Callable[[np.ndarray], np.ndarray]  # user_idx (n,) -> scores (n, n_items) float32


# (fine-tuned text model, the same model with the pretrained encoder's vectors): each gets its
# paired nDCG lift over the second, with an interval (``lift_vs_pretrained_text/...``).
FINETUNED_VS_PRETRAINED = (("text", "text_pretrained"), ("ranker_finetuned_text", "ranker_pretrained_text"))


def test_relevance(state: FeatureState, test: pl.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """Users known to the state with at least one test item they did not see in training.

    Returns user_idx (n,) int32 sorted, and per user the int array of relevant item indices.
    """
    events = with_indices(test, state.users, state.items).filter(pl.col("user_idx") >= 0)
    seen = state.seen.tocoo()
    seen_pairs = pl.DataFrame({"user_idx": seen.row.astype(np.int32), "item_idx": seen.col.astype(np.int32)})
    fresh = events.select("user_idx", "item_idx").unique().join(seen_pairs, on=["user_idx", "item_idx"],
                                                                how="anti")
    grouped = fresh.group_by("user_idx").agg(pl.col("item_idx").sort()).sort("user_idx")
    return grouped["user_idx"].to_numpy(), [np.asarray(v) for v in grouped["item_idx"].to_list()]


def sample_users(user_idx: np.ndarray, relevant: list[np.ndarray], max_users: int,
                 seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A seeded uniform sample of ``max_users`` users (order kept) with their relevant items.

    ``max_users`` 0 or at least ``len(user_idx)`` returns the input unchanged. A uniform sample
    keeps every mean-over-users metric unbiased; its bootstrap interval widens as 1/sqrt(users).
    """
    keep = windows.sample_positions(len(user_idx), max_users, seed)
    if keep is None:
        return user_idx, relevant
    return user_idx[keep], [relevant[i] for i in keep]


def topk_dense(state: FeatureState, user_idx: np.ndarray, score_fn: ScoreFn, k: int, *, seed: int,
               chunk_size: int = 512, name: str = "") -> np.ndarray:
    """(n_users, k) full-catalog top-k of a dense scorer, the user's training items excluded;
    ties by the seeded tie rule, NaN scores never picked (-1 pads a short list). With a ``name``,
    a progress bar ("evaluate baseline NAME") counts the users."""
    out = []
    bar = progress_bar(total=len(user_idx), desc=f"evaluate baseline {name}", unit="user", enabled=bool(name))
    with reusing_arrays():  # each chunk's (users, items) arrays are the last chunk's, given back
        for start in range(0, len(user_idx), chunk_size):
            chunk = user_idx[start:start + chunk_size]
            scores = take((len(chunk), state.n_items), np.float32)
            np.copyto(scores, score_fn(chunk), casting="unsafe")  # a broadcast row or the scorer's own array
            seen = seen_mask(state, chunk)
            scores[seen] = -np.inf
            give(seen)
            out.append(top_n(scores, k, seed=seed, query=chunk))
            give(scores)
            bar.update(len(chunk))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


SASREC_FULL_SOFTMAX_MAX_ITEMS = 20_000  # about 1 GB of logits per batch of 256 x 50 positions at this size


def baseline_scorers(state: FeatureState, seed: int, window: pl.DataFrame | None = None, *,
                     sasrec_epochs: int = 0) -> dict[str, ScoreFn]:
    """Dense scorers of the single-signal baselines.

    ``ease`` is the state's item-to-item model; ``cooccurrence`` is plain item-to-item cosine
    over co-occurrence counts (the classic "people who watched this also watched"); ``newest``
    ranks items by when they were first seen in the window (clicks or impressions), newest first.
    Each registered score source (``features.sources``; ``transitions``: what other users took
    next after the user's most recent items) is a baseline under its name: the state's own when
    it has it, else (only with ``window``, the interactions the state was fitted on: user_id,
    item_id, timestamp, and within the source's ``max_items``) fitted on that window with its
    default settings. ``sasrec`` (with
    ``window`` and ``sasrec_epochs`` > 0) is an ID-only self-attention sequence model fitted on
    it (``features.sasrec``).
    """
    cooccurrence = state.cooccurrence  # fitted with the state's item-to-item model when that is the cosine
    if cooccurrence is None:
        cooccurrence = fit_item_item(state.seen, kind="cosine", neighbours=COOCCURRENCE_NEIGHBOURS)
    rng = np.random.default_rng(seed)
    pop = state.item_features["item_pop_all"].to_numpy().astype(np.float32)
    # Recent popularity: the 7-day count, ties broken by all-time count (a strong news baseline).
    pop_recent = state.item_features["item_pop_7d"].to_numpy().astype(np.float32) + pop / (pop.max() + 1.0)
    # Never-seen items (NaN age) are never picked by it.
    newest = -state.item_features["item_age_days"].to_numpy().astype(np.float32)
    unknown = ~state.item_has_history()
    events_cache: list[pl.DataFrame] = []

    def indexed() -> pl.DataFrame:
        """The window's events with indices, built once and only when a model is fitted on them here
        (at scale: tens of millions of id lookups)."""
        if not events_cache:
            events_cache.append(with_indices(window, state.users, state.items).filter(pl.col("user_idx") >= 0))
        return events_cache[0]

    def said(scores: np.ndarray, zero_is_unknown: bool = False, keep_unseen: bool = False) -> np.ndarray:
        """NaN (never picked) where a behaviour model says nothing: items without history in the
        window (unless ``keep_unseen``: a model that scores them from text) and, for item-to-item
        models, items no history item co-occurs with."""
        blind = np.zeros_like(unknown) if keep_unseen else unknown
        silent = blind | (scores == 0) if zero_is_unknown else np.broadcast_to(blind, scores.shape)
        return np.where(silent, np.float32(np.nan), scores)

    scorers = {
        "random": lambda u: rng.random((len(u), state.n_items), dtype=np.float32),
        "popularity": lambda u: np.broadcast_to(pop, (len(u), state.n_items)),
        "popularity_7d": lambda u: np.broadcast_to(pop_recent, (len(u), state.n_items)),
        "newest": lambda u: np.broadcast_to(newest, (len(u), state.n_items)),
        "als": lambda u: said(state.als.user_factors[u] @ state.als.item_factors.T),
        "bpr": lambda u: said(state.bpr.user_factors[u] @ state.bpr.item_factors.T),
        "ease": lambda u: said(state.item_item.user_scores(state.history()[u]), zero_is_unknown=True),
        "cooccurrence": lambda u: said(cooccurrence.user_scores(state.history()[u]), zero_is_unknown=True),
        "text": lambda u: state.user_text[u] @ state.item_vectors.T,
    }
    for cls in REGISTERED:
        source = state.sources.get(cls.name)  # the state's own (fitted on this window with the run's seed)
        if source is None and window is not None and cls.affordable(state.n_items):
            source = cls.fit(SourceWindow(events=indexed(), user_items=state.seen, n_users=state.n_users,
                                          n_items=state.n_items, seed=seed, item_vectors=state.item_vectors),
                             dict(cls.defaults))
        if source is not None:
            scorers[cls.name] = lambda u, source=source: said(source.baseline_scores(u), zero_is_unknown=True,
                                                              keep_unseen=source.scores_items_without_history)
    if window is not None and sasrec_epochs > 0:
        # The full softmax holds (positions x items) logits per batch: sampled above this size.
        negatives = 0 if state.n_items <= SASREC_FULL_SOFTMAX_MAX_ITEMS else 1024
        sasrec = fit_sasrec(indexed(), n_users=state.n_users, n_items=state.n_items, seed=seed,
                            settings=SASRecSettings(epochs=sasrec_epochs, negatives=negatives))
        scorers["sasrec"] = sasrec.user_scores
    return scorers


def candidate_recall_per_user(candidates: pl.DataFrame, user_idx: np.ndarray,
                              relevant: list[np.ndarray]) -> np.ndarray:
    """float64 (n_users,): each user's share of relevant items among their candidates (query i =
    ``user_idx[i]``)."""
    rel = pl.DataFrame({"query_idx": np.repeat(np.arange(len(user_idx)), [len(r) for r in relevant]),
                        "item_idx": np.concatenate(relevant) if relevant else np.zeros(0)}).cast(pl.Int32)
    found = rel.join(candidates.select("query_idx", "item_idx"), on=["query_idx", "item_idx"], how="semi")
    per_user = np.bincount(found["query_idx"].to_numpy(), minlength=len(user_idx))
    return per_user / np.array([len(r) for r in relevant])


def bootstrap_ci(values: np.ndarray, *, seed: int, n_boot: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users."""
    low, high = bootstrap_cis(np.asarray(values, dtype=np.float64)[:, None], seed=seed, n_boot=n_boot, level=level)
    return float(low[0]), float(high[0])


def bootstrap_cis(columns: np.ndarray, *, seed: int, n_boot: int = 1000,
                  level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals of the mean over users of each column of ``columns``
    (n_users, n_columns), every column resampled with the same seeded draws of users (one
    (n_boot, n_users) index matrix, as ``bootstrap_ci`` draws for one column).

    The resampled means are one matrix product: how often each user is drawn in each resample
    (n_boot, n_users) times the columns, so many models cost about as much as one.
    """
    columns = np.asarray(columns, dtype=np.float64)
    n = columns.shape[0]
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    draws += n * np.arange(n_boot)[:, None]  # in place: one flat index per (resample, draw)
    counts = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)
    del draws
    block = 100  # resamples per product: peak memory about two (n_boot, n) int64 arrays, as before
    means = np.concatenate([counts[i:i + block].astype(np.float64) @ columns for i in range(0, n_boot, block)]) / n
    q = ((1 - level) / 2, 1 - (1 - level) / 2)
    low, high = np.quantile(means, q, axis=0)
    return low, high


def coverage(ranked: np.ndarray, n_items: int) -> float:
    """Share of the catalog recommended to at least one user."""
    return float(np.unique(ranked[ranked >= 0]).size / n_items)


def topk_array(top: pl.DataFrame, n_queries: int, k: int) -> np.ndarray:
    out = np.full((n_queries, k), -1, dtype=np.int64)
    out[top["query_idx"].to_numpy(), top["rank"].to_numpy() - 1] = top["item_idx"].to_numpy()
    return out


@dataclass
class Evaluation:
    """Metrics per model plus what the plots and slices need.

    ranked: per model (n_users, k) item indices; user_idx/relevant: the evaluated test users (a
    seeded sample of ``n_users_total`` when there are more than ``eval_max_users``) and their
    relevant items; ranker_scores/ranker_labels: the ranker's candidate scores and 0/1 labels.
    """

    metrics: dict[str, dict[str, float]]
    ranked: dict[str, np.ndarray]
    user_idx: np.ndarray
    relevant: list[np.ndarray]
    ranker_scores: np.ndarray
    ranker_labels: np.ndarray
    best_baseline: str = ""
    n_users_total: int = 0  # test users before ``eval_max_users`` sampling


def per_user_ndcg(evaluation: Evaluation, name: str, k: int) -> np.ndarray:
    """float64 (n_users,) nDCG@k of model ``name`` for each evaluated user (``evaluation.user_idx`` order)."""
    return metrics.ndcg_per_user(evaluation.ranked[name], evaluation.relevant, k)


def paired_lift(per_user: np.ndarray, baseline_per_user: np.ndarray, *, seed: int,
                n_boot: int = 1000, level: float = 0.95) -> tuple[float, float, float]:
    """Mean per-user difference and its paired percentile bootstrap interval (same users resampled)."""
    diff = per_user - baseline_per_user
    low, high = bootstrap_ci(diff, seed=seed, n_boot=n_boot, level=level)
    return float(diff.mean()), low, high


def evaluate_all(bundles: dict[str, RankingBundle], split: Split, config: PipelineConfig, *,
                 pretrained_state: FeatureState | None = None, keep_scores: str = "ranker",
                 versus: str = "", baseline_state: FeatureState | None = None, shipped: str = "") -> Evaluation:
    """Metrics of every ranker bundle and every baseline on the test users of ``split``.

    The bundles' states are fitted on the same training window (they may differ in their text
    vectors); relevance and the baselines come from ``baseline_state`` (default: the first
    bundle's; pass the fine-tuned state so that ``text`` is the fine-tuned text model whichever
    variant leads). ``pretrained_state`` adds
    the ``text_pretrained`` baseline (text interest from the encoder before fine-tuning).
    Above ``config.eval_max_users`` test users, a seeded uniform sample of them is evaluated; the
    impression metrics likewise score a seeded sample of that many users with test impressions.
    Every model gets a bootstrap interval of nDCG@k (``ndcg@k_ci_low/high``); every ranker (a name
    starting with ``ranker``) also gets its paired lift over the best baseline with its interval:
    ``versus`` when given (chosen on validation data), else the best baseline of this table.
    ``keep_scores``: the bundle whose labelled candidate scores are kept for the
    score-distribution plot ("" = none).
    """
    state = baseline_state or next(iter(bundles.values())).state
    k = config.k
    user_idx, relevant = test_relevance(state, split.test)
    n_users_total = len(user_idx)
    user_idx, relevant = sample_users(user_idx, relevant, config.eval_max_users,
                                      config.seed + windows.EVAL_SAMPLE_SEED)
    results: dict[str, dict[str, float]] = {}
    ranked_by_model: dict[str, np.ndarray] = {}
    scores = labels = np.zeros(0)
    for group in bundles_by_state(bundles):
        outcome = rank_in_chunks(group, user_idx, relevant, k, keep_scores=keep_scores, seed=config.seed)
        for name, (ranked, recall, scores_labels) in outcome.items():
            ranked_by_model[name] = ranked
            results[name] = metrics.topk_metrics(ranked, relevant, k)
            results[name]["candidate_recall"] = recall
            results[name]["coverage"] = coverage(ranked, state.n_items)
            if scores_labels is not None:
                scores, labels = scores_labels
    scorers = baseline_scorers(state, config.seed, split.train, sasrec_epochs=config.baseline_sasrec_epochs)
    if pretrained_state is not None:
        scorers["text_pretrained"] = lambda u: pretrained_state.user_text[u] @ pretrained_state.item_vectors.T
    for name, score_fn in scorers.items():
        ranked = topk_dense(state, user_idx, score_fn, k, seed=config.seed, name=name)
        ranked_by_model[name] = ranked
        results[name] = metrics.topk_metrics(ranked, relevant, k)
        results[name]["coverage"] = coverage(ranked, state.n_items)
    best_baseline = ""
    if len(user_idx):
        best_baseline = versus or max(sorted(scorers), key=lambda name: results[name][f"ndcg@{k}"])
        _add_intervals(results, ranked_by_model, relevant, best_baseline, config, shipped=shipped)
    for values in results.values():
        values["n_users"] = float(len(user_idx))
    if split.impressions_test is not None and split.impressions_test.height:
        for name, values in impression_evaluation(bundles, split.impressions_test, config.seed, state,
                                                  max_users=config.eval_max_users,
                                                  sample_seed=config.seed + windows.EVAL_SAMPLE_SEED).items():
            results[name].update(values)
    return Evaluation(metrics=results, ranked=ranked_by_model, user_idx=user_idx, relevant=relevant,
                      ranker_scores=scores, ranker_labels=labels, best_baseline=best_baseline,
                      n_users_total=n_users_total)


def bundles_by_state(bundles: dict[str, RankingBundle]) -> list[dict[str, RankingBundle]]:
    """Bundles grouped by the state object they read and their candidate settings, in order:
    one candidate set per group."""
    groups: dict[tuple, dict[str, RankingBundle]] = {}
    for name, bundle in bundles.items():
        counts = source_counts_of(bundle.state, candidate_counts(bundle.config))
        key = (id(bundle.state), bundle.config.candidates, tuple(sorted(counts.items())))
        groups.setdefault(key, {})[name] = bundle
    return list(groups.values())


def rank_in_chunks(bundles: dict[str, RankingBundle], user_idx: np.ndarray, relevant: list[np.ndarray], k: int, *,
                    keep_scores: str, seed: int, chunk_size: int = EVAL_CHUNK_USERS,
                    max_scores: int = MAX_KEPT_SCORES):
    """Per bundle: its top-k (n_users, k), candidate recall, and (scores, 0/1 labels) of candidates.

    The bundles share one state, so each chunk's candidates and feature arrays are built once and
    scored by every booster. Users go through in chunks, so memory is bounded by one chunk's
    ranking frame; the labelled candidate scores (for the score-distribution plot) are kept, for
    the bundle named ``keep_scores`` only, for the first ``max_scores`` rows.
    """
    ranked = {name: np.full((len(user_idx), k), -1, dtype=np.int64) for name in bundles}
    recall = []
    kept_scores, kept_labels, n_kept = [], [], 0
    first_bundle = next(iter(bundles.values()))

    def rank_part(chunk: np.ndarray, chunk_relevant: list[np.ndarray], keep: bool, part: slice):
        """(candidate recall per user, per bundle its top-k and, for ``keep_scores`` when
        ``keep``, its labelled candidate scores) of the users ``chunk[part]``."""
        users, users_relevant = chunk[part], chunk_relevant[part]
        candidates, arrays = first_bundle.candidate_features(users)
        out = {}
        for name, bundle in bundles.items():
            scored = bundle.score_features(candidates, arrays)
            labelled = _labelled_scores(scored, users_relevant) if keep and name == keep_scores else None
            out[name] = (topk_array(head_k(scored, k, seed=seed), len(users), k), labelled)
        return candidate_recall_per_user(candidates, users, users_relevant), out

    for bundle in bundles.values():
        bundle.warm()  # lazy tables built once, before the parts' threads read them
    # The tower's user vectors computed when read agree across batches to rounding only: split a
    # chunk only when they were kept from one pass (``warm``, up to ``DENSE_MAX_BYTES``), so no
    # row depends on how many cores split the chunk.
    workers = None if all(_text_rows_kept(bundle.state) for bundle in bundles.values()) else 1
    bar = progress_bar(total=len(user_idx), desc="evaluate " + ", ".join(bundles), unit="user")
    for first in range(0, len(user_idx), chunk_size):
        chunk, chunk_relevant = user_idx[first:first + chunk_size], relevant[first:first + chunk_size]
        keep = n_kept < max_scores
        # A user's candidates, features and ties never depend on the other users of a batch, so
        # the chunk's parts are ranked on the usable cores (features.rank_workers) with the
        # result of one pass.
        parts = map_parts(functools.partial(rank_part, chunk, chunk_relevant, keep), len(chunk), workers=workers)
        row = first
        for part_recall, out in parts:
            recall.append(part_recall)
            for name, (top, labelled) in out.items():
                ranked[name][row:row + len(top)] = top
                if labelled is not None:
                    kept_scores.append(labelled[0])
                    kept_labels.append(labelled[1])
                    n_kept += len(labelled[0])
            row += len(part_recall)
        bar.update(len(chunk))
    bar.close()
    recall = float(np.mean(np.concatenate(recall))) if len(user_idx) else float("nan")
    scores = np.concatenate(kept_scores)[:max_scores] if kept_scores else np.zeros(0)
    labels = np.concatenate(kept_labels)[:max_scores] if kept_labels else np.zeros(0)
    return {name: (ranked[name], recall, (scores, labels) if name == keep_scores else None) for name in bundles}


def _text_rows_kept(state: FeatureState) -> bool:
    """False when the state's user text rows come from the ordered user tower at each read (over
    ``DENSE_MAX_BYTES``): those agree across batches to rounding only. Pooled rows
    (``UserVectors``) are exact per row, read in any batch."""
    text = state.user_text
    return text.materialize() if isinstance(text, SequenceUserVectors) else True


def _add_intervals(results: dict[str, dict[str, float]], ranked: dict[str, np.ndarray], relevant: list[np.ndarray],
                   best: str, config: PipelineConfig, shipped: str = "") -> None:
    """Bootstrap intervals of nDCG@k for every model of ``results`` with ranked lists in ``ranked``
    (rankers and baselines alike, so every bar of the comparison plot has its whiskers), and each
    ranker's paired nDCG lift over ``best`` (the baseline to beat) with its interval (same users
    resampled). ``shipped``: the variant listed as ``ranker`` (it keeps its place in the
    fine-tuned-vs-pretrained pairs under that name)."""
    k = config.k
    n_rel = np.array([len(r) for r in relevant])
    per_user = {name: metrics.ndcg_at_k(metrics.hits_matrix(ranked[name][:, :k], relevant), n_rel)
                for name in results if name in ranked}
    rankers = [name for name in per_user if name.startswith("ranker")]
    table_name = {shipped: "ranker"} if shipped else {}
    pairs = [(table_name.get(tuned, tuned), table_name.get(pretrained, pretrained))
             for tuned, pretrained in FINETUNED_VS_PRETRAINED]
    pairs = [(tuned, pretrained) for tuned, pretrained in pairs if tuned in per_user and pretrained in per_user]
    # One bootstrap for every column: each model's nDCG, each ranker's difference to ``best``
    # and each fine-tuned text model's difference to its pretrained-text counterpart.
    columns = ([per_user[name] for name in per_user] + [per_user[name] - per_user[best] for name in rankers]
               + [per_user[tuned] - per_user[pretrained] for tuned, pretrained in pairs])
    low, high = bootstrap_cis(np.column_stack(columns), seed=config.seed)
    for i, name in enumerate(per_user):
        results[name][f"ndcg@{k}_ci_low"], results[name][f"ndcg@{k}_ci_high"] = float(low[i]), float(high[i])
    for j, name in enumerate(rankers, start=len(per_user)):
        results[name].update({f"lift_vs_best_baseline/ndcg@{k}": float(columns[j].mean()),
                              f"lift_vs_best_baseline/ndcg@{k}_ci_low": float(low[j]),
                              f"lift_vs_best_baseline/ndcg@{k}_ci_high": float(high[j])})
    for j, (tuned, _) in enumerate(pairs, start=len(per_user) + len(rankers)):
        results[tuned].update({f"lift_vs_pretrained_text/ndcg@{k}": float(columns[j].mean()),
                               f"lift_vs_pretrained_text/ndcg@{k}_ci_low": float(low[j]),
                               f"lift_vs_pretrained_text/ndcg@{k}_ci_high": float(high[j])})


def _labelled_scores(scored: pl.DataFrame, relevant: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    positives = pl.DataFrame({
        "query_idx": np.repeat(np.arange(len(relevant)), [len(r) for r in relevant]).astype(np.int32),
        "item_idx": np.concatenate(relevant).astype(np.int32) if relevant else np.zeros(0, dtype=np.int32),
        "label": 1,
    })
    joined = scored.join(positives, on=["query_idx", "item_idx"], how="left").with_columns(pl.col("label").fill_null(0))
    return joined["score"].to_numpy(), joined["label"].to_numpy()


def impression_evaluation(bundles: dict[str, RankingBundle], impressions: pl.DataFrame, seed: int,
                          state: FeatureState | None = None, *, max_users: int = 0,
                          sample_seed: int = 0) -> dict[str, dict[str, float]]:
    """MIND-style metrics over test impressions of known users: rank what was actually shown.

    state: the one the baselines read (default: the first bundle's). Ties within an impression
    follow the seeded tie rule; scores a model does not have (NaN) rank last. Above ``max_users``
    known users with test impressions (0 = no limit), every impression of a seeded uniform sample
    of ``max_users`` of them (``sample_seed``) is scored: a run's cost then stays that of the sampled
    users, as the top-k metrics' does. ``imp_users`` and ``imp_count`` say how many were scored.
    """
    state = state or next(iter(bundles.values())).state
    shown = with_indices(impressions, state.users, state.items).filter(pl.col("user_idx") >= 0)
    users = shown["user_idx"].unique().sort()
    keep = windows.sample_positions(len(users), max_users, sample_seed)
    if keep is not None:
        users = users.gather(keep)
        shown = shown.filter(pl.col("user_idx").is_in(users.implode()))
    if shown.height == 0:
        return {}
    # A query is one user's rows of one impression (an id shared by several users is one query
    # each), so a user sample never cuts a query in half.
    shown = shown.sort("impression_id", "user_idx", maintain_order=True)
    new_query = (pl.col("impression_id") != pl.col("impression_id").shift(1)) | \
                (pl.col("user_idx") != pl.col("user_idx").shift(1))
    shown = shown.with_columns((new_query.fill_null(True).cum_sum() - 1).cast(pl.Int32).alias("query_idx"))
    labels = shown["clicked"].to_numpy()
    groups = shown["query_idx"].to_numpy()
    u, i = shown["user_idx"].to_numpy(), shown["item_idx"].to_numpy()
    del shown
    # Feature arrays in chunks of whole impressions (tens of millions of rows x every feature at
    # scale): each state's bundles score a chunk, then it goes. The baselines' state's arrays also
    # give the single-signal scores: its ALS, BPR and item-to-item columns are the baselines'
    # (NaN where the pair has no history; item-to-item also where it is 0), the same float32 values.
    states, readers = {id(state): state}, {id(state): []}
    for name, bundle in bundles.items():
        states[id(bundle.state)] = bundle.state
        readers.setdefault(id(bundle.state), []).append(name)
    single_columns = {"als": "als_score", "bpr": "bpr_score", "ease": "item_item_score", "text": "text_score"}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in [*bundles, *single_columns]}
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])  # first row of each impression
    cut = np.searchsorted(starts, np.arange(0, len(groups), IMPRESSION_CHUNK_ROWS))
    bounds = np.unique(np.r_[starts[cut[cut < len(starts)]], len(groups)])
    with progress_bar(total=len(groups), desc="evaluate impressions", unit="row") as bar:
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            for key, names in readers.items():
                arrays = feature_arrays(states[key], u[lo:hi], i[lo:hi], query_idx=groups[lo:hi])
                for name in names:
                    parts[name].append(bundles[name].score(arrays))
                if key == id(state):
                    for name, column in single_columns.items():
                        parts[name].append(arrays[column])
            bar.update(int(hi - lo))
    scores = {name: np.concatenate(parts[name]) for name in bundles}
    scores.update({name: np.concatenate(parts[name]) for name in single_columns})
    scores["random"] = np.random.default_rng(seed).random(len(labels))
    scores["popularity"] = state.item_features["item_pop_all"].to_numpy()[i]
    scores["popularity_7d"] = state.item_features["item_pop_7d"].to_numpy()[i] + scores["popularity"] * 1e-6
    keys = tie_keys(seed, u, i)
    out = {}
    for name, s in scores.items():
        out[name] = metrics.impression_metrics(np.nan_to_num(np.asarray(s, dtype=np.float64), nan=-1e9),
                                               labels, groups, tiebreak=keys)
        out[name]["imp_count"] = float(len(starts))
        out[name]["imp_users"] = float(len(users))
    return out
