"""Metrics against hand-computed values and a slow, obvious reference implementation."""

import math

import numpy as np
import pytest

from recsys import metrics


def reference_ndcg(ranked, relevant, k):
    dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in relevant)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return dcg / idcg


def reference_ap(ranked, relevant, k):
    hits, total = 0, 0.0
    for r, item in enumerate(ranked[:k]):
        if item in relevant:
            hits += 1
            total += hits / (r + 1)
    return total / min(k, len(relevant))


def reference_topk(ranked, relevant, k):
    """Per-user loops, the obvious way: the vectorised code must agree with this."""
    rows = []
    for items, rel in zip(ranked.tolist(), relevant, strict=True):
        hits = [item in rel for item in items[:k]]
        rows.append({
            f"ndcg@{k}": reference_ndcg(items, rel, k),
            f"recall@{k}": sum(hits) / len(rel),
            f"precision@{k}": sum(hits) / k,
            f"map@{k}": reference_ap(items, rel, k),
            "mrr": next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0),
        })
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def reference_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_topk_metrics_match_hand_computed_table():
    ranked = np.array([[1, 2, 3], [4, 5, 6]])
    relevant = [{2}, {4, 6, 9}]
    out = metrics.topk_metrics(ranked, relevant, k=3)
    # user 0: hit at rank 2 -> ndcg = (1/log2 3) / 1 = 0.6309; user 1: hits at 1 and 3
    u1 = (1 + 1 / 2) / (1 + 1 / math.log2(3) + 1 / 2)
    assert out["ndcg@3"] == pytest.approx((1 / math.log2(3) + u1) / 2)
    assert out["recall@3"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["precision@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert out["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    # AP: user 0 = (1/2) / min(3, 1); user 1 = (1/1 + 2/3) / min(3, 3)
    assert out["map@3"] == pytest.approx((1 / 2 + (1 + 2 / 3) / 3) / 2)


def test_map_and_precision_hand_computed_where_map_is_the_larger():
    # MAP@k is not bounded by precision@k: a single relevant item ranked first gives AP 1, P@10 0.1.
    # user 1: relevant {7, 8}, hits at ranks 2 and 4 -> AP (1/2 + 2/4) / 2 = 0.5, P@10 0.2.
    ranked = np.array([[5, 1, 2, 3, 4, 6, 9, 10, 11, 12], [0, 7, 1, 8, 2, 3, 4, 5, 6, 9]])
    out = metrics.topk_metrics(ranked, [{5}, {7, 8}], k=10)
    assert out["map@10"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["precision@10"] == pytest.approx((0.1 + 0.2) / 2)
    assert out["recall@10"] == pytest.approx(1.0)


def test_every_topk_metric_matches_the_slow_reference():
    rng = np.random.default_rng(1)
    ranked = np.stack([rng.permutation(40)[:10] for _ in range(300)])
    relevant = [set(rng.choice(40, size=rng.integers(1, 15), replace=False).tolist()) for _ in range(300)]
    fast = metrics.topk_metrics(ranked, relevant, k=10)
    slow = reference_topk(ranked, relevant, k=10)
    assert set(fast) == set(slow)
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-12), key


def test_ndcg_matches_reference_on_random_lists():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:10] for _ in range(200)])
    relevant = [set(rng.choice(50, size=rng.integers(1, 8), replace=False).tolist()) for _ in range(200)]
    fast = metrics.ndcg_at_k(metrics.hits_matrix(ranked, relevant), np.array([len(r) for r in relevant]))
    slow = [reference_ndcg(list(r), rel, 10) for r, rel in zip(ranked, relevant, strict=True)]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_padding_never_counts_as_a_hit():
    ranked = np.array([[-1, -1, 3]])
    hits = metrics.hits_matrix(ranked, [{-1, 3}])
    assert hits.tolist() == [[False, False, True]]


def test_auc_per_group_matches_reference_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=60).astype(float)  # many ties
    labels = rng.integers(0, 2, size=60)
    groups = np.repeat(np.arange(6), 10)
    expected = np.mean([reference_auc(scores[g * 10:(g + 1) * 10], labels[g * 10:(g + 1) * 10]) for g in range(6)
                        if 0 < labels[g * 10:(g + 1) * 10].sum() < 10])
    assert metrics.auc_per_group(scores, labels, groups) == pytest.approx(expected)


def test_impression_metrics_hand_computed():
    # One impression: clicked item scored second of three.
    out = metrics.impression_metrics(np.array([0.9, 0.5, 0.1]), np.array([0, 1, 0]), np.array([0, 0, 0]))
    assert out["imp_auc"] == pytest.approx(0.5)
    assert out["imp_mrr"] == pytest.approx(0.5)
    assert out["imp_ndcg@5"] == pytest.approx(1 / math.log2(3))



# The loop-per-impression implementation the vectorised one replaced, kept as the reference.
def _loop_auc_per_group(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
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
        ranks = _loop_midranks(s)
        aucs.append((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def _loop_midranks(sorted_scores: np.ndarray) -> np.ndarray:
    """1-based ranks of an ascending array, ties sharing their mean rank."""
    n = sorted_scores.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for s, c in zip(start, counts, strict=True):
        if c > 1:
            ranks[s:s + c] = ranks[s:s + c].mean()
    return ranks


def _loop_impression_metrics(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                       tiebreak: np.ndarray | None = None) -> dict[str, float]:
    """MIND-style per-impression AUC, MRR, nDCG@5 and nDCG@10 (mean over impressions with a click).

    scores: float (n,), labels: 0/1 (n,), groups: int impression index (n,); tiebreak: optional
    (n,) keys ordering tied scores (the caller's tie rule; without it ties keep row order).
    """
    auc = _loop_auc_per_group(scores, labels, groups)
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
            out[f"ndcg@{k}"].append(float(metrics.ndcg_at_k(np.pad(hits, ((0, 0), (0, k - hits.shape[1]))),
                                                    np.array([y.sum()]))[0]))
    result = {f"imp_{key}": float(np.mean(v)) if v else float("nan") for key, v in out.items()}
    result["imp_auc"] = auc
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_impression_metrics_equal_the_per_impression_loop(seed):
    rng = np.random.default_rng(seed)
    n = 3_000
    groups = np.sort(rng.integers(0, 400, n))
    labels = (rng.random(n) < 0.2).astype(np.int8)
    scores = rng.integers(0, 6, n).astype(np.float64)  # many ties inside an impression
    scores[rng.random(n) < 0.05] = -1e9
    tiebreak = rng.integers(0, 2**40, n).astype(np.uint64)
    perm = rng.permutation(n)  # rows need not come grouped
    scores, labels, groups, tiebreak = scores[perm], labels[perm], groups[perm], tiebreak[perm]
    for keys in (None, tiebreak):
        got = metrics.impression_metrics(scores, labels, groups, tiebreak=keys)
        want = _loop_impression_metrics(scores, labels, groups, tiebreak=keys)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key
    assert metrics.auc_per_group(scores, labels, groups) == _loop_auc_per_group(scores, labels, groups)
    none_clicked = metrics.impression_metrics(scores, np.zeros(n, dtype=np.int8), groups)
    assert np.isnan(none_clicked["imp_mrr"]) and np.isnan(none_clicked["imp_auc"])


@pytest.mark.parametrize("chunk_rows", [1, 7, 250])
def test_impression_sorts_in_chunks_of_whole_groups_equal_one_sort(chunk_rows, monkeypatch):
    rng = np.random.default_rng(5)
    n = 3_000
    groups = np.sort(rng.integers(0, 400, n))  # in impression order: the chunked path
    labels = (rng.random(n) < 0.2).astype(np.int8)
    scores = rng.integers(0, 6, n).astype(np.float64)
    tiebreak = rng.integers(0, 4, n).astype(np.uint64)  # ties left after the tie keys: row order decides
    whole = {keys: metrics.impression_metrics(scores, labels, groups, tiebreak=tiebreak if keys else None)
             for keys in (False, True)}
    monkeypatch.setattr(metrics, "_SORT_CHUNK_ROWS", chunk_rows)
    assert np.array_equal(metrics._lexsort_in_groups((tiebreak, -scores), groups),
                          np.lexsort((tiebreak, -scores, groups)))
    assert np.array_equal(metrics._lexsort_in_groups((scores,), groups), np.lexsort((scores, groups)))
    for keys in (False, True):
        assert metrics.impression_metrics(scores, labels, groups, tiebreak=tiebreak if keys else None) == whole[keys]
    shuffled = rng.permutation(n)  # out of order: one sort, the same as lexsort
    assert np.array_equal(metrics._lexsort_in_groups((scores[shuffled],), groups[shuffled]),
                          np.lexsort((scores[shuffled], groups[shuffled])))


@pytest.mark.parametrize(("scores", "labels", "groups"), [
    ([1.0, 2.0, 2.0, 3.0], [0, 1, 1, 0], [0, 0, 1, 1]),  # equal scores across a group boundary
    ([np.nan, np.nan, 1.0, 0.5, 2.0], [1, 0, 0, 1, 1], [0, 0, 0, 0, 1]),  # a run of NaN; a one-row group
    ([0.3, 0.1, 0.2], [1, 1, 1], [4, 4, 4]),  # every row clicked: no AUC, MRR and nDCG still count
    ([0.1, 0.9, 0.5, 0.5, 0.5, 0.2, 0.7, 0.6, 0.4, 0.3, 0.8, 0.05], [0] * 11 + [1], [0] * 12),  # click past 10
])
def test_impression_metrics_equal_the_loop_on_edge_cases(scores, labels, groups):
    scores, labels, groups = np.array(scores), np.array(labels, dtype=np.int8), np.array(groups)
    got = metrics.impression_metrics(scores, labels, groups)
    want = _loop_impression_metrics(scores, labels, groups)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, nan_ok=True), key


def test_impression_metrics_of_nothing_are_nan_and_labels_must_be_clicks():
    empty = metrics.impression_metrics(np.zeros(0), np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.int64))
    assert all(np.isnan(v) for v in empty.values()) and len(empty) == 4
    with pytest.raises(ValueError, match="must be 0 .* or 1"):
        metrics.impression_metrics(np.array([0.5, 0.2]), np.array([2, 0]), np.array([0, 0]))
