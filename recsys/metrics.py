"""Ranking metrics, vectorised over users.

Conventions: ``ranked`` is an int array (n_users, k) of item indices, best first, padded with
-1; ``relevant`` is a list of sets (or arrays) of relevant item indices per user. Binary
relevance. Users with no relevant item must be removed before calling (they have no defined
recall); every function returns one float64 value per user.
"""

from __future__ import annotations

import itertools

import numpy as np


def hits_matrix(ranked: np.ndarray, relevant: list) -> np.ndarray:
    """Boolean (n_users, k): is the item at each rank relevant.

    ranked: (n_users, k) item indices, -1 = padding; relevant: per user, a collection of item
    indices. Vectorised: every (user, item) pair becomes one int64 key (user * 2^32 + item), and
    the whole matrix is one ``isin`` against the relevant keys.
    """
    width = np.int64(1 << 32)  # above any item index
    n_rel = np.fromiter((len(r) for r in relevant), dtype=np.int64, count=len(relevant))
    items = np.fromiter(itertools.chain.from_iterable(relevant), dtype=np.int64, count=int(n_rel.sum()))
    keys = np.repeat(np.arange(len(relevant), dtype=np.int64), n_rel) * width + items
    rows = np.arange(len(ranked), dtype=np.int64)[:, None] * width
    return np.isin(rows + np.asarray(ranked, dtype=np.int64), keys) & (ranked >= 0)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """nDCG@k: DCG of the hits over the DCG of min(k, n_relevant) hits at the top."""
    k = hits.shape[1]
    disc = _discounts(k)
    dcg = (hits * disc).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(n_relevant, k)]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return np.divide(hits.sum(axis=1), n_relevant, out=np.zeros(hits.shape[0]), where=n_relevant > 0)


def precision_at_k(hits: np.ndarray) -> np.ndarray:
    return hits.sum(axis=1) / hits.shape[1]


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Average precision at k: sum of precision@i at each hit rank i, over min(k, n_relevant)."""
    k = hits.shape[1]
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    denominator = np.minimum(n_relevant, k)
    return np.divide((precision_at_i * hits).sum(axis=1), denominator, out=np.zeros(hits.shape[0]),
                     where=denominator > 0)


def mrr_at_k(hits: np.ndarray) -> np.ndarray:
    """Reciprocal rank of the first hit within k; 0 when none."""
    first = np.argmax(hits, axis=1)
    return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


def ndcg_per_user(ranked: np.ndarray, relevant: list, k: int) -> np.ndarray:
    """float64 (n_users,) nDCG@k of each user's ranked list (ranked: int (n_users, >= k) item
    indices; relevant: each user's relevant items)."""
    return ndcg_at_k(hits_matrix(ranked[:, :k], relevant), np.array([len(r) for r in relevant]))


def topk_metrics(ranked: np.ndarray, relevant: list, k: int) -> dict[str, float]:
    """Mean nDCG@k, Recall@k, Precision@k, MAP@k and MRR@k over users (keys like ``ndcg@10``)."""
    ranked = ranked[:, :k]
    hits = hits_matrix(ranked, relevant)
    n_rel = np.array([len(r) for r in relevant])
    return {
        f"ndcg@{k}": float(ndcg_at_k(hits, n_rel).mean()),
        f"recall@{k}": float(recall_at_k(hits, n_rel).mean()),
        f"precision@{k}": float(precision_at_k(hits).mean()),
        f"map@{k}": float(map_at_k(hits, n_rel).mean()),
        "mrr": float(mrr_at_k(hits).mean()),
    }


def auc_per_group(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups (impressions) of the ROC AUC; groups with one class are skipped.

    Ties count one half (Mann-Whitney U with mid-ranks). Vectorised over groups (a million
    impressions at scale): each run of equal scores inside a group gets its mean rank.
    """
    order = _lexsort_in_groups((scores,), groups)
    s, y, g = scores[order], labels[order] == 1, groups[order]
    if s.size == 0:
        return float("nan")
    group_id, group_start = _group_ids(g)
    same = (s[1:] == s[:-1]) | (np.isnan(s[1:]) & np.isnan(s[:-1]))
    new_run = np.r_[True, ~same | (group_id[1:] != group_id[:-1])]  # a run of ties ends with its group
    run_start = np.flatnonzero(new_run)
    run_id = np.cumsum(new_run) - 1
    run_len = np.diff(np.r_[run_start, s.size])
    ranks = (run_start - group_start[group_id[run_start]])[run_id] + (run_len[run_id] + 1) / 2.0  # 1-based mid-ranks
    n_pos = np.bincount(group_id, weights=y)
    n_neg = np.bincount(group_id) - n_pos
    rank_sum = np.bincount(group_id, weights=np.where(y, ranks, 0.0))
    valid = (n_pos > 0) & (n_neg > 0)
    aucs = (rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2) / (n_pos[valid] * n_neg[valid])
    return float(np.mean(aucs)) if aucs.size else float("nan")


_SORT_CHUNK_ROWS = 1_000_000  # rows per sort of whole groups in the impression metrics


def _lexsort_in_groups(keys: tuple[np.ndarray, ...], groups: np.ndarray) -> np.ndarray:
    """``np.lexsort((*keys, groups))``; when ``groups`` are non-decreasing (impressions in order),
    computed as one sort per chunk of about ``_SORT_CHUNK_ROWS`` rows of whole groups: the same
    order (lexsort is stable), at a cost linear in the rows instead of n log n with a working set
    that outgrows the caches (tens of millions of shown rows at scale)."""
    groups = np.asarray(groups)
    n = len(groups)
    if n <= _SORT_CHUNK_ROWS or (groups[1:] < groups[:-1]).any():
        return np.lexsort((*keys, groups))
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    cut = np.searchsorted(starts, np.arange(0, n, _SORT_CHUNK_ROWS))  # the first group starting at or after
    bounds = np.unique(np.r_[starts[cut[cut < len(starts)]], n])
    return np.concatenate([lo + np.lexsort((*(k[lo:hi] for k in keys), groups[lo:hi]))
                           for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])


def _group_ids(sorted_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 (n,) 0-based id of each row's group, int64 (n_groups,) first row of each group) for
    rows sorted by group."""
    new = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    return np.cumsum(new) - 1, np.flatnonzero(new)


def impression_metrics(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                       tiebreak: np.ndarray | None = None) -> dict[str, float]:
    """MIND-style per-impression AUC, MRR, nDCG@5 and nDCG@10 (mean over impressions with a click).

    scores: float (n,), labels: 0/1 (n,), groups: int impression index (n,); tiebreak: optional
    (n,) keys ordering tied scores (the caller's tie rule; without it ties keep row order).
    Vectorised over impressions: per-group sums by ``np.bincount`` over each row's position.
    """
    labels = np.asarray(labels)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("impression labels must be 0 (not clicked) or 1 (clicked)")
    if labels.size == 0:
        return {"imp_mrr": float("nan"), "imp_ndcg@5": float("nan"), "imp_ndcg@10": float("nan"),
                "imp_auc": float("nan")}
    auc = auc_per_group(scores, labels, groups)
    order = _lexsort_in_groups((-scores,) if tiebreak is None else (tiebreak, -scores), groups)
    clicked = (labels[order] == 1).astype(np.float64)
    group_id, group_start = _group_ids(groups[order])
    position = np.arange(len(order)) - group_start[group_id]  # 0-based rank inside the impression
    clicks = np.bincount(group_id, weights=clicked)
    has_click = clicks > 0
    result = {"imp_mrr": float("nan"), "imp_ndcg@5": float("nan"), "imp_ndcg@10": float("nan")}
    if has_click.any():
        # MIND's MRR: the mean over an impression's clicks of 1 / rank
        reciprocal = np.bincount(group_id, weights=clicked / (position + 1))
        result["imp_mrr"] = float(np.mean(reciprocal[has_click] / clicks[has_click]))
        for k in (5, 10):
            disc = _discounts(k)
            gain = np.where(position < k, disc[np.minimum(position, k - 1)], 0.0) * clicked
            dcg = np.bincount(group_id, weights=gain)[has_click]
            ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(clicks[has_click].astype(np.int64), k)]
            result[f"imp_ndcg@{k}"] = float(np.mean(dcg / ideal))
    result["imp_auc"] = auc
    return result
