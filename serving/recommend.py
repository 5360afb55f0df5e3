"""Top-K recommendations from a loaded bundle: the code behind the endpoint and the batch job.

Both go through ``RankingBundle.score_candidates`` (candidates -> ranking frame -> LightGBM),
the same function the offline evaluation uses. Paths:
- ``personalized``: the user is in the model (their interest vector may be refreshed by the
  request's history);
- ``history-only``: an unknown user whose request brings a history of known items (text
  interest from those items, plus popularity and trends);
- ``cold-start``: an unknown user with nothing else (popularity and trends).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features import rank_workers
from features.bundle import RankingBundle, head_k
from features.candidates import source_counts_of
from features.sequence_tower import SequenceUserVectors, appended
from features.sources import candidate_counts, request_rows
from features.text_interest import vector_from_history
from recsys import schemas
from serving.requests import RecommendRequest

PERSONALIZED = "personalized"
HISTORY_ONLY = "history-only"
COLD_START = "cold-start"


def candidate_budget(bundle: RankingBundle) -> int:
    """Upper bound of the candidates the model generates for one user (the sources' sum)."""
    c = bundle.config.candidates
    added = source_counts_of(bundle.state, candidate_counts(bundle.config))
    return c.n_cf + c.n_item_item + c.n_text + c.n_popular + c.n_recent + sum(added.values())


def recommend_users(bundle: RankingBundle, user_ids: list[str], k: int, *, workers: int | None = None) -> pl.DataFrame:
    """Long table (user_id, rank, item_id, score, path): up to k rows per user, users in input order.

    The batch path: no per-request lists. Unknown users get the cold-start ranking (``path``
    "cold-start"; known users "personalized", as in the endpoint's answer). A batch of at least
    twice ``features.rank_workers.MIN_PART_USERS`` users is split across ``workers`` threads
    (default ``RECSYS_RANK_WORKERS``, else every core); the table is the same for any split.
    """
    if not user_ids:
        return pl.DataFrame(schema=schemas.RANKING_OUTPUT)
    if len(user_ids) >= 2 * rank_workers.MIN_PART_USERS:
        bundle.warm()  # lazy tables built once, before the workers read them
    parts = rank_workers.map_parts(lambda part: _recommend_part(bundle, user_ids[part], k), len(user_ids),
                                   workers=workers)
    return parts[0] if len(parts) == 1 else pl.concat(parts)


def _recommend_part(bundle: RankingBundle, user_ids: list[str], k: int) -> pl.DataFrame:
    user_idx = bundle.state.users.to_index(user_ids, unknown="null")
    top = head_k(bundle.score_candidates(user_idx), k, seed=bundle.config.seed)
    ids = pl.Series("user_id", user_ids, dtype=pl.String)
    return top.select(
        ids.gather(top["query_idx"].to_numpy()).alias("user_id"),
        pl.col("rank"),
        bundle.state.items.to_ids(top["item_idx"].to_numpy()).alias("item_id"),
        pl.col("score").cast(pl.Float32),
        pl.when(pl.col("user_idx") >= 0).then(pl.lit(PERSONALIZED)).otherwise(pl.lit(COLD_START)).alias("path"),
    )


def _pairs(rows: list[tuple[int, tuple[str, ...]]], bundle: RankingBundle) -> tuple[pl.DataFrame, list[list[str]]]:
    """(query_idx, item_idx) for known ids; per query the ids the catalog does not know."""
    flat_q = [q for q, ids in rows for _ in ids]
    flat_ids = [i for _, ids in rows for i in ids]
    if not flat_ids:
        return pl.DataFrame(schema={"query_idx": pl.Int32, "item_idx": pl.Int32}), []
    idx = bundle.state.items.to_index(flat_ids, unknown="null") if flat_ids else np.zeros(0, dtype=np.int32)
    unknown: dict[int, list[str]] = {}
    for q, item, i in zip(flat_q, flat_ids, idx, strict=True):
        if i < 0:
            unknown.setdefault(q, []).append(item)
    known = idx >= 0
    frame = pl.DataFrame({"query_idx": np.asarray(flat_q, dtype=np.int32)[known], "item_idx": idx[known]},
                         schema={"query_idx": pl.Int32, "item_idx": pl.Int32})
    return frame, [unknown.get(q, []) for q in range(max([q for q, _ in rows], default=-1) + 1)]


def recommend_requests(bundle: RankingBundle, requests: list[RecommendRequest]) -> list[dict]:
    """One dict per request: user_id, item_ids (list), scores (list), path, unknown_ids (list).

    ``unknown_ids`` lists the request's candidate/history/exclude ids the catalog does not
    know; they are left out and the rest is still ranked.
    """
    state = bundle.state
    n = len(requests)
    user_idx = state.users.to_index([r.user_id for r in requests], unknown="null")
    # A request's candidate list is explicit even when it is empty or none of it is known: that
    # user gets an empty list, never the model's own picks.
    explicit_queries = np.asarray([q for q, r in enumerate(requests) if r.candidates is not None], dtype=np.int32)
    explicit, unknown_c = _pairs([(q, r.candidates) for q, r in enumerate(requests) if r.candidates is not None],
                                 bundle)
    history, unknown_h = _pairs([(q, r.history) for q, r in enumerate(requests)], bundle)
    excluded, unknown_e = _pairs([(q, r.exclude) for q, r in enumerate(requests)], bundle)
    query_text, paths = _interest_vectors(bundle, user_idx, history, n)
    exclude = pl.concat([excluded, history]) if excluded.height or history.height else None
    scored = bundle.score_candidates(user_idx, query_text=query_text, explicit=explicit, exclude=exclude,
                                     explicit_queries=explicit_queries,
                                     source_rows=request_rows(state.sources, user_idx, history, n))
    top = head_k(scored, max(r.k for r in requests), seed=bundle.config.seed)
    query = top["query_idx"].to_numpy()
    item_ids = state.items.to_ids(top["item_idx"].to_numpy()).to_list()
    scores = top["score"].to_list()
    bounds = np.searchsorted(query, np.arange(n + 1))
    rows = []
    for q, request in enumerate(requests):
        lo, hi = bounds[q], min(bounds[q + 1], bounds[q] + request.k)
        unknown = [*_get(unknown_c, q), *_get(unknown_h, q), *_get(unknown_e, q)]
        rows.append({"user_id": request.user_id, "item_ids": item_ids[lo:hi], "scores": scores[lo:hi],
                     "path": paths[q], "unknown_ids": list(dict.fromkeys(unknown))})
    return rows


def _get(values: list[list[str]], q: int) -> list[str]:
    return values[q] if q < len(values) else []


def _interest_vectors(bundle: RankingBundle, user_idx: np.ndarray, history: pl.DataFrame,
                      n: int) -> tuple[np.ndarray, list[str]]:
    """Per query: the stored interest vector, refreshed by the request's history; and the path."""
    state = bundle.state
    vectors = np.zeros((n, state.item_vectors.shape[1]), dtype=np.float32)
    known = user_idx >= 0
    vectors[known] = state.user_text[user_idx[known]]
    if history.height == 0:
        return vectors, [PERSONALIZED if known[q] else COLD_START for q in range(n)]
    by_query = history.group_by("query_idx", maintain_order=True).agg("item_idx")
    tower = isinstance(state.user_text, SequenceUserVectors)
    if tower:
        _tower_vectors(state.user_text, vectors, user_idx, by_query)
    for q, items in ([] if tower else by_query.iter_rows()):
        items = items[-state.history_len:]  # the most recent history_len items, as in training
        fresh = vector_from_history(np.asarray(items), state.item_vectors, half_life=state.half_life,
                                    pooling=state.pooling)
        # The request's history is the newest evidence: weigh it like that many recent items.
        weight = len(items) / (len(items) + state.half_life) if known[q] else 1.0
        blended = (1 - weight) * vectors[q] + weight * fresh
        norm = np.linalg.norm(blended)
        vectors[q] = blended / norm if norm > 0 else blended
    has_history = np.zeros(n, dtype=bool)
    has_history[by_query["query_idx"].to_numpy()] = True
    paths = [PERSONALIZED if known[q] else HISTORY_ONLY if has_history[q] else COLD_START for q in range(n)]
    return vectors, paths


def _tower_vectors(user_text: SequenceUserVectors, vectors: np.ndarray, user_idx: np.ndarray,
                   by_query: pl.DataFrame) -> None:
    """Fill ``vectors`` rows of the queries in ``by_query`` (query_idx, item_idx list) from the
    ordered user tower: the user's stored last items (none for an unknown user) followed by the
    request's items, the newest ``history_len`` kept; the path batch ranking takes."""
    width = user_text.histories.shape[1]
    empty = np.full(width, -1, dtype=np.int32)
    queries = by_query["query_idx"].to_numpy()
    rows = np.stack([appended(user_text.histories[user_idx[q]] if user_idx[q] >= 0 else empty, np.asarray(items))
                     for q, items in zip(queries, by_query["item_idx"].to_list(), strict=True)])
    vectors[queries] = user_text.tower.user_vectors(rows, user_text.item_vectors)
