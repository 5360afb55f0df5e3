"""Loading and validating the canonical input folder.

A folder holds ``items.parquet|csv``, ``interactions.parquet|csv`` and optionally
``impressions.parquet|csv``. Columns and types are in :mod:`recsys.schemas`. Rows that are
safe to skip (an interaction whose item has no text row, a row with a null id, an exact
duplicate row) are skipped and counted in ``Dataset.skipped``; anything else that is wrong
raises :class:`DataValidationError` naming the file, the column and an example.

Interactions and impressions come back sorted by timestamp with a stable sort: rows at the same
time keep their order in the file. Downstream "time order" means (timestamp, row position).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys import schemas
from recsys.errors import DataValidationError

log = logging.getLogger(__name__)


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
            bad = impressions.filter(~pl.col("clicked").is_in([0, 1]))
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

    def summary(self) -> dict[str, int]:
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
    if dtype == pl.String and not (series.dtype == pl.String or series.dtype.is_integer()):
        raise DataValidationError(
            f"{name}: column {column!r} must be text (or integer ids), got {series.dtype} "
            f"(example: {series.drop_nulls().head(1).to_list()})"
        )
    try:
        return series.cast(dtype, strict=True)
    except Exception as exc:
        example = series.drop_nulls().head(3).to_list()
        raise DataValidationError(
            f"{name}: column {column!r} must be {dtype}, got {series.dtype} (examples: {example})"
        ) from exc


def _to_datetime(series: pl.Series, name: str) -> pl.Series:
    if series.dtype == pl.Datetime or isinstance(series.dtype, pl.Datetime):
        return series.dt.cast_time_unit("us").dt.replace_time_zone(None)
    if series.dtype == pl.Date:
        return series.cast(pl.Datetime("us"))
    if series.dtype.is_integer():
        return (series.cast(pl.Int64) * 1_000_000).cast(pl.Datetime("us"))
    if series.dtype == pl.String:
        parsed = series.str.to_datetime(strict=False, time_unit="us")
        bad = series.filter(parsed.is_null() & series.is_not_null())
        if bad.len() == 0:
            return parsed.dt.replace_time_zone(None) if parsed.dtype.time_zone else parsed
        raise DataValidationError(
            f"{name}: column 'timestamp' has {bad.len()} value(s) that are not a date-time, "
            f"e.g. {bad[0]!r}. Use ISO-8601 text, a datetime column or integer unix seconds."
        )
    raise DataValidationError(
        f"{name}: column 'timestamp' must be a datetime or integer unix seconds, got {series.dtype}"
    )


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
    out = pl.DataFrame(columns)
    n = out.height
    out = out.drop_nulls(["user_id", "item_id", "timestamp"])
    skipped[f"{kind}_with_null_id_or_time"] = n - out.height
    n = out.height
    out = out.filter(pl.col("item_id").is_in(items["item_id"].implode()))
    skipped[f"{kind}_with_unknown_item"] = n - out.height
    n = out.height
    out = out.unique(maintain_order=True)
    skipped[f"{kind}_exact_duplicates"] = n - out.height
    if out.height == 0:
        raise DataValidationError(f"{name}: no usable rows left after validation (skipped: {skipped})")
    return out.sort("timestamp", maintain_order=True)
