"""The one tie rule: equal scores are ordered by a seeded hash of (seed, query, item).

Catalog order often carries information (publication order, MovieLens numbering its best-known
films first), so no top-k, candidate list or ranking may break ties by item index or row
order. Every ordering in the project sorts by (query, score descending, ``tie_keys``): the
order among tied items is pseudo-random, fixed by the run's seed, and the same wherever the
same (query, item) pair is ranked.

``query`` is the ranked list's identity that does not depend on batching: the user index for
users the model knows, and a stable query number otherwise.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MUL1
    x = x ^ (x >> np.uint64(27))
    x = x * _MUL2
    return x ^ (x >> np.uint64(31))


def tie_keys(seed: int, query: np.ndarray | int, item_idx: np.ndarray) -> np.ndarray:
    """uint64 pseudo-random keys of (seed, query, item), in the broadcast shape of the two
    arrays; equal inputs give equal keys.

    query: int array, or one int for a list shared by every query (a global popularity order);
    item_idx: int array. Negative values are allowed (hashed as their two's complement).
    """
    query, item = np.broadcast_arrays(np.asarray(query, dtype=np.int64), np.asarray(item_idx, dtype=np.int64))
    query, item = query.astype(np.uint64), item.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(1))
        x = _mix(x ^ (query * _GOLDEN))
        return _mix(x ^ (item * _MUL1 + _GOLDEN))


def descending_float_key(values: np.ndarray) -> np.ndarray:
    """int64 (n,) in 0..2**32-1, ascending where ``values`` (cast to float32) descend; equal
    float32 values (0.0 and -0.0 included) give equal keys. values: float without NaN."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    ascending = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    return (np.uint32(0xFFFFFFFF) - ascending).astype(np.int64)


def order_by_score(query: np.ndarray, values: np.ndarray, *, seed: int, key_query: np.ndarray,
                   key_item: np.ndarray) -> np.ndarray:
    """Row order grouping rows by ascending query, then descending value, then the tie rule.

    query: int (rows,), 0 <= query < 2**31; values: float (rows,) without NaN, compared as
    float32; key_query, key_item: int (rows,), what ``tie_keys(seed, key_query, key_item)`` hashes.
    Equal to ``np.lexsort((tie_keys(...), -values, query))``, but one int64 sort: the tie keys
    are computed only for the rows that tie. Returns int64 (rows,) positions.
    """
    key = (np.asarray(query).astype(np.int64) << 32) | descending_float_key(values)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    tied = np.zeros(len(key), dtype=bool)
    same = sorted_key[1:] == sorted_key[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    members = np.flatnonzero(tied)
    if members.size:
        run = np.cumsum(np.r_[True, ~same])[members]
        rows = order[members]
        keys = tie_keys(seed, np.asarray(key_query)[rows], np.asarray(key_item)[rows])
        order[members] = rows[np.lexsort((keys, run))]
    return order
