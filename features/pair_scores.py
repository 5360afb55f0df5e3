"""Dot products of (row, column) index pairs of two factor tables, fast for ranking frames.

Ranking frames hold a few hundred candidate rows per user. Two ways to score them:
- gather: ``sum(left[li] * right[ri])`` in blocks: memory-bound, cost ~ rows x d;
- dense: ``left[unique users] @ right.T`` then pick the pairs: BLAS-bound, cost ~ users x items x d.
Dense wins while the catalog is small next to the candidates per user; both give the same
numbers (up to float32 rounding).
"""

from __future__ import annotations

import numpy as np

_BLOCK_ROWS = 16_384
_DENSE_CELLS = 8_000_000  # unique users x items per dense block (32 MB of float32)
_FEW_ROWS = 32


def scores_against(rows: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 (len(rows), len(table)) C-ordered: ``rows @ table.T``, every row against every table row.

    rows: (n, d), table: (m, d) float32 C-ordered. For a few rows (a served request) the product
    is formed as ``(table @ rows.T).T``: BLAS then reads the table in its stored order, 2-3x
    faster there. With the bundled OpenBLAS both forms give the same float32 values (a test
    checks it); past ``_FEW_ROWS`` rows the direct form is used, faster from a few dozen rows on.
    out: optional float32 (n, m) C-ordered array the product is written to (and returned), e.g. a
    reused scratch array (``features.array_pool``); the same values either way.
    """
    if len(rows) <= _FEW_ROWS:
        result = np.ascontiguousarray((table @ rows.T).T)
        if out is None:
            return result
        out[...] = result
        return out
    if out is None:
        return rows @ table.T
    return np.matmul(rows, table.T, out=out)


def pair_dot(left: np.ndarray, right: np.ndarray, li: np.ndarray, ri: np.ndarray,
             valid_left: np.ndarray | None = None) -> np.ndarray:
    """float32 (n,) of left[li[k]] . right[ri[k]]; NaN where li is -1 (or ``valid_left[li]`` is False).

    left: (n_left, d), right: (n_right, d) float32; li, ri: int arrays (n,); ri must be valid.
    """
    li = np.asarray(li, dtype=np.int64)
    ri = np.asarray(ri, dtype=np.int64)
    out = np.full(li.shape[0], np.nan, dtype=np.float32)
    ok = (li >= 0) & (li < left.shape[0])
    if valid_left is not None:
        ok[ok] = valid_left[li[ok]]
    if not ok.any():
        return out
    rows = np.flatnonzero(ok)
    users, inverse = np.unique(li[rows], return_inverse=True)
    if right.shape[0] <= 16 * (len(rows) / len(users)):
        out[rows] = _dense(left, right, users, inverse, ri[rows])
    else:
        out[rows] = _gather(left, right, li[rows], ri[rows])
    return out


def _dense(left, right, users, inverse, ri):
    result = np.empty(len(ri), dtype=np.float32)
    per_block = max(1, _DENSE_CELLS // right.shape[0])
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(0, len(users) + per_block, per_block))
    for b in range(len(bounds) - 1):
        pick = order[bounds[b]:bounds[b + 1]]
        if pick.size == 0:
            continue
        first = b * per_block
        block = scores_against(left[users[first:first + per_block]], right)
        result[pick] = block[inverse[pick] - first, ri[pick]]
    return result


def _gather(left, right, li, ri):
    result = np.empty(len(li), dtype=np.float32)
    for start in range(0, len(li), _BLOCK_ROWS):
        stop = start + _BLOCK_ROWS
        result[start:stop] = np.einsum("ij,ij->i", left[li[start:stop]], right[ri[start:stop]])
    return result
