"""Loading and validating the canonical folder: errors name file, column and an example."""

from datetime import date, datetime, timedelta

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


# --- issue 17: bad weights and timestamps end in a DataValidationError naming file, row and value ---

@pytest.mark.parametrize(("value", "shown"), [("nan", "'?nan'?"), ("inf", "'?inf'?"), ("-2", r"'?-2(\.0)?'?"),
                                              ("1e300", r"'?1e\+?300'?")])  # quoted when read as text
def test_non_finite_or_negative_weight_is_rejected_naming_file_row_and_value(tmp_path, items, value, shown):
    items.write_parquet(tmp_path / "items.parquet")
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp,weight\nu1,a,1767225600,1.0\nu1,b,1767225601,2.5\n"
        f"u2,a,1767225602,{value}\nu2,c,1767225603,1\n")
    with pytest.raises(DataValidationError, match=rf"interactions\.csv: column 'weight' has 1 value\(s\) that are "
                                                  rf"not a finite number >= 0.*e\.g\. {shown} in data row 3 \("):
        load_folder(tmp_path)


def test_null_weight_is_rejected(items, interactions):
    bad = interactions.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("weight"))
                                    .alias("weight"))
    with pytest.raises(DataValidationError, match=r"column 'weight' .* e\.g\. null in data row 5 "):
        Dataset.from_frames(items=items, interactions=bad)


def _with_timestamps(interactions: pl.DataFrame, values: pl.Series) -> pl.DataFrame:
    return interactions.head(values.len()).with_columns(values.alias("timestamp"))


def test_millisecond_timestamps_are_refused_with_a_hint(items, interactions):
    ms = interactions.select(pl.col("timestamp").dt.epoch("ms"))["timestamp"]
    with pytest.raises(DataValidationError, match=r"column 'timestamp' has 6 value\(s\) outside 1970-01-01 \.\. "
                                                  r"2100-01-01, e\.g\. 1767225600000 in data row 1 .*look like "
                                                  r"milliseconds.*divide the column by 1_000"):
        Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, ms))


def test_huge_integer_timestamp_is_refused_not_wrapped(items, interactions):
    # 10**13 seconds * 10**6 overflows int64: it used to wrap silently to the year 1702.
    values = pl.Series([1767225600, 10**13, 1767225700])
    with pytest.raises(DataValidationError, match=r"outside 1970-01-01 \.\. 2100-01-01, e\.g\. 10000000000000 in "
                                                  r"data row 2 "):
        Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, values))


@pytest.mark.parametrize("dtype", [pl.Int8, pl.UInt64])
def test_integer_timestamps_of_any_width_are_range_checked(items, interactions, dtype):
    # An Int8 column cannot hold the bound, a UInt64 one can exceed Int64: both are compared exactly.
    shown = 2**63 + 7 if dtype == pl.UInt64 else -3
    values = pl.Series([5, shown, 7], dtype=dtype)
    with pytest.raises(DataValidationError, match=rf"has 1 value\(s\) outside 1970-01-01 \.\. 2100-01-01, e\.g\. "
                                                  rf"{shown} in data row 2 "):
        Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, values))


def test_far_future_datetime_is_refused(tmp_path, items, interactions):
    bad = interactions.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(datetime(9999, 12, 31))
                                    .otherwise(pl.col("timestamp")).alias("timestamp"))
    items.write_parquet(tmp_path / "items.parquet")
    bad.write_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(DataValidationError, match=r"interactions\.parquet: column 'timestamp' has 1 value\(s\) "
                                                  r"outside .* e\.g\. 9999-12-31 00:00:00 in data row 5 "):
        load_folder(tmp_path)


@pytest.mark.parametrize("value", ["9999-12-31", "1969-07-20 20:17:40"])
def test_out_of_range_text_and_date_timestamps_are_refused(items, interactions, value):
    text = pl.Series(["2026-01-01", value, "2026-01-02"])
    with pytest.raises(DataValidationError, match=rf"e\.g\. '{value}' \(read as .*\) in data row 2 "):
        Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, text))
    dates = text.str.to_date(format="%Y-%m-%d", strict=False).fill_null(date.fromisoformat(value[:10]))
    with pytest.raises(DataValidationError, match=rf"outside 1970-01-01 \.\. 2100-01-01, e\.g\. {value[:10]} "):
        Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, dates))


def test_iso_times_with_and_without_zone_mix_as_utc(items, interactions):
    text = pl.Series(["2026-01-01T10:00:00Z", "2026-01-01 11:00:00", "2026-01-01T14:30:00+02:00",
                      "2026-01-01T09:00Z"])
    data = Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, text))
    assert data.interactions["timestamp"].to_list() == [
        datetime(2026, 1, 1, 9), datetime(2026, 1, 1, 10), datetime(2026, 1, 1, 11), datetime(2026, 1, 1, 12, 30)]
    zone_first = pl.Series(["2026-01-01 11:00:00", "2026-01-01T10:00:00Z"])  # either form may come first
    data = Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, zone_first))
    assert sorted(data.interactions["timestamp"].to_list()) == [datetime(2026, 1, 1, 10), datetime(2026, 1, 1, 11)]


def test_zone_aware_datetime_column_is_converted_to_utc(items, interactions):
    paris = interactions.with_columns(pl.col("timestamp").dt.replace_time_zone("Europe/Paris"))  # 00:00 +01:00
    data = Dataset.from_frames(items=items, interactions=paris)
    assert data.interactions["timestamp"].to_list() == [t - timedelta(hours=1)
                                                        for t in interactions["timestamp"].to_list()]


def test_text_timestamps_without_any_known_format_are_a_validation_error(items, interactions):
    # polars finds no format for the first value and raises its own ComputeError; the loader names the row.
    text = pl.Series(["soon", "later"])
    with pytest.raises(DataValidationError, match=r"2 value\(s\) that are not a date-time, e\.g\. 'soon' in data "
                                                  r"row 1"):
        Dataset.from_frames(items=items, interactions=_with_timestamps(interactions, text))


def test_exact_duplicates_are_dropped_keeping_the_first_and_the_order():
    import numpy as np

    from recsys.dataset import _drop_exact_duplicates

    rng = np.random.default_rng(3)
    n = 5_000
    df = pl.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, 30, n)],
                       "item_id": [f"i{i}" for i in rng.integers(0, 20, n)],
                       "timestamp": rng.integers(0, 5, n), "weight": rng.integers(0, 2, n).astype(np.float32)})
    df = df.with_columns(pl.when(pl.int_range(pl.len()) % 97 == 0).then(None).otherwise(pl.col("weight"))
                         .alias("weight"))  # nulls compare equal, as in unique()
    out = _drop_exact_duplicates(df)
    assert 0 < out.height < df.height
    assert out.equals(df.unique(maintain_order=True))
    distinct = df.unique(maintain_order=True)
    assert _drop_exact_duplicates(distinct) is distinct  # nothing to drop: the same frame, no copy


def test_loading_counts_exact_duplicate_events_and_keeps_time_order(items, interactions):
    doubled = pl.concat([interactions, interactions.head(2)])
    data = Dataset.from_frames(items=items, interactions=doubled)
    assert data.skipped["interactions_exact_duplicates"] == 2
    assert data.interactions.height == interactions.unique().height
    assert data.interactions["timestamp"].is_sorted()


def test_only_scales_past_one_sample_the_fresh_items_shown():
    from recsys.demo_data import SCALED_SHOWN_POOL

    assert DemoSpec().shown_pool == 0 and DemoSpec.scaled(1.0).shown_pool == 0
    assert DemoSpec.scaled(10).shown_pool == SCALED_SHOWN_POOL
    full = generate_demo(DemoSpec(n_users=300, n_items=400, days=20, seed=5))
    pooled = generate_demo(DemoSpec(n_users=300, n_items=400, days=20, seed=5, shown_pool=20))
    assert pooled.items.equals(full.items)
    # A day's sessions (one block at this size) are shown from 20 sampled fresh items, not all of them.
    def most_items_in_a_day(data):
        per_day = data.impressions.group_by(pl.col("timestamp").dt.date()).agg(pl.col("item_id").n_unique())
        return per_day["item_id"].max()

    assert most_items_in_a_day(pooled) <= 20 < most_items_in_a_day(full)


def test_released_events_leave_empty_tables_of_the_same_schema_and_the_counts():
    from recsys.demo_data import DemoSpec, generate_demo

    data = generate_demo(DemoSpec(n_users=60, n_items=60, days=10, seed=4))
    before = data.summary()
    schemas_before = (data.interactions.schema, data.impressions.schema)
    assert not data.events_released
    data.release_events()
    assert data.events_released
    assert data.interactions.height == 0 and data.impressions.height == 0
    assert (data.interactions.schema, data.impressions.schema) == schemas_before
    assert data.summary() == before and before["n_interactions"] > 0 and before["n_impression_rows"] > 0
    assert data.items.height == 60  # the catalog stays

    from recsys.config import PipelineConfig
    from recsys.data_checks import check_trainable
    from training.pipeline import split_windows

    with pytest.raises(ValueError, match="event tables were released"):
        check_trainable(data, PipelineConfig())
    with pytest.raises(ValueError, match="event tables were released"):
        split_windows(data, PipelineConfig())
