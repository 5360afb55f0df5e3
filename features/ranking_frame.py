"""The ranking frame: one row per (query, candidate item) with every ranker feature.

This one function is used by training, evaluation, batch ranking and serving: the guard
against training/serving skew. Input rows carry ``query_idx`` (one ranked list: a user, or an
impression), ``user_idx`` (-1 for users unknown to the state) and ``item_idx``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features import behaviour
from features.pair_scores import pair_dot
from features.state import FeatureState

SCORE_FEATURES = ("als_score", "bpr_score", "text_score")
FEATURE_COLUMNS: tuple[str, ...] = (
    *SCORE_FEATURES, *behaviour.ITEM_FEATURES, *behaviour.USER_FEATURES, behaviour.AFFINITY_FEATURE,
)
TEXT_FEATURES = ("text_score",)


def pair_text_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, user_rows: np.ndarray,
                     item_idx: np.ndarray) -> np.ndarray:
    """Cosine scores float32 (n,); NaN where the user row is -1 or the user vector is all zero."""
    return pair_dot(user_vectors, item_vectors, user_rows, item_idx,
                    valid_left=np.any(user_vectors != 0, axis=1))


def build_ranking_frame(state: FeatureState, pairs: pl.DataFrame, *,
                        query_text: np.ndarray | None = None) -> pl.DataFrame:
    """Add FEATURE_COLUMNS (Float32, NaN = unknown) to ``pairs`` without reordering its rows.

    pairs: query_idx, user_idx, item_idx (Int32) plus any pass-through columns (labels).
    query_text: optional (n_queries, d) interest vectors indexed by query_idx, replacing the
    stored user vectors (request-time history for cold users).
    """
    user_idx = pairs["user_idx"].to_numpy()
    item_idx = pairs["item_idx"].to_numpy()
    if query_text is not None:
        text = pair_text_scores(query_text, state.item_vectors, pairs["query_idx"].to_numpy(), item_idx)
    else:
        text = pair_text_scores(state.user_text, state.item_vectors, user_idx, item_idx)
    frame = pairs.with_columns(
        pl.Series("als_score", state.als.pair_scores(user_idx, item_idx)),
        pl.Series("bpr_score", state.bpr.pair_scores(user_idx, item_idx)),
        pl.Series("text_score", text),
        pl.Series("_category_idx", state.item_category[item_idx]),
    )
    frame = (
        frame.join(state.item_features, on="item_idx", how="left", maintain_order="left")
        .join(state.user_features, on="user_idx", how="left", maintain_order="left")
        .join(state.affinity.rename({"category_idx": "_category_idx"}),
              on=["user_idx", "_category_idx"], how="left", maintain_order="left")
        .with_columns(
            # A known user with no history in a category has affinity 0, not "unknown".
            pl.when(pl.col("user_idx") >= 0).then(pl.col(behaviour.AFFINITY_FEATURE).fill_null(0.0))
            .otherwise(pl.col(behaviour.AFFINITY_FEATURE)).alias(behaviour.AFFINITY_FEATURE)
        )
        .drop("_category_idx")
    )
    return frame.with_columns([pl.col(c).cast(pl.Float32).fill_null(float("nan")) for c in FEATURE_COLUMNS])


def feature_matrix(frame: pl.DataFrame, columns: tuple[str, ...] = FEATURE_COLUMNS) -> np.ndarray:
    """float32 (rows, len(columns)) in the given column order, for LightGBM."""
    return frame.select(columns).to_numpy().astype(np.float32, copy=False)


def group_sizes(frame: pl.DataFrame) -> np.ndarray:
    """LambdaRank group sizes: rows per query_idx, in order; rows of a query must be contiguous."""
    runs = frame.select(pl.col("query_idx").rle()).unnest("query_idx")
    if runs["value"].n_unique() != runs.height:
        raise ValueError("rows of each query_idx must be contiguous; sort the frame by query_idx first")
    return runs["len"].to_numpy()
