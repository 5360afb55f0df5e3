"""Interaction tables for logs that give each user's items in order but no times.

Sequential-recommendation data sets (UniSRec's RecBole files, ``X.inter.json``) often publish
only the order. The canonical table needs times, so each user's sequence gets synthetic ones
that keep the order: one day per step, every sequence ending at ``SEQUENCE_END``. Aligning the
ends (rather than the starts) puts every user's last item on the same day, so the
leave-last-out split and its nested validation cut take each user's last and second-to-last
items, as the files' own test and validation targets are, and "recent" means the same number of
steps back for every user. A temporal split on these times means nothing; ``ORDER_ONLY_NOTE``
says so in ``import.json``.
"""

from __future__ import annotations

import html
import re
from datetime import datetime

import polars as pl

from recsys.errors import DataValidationError

SEQUENCE_END = datetime(2020, 1, 1)
STEP_DAYS = 1
# Steps that fit between 1970-01-01 (the loader's earliest time) and SEQUENCE_END.
MAX_SEQUENCE_LENGTH = 18_000
ORDER_ONLY_NOTE = (
    "The source gives only each user's order of items, no times. Timestamps here are synthetic: "
    "one day per step, every user's sequence ending at 2020-01-01, so the order is kept exactly. "
    "Evaluate with --split leave-last-out (each user's last item is the test target, their "
    "second-to-last the validation target); a temporal split on these times is meaningless."
)


_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")


def clean_text(value: str) -> str:
    """``value`` with HTML entities (``&amp;``, ``&#39;``) decoded and runs of whitespace made one space.

    Only complete entities (ending in ``;``) are decoded: ``html.unescape`` alone would also turn
    "&notebook" into "¬ebook".
    """
    return " ".join(_ENTITY.sub(lambda m: html.unescape(m.group(0)), value).split())


def ordered_interactions(users: list[str], sequences: list[list[str]], source: str) -> pl.DataFrame:
    """Canonical interactions (user_id, item_id, timestamp, weight = 1.0) from ordered sequences.

    users: user ids, one per sequence; sequences: each user's item ids, oldest first. Rows come
    out user by user, in sequence order. A sequence longer than ``MAX_SEQUENCE_LENGTH`` cannot
    get distinct days after 1970 and is refused (``source`` names the file in the message).
    """
    lengths = [len(s) for s in sequences]
    longest = max(lengths, default=0)
    if longest > MAX_SEQUENCE_LENGTH:
        user = users[lengths.index(longest)]
        raise DataValidationError(
            f"{source}: user {user!r} has {longest:,} items in sequence; at most {MAX_SEQUENCE_LENGTH:,} fit the "
            "synthetic one-day steps. Cut the sequence to its most recent items before importing."
        )
    user_col = [u for u, n in zip(users, lengths, strict=True) for _ in range(n)]
    steps_back = [n - 1 - i for n in lengths for i in range(n)]
    return pl.DataFrame({
        "user_id": pl.Series(user_col, dtype=pl.String),
        "item_id": pl.Series([i for s in sequences for i in s], dtype=pl.String),
        "_back": pl.Series(steps_back, dtype=pl.Int64),
    }).select(
        "user_id", "item_id",
        (pl.lit(SEQUENCE_END) - pl.duration(days=pl.col("_back") * STEP_DAYS)).cast(pl.Datetime("us"))
        .alias("timestamp"),
        pl.lit(1.0, dtype=pl.Float32).alias("weight"),
    )


def items_with_placeholders(items: pl.DataFrame, interactions: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``items`` plus an empty-text row for every interacted item without one, and how many were added.

    Order-only data cannot lose an item without shifting what is "last" for its users, so an item
    missing from the text file stays in the catalog, found by behaviour only.
    """
    missing = (interactions.select("item_id").unique(maintain_order=True)
               .join(items.select("item_id"), on="item_id", how="anti", maintain_order="left"))
    if missing.height == 0:
        return items, 0
    filler = missing.with_columns(pl.lit("").alias("title"), pl.lit("").alias("description"),
                                  pl.lit("unknown").alias("category"))
    return pl.concat([items, filler.select(items.columns)]), missing.height
