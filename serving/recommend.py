"""Top-K recommendations for a list of users from a loaded bundle.

The one code path behind the serving endpoint and the batch job; the offline evaluation
uses the same ``RankingBundle.score_candidates``: candidates -> ranking frame -> LightGBM.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.bundle import RankingBundle, head_k

PERSONALIZED = "personalized"
COLD_START = "cold-start"

OUTPUT_SCHEMA = {"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String, "score": pl.Float32,
                 "path": pl.String}


def recommend(bundle: RankingBundle, user_ids: list[str], k: int) -> pl.DataFrame:
    """Long table (user_id, rank, item_id, score, path): k rows per user, in input order.

    Unknown users are served by the cold-start path (popularity and trends), flagged as such.
    """
    if not user_ids:
        return pl.DataFrame(schema=OUTPUT_SCHEMA)
    user_idx = bundle.state.users.to_index(user_ids, unknown="null")
    top = head_k(bundle.score_candidates(user_idx), k)
    queries = pl.DataFrame({
        "query_idx": np.arange(len(user_ids), dtype=np.int32),
        "user_id": pl.Series(user_ids, dtype=pl.String),
        "path": np.where(user_idx >= 0, PERSONALIZED, COLD_START),
    })
    return (top.join(queries, on="query_idx", how="left")
            .with_columns(pl.Series("item_id", bundle.state.items.to_ids(top["item_idx"].to_numpy())))
            .select([pl.col(c).cast(t) for c, t in OUTPUT_SCHEMA.items()]))
