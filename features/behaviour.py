"""Behaviour features with polars, point in time: only events strictly before ``ref_time``.

Tables (all keyed by contiguous indices from the id maps):
- item features: popularity over 1/7/30 days and all time, smoothed click-through rate,
  age since first seen, days since last interaction, mean weight.
- user features: history length, activity over 7 days, days since last interaction.
- user-category affinity: share of the user's history in each category.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

ITEM_FEATURES = ("item_pop_1d", "item_pop_7d", "item_pop_30d", "item_pop_all", "item_ctr",
                 "item_age_days", "item_days_since_last", "item_mean_weight")
USER_FEATURES = ("user_history_len", "user_active_7d", "user_days_since_last")
AFFINITY_FEATURE = "user_category_affinity"

_DAY_US = 86_400 * 1_000_000


def _days_before(ref_time: datetime, column: str) -> pl.Expr:
    return (pl.lit(ref_time) - pl.col(column)).dt.total_microseconds() / _DAY_US


def item_features(interactions: pl.LazyFrame, impressions: pl.LazyFrame | None, *, n_items: int,
                  ref_time: datetime, ctr_prior_strength: float) -> pl.DataFrame:
    """One row per item_idx in 0..n_items-1 (Float32 columns ITEM_FEATURES; NaN when unseen)."""
    past = interactions.filter(pl.col("timestamp") < ref_time).with_columns(
        _days_before(ref_time, "timestamp").alias("_age"))
    agg = past.group_by("item_idx").agg(
        (pl.col("_age") <= 1).sum().alias("item_pop_1d"),
        (pl.col("_age") <= 7).sum().alias("item_pop_7d"),
        (pl.col("_age") <= 30).sum().alias("item_pop_30d"),
        pl.len().alias("item_pop_all"),
        pl.col("_age").max().alias("item_age_days"),
        pl.col("_age").min().alias("item_days_since_last"),
        pl.col("weight").mean().alias("item_mean_weight"),
    )
    base = pl.LazyFrame({"item_idx": pl.int_range(0, n_items, dtype=pl.Int32, eager=True)})
    frame = base.join(agg, on="item_idx", how="left").with_columns(
        pl.col("item_pop_1d", "item_pop_7d", "item_pop_30d", "item_pop_all").fill_null(0))
    if impressions is not None:
        shown = impressions.filter(pl.col("timestamp") < ref_time)
        global_ctr = shown.select(pl.col("clicked").mean()).collect().item() or 0.0
        ctr = shown.group_by("item_idx").agg(
            pl.len().alias("_shows"), pl.col("clicked").sum().alias("_clicks"),
            _days_before(ref_time, "timestamp").max().alias("_first_shown"))
        # Smoothed CTR: (clicks + a * global) / (shows + a); unseen items get the global rate.
        frame = frame.join(ctr, on="item_idx", how="left").with_columns(
            ((pl.col("_clicks").fill_null(0) + ctr_prior_strength * global_ctr)
             / (pl.col("_shows").fill_null(0) + ctr_prior_strength)).alias("item_ctr"),
            pl.max_horizontal("item_age_days", "_first_shown").alias("item_age_days"),
        ).drop("_shows", "_clicks", "_first_shown")
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float32).alias("item_ctr"))
    return frame.select("item_idx", *[pl.col(c).cast(pl.Float32) for c in ITEM_FEATURES]).sort("item_idx").collect()


def user_features(interactions: pl.LazyFrame, *, n_users: int, ref_time: datetime) -> pl.DataFrame:
    """One row per user_idx in 0..n_users-1 (Float32 columns USER_FEATURES)."""
    past = interactions.filter(pl.col("timestamp") < ref_time).with_columns(
        _days_before(ref_time, "timestamp").alias("_age"))
    agg = past.group_by("user_idx").agg(
        pl.len().alias("user_history_len"),
        (pl.col("_age") <= 7).sum().alias("user_active_7d"),
        pl.col("_age").min().alias("user_days_since_last"),
    )
    base = pl.LazyFrame({"user_idx": pl.int_range(0, n_users, dtype=pl.Int32, eager=True)})
    return (base.join(agg, on="user_idx", how="left")
            .with_columns(pl.col("user_history_len", "user_active_7d").fill_null(0))
            .select("user_idx", *[pl.col(c).cast(pl.Float32) for c in USER_FEATURES])
            .sort("user_idx").collect())


def user_category_affinity(interactions: pl.LazyFrame, item_category: pl.DataFrame, *,
                           ref_time: datetime) -> pl.DataFrame:
    """Rows (user_idx, category_idx, user_category_affinity: Float32 share of history)."""
    past = interactions.filter(pl.col("timestamp") < ref_time).join(
        item_category.lazy(), on="item_idx", how="inner")
    return (past.group_by("user_idx", "category_idx").agg(pl.len().alias("_n"))
            .with_columns((pl.col("_n") / pl.col("_n").sum().over("user_idx")).cast(pl.Float32)
                          .alias(AFFINITY_FEATURE))
            .select("user_idx", "category_idx", AFFINITY_FEATURE)
            .sort("user_idx", "category_idx").collect())
