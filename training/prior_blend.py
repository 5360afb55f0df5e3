"""The ranker's prior: a linear blend of within-query z-scored stage-1 scores.

LambdaRank boosting normally starts every row at 0. Where the ranker learns from few label
queries (MovieLens 100K: about 800 users) its trees can end up below the strongest stage-1
model they are given (git history holds that measurement). Starting the boosting from a blend
``sum_s w_s z_s`` of the stage-1 scores keeps that model's order as the baseline the trees
correct. The blend has one weight per source (the first fixed at 1), found by coordinate ascent
over a grid, maximizing nDCG@k on the training label queries: a few parameters, so a few
hundred queries determine them, unlike a tree ensemble.
"""

from __future__ import annotations

import numpy as np

from features.ranking_frame import position_in_group, prior_scores

WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5)


def mean_query_ndcg(groups: np.ndarray, scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean nDCG@k over the queries with at least one positive label.

    groups: int (n_queries,) sizes of contiguous query blocks; scores: float (rows,);
    labels: 0/1 (rows,). Ideal DCG counts the query's positives among its rows only.
    """
    query = np.repeat(np.arange(len(groups)), groups)
    # Ties by row position: the labelled frame puts each query's rows in tie-rule order
    # (training/variants.py), never in item order.
    order = np.lexsort((np.arange(len(scores)), -scores, query))
    position = position_in_group(query[order])
    top = position < k
    gains = labels[order][top] / np.log2(position[top] + 2.0)
    dcg = np.bincount(query[order][top], weights=gains, minlength=len(groups))
    positives = np.bincount(query, weights=labels, minlength=len(groups)).astype(np.int64)
    discounts = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))]
    ideal = discounts[np.minimum(positives, k)]
    has = positives > 0
    return float(np.mean(dcg[has] / ideal[has])) if has.any() else float("nan")


def fit_prior_weights(matrix: np.ndarray, labels: np.ndarray, groups: np.ndarray, sources: tuple[str, ...],
                      columns: tuple[str, ...], k: int, rounds: int = 2) -> dict[str, float]:
    """Weights of ``sources`` (the first 1.0, the others from ``WEIGHT_GRID``) that maximize the
    mean nDCG@k of ``prior_scores`` on these queries; a weight moves only when nDCG rises.

    matrix: float32 (rows, len(columns)) feature matrix; labels: 0/1 (rows,); groups: query sizes.
    """
    weights = {source: (1.0 if i == 0 else 0.0) for i, source in enumerate(sources)}
    if len(sources) < 2:
        return weights
    best = mean_query_ndcg(groups, prior_scores(matrix, weights, columns), labels, k)
    for _ in range(rounds):
        moved = False
        for source in sources[1:]:
            for value in WEIGHT_GRID:
                trial = {**weights, source: value}
                score = mean_query_ndcg(groups, prior_scores(matrix, trial, columns), labels, k)
                if score > best + 1e-9:
                    best, weights, moved = score, trial, True
        if not moved:
            break
    return weights
