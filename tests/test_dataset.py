"""Loading and validating the canonical folder: errors name file, column and an example."""

import polars as pl
import pytest

from recsys.dataset import Dataset, load_folder
from recsys.demo_data import DemoSpec, generate_demo
from recsys.errors import DataValidationError


def test_round_trip_through_parquet_and_csv(tmp_path, items, interactions):
    items.write_parquet(tmp_path / "items.parquet")
    interactions.with_columns(pl.col("timestamp").dt.epoch("s")).write_csv(tmp_path / "interactions.csv")
    data = load_folder(tmp_path)
    assert data.items["item_id"].to_list() == ["a", "b", "c", "d"]
    assert data.interactions.schema["timestamp"] == pl.Datetime("us")
    assert data.interactions["timestamp"].to_list() == interactions["timestamp"].to_list()
    assert data.interactions["weight"].dtype == pl.Float32


def test_missing_column_names_file_and_column(tmp_path, items, interactions):
    items.write_parquet(tmp_path / "items.parquet")
    interactions.drop("item_id").write_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(DataValidationError, match=r"interactions\.parquet: missing column\(s\) \['item_id'\]"):
        load_folder(tmp_path)


def test_missing_table_is_reported(tmp_path, items):
    items.write_parquet(tmp_path / "items.parquet")
    with pytest.raises(DataValidationError, match="no interactions.parquet or interactions.csv"):
        load_folder(tmp_path)


def test_duplicate_item_ids_are_rejected_with_an_example(items, interactions):
    doubled = pl.concat([items, items.head(1)])
    with pytest.raises(DataValidationError, match="duplicated id.*'a'"):
        Dataset.from_frames(items=doubled, interactions=interactions)


def test_wrong_weight_type_is_rejected(items, interactions):
    bad = interactions.with_columns(pl.lit("high").alias("weight"))
    with pytest.raises(DataValidationError, match="column 'weight' must be Float32.*'high'"):
        Dataset.from_frames(items=items, interactions=bad)


def test_unparseable_timestamp_is_rejected(items, interactions):
    bad = interactions.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%d"))
    bad = bad.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("yesterday"))
                           .otherwise(pl.col("timestamp")).alias("timestamp"))
    with pytest.raises(DataValidationError, match="not a date-time, e.g. 'yesterday'"):
        Dataset.from_frames(items=items, interactions=bad)


def test_interactions_with_unknown_items_are_skipped_and_counted(items, interactions):
    extra = interactions.head(2).with_columns(pl.lit("zzz").alias("item_id"))
    data = Dataset.from_frames(items=items, interactions=pl.concat([interactions, extra]))
    assert data.interactions.height == interactions.height
    assert data.skipped["interactions_with_unknown_item"] == 2


def test_clicked_must_be_binary(items, interactions):
    impressions = interactions.select("user_id", "item_id", "timestamp").with_columns(
        pl.lit("s1").alias("impression_id"), pl.lit(2).alias("clicked"))
    with pytest.raises(DataValidationError, match="'clicked' must be 0 or 1"):
        Dataset.from_frames(items=items, interactions=interactions, impressions=impressions)


def test_demo_is_deterministic_and_has_cold_items():
    spec = DemoSpec(n_users=80, n_items=120, days=20, seed=5)
    a, b = generate_demo(spec), generate_demo(spec)
    assert a.interactions.equals(b.interactions) and a.items.equals(b.items)
    assert a.impressions["clicked"].mean() > 0.05
    # Items first clicked in the last fifth of the period exist: the cold-start case.
    cutoff = a.interactions["timestamp"].min() + (a.interactions["timestamp"].max()
                                                  - a.interactions["timestamp"].min()) * 0.8
    first_seen = a.interactions.group_by("item_id").agg(pl.col("timestamp").min())
    assert first_seen.filter(pl.col("timestamp") >= cutoff).height > 0
