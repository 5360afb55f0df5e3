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

    Ties count one half (Mann-Whitney U with mid-ranks).
    """
    order = np.lexsort((scores, groups))
    scores, labels, groups = scores[order], labels[order], groups[order]
    boundaries = np.flatnonzero(np.diff(groups)) + 1
    aucs = []
    for s, y in zip(np.split(scores, boundaries), np.split(labels, boundaries), strict=True):
        n_pos = int(y.sum())
        n_neg = y.size - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = _midranks(s)
        aucs.append((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def _midranks(sorted_scores: np.ndarray) -> np.ndarray:
    """1-based ranks of an ascending array, ties sharing their mean rank."""
    n = sorted_scores.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for s, c in zip(start, counts, strict=True):
        if c > 1:
            ranks[s:s + c] = ranks[s:s + c].mean()
    return ranks


def impression_metrics(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                       tiebreak: np.ndarray | None = None) -> dict[str, float]:
    """MIND-style per-impression AUC, MRR, nDCG@5 and nDCG@10 (mean over impressions with a click).

    scores: float (n,), labels: 0/1 (n,), groups: int impression index (n,); tiebreak: optional
    (n,) keys ordering tied scores (the caller's tie rule; without it ties keep row order).
    """
    auc = auc_per_group(scores, labels, groups)
    order = np.lexsort((-scores, groups)) if tiebreak is None else np.lexsort((tiebreak, -scores, groups))
    s_labels, s_groups = labels[order], groups[order]
    boundaries = np.flatnonzero(np.diff(s_groups)) + 1
    out = {"mrr": [], "ndcg@5": [], "ndcg@10": []}
    for y in np.split(s_labels, boundaries):
        if y.sum() == 0:
            continue
        pos = np.flatnonzero(y)
        out["mrr"].append(float(np.mean(1.0 / (pos + 1))))  # MIND's MRR: mean over clicks
        for k in (5, 10):
            hits = y[None, :k].astype(bool)
            out[f"ndcg@{k}"].append(float(ndcg_at_k(np.pad(hits, ((0, 0), (0, k - hits.shape[1]))),
                                                    np.array([y.sum()]))[0]))
    result = {f"imp_{key}": float(np.mean(v)) if v else float("nan") for key, v in out.items()}
    result["imp_auc"] = auc
    return result
