"""Behaviour features with polars, point in time: only events strictly before ``ref_time``.

Tables (all keyed by contiguous indices from the id maps):
- item features: popularity over 1/7/30 days and all time (counts, and relative to the
  window's average item), smoothed click-through rate, age since first seen, days since last
  interaction, mean weight.
- user features: history length (count, and relative to the window's mean), share of it in
  the last 7 days, days since last interaction.
- user-category affinity: share of the user's history in each category.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

# Counts kept in the item table (candidate lists, baselines, slices read them).
ITEM_COUNTS = ("item_pop_1d", "item_pop_7d", "item_pop_30d", "item_pop_all")
# What the ranker reads: counts relative to the average item of the same window
# (count x n_items / window total), so the feature window and the longer refit window give
# comparable values; times in days and ratios are on one scale already.
ITEM_FEATURES = ("item_pop_1d_rel", "item_pop_7d_rel", "item_pop_30d_rel", "item_pop_all_rel", "item_ctr",
                 "item_age_days", "item_days_since_last", "item_mean_weight")
USER_COUNTS = ("user_history_len", "user_active_7d")
# History length relative to the window's mean over users with history; the share of the
# history in the last 7 days; days since the last interaction.
USER_FEATURES = ("user_history_rel", "user_active_7d_share", "user_days_since_last")
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
    frame = frame.with_columns([
        pl.when(pl.col(c).sum() > 0).then(pl.col(c) * n_items / pl.col(c).sum()).otherwise(0.0).alias(f"{c}_rel")
        for c in ITEM_COUNTS])
    columns = (*ITEM_COUNTS, *(c for c in ITEM_FEATURES if c not in ITEM_COUNTS))
    return frame.select("item_idx", *[pl.col(c).cast(pl.Float32) for c in columns]).sort("item_idx").collect()


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
    length = pl.col("user_history_len")
    mean_length = length.filter(length > 0).mean()
    return (base.join(agg, on="user_idx", how="left")
            .with_columns(pl.col(*USER_COUNTS).fill_null(0))
            .with_columns(pl.when(length > 0).then(length / mean_length).otherwise(0.0).alias("user_history_rel"),
                          pl.when(length > 0).then(pl.col("user_active_7d") / length).alias("user_active_7d_share"))
            .select("user_idx", *[pl.col(c).cast(pl.Float32) for c in (*USER_COUNTS, *USER_FEATURES)])
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
