"""The canonical table schemas: the one place that says which columns each table has.

Every table that crosses a module boundary is a polars DataFrame with one of these schemas.
"""

from __future__ import annotations

import polars as pl

ITEMS = {
    "item_id": pl.String,
    "title": pl.String,
    "description": pl.String,
    "category": pl.String,
}
ITEMS_REQUIRED = ("item_id", "title")

INTERACTIONS = {
    "user_id": pl.String,
    "item_id": pl.String,
    "timestamp": pl.Datetime("us"),
    "weight": pl.Float32,
}
INTERACTIONS_REQUIRED = ("user_id", "item_id", "timestamp")

IMPRESSIONS = {
    "impression_id": pl.String,
    "user_id": pl.String,
    "timestamp": pl.Datetime("us"),
    "item_id": pl.String,
    "clicked": pl.Int8,
}
IMPRESSIONS_REQUIRED = tuple(IMPRESSIONS)

# Output of batch ranking: one row per (user, rank). ``path`` is how the user was served, as in
# the endpoint's answer: "personalized" (a user the model knows) or "cold-start".
RANKING_OUTPUT = {
    "user_id": pl.String,
    "rank": pl.Int32,
    "item_id": pl.String,
    "score": pl.Float32,
    "path": pl.String,
}

# Candidate rows inside the pipeline: one ranked list per query (a user or an impression),
# contiguous indices from the id maps; user_idx is -1 for users the model does not know.
CANDIDATES = {
    "query_idx": pl.Int32,
    "user_idx": pl.Int32,
    "item_idx": pl.Int32,
}
