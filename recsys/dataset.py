"""Loading and validating the canonical input folder.

A folder holds ``items.parquet|csv``, ``interactions.parquet|csv`` and optionally
``impressions.parquet|csv``. Columns and types are in :mod:`recsys.schemas`. Rows that are
safe to skip (an interaction whose item has no text row, a row with a null id, an exact
duplicate row) are skipped and counted in ``Dataset.skipped``; anything else that is wrong
raises :class:`DataValidationError` naming the file, the column and an example.

Interactions and impressions come back sorted by timestamp with a stable sort: rows at the same
time keep their order in the file. Downstream "time order" means (timestamp, row position).

Timestamps become naive ``Datetime("us")`` in UTC and must lie in 1970-01-01 .. 2100-01-01 (the
importers' range; a placeholder such as 9999-12-31 is refused, not carried into the split):

- integers are unix seconds; the range is checked before they are scaled, so nothing wraps,
  and values that look like milliseconds (or micro-, nanoseconds) say so;
- datetime columns with a time zone are converted to UTC; date columns are midnight;
- ISO-8601 text with a zone (``Z``, ``+01:00``) is converted to UTC and text without one is
  taken as UTC already, so a column may mix the two (a log written partly with ``Z`` loads
  as one clock instead of failing on the rows of the other form).

Interaction weights must be finite and >= 0. Errors about a value name its 1-based data row
(the header is not counted; for a frame, row 1 is its first row).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from recsys import schemas
from recsys.errors import DataValidationError
from recsys.streamed import all_in

log = logging.getLogger(__name__)

# Plausible log times, as the importers check: [1970-01-01, 2100-01-01).
TIME_RANGE = "1970-01-01 .. 2100-01-01"
_MAX_SECONDS = 4_102_444_800  # 2100-01-01 in unix seconds (exclusive)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000, "d": 1 / 86_400}
_UNIT_NAMES = (("milliseconds", 1_000), ("microseconds", 1_000_000), ("nanoseconds", 1_000_000_000))
# A zone after a clock time: "...10:00Z", "...10:00:00.5+01:00", "...10:00 -0500".
_ZONE_SUFFIX = r"(?i):\d{2}(?:[.,]\d+)?\s*(?:z|[+-]\d{2}(?::?\d{2})?)$"


@dataclass(frozen=True)
class Dataset:
    """Validated canonical tables. ``impressions`` is None when the data has no exposure log."""

    items: pl.DataFrame
    interactions: pl.DataFrame
    impressions: pl.DataFrame | None = None
    source: str = "unknown"
    skipped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_frames(cls, *, items: pl.DataFrame, interactions: pl.DataFrame,
                    impressions: pl.DataFrame | None = None, source: str = "unknown",
                    file_names: dict[str, str] | None = None) -> Dataset:
        """Validate and coerce raw frames; ``file_names`` maps table -> file for messages."""
        names = {t: f"{source}:{t}" for t in ("items", "interactions", "impressions")}
        names.update(file_names or {})
        skipped: dict[str, int] = {}
        items = _validate_items(items, names["items"])
        interactions = _validate_events(interactions, names["interactions"], schemas.INTERACTIONS,
                                        schemas.INTERACTIONS_REQUIRED, items, skipped, "interactions")
        if impressions is not None:
            impressions = _validate_events(impressions, names["impressions"], schemas.IMPRESSIONS,
                                           schemas.IMPRESSIONS_REQUIRED, items, skipped, "impressions")
            bad = impressions.filter(~pl.col("clicked").fill_null(-1).is_in([0, 1]))
            if bad.height:
                raise DataValidationError(
                    f"{names['impressions']}: column 'clicked' must be 0 or 1; found {bad.height} rows "
                    f"like {bad.row(0, named=True)}. Map clicks to 1 and non-clicks to 0."
                )
        for reason, count in skipped.items():
            if count:
                log.warning("%s: skipped %d %s", source, count, reason.replace("_", " "))
        return cls(items=items, interactions=interactions, impressions=impressions,
                   source=source, skipped=skipped)

    def release_events(self) -> None:
        """Replace the interaction and impression tables by empty ones of the same schema, keeping
        ``summary()``'s counts: for a caller that has cut its windows and holds nothing else of
        the tables (``recsys train`` after the split; gigabytes at scale). The dataclass stays
        frozen to every other writer."""
        counts = self.summary()
        object.__setattr__(self, "_counts", counts)
        object.__setattr__(self, "interactions", self.interactions.clear())
        if self.impressions is not None:
            object.__setattr__(self, "impressions", self.impressions.clear())

    @property
    def events_released(self) -> bool:
        return hasattr(self, "_counts")

    def summary(self) -> dict[str, int]:
        if self.events_released:
            return dict(self._counts)
        out = {
            "n_items": self.items.height,
            "n_users": self.interactions["user_id"].n_unique(),
            "n_interactions": self.interactions.height,
            "n_impression_rows": 0 if self.impressions is None else self.impressions.height,
        }
        out.update({f"skipped_{k}": v for k, v in self.skipped.items()})
        return out


def _read_table(folder: Path, stem: str, required: bool) -> tuple[pl.DataFrame | None, str]:
    for suffix in (".parquet", ".csv"):
        path = folder / f"{stem}{suffix}"
        if path.exists():
            try:
                if suffix == ".parquet":
                    return pl.read_parquet(path), str(path)
                return pl.read_csv(path, infer_schema_length=10_000), str(path)
            except Exception as exc:  # polars raises many types; re-raise with the file named
                raise DataValidationError(f"{path}: could not be read as {suffix[1:]}: {exc}") from exc
    if required:
        raise DataValidationError(
            f"{folder}: no {stem}.parquet or {stem}.csv found. A data folder needs items and "
            f"interactions tables (see README, 'Data formats')."
        )
    return None, ""


def load_folder(folder: str | Path) -> Dataset:
    """Load and validate a canonical data folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataValidationError(f"data folder {folder} does not exist or is not a folder")
    items, items_name = _read_table(folder, "items", required=True)
    interactions, inter_name = _read_table(folder, "interactions", required=True)
    impressions, imp_name = _read_table(folder, "impressions", required=False)
    return Dataset.from_frames(
        items=items, interactions=interactions, impressions=impressions, source=folder.name,
        file_names={"items": items_name, "interactions": inter_name, "impressions": imp_name},
    )


def read_items_file(path: str | Path) -> pl.DataFrame:
    """A standalone items table (Parquet or CSV, canonical items schema), validated."""
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"items file {path} does not exist")
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=10_000)
    except Exception as exc:  # polars raises many types; re-raise with the file named
        raise DataValidationError(f"{path}: could not be read: {exc}") from exc
    return _validate_items(frame, str(path))


def _require_columns(df: pl.DataFrame, name: str, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{name}: missing column(s) {missing}; found columns {df.columns}. "
            f"Rename or add them (see README, 'Data formats')."
        )


def _cast_column(df: pl.DataFrame, name: str, column: str, dtype: pl.DataType) -> pl.Series:
    series = df[column]
    if column == "timestamp":
        return _to_datetime(series, name)
    if series.dtype == pl.Null:  # an all-null column read without a type: nulls of the right type
        return series.cast(dtype)
    if dtype == pl.String and isinstance(series.dtype, pl.Categorical | pl.Enum):
        return series.cast(pl.String)
    if dtype == pl.String and not (series.dtype == pl.String or series.dtype.is_integer()):
        raise DataValidationError(
            f"{name}: column {column!r} must be text (or integer ids), got {series.dtype} "
            f"(example: {_examples(series, 1)})"
        )
    if series.dtype.is_temporal():  # a time is no weight or click flag, whatever its number
        raise DataValidationError(f"{name}: column {column!r} must be {dtype}, got {series.dtype} "
                                  f"(examples: {_examples(series, 3)})")
    try:
        return series.cast(dtype, strict=True)
    except Exception as exc:
        raise DataValidationError(
            f"{name}: column {column!r} must be {dtype}, got {series.dtype} (examples: {_examples(series, 3)})"
        ) from exc


def _examples(series: pl.Series, k: int) -> list:
    """Up to ``k`` non-null values for a message; times as their stored integers (a time past
    year 9999 has no Python value)."""
    head = series.drop_nulls().head(k)
    return head.to_physical().to_list() if head.dtype.is_temporal() else head.to_list()


def _row(index: int) -> str:
    return f"data row {index + 1} (1-based, header not counted)"


def _to_datetime(series: pl.Series, name: str) -> pl.Series:
    """``series`` as naive Datetime("us") in UTC, nulls kept; values outside ``TIME_RANGE`` raise."""
    dtype = series.dtype
    if dtype == pl.Null:
        return series.cast(pl.Datetime("us"))
    if isinstance(dtype, pl.Datetime):
        _check_time_range(series, series.to_physical(), _PER_SECOND[dtype.time_unit], name)
        out = series.dt.cast_time_unit("us")
        return out.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else out
    if dtype == pl.Date:
        _check_time_range(series, series.to_physical(), _PER_SECOND["d"], name)
        return series.cast(pl.Datetime("us"))
    if dtype.is_integer():
        _check_time_range(series, series, 1, name, seconds=True)  # before scaling to microseconds: nothing wraps
        return (series.cast(pl.Int64) * 1_000_000).cast(pl.Datetime("us"))
    if dtype == pl.String:
        parsed = _parse_text_times(series)
        bad = (parsed.is_null() & series.is_not_null()).arg_true()
        if bad.len():
            raise DataValidationError(
                f"{name}: column 'timestamp' has {bad.len()} value(s) that are not a date-time, "
                f"e.g. {series[bad[0]]!r} in {_row(bad[0])}. Use ISO-8601 text, a datetime column or integer "
                "unix seconds."
            )
        _check_time_range(series, parsed.to_physical(), _PER_SECOND["us"], name, text=True)
        return parsed
    raise DataValidationError(
        f"{name}: column 'timestamp' must be a datetime or integer unix seconds, got {series.dtype} "
        f"(example: {_examples(series, 1)}). Convert it to integer unix seconds or a datetime."
    )


def _check_time_range(series: pl.Series, physical: pl.Series, per_second: float, name: str, *,
                      seconds: bool = False, text: bool = False) -> None:
    """Raise unless every non-null ``physical`` value (``per_second`` units a second; for dates
    1/86400) lies in ``TIME_RANGE``. The extremes are compared first, as Python numbers (exact:
    no integer type can overflow); only a column with a value outside is scanned for its rows,
    as 64-bit integers (a value too large for them is outside)."""
    low, high = physical.min(), physical.max()
    if low is None or (low >= 0 and high < _MAX_SECONDS * per_second):
        return
    bound = math.ceil(_MAX_SECONDS * per_second)  # the first integer outside (exact for every unit)
    values = physical.cast(pl.Int64, strict=False)
    outside = ((values < 0) | (values >= bound) | (values.is_null() & physical.is_not_null())).fill_null(False)
    if not outside.any():
        return
    bad = outside.arg_true()
    index = int(bad[0])
    raw = physical[index]  # a plain number: converting a far-off datetime to Python would fail
    if seconds:
        shown = f"{raw}"
    elif text:
        shown = f"{series[index]!r} (read as {_time_text(raw, per_second)})"
    else:
        shown = _time_text(raw, per_second)
    message = (f"{name}: column 'timestamp' has {bad.len()} value(s) outside {TIME_RANGE}, e.g. {shown} in "
               f"{_row(index)}")
    if seconds:
        for unit, scale in _UNIT_NAMES:
            if raw >= 100_000_000_000 and 0 <= raw // scale < _MAX_SECONDS:
                raise DataValidationError(
                    f"{message}. Integer timestamps are unix seconds; these look like {unit} since 1970 ({raw} "
                    f"would be {_time_text(raw, scale)}): divide the column by {scale:_} to get seconds."
                )
        raise DataValidationError(f"{message} as unix seconds. Integer timestamps must be unix seconds "
                                  f"between 0 and {_MAX_SECONDS:_}; fix or drop those rows.")
    raise DataValidationError(f"{message}. A log time must lie in that range (a placeholder date is not "
                              "one); fix or drop those rows.")


def _time_text(value: int, per_second: float) -> str:
    """The time ``value`` units after 1970 (``per_second`` units a second), or words past year 9999."""
    try:
        return str(datetime(1970, 1, 1) + timedelta(seconds=value / per_second))
    except OverflowError:
        return f"{value / per_second:.3g} s from 1970, out of any calendar"


def _parse_text_times(series: pl.Series) -> pl.Series:
    """Text -> naive Datetime("us") in UTC (null where it is not a date-time).

    Values with a zone suffix and values without are parsed apart (polars infers one format per
    call), zoned ones converted to UTC; what polars cannot parse falls back to
    ``datetime.fromisoformat``, once per distinct value.
    """
    text = series.str.strip_chars()
    zoned = text.str.contains(_ZONE_SUFFIX).fill_null(False)
    parts = [_polars_times(text.zip_with(zoned, pl.Series([None] * text.len(), dtype=pl.String))),
             _polars_times(text.zip_with(~zoned, pl.Series([None] * text.len(), dtype=pl.String)))]
    parsed = pl.select(pl.coalesce(parts[0].alias("a"), parts[1].alias("b"))).to_series()
    missing = text.filter(parsed.is_null() & text.is_not_null()).unique()
    if missing.len():
        values = [_iso_time(v) for v in missing.to_list()]
        known = [(k, v) for k, v in zip(missing.to_list(), values, strict=True) if v is not None]
        if known:
            fallback = text.replace_strict([k for k, _ in known], [v for _, v in known], default=None,
                                           return_dtype=pl.Datetime("us"))
            parsed = pl.select(pl.coalesce(parsed.alias("a"), fallback.alias("b"))).to_series()
    return parsed.alias(series.name)


def _polars_times(text: pl.Series) -> pl.Series:
    try:
        out = text.str.to_datetime(strict=False, time_unit="us")
    except pl.exceptions.PolarsError:  # no format fits the first values: leave them to the fallback
        return pl.Series([None] * text.len(), dtype=pl.Datetime("us"))
    return out.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if out.dtype.time_zone else out


def _iso_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def _validate_items(items: pl.DataFrame, name: str) -> pl.DataFrame:
    _require_columns(items, name, schemas.ITEMS_REQUIRED)
    columns = {}
    for column, dtype in schemas.ITEMS.items():
        if column in items.columns:
            columns[column] = _cast_column(items, name, column, dtype)
        else:
            columns[column] = pl.Series(column, [None] * items.height, dtype=dtype)
    out = pl.DataFrame(columns).with_columns(
        pl.col("title").fill_null(""), pl.col("description").fill_null(""),
        pl.col("category").fill_null("unknown"),
    )
    null_ids = out.filter(pl.col("item_id").is_null()).height
    if null_ids:
        raise DataValidationError(f"{name}: column 'item_id' has {null_ids} null value(s); every item needs an id")
    dupes = out.filter(pl.col("item_id").is_duplicated())
    if dupes.height:
        raise DataValidationError(
            f"{name}: column 'item_id' has {dupes['item_id'].n_unique()} duplicated id(s), e.g. "
            f"{dupes['item_id'][0]!r}. Each item must appear once; merge or drop the duplicates."
        )
    return out


def _validate_events(df: pl.DataFrame, name: str, schema: dict, required: tuple[str, ...],
                     items: pl.DataFrame, skipped: dict[str, int], kind: str) -> pl.DataFrame:
    _require_columns(df, name, required)
    columns = {}
    for column, dtype in schema.items():
        if column in df.columns:
            columns[column] = _cast_column(df, name, column, dtype)
        elif column == "weight":
            columns[column] = pl.Series(column, [1.0] * df.height, dtype=pl.Float32)
    if "weight" in df.columns:
        _check_weights(df["weight"], columns["weight"], name)
    out = pl.DataFrame(columns)
    del columns
    # Each step copies the table only when it drops something (tens of millions of impression
    # rows at scale: every copy is gigabytes).
    n = out.height
    if sum(out[c].null_count() for c in ("user_id", "item_id", "timestamp")):
        out = out.drop_nulls(["user_id", "item_id", "timestamp"])
    skipped[f"{kind}_with_null_id_or_time"] = n - out.height
    n = out.height
    if not all_in(out["item_id"], items["item_id"]):  # the usual answer is yes: no per-row mask then
        out = out.filter(pl.col("item_id").is_in(items["item_id"].implode()))
    skipped[f"{kind}_with_unknown_item"] = n - out.height
    n = out.height
    out = _drop_exact_duplicates(out)
    skipped[f"{kind}_exact_duplicates"] = n - out.height
    if out.height == 0:
        raise DataValidationError(f"{name}: no usable rows left after validation (skipped: {skipped})")
    return out if out["timestamp"].is_sorted() else out.sort("timestamp", maintain_order=True)


def _drop_exact_duplicates(df: pl.DataFrame) -> pl.DataFrame:
    """``df.unique(maintain_order=True)`` (the first of equal rows kept, order kept) without hashing
    whole rows into a table: rows whose 64-bit row hash is unique cannot have a duplicate, so the
    exact comparison runs on the rows that share a hash only (equal rows share one)."""
    row = pl.struct(df.columns)
    hashes = df.select(row.hash(seed=0)).to_series()
    # A sort finds repeated hashes several times faster than a hash table of tens of millions
    # of them (is_duplicated), and the usual answer is "none".
    ordered = hashes.sort()
    repeated = ordered.filter(ordered == ordered.shift(1))
    del ordered
    if repeated.len() == 0:
        return df
    shared = hashes.is_in(repeated.unique().implode())
    suspects = df.with_row_index("_row").filter(shared)
    repeated = suspects.filter(~row.is_first_distinct())["_row"]
    if repeated.len() == 0:
        return df
    return df.with_row_index("_row").filter(~pl.col("_row").is_in(repeated.implode())).drop("_row")


def _check_weights(raw: pl.Series, weights: pl.Series, name: str) -> None:
    """Weights must be finite numbers >= 0 (ALS and BPR fail on anything else, long after loading)."""
    bad = (weights.is_null() | weights.is_nan() | weights.is_infinite() | (weights < 0)).fill_null(True).arg_true()
    if bad.len():
        value = raw[bad[0]]
        raise DataValidationError(
            f"{name}: column 'weight' has {bad.len()} value(s) that are not a finite number >= 0 (as a 32-bit "
            f"float), e.g. {'null' if value is None else repr(value)} in {_row(bad[0])}. Weights must be finite "
            "and non-negative (1 per interaction, a count or a rating); fix or drop those rows."
        )
