"""Counts, distinct values and key matches over whole event tables, on polars' streaming engine.

Eager polars builds one hash table over a whole column; at tens of millions of rows with a
million distinct keys that table outgrows the CPU caches and most rows cost a memory miss. The
streaming engine (``collect(engine="streaming")``) runs the same query in morsels over
partitioned tables, which grows more slowly with the rows on the scaled worlds
(``benchmarks/hash_scale.py`` times each function here against the eager call it replaces).
Results are the same sets and counts; row order is not defined, so callers that need one sort.
"""

from __future__ import annotations

import polars as pl


def _collect(query: pl.LazyFrame) -> pl.DataFrame:
    return query.collect(engine="streaming")


def rows_per_key(frame: pl.DataFrame, key: str, name: str) -> pl.DataFrame:
    """``key, name`` (polars' index dtype, UInt32): the number of rows of ``frame`` per distinct
    ``key`` (a null key counts as one key), in no order."""
    return _collect(frame.lazy().group_by(key).len(name))


def distinct(column: pl.Series) -> pl.Series:
    """The distinct values of ``column`` (nulls included once if present), in no order."""
    return _collect(column.to_frame().lazy().select(pl.col(column.name).unique()))[column.name]


def rows_matching(keys: pl.Series, other: pl.Series) -> pl.Series:
    """Positions (polars' index dtype) in ``keys`` whose value is among ``other``'s values, each
    once, in no order. Nulls match nothing."""
    left = keys.alias("key").to_frame().lazy().with_row_index("_row")
    return _collect(left.join(other.alias("key").to_frame().lazy(), on="key", how="semi"))["_row"]


def all_in(column: pl.Series, values: pl.Series) -> bool:
    """Whether every value of ``column`` is among ``values``; a null is never among them."""
    if column.null_count():
        return False
    query = column.to_frame().lazy().select(pl.col(column.name).is_in(values.implode()).all())
    return bool(_collect(query)[0, 0])
