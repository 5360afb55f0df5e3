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
from features.sources import REGISTERED
from features.sources import feature_columns as source_feature_columns
from features.state import FeatureState
from features.ties import descending_float_key
from recsys.config import SCORE_SOURCES
from recsys.stage_timer import stage

SCORE_FEATURES = SCORE_SOURCES
# Raw stage-1 scores grow with history length and window size, so the feature window the ranker
# learns on and the full window it serves from give them different scales. The ranker sees them
# only through scale-free views: the rank within the query as a share of the query, and the
# within-query z-score. The text score is a cosine of unit vectors (one scale everywhere) and
# stays as it is.
QUERY_RANK_FEATURES = tuple(f"{name}_query_rank" for name in SCORE_FEATURES)
# Each score standardized within its query ((value - mean) / std over the query's known rows; NaN
# where the score is unknown, 0 where it is constant): scale-free like the ranks but keeping the
# gaps between items, so sums of them are blends of the stage-1 models (the ranker's prior, below,
# where an unknown score counts as the query's mean).
QUERY_Z_FEATURES = tuple(f"{name}_query_z" for name in SCORE_FEATURES)
RAW_SCORE_FEATURES = ("text_score",)
TEXT_POPULARITY_FEATURE = "item_text_popularity"
FEATURE_COLUMNS: tuple[str, ...] = (
    *RAW_SCORE_FEATURES, *QUERY_RANK_FEATURES, *behaviour.ITEM_FEATURES, *behaviour.USER_FEATURES,
    behaviour.AFFINITY_FEATURE, TEXT_POPULARITY_FEATURE, *QUERY_Z_FEATURES,
)
TEXT_FEATURES = ("text_score", "text_score_query_rank", TEXT_POPULARITY_FEATURE, "text_score_query_z")


def feature_columns_of(state: FeatureState) -> tuple[str, ...]:
    """The ranker's columns for rows built from ``state``: FEATURE_COLUMNS, then the two views
    (within-query rank and z-score) of each registered source the state has, in registry order."""
    return FEATURE_COLUMNS + source_feature_columns(state.sources)


def prior_scores(frame: pl.DataFrame | dict[str, np.ndarray] | np.ndarray, weights: dict[str, float],
                 columns: tuple[str, ...] = FEATURE_COLUMNS) -> np.ndarray:
    """float64 (rows,) ``sum_s weights[s] * z_s``: a linear blend of the stage-1 scores.

    weights: score feature name (``SCORE_FEATURES``) -> weight of its ``_query_z`` column.
    frame: a ranking frame, its feature arrays, or a feature matrix in ``columns`` order.
    """
    def z_of(source: str) -> np.ndarray:
        name = f"{source}_query_z"
        z = frame[:, columns.index(name)] if isinstance(frame, np.ndarray) else np.asarray(frame[name])
        return np.nan_to_num(z.astype(np.float64), nan=0.0)

    rows = frame.shape[0] if isinstance(frame, np.ndarray | pl.DataFrame) else len(next(iter(frame.values())))
    return sum((weight * z_of(source) for source, weight in weights.items()), np.zeros(rows))


def pair_text_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, user_rows: np.ndarray,
                     item_idx: np.ndarray) -> np.ndarray:
    """Cosine scores float32 (n,); NaN where the user row is -1 or the user vector is all zero.

    user_vectors: (n_users, d) float32, an array or ``UserVectors``; only the rows the pairs
    name are read, each once."""
    user_rows = np.asarray(user_rows, dtype=np.int64)
    known = (user_rows >= 0) & (user_rows < len(user_vectors))
    users, inverse = np.unique(user_rows[known], return_inverse=True)
    table = np.asarray(user_vectors[users], dtype=np.float32)
    rows = np.full(len(user_rows), -1, dtype=np.int64)
    rows[known] = inverse
    return pair_dot(table, item_vectors, rows, item_idx, valid_left=np.any(table != 0, axis=1))


def _gather_rows(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """table[idx] with NaN rows where idx is -1."""
    out = np.full((len(idx), table.shape[1]), np.nan, dtype=np.float32)
    ok = idx >= 0
    out[ok] = table[idx[ok]]
    return out


def position_in_group(sorted_query: np.ndarray) -> np.ndarray:
    """0-based position of each row within its run of equal ``sorted_query`` values (rows grouped)."""
    n = len(sorted_query)
    starts = np.flatnonzero(np.r_[True, sorted_query[1:] != sorted_query[:-1]]) if n else np.zeros(0, np.int64)
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def rank_within_query(query_idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float32 (rows,) rank of each value within its query as a share of the query, best first.

    ``(midrank - 0.5) / n``: n is the query's count of known values and midrank the 1-based rank
    (largest value first), tied values sharing the mean of their positions. So the value lies in
    (0, 1), equal scores get equal ranks whatever their row order, and the best of 10 rows and
    the best of 300 both sit near 0. NaN values stay NaN.
    query_idx: int (rows,) (any order); values: float (rows,).
    """
    out = np.full(len(values), np.nan, dtype=np.float32)
    ok = np.flatnonzero(~np.isnan(values))
    if ok.size == 0:
        return out
    q = query_idx[ok]
    grouped = _grouped_ranks(q, values[ok])
    if grouped is not None:
        out[ok] = grouped
        return out
    # One int64 sort on (query, value as float32 descending): ties need no order here, they share a rank.
    key = (q.astype(np.int64) << 32) | descending_float_key(values[ok])
    order = np.argsort(key)
    key = key[order]
    n = len(key)
    # Runs of equal (query, value) share the mean of their 0-based positions within the query:
    # first + (length - 1) / 2.
    run_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    run_length = np.diff(np.r_[run_start, n])
    query = key >> 32
    new_query = np.r_[True, query[1:] != query[:-1]]
    query_start = np.flatnonzero(new_query)
    query_size = np.diff(np.r_[query_start, n])
    query_of_run = np.cumsum(new_query)[run_start] - 1
    mean_position = run_start - query_start[query_of_run] + (run_length - 1) / 2
    out[ok[order]] = np.repeat((mean_position + 0.5) / query_size[query_of_run], run_length)
    return out


def _grouped_ranks(query: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """``rank_within_query``'s values for rows whose queries are contiguous (the ranking frame's
    layout), or None when they are not or the queries' sizes differ too much.

    The queries become the rows of a padded (queries, longest query) grid of the negated float32
    values, sorted along its rows: many short SIMD sorts, several times faster than one sort of
    every row. The +inf padding sorts last; a value that is -inf as float32 would tie with it, so
    such input takes the one sort. float32 equality is the tie rule's (0.0 equals -0.0), so the
    result is the same.
    query: int (n,); values: float (n,) without NaN.
    """
    n = len(query)
    new_query = np.r_[True, query[1:] != query[:-1]]
    starts = np.flatnonzero(new_query)
    if n == 0 or len(np.unique(query[starts])) < len(starts):  # a query in two places: not contiguous
        return None
    sizes = np.diff(np.r_[starts, n])
    width = int(sizes.max())
    negated = -np.asarray(values, dtype=np.float32)
    if width * len(starts) > 2 * n or np.isposinf(negated).any():  # mostly padding, or values tied with it
        return None
    row = np.repeat(np.arange(len(starts)), sizes)
    col = np.arange(n) - np.repeat(starts, sizes)
    grid = np.full((len(starts), width), np.inf, dtype=np.float32)
    grid[row, col] = negated
    order = np.argsort(grid, axis=1)
    ordered = np.take_along_axis(grid, order, axis=1)
    # 0-based position in the sorted row; a run of tied values shares first + (length - 1) / 2.
    position = np.tile(np.arange(width, dtype=np.float64), (len(starts), 1))
    same = ordered[:, 1:] == ordered[:, :-1]
    same &= np.arange(1, width) < sizes[:, None]  # padding (+inf, sorted last) ties with nothing
    if same.any():
        follows = np.zeros(grid.shape, dtype=bool)
        follows[:, 1:] = same
        tied = follows.copy()
        tied[:, :-1] |= same
        members = np.flatnonzero(tied)
        new_run = ~follows.ravel()[members]
        run = np.cumsum(new_run) - 1
        length = np.bincount(run)
        position.ravel()[members] = (members[new_run] % width + (length - 1) / 2)[run]
    ranked = np.empty_like(position)
    np.put_along_axis(ranked, order, (position + 0.5) / sizes[:, None], axis=1)
    return ranked[row, col]


def zscore_within_query(query_idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float32 (rows,) ``(value - mean) / std`` within each query over its known values; NaN for
    NaN values (unknown stays unknown), 0 where a query's known values are all equal.

    query_idx: non-negative int (rows,) (any order); values: float (rows,).
    """
    out = np.full(len(values), np.nan, dtype=np.float32)
    ok = ~np.isnan(values)
    all_known = bool(ok.all())
    if not all_known and not ok.any():
        return out
    # Known values only; the common case (every user known) skips the masked copies.
    q = query_idx if all_known else query_idx[ok]
    v = values.astype(np.float64) if all_known else values[ok].astype(np.float64)
    n = np.maximum(np.bincount(q), 1)
    mean = np.bincount(q, weights=v) / n
    centred = v - mean[q]
    std = np.sqrt(np.bincount(q, weights=centred * centred) / n)
    # Spreads at rounding level (constant scores) count as constant: 1e-6 of the query's scale.
    scale = np.where(std <= 1e-6 * np.maximum(np.abs(mean), 1e-12), np.inf, std)
    z = centred / scale[q]
    if all_known:
        out[:] = z
    else:
        out[ok] = z
    return out


@stage("ranking_frame")
def feature_arrays(state: FeatureState, user_idx: np.ndarray, item_idx: np.ndarray, *,
                   query_idx: np.ndarray, query_text: np.ndarray | None = None,
                   known: dict[str, np.ndarray] | None = None,
                   source_rows: dict[str, object] | None = None) -> dict[str, np.ndarray]:
    """Every ``feature_columns_of(state)`` entry as a float32 (rows,) array (NaN = unknown) for the given pairs.

    user_idx: int (rows,), -1 for users unknown to the state; item_idx: int (rows,);
    query_idx: int (rows,), the ranked list each row belongs to (for the within-query ranks).
    known: score features already computed for these rows (candidate generation's
    ``with_scores``), used as they are.
    query_text: optional (n_queries, d) interest vectors indexed by ``query_idx``, replacing the
    stored user vectors (request-time history for cold users).
    source_rows: optional registered source name -> its request rows for every query
    (``ScoreSource.request_rows``, indexed by ``query_idx``), replacing the stored user rows.
    Every feature is a numpy gather from the state's dense tables: no joins, no row loops.
    """
    known = known or {}
    if "text_score" in known:
        text = known["text_score"]
    elif query_text is not None:
        text = pair_text_scores(query_text, state.item_vectors, query_idx, item_idx)
    else:
        text = pair_text_scores(state.user_text, state.item_vectors, user_idx, item_idx)
    item_table, user_table, affinity = state.dense_tables()
    item_values = item_table[item_idx]
    user_values = _gather_rows(user_table, user_idx)
    user_affinity = np.full(len(user_idx), np.nan, dtype=np.float32)
    profiled = user_idx >= 0
    user_affinity[profiled] = affinity[user_idx[profiled], state.item_category[item_idx[profiled]]]
    columns = {
        "als_score": known["als_score"] if "als_score" in known else state.als.pair_scores(user_idx, item_idx),
        "bpr_score": state.bpr.pair_scores(user_idx, item_idx),
        "item_item_score": known["item_item_score"] if "item_item_score" in known
        else state.item_item.pair_scores(state.history(), user_idx, item_idx),
        "text_score": text,
    }
    # A behaviour score says nothing about a pair whose user or item has no history in the
    # window (zero or never-trained factors, no co-occurrence): missing, not 0, so that such
    # items tie as unknown instead of ranking by whatever their factors started as.
    unknown = ~state.pair_has_history(user_idx, item_idx)
    for name in ("als_score", "bpr_score"):
        columns[name] = np.where(unknown, np.float32(np.nan), columns[name]).astype(np.float32)
    columns["item_item_score"] = np.where(unknown | (columns["item_item_score"] == 0), np.float32(np.nan),
                                          columns["item_item_score"]).astype(np.float32)
    for name in SCORE_FEATURES:
        columns[f"{name}_query_rank"] = rank_within_query(query_idx, columns[name])
        columns[f"{name}_query_z"] = zscore_within_query(query_idx, columns[name])
    columns.update({name: item_values[:, j] for j, name in enumerate(behaviour.ITEM_FEATURES)})
    columns.update({name: user_values[:, j] for j, name in enumerate(behaviour.USER_FEATURES)})
    columns[behaviour.AFFINITY_FEATURE] = user_affinity
    columns[TEXT_POPULARITY_FEATURE] = state.text_popularity()[item_idx]
    for name, source in state.sources.items():
        column = type(source).score_column
        rows = (source_rows or {}).get(name)
        if column in known:
            values = known[column]
        elif rows is not None:
            values = source.pair_scores(query_idx, item_idx, request=rows)
        else:
            values = source.pair_scores(user_idx, item_idx)
        # Nothing to say (0, or NaN: no rows to score from): unknown.
        values = np.where(~(values > 0), np.float32(np.nan), values).astype(np.float32)
        columns[column] = values  # raw scores may grow with the window: the ranker sees the two views
        rank_name, z_name = type(source).feature_columns()
        columns[rank_name] = rank_within_query(query_idx, values)
        columns[z_name] = zscore_within_query(query_idx, values)
    return columns


def build_ranking_frame(state: FeatureState, pairs: pl.DataFrame, *,
                        query_text: np.ndarray | None = None) -> pl.DataFrame:
    """Add ``feature_columns_of(state)`` (Float32, NaN = unknown) to ``pairs`` without reordering its rows.

    pairs: query_idx, user_idx, item_idx (Int32) plus any pass-through columns (labels).
    The values come from :func:`feature_arrays`, which scoring uses directly.
    """
    arrays = feature_arrays(state, pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy(),
                            query_idx=pairs["query_idx"].to_numpy(), query_text=query_text)
    return pairs.with_columns([pl.Series(name, arrays[name], dtype=pl.Float32) for name in feature_columns_of(state)])


def frame_feature_columns(frame: pl.DataFrame) -> tuple[str, ...]:
    """The ranker's columns of a ranking frame from ``build_ranking_frame``: FEATURE_COLUMNS, then
    the registered sources' whose columns the frame has (its state had the source)."""
    return FEATURE_COLUMNS + source_feature_columns(
        cls.name for cls in REGISTERED if all(c in frame.columns for c in cls.feature_columns()))


def feature_matrix(frame: pl.DataFrame | dict[str, np.ndarray],
                   columns: tuple[str, ...] = FEATURE_COLUMNS) -> np.ndarray:
    """float32 (rows, len(columns)) in the given column order, for LightGBM, from a ranking frame
    or from :func:`feature_arrays`."""
    if isinstance(frame, dict):
        # Column-major: each feature is one contiguous copy (10x faster than column_stack's
        # row-major interleave), and LightGBM reads column-major input without copying it.
        return np.vstack([frame[c] for c in columns]).astype(np.float32, copy=False).T
    return frame.select(columns).to_numpy().astype(np.float32, copy=False)


def group_sizes(frame: pl.DataFrame) -> np.ndarray:
    """LambdaRank group sizes: rows per query_idx, in order; rows of a query must be contiguous."""
    runs = frame.select(pl.col("query_idx").rle()).unnest("query_idx")
    if runs["value"].n_unique() != runs.height:
        raise ValueError("rows of each query_idx must be contiguous; sort the frame by query_idx first")
    return runs["len"].to_numpy()
