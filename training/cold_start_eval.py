"""Evaluation of the cold-items protocol: can a model find items it never saw in training?

Each test user with at least one relevant cold item (a seeded sample of ``eval_max_users``
when there are more) ranks the whole cold set (every cold item, none of which is in anyone's
training history); nDCG@k and Recall@k are computed
against the user's relevant cold items only. The ranker ranks the set through its bundle
(text features; behaviour features of never-seen items); baselines: random, popularity
(no signal by construction: every cold item has zero training interactions), the text
score alone and the text-predicted popularity alone.

Ties follow the seeded tie rule (``features.ties``), never item index: catalog order often
carries information (MovieLens numbers its best-known films first) that no model should get
for free.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.bundle import RankingBundle
from features.ties import tie_keys
from recsys import metrics, windows
from recsys.config import PipelineConfig
from training.evaluate import bundles_by_state, sample_users, test_relevance


def cold_item_evaluation(bundles: dict[str, RankingBundle], test: pl.DataFrame, cold_items: pl.Series,
                         config: PipelineConfig) -> dict[str, dict[str, float]]:
    """``cold_items/ndcg@k``, ``cold_items/recall@k`` and ``cold_items/n_users`` per model."""
    k = config.k
    state = bundles["ranker"].state
    cold_idx = np.sort(state.items.to_index(cold_items)).astype(np.int32)
    cold_test = test.filter(pl.col("item_id").is_in(cold_items.implode()))
    user_idx, relevant = test_relevance(state, cold_test)
    user_idx, relevant = sample_users(user_idx, relevant, config.eval_max_users,
                                      config.seed + windows.EVAL_SAMPLE_SEED)
    if len(user_idx) == 0:
        return {}
    pairs = pl.DataFrame({
        "query_idx": np.repeat(np.arange(len(user_idx), dtype=np.int32), len(cold_idx)),
        "item_idx": np.tile(cold_idx, len(user_idx)),
    })
    n_users, n_cold = len(user_idx), len(cold_idx)
    tiebreak = tie_keys(config.seed, user_idx[:, None].astype(np.int64), cold_idx[None, :]).reshape(n_users, n_cold)

    def top(scores: np.ndarray) -> np.ndarray:  # (n_users, n_cold) -> (n_users, k) item indices
        order = np.lexsort((tiebreak, -scores), axis=1)[:, :k]
        return cold_idx[order]

    ranked: dict[str, np.ndarray] = {}
    for group in bundles_by_state(bundles):  # rankers that share a state share the features
        candidates, arrays = next(iter(group.values())).candidate_features(user_idx, explicit=pairs)
        for name, bundle in group.items():
            scored = bundle.score_features(candidates, arrays).sort("query_idx", "item_idx")
            ranked[name] = top(scored["score"].to_numpy().reshape(n_users, n_cold))
    ranked["random"] = top(np.zeros((n_users, n_cold)))
    pop = state.item_features["item_pop_all"].to_numpy()[cold_idx]
    ranked["popularity"] = top(np.broadcast_to(np.nan_to_num(pop), (n_users, n_cold)))
    ranked["text"] = top(state.user_text[user_idx] @ state.item_vectors[cold_idx].T)
    ranked["text_popularity"] = top(np.broadcast_to(state.text_popularity()[cold_idx], (n_users, n_cold)))
    out = {}
    for name, top in ranked.items():
        values = metrics.topk_metrics(top, relevant, k)
        out[name] = {f"cold_items/ndcg@{k}": values[f"ndcg@{k}"], f"cold_items/recall@{k}": values[f"recall@{k}"],
                     "cold_items/n_users": float(len(user_idx)), "cold_items/n_items": float(len(cold_idx))}
    return out

