"""Candidate generation: the union of ALS, EASE item-to-item and text top-N, the registered
score sources' top-N (``features.sources``), popular and trending items.

Popular = most interactions in the window; trending = most in its last day. Item-to-item
proposes only items its neighbours vote for (positive score), from a sparse product whose cost
does not grow with the catalog; ALS and text score the whole catalog per user.

Items the user already interacted with in the state's window are excluded. Work is done in
chunks of users so memory stays at ``chunk x n_items`` floats per source.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.array_pool import give, reusing_arrays, take, take_filled
from features.csr_rows import csr_row_entries
from features.pair_scores import scores_against
from features.ranking_frame import position_in_group
from features.state import FeatureState
from features.ties import order_by_score
from recsys import schemas
from recsys.config import CandidateConfig
from recsys.stage_timer import stage

# The ranking-frame feature each built-in personal source's score is (see ``with_scores``); a
# registered source's is its ``score_column`` (``source_features``).
SOURCE_FEATURES = {"cf": "als_score", "item_item": "item_item_score", "text": "text_score"}
# The item-feature columns of the two popularity sources (all-time, last day), in config order.
POPULAR_COLUMNS = ("item_pop_all", "item_pop_1d")

# Item-to-item scores of a user chunk storing more than this share of the chunk x catalog entries
# are picked from a dense copy: selecting from a dense row (block maxima) beats sorting every stored
# entry. Large catalogs, where a user's neighbours reach a small share of the items, stay sparse.
DENSE_ITEM_ITEM_SHARE = 0.05
# A row whose block bound lets through more than this many times n entries gets an exact bound.
_LOOSE_BOUND_FACTOR = 32


def top_n(scores: np.ndarray, n: int, *, seed: int, query: np.ndarray) -> np.ndarray:
    """Indices of the n highest finite scores per row, best first: (rows, cols) -> (rows, min(n, cols))
    int64, padded with -1 where a row has fewer finite scores.

    Ties follow the seeded tie rule (``features.ties``); query: int (rows,) tie-rule keys, the
    user index (-1, shared by every unknown user, so an order never depends on batch position).
    """
    n = min(n, scores.shape[1])
    out = np.full((scores.shape[0], n), -1, dtype=np.int64)
    rows, cols = top_n_entries(scores, n, seed=seed, query=query)
    out[rows, position_in_group(rows)] = cols
    return out


def top_n_entries(scores: np.ndarray, n: int, *, seed: int, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 coordinates of the n highest finite scores of each row, grouped by row
    and best first within a row; ties by the seeded tie rule (query: int (rows,) keys).

    Found without sorting every row: split a row into blocks, and the n-th largest block maximum
    is a lower bound of the row's n-th largest score (n blocks reach it). Only entries at or
    above it (every entry tied with the n-th included) are sorted.
    scores: float (n_rows, n_cols), ``-inf`` (or NaN) = never pick.
    """
    n_rows, n_cols = scores.shape
    if n <= 0 or n_rows == 0 or n_cols == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n_rows == 1 and scores.dtype == np.float32:  # one request: fewer steps, the same entries
        return _one_row_top_n(scores[0], n, seed=seed, query=int(np.asarray(query)[0]))
    width = max(1, n_cols // (4 * n))
    n_blocks = n_cols // width
    if n_blocks <= n:
        bound = np.full(n_rows, -np.inf, dtype=scores.dtype)
    else:
        block_max = _block_max(scores, n_blocks, width)
        bound = np.partition(np.nan_to_num(block_max, nan=-np.inf), n_blocks - n, axis=1)[:, n_blocks - n]
    # At or above the bound, and finite: one comparison, with -inf bounds raised to the lowest float.
    lowest = np.finfo(scores.dtype).min
    picked = np.greater_equal(scores, np.maximum(bound, lowest)[:, None], out=take(scores.shape, bool))
    rows, cols = nonzero_2d(picked)
    # Rows counted from the hits (no second pass over the matrix)
    loose = np.flatnonzero(np.bincount(rows, minlength=n_rows) > _LOOSE_BOUND_FACTOR * n)
    if loose.size:
        # Scores that grow along the columns (item indices in time order, a "newest" ranking) put
        # the n best blocks' whole contents above the bound. Those rows take their exact n-th
        # largest finite score instead (a partition): the same entries at or above it, far fewer sorted.
        # In float32, as order_by_score compares: every entry tied with the n-th there stays in.
        finite = scores[loose].astype(np.float32)
        finite[np.isnan(finite)] = -np.inf
        exact = np.partition(finite, n_cols - n, axis=1)[:, n_cols - n]
        picked[loose] = finite >= np.maximum(exact, np.finfo(np.float32).min)[:, None]
        rows, cols = nonzero_2d(picked)
    give(picked)
    values = scores[rows, cols]
    order = order_by_score(rows, values, seed=seed, key_query=np.asarray(query)[rows], key_item=cols)
    keep = order[position_in_group(rows[order]) < n]
    return rows[keep], cols[keep]


def _block_max(scores: np.ndarray, n_blocks: int, width: int) -> np.ndarray:
    """(rows, n_blocks) maxima of the consecutive ``width``-column blocks of ``scores``, NaN
    skipped (NaN only where a whole block is NaN).

    fmax, not maximum: one NaN (an item a model says nothing about) would make its block's
    maximum NaN, and on a large catalog nearly every block holds one, so the bound fell to -inf
    and every finite score of the row went to the sort (minutes per baseline at 200,000 items)."""
    if width >= 20:  # wide blocks (large catalogs): a reduction per block, 3-8x faster there
        return np.fmax.reduceat(scores[:, :n_blocks * width], np.arange(0, n_blocks * width, width), axis=1)
    # Narrow blocks: strided slices, one per offset in the block (a max over a short inner axis is 10x slower).
    return np.fmax.reduce([scores[:, j:n_blocks * width:width] for j in range(width)])


def nonzero_2d(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-d bool array, (rows, cols) int64 in row-major order: three times
    faster, from the flat positions (numpy's 2-d nonzero unravels every hit on its own)."""
    flat = np.flatnonzero(mask)
    rows = flat // mask.shape[1]
    return rows, flat - rows * mask.shape[1]


def _one_row_top_n(row: np.ndarray, n: int, *, seed: int, query: int) -> tuple[np.ndarray, np.ndarray]:
    """``top_n_entries`` of one float32 row: the entries at or above its n-th largest finite score
    (every tie with it included) in the tie rule's order, the first n kept. float32 compares
    exactly as ``order_by_score`` does, so the result is the general path's."""
    cols = np.flatnonzero(row > -np.inf)  # NaN and -inf never picked
    if cols.size > n:
        values = row[cols]
        cols = cols[values >= np.partition(values, cols.size - n)[cols.size - n]]
    rows = np.zeros(cols.size, dtype=np.int64)
    order = order_by_score(rows, row[cols], seed=seed, key_query=np.full(cols.size, query), key_item=cols)[:n]
    return rows[order], cols[order].astype(np.int64)


def source_scores(state: FeatureState, user_idx: np.ndarray, source: str,
                  user_text: np.ndarray | None = None) -> np.ndarray:
    """Dense scores (len(user_idx), n_items) float32 of a dense personal source ("cf" or "text").

    Entries the source knows nothing about (unknown user, empty history; for "cf" also items
    without history in the window) are ``-inf``: it proposes nothing there. The array comes from
    ``features.array_pool.take``: give it back once read.
    """
    n = len(user_idx)
    known = user_idx >= 0
    if source == "cf":
        known = state.has_profile(user_idx)
        if known.all():  # the batch job's case: no masked copy
            out = scores_against(state.als.user_factors[user_idx], state.als.item_factors,
                                 out=take((n, state.n_items), np.float32))
        else:  # the known rows' own product (BLAS rounds by the rows it is given), copied in
            out = take_filled((n, state.n_items), np.float32, -np.inf)
            part = scores_against(state.als.user_factors[user_idx[known]], state.als.item_factors,
                                  out=take((int(known.sum()), state.n_items), np.float32))
            out[known] = part
            give(part)
        out[:, ~state.item_has_history()] = -np.inf
        return out
    if source == "text":
        vectors = user_text if user_text is not None else _known_rows(state.user_text, user_idx)
        out = scores_against(vectors, state.item_vectors, out=take((n, state.n_items), np.float32))
        out[~np.any(vectors != 0, axis=1)] = -np.inf
        return out
    raise ValueError(f"unknown dense personal source {source!r}; use 'cf' or 'text'")


def item_item_scores(state: FeatureState, user_idx: np.ndarray, *, sort_indices: bool = True) -> sp.csr_matrix:
    """Sparse item-to-item scores (len(user_idx), n_items) float32 CSR, column indices sorted
    unless ``sort_indices`` is False (sorting costs as much as the product when rows are dense).

    Only items some history item votes for are stored; rows of unknown users are empty. The
    cost is history entries x neighbours per item, not users x catalog.
    """
    history = state.history()
    rows = sp.csr_matrix((len(user_idx), state.n_items), dtype=np.float32)
    if np.any(user_idx >= 0):
        positions, cols = csr_row_entries(history, user_idx)  # the users' 0/1 history rows (unknown: empty)
        indptr = np.r_[0, np.cumsum(np.bincount(positions, minlength=len(user_idx)))]
        chunk_history = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), cols, indptr),
                                      shape=(len(user_idx), state.n_items))
        rows = state.item_item.user_scores_sparse(chunk_history)
    if sort_indices:
        rows.sort_indices()
    return rows


def sparse_top_n_entries(scores: sp.csr_matrix, seen: np.ndarray, n: int, *, seed: int,
                         query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each row's n highest positive stored scores, the ``seen`` (bool, dense
    shape of ``scores``) entries skipped; ties by the seeded tie rule (query: int (rows,) keys)."""
    rows = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
    cols, values = scores.indices.astype(np.int64), scores.data
    keep = (values > 0) & ~seen[rows, cols]
    rows, cols, values = rows[keep], cols[keep], values[keep]
    order = order_by_score(rows, values, seed=seed, key_query=np.asarray(query)[rows], key_item=cols)
    keep = order[position_in_group(rows[order]) < n]
    return rows[keep], cols[keep]


def _known_rows(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.zeros((len(idx), table.shape[1]), dtype=table.dtype)
    out[idx >= 0] = table[idx[idx >= 0]]
    return out


def seen_mask(state: FeatureState, user_idx: np.ndarray) -> np.ndarray:
    """Boolean (len(user_idx), n_items): True where the user interacted in the window (from
    ``features.array_pool.take``: give it back once read)."""
    mask = take_filled((len(user_idx), state.n_items), bool, False)
    mask[csr_row_entries(state.seen, user_idx)] = True
    return mask


def _global_top(state: FeatureState, chunk: np.ndarray, seen: np.ndarray, column: str, n: int, seed: int):
    """Rows, cols of the n most popular items per user, skipping the user's seen items.

    The order is global (ties by the tie rule with one shared query key), so it is sorted once
    and each user walks down it past their seen items.
    """
    known = chunk[chunk >= 0]  # the seen counts from the CSR row lengths, not a pass over the mask
    max_seen = int(np.diff(state.seen.indptr)[known].max()) if known.size else 0
    order = state.popular_order(column, seed)[: n + max_seen]
    keep = ~seen[:, order]
    keep &= np.cumsum(keep, axis=1) <= n
    rows, pos = nonzero_2d(keep)
    return rows, order[pos]


def _pick_sparse(scores: sp.csr_matrix, n: int, seen: np.ndarray, picked: np.ndarray, *, seed: int,
                 query: np.ndarray) -> sp.csr_matrix | np.ndarray:
    """Mark in ``picked`` each row's n best positive unseen entries of sparse scores (CSR (rows,
    n_items), any column order); returns the scores as they are read back (sorted CSR, or a dense
    copy when most entries are stored: no user x catalog work unless most items get votes)."""
    if scores.nnz > DENSE_ITEM_ITEM_SHARE * scores.shape[0] * scores.shape[1]:
        dense = scores.toarray()
        if n > 0:
            votes = np.where(dense > 0, dense, np.float32(-np.inf))
            votes[seen] = -np.inf
            picked[top_n_entries(votes, n, seed=seed, query=query)] = True
        return dense
    scores.sort_indices()
    if n > 0:
        picked[sparse_top_n_entries(scores, seen, n, seed=seed, query=query)] = True
    return scores


def source_counts_of(state: FeatureState, counts: dict[str, int] | None) -> dict[str, int]:
    """Candidates per user of each of the state's registered sources: ``counts[name]``, else the
    source's default."""
    counts = counts or {}
    return {name: int(counts.get(name, type(source).defaults["candidates"])) for name, source in state.sources.items()}


@stage("candidates")
def generate_candidates(state: FeatureState, user_idx: np.ndarray, config: CandidateConfig, *, seed: int,
                        chunk_size: int = 512, user_text: np.ndarray | None = None,
                        with_scores: bool = False, source_counts: dict[str, int] | None = None,
                        source_rows: dict[str, object] | None = None) -> pl.DataFrame:
    """Candidate rows (query_idx, user_idx, item_idx), Int32, sorted by query then item.

    Each source's top-N breaks ties by the seeded tie rule (``seed``: the run's seed).

    ``query_idx`` is the position in ``user_idx``: unknown users (-1) stay separate queries.
    user_text: optional (len(user_idx), d) interest vectors that replace the stored ones
    (request-time history, cold users).
    with_scores: also return each personal source's score of every candidate as its feature
    column (``SOURCE_FEATURES`` and the registered sources' ``score_column``; Float32, NaN where
    the source knows nothing of the pair), so scoring does not compute the same products twice.
    source_counts: candidates per user of the state's registered sources (default: each one's
    default; ``features.sources.candidate_counts`` of the run's config).
    source_rows: optional registered source name -> its request rows for ``user_idx``
    (``ScoreSource.request_rows``), read instead of the stored user rows.
    """
    personal = {"cf": config.n_cf, "item_item": config.n_item_item, "text": config.n_text}
    added = source_counts_of(state, source_counts)
    popular = dict(zip(POPULAR_COLUMNS, (config.n_popular, config.n_recent), strict=True))
    user_idx = np.asarray(user_idx, dtype=np.int32)
    frames = []
    with reusing_arrays():  # each chunk's (users, items) arrays are the last chunk's, given back
        for start in range(0, len(user_idx), chunk_size):
            chunk = user_idx[start:start + chunk_size]
            chunk_text = None if user_text is None else user_text[start:start + chunk_size]
            seen = seen_mask(state, chunk)
            picked = take_filled(seen.shape, bool, False)
            dense: dict[str, np.ndarray] = {}
            sparse: dict[str, sp.csr_matrix | np.ndarray] = {}
            for source, n in personal.items():
                if n <= 0 and not with_scores:
                    continue
                if source == "item_item":  # sparse: only items some history item votes for
                    scores = _pick_sparse(item_item_scores(state, chunk, sort_indices=False), n, seen, picked,
                                          seed=seed, query=chunk)
                    if with_scores:
                        sparse[source] = scores
                    continue
                scores = source_scores(state, chunk, source, chunk_text)
                if with_scores:  # masking seen items below does not touch any candidate's score
                    dense[source] = scores
                if n <= 0:
                    continue
                scores[seen] = -np.inf
                picked[top_n_entries(scores, n, seed=seed, query=chunk)] = True
                if not with_scores:
                    give(scores)
            for name, n in added.items():
                if n <= 0 and not with_scores:
                    continue
                rows = (source_rows or {}).get(name)
                scores = state.sources[name].scores(chunk, None if rows is None else rows[start:start + chunk_size])
                scores = _pick_sparse(scores, n, seen, picked, seed=seed, query=chunk)
                if with_scores:
                    sparse[name] = scores
            for column, n in popular.items():
                if n > 0:
                    rows, cols = _global_top(state, chunk, seen, column, n, seed)
                    picked[rows, cols] = True
            rows, cols = nonzero_2d(picked)
            columns = {
                "query_idx": (rows + start).astype(np.int32),
                "user_idx": chunk[rows].astype(np.int32),
                "item_idx": cols.astype(np.int32),
            }
            for source, scores in dense.items():
                values = scores[rows, cols]
                columns[SOURCE_FEATURES[source]] = np.where(np.isinf(values), np.nan, values).astype(np.float32)
            for source, scores in sparse.items():
                values = np.asarray(scores[rows, cols], dtype=np.float32).ravel()
                if source == "item_item":  # rows of unknown users know nothing
                    columns[SOURCE_FEATURES[source]] = np.where(chunk[rows] < 0, np.nan, values).astype(np.float32)
                else:  # a registered source: stored positive entries are what it knows
                    columns[type(state.sources[source]).score_column] = \
                        np.where(values > 0, values, np.float32(np.nan)).astype(np.float32)
            give(seen, picked, *dense.values())
            frames.append(pl.DataFrame(columns))
    if not frames:
        schema = dict(schemas.CANDIDATES)
        if with_scores:
            schema.update({SOURCE_FEATURES[source]: pl.Float32 for source in personal})
            schema.update({type(source).score_column: pl.Float32 for source in state.sources.values()})
        return pl.DataFrame(schema=schema)
    return pl.concat(frames)
