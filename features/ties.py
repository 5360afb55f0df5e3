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


def order_by_score(query: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row order grouping rows by ascending query, then descending value, then ``keys``.

    query: int (rows,); values: float (rows,) without NaN; keys: uint64 (rows,) from
    :func:`tie_keys`. Returns int64 (rows,) positions.
    """
    return np.lexsort((keys, -np.asarray(values, dtype=np.float64), query))
