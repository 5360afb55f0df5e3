"""Metrics by slice: users by history length, items by popularity, cold-start items.

User slices split the test users into thirds by training history length (short / medium /
long) and report nDCG@k within each. Item slices report Recall@k restricted to the relevant
items of the slice (hits on those items / relevant items of that kind, pooled over users):
``head`` = the most interacted 20% of items seen in training, ``tail`` = the other items
seen in training, ``cold`` = items with no training interaction (findable through text only).
"""

from __future__ import annotations

import numpy as np

from features.state import FeatureState
from recsys import metrics


def item_slices(state: FeatureState) -> dict[str, np.ndarray]:
    """Boolean masks over item indices: head, tail, cold."""
    pop = state.item_features["item_pop_all"].to_numpy()
    seen = pop > 0
    threshold = np.quantile(pop[seen], 0.8) if seen.any() else np.inf
    head = seen & (pop > threshold)
    return {"head": head, "tail": seen & ~head, "cold": ~seen}


def user_slices(state: FeatureState, user_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over the test users: short, medium, long history (tertiles)."""
    length = state.user_features["user_history_len"].to_numpy()[user_idx]
    low, high = np.quantile(length, [1 / 3, 2 / 3])
    return {"short": length <= low, "medium": (length > low) & (length <= high), "long": length > high}


def slice_metrics(ranked: np.ndarray, relevant: list[np.ndarray], state: FeatureState, user_idx: np.ndarray,
                  k: int) -> dict[str, float]:
    """``users_<slice>/ndcg@k`` and ``items_<slice>/recall@k`` (+ user and item counts) for one model."""
    ranked = ranked[:, :k]
    hits = metrics.hits_matrix(ranked, relevant)
    n_rel = np.array([len(r) for r in relevant])
    ndcg = metrics.ndcg_at_k(hits, n_rel)
    out: dict[str, float] = {}
    for name, mask in user_slices(state, user_idx).items():
        out[f"users_{name}/ndcg@{k}"] = float(ndcg[mask].mean()) if mask.any() else float("nan")
        out[f"users_{name}/n"] = float(mask.sum())
    hit_items = np.where(hits, ranked, -1)
    all_relevant = np.concatenate(relevant) if relevant else np.zeros(0, dtype=np.int64)
    for name, mask in item_slices(state).items():
        n_relevant = int(mask[all_relevant].sum())
        found = hit_items[hit_items >= 0]
        out[f"items_{name}/recall@{k}"] = float(mask[found].sum() / n_relevant) if n_relevant else float("nan")
        out[f"items_{name}/n_relevant"] = float(n_relevant)
    return out
