"""MIND (``behaviors.tsv`` + ``news.tsv``) -> canonical folder with impressions.

- items: one per ``news.tsv`` row; title, abstract as description, category; the subcategory
  leads the description (``newspolitics. <abstract>``) so the text model reads it.
- impressions: one row per shown news item of each ``behaviors.tsv`` row (``N123-1``: clicked).
- interactions: every click in an impression, at the impression time; plus each user's
  ``history`` column (clicks from before the log), placed just before the log starts in their
  listed order (one second apart), once per (user, news) pair.

News ids used in behaviours but absent from ``news.tsv`` are kept in the event tables and
counted in the report; loading the folder then skips and counts those rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from recsys.errors import DataValidationError
from recsys.importers.delimited import parse_field, read_lines, require_rows, split_fields

TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, TIME_FORMAT)


def read_news(path: Path, encoding: str = "utf-8") -> pl.DataFrame:
    """Canonical items from ``news.tsv`` (8 tab-separated fields per line)."""
    rows = []
    for number, line in read_lines(path, encoding):
        news_id, category, subcategory, title, abstract, *_ = split_fields(path, number, line, "\t", 8)
        if not news_id.strip():
            raise DataValidationError(f"{path}:{number}: empty news id")
        description = ". ".join(p for p in (subcategory.strip(), abstract.strip()) if p)
        rows.append((news_id.strip(), title.strip(), description, category.strip() or "unknown"))
    require_rows(path, len(rows), "news", "A MIND news.tsv has one tab-separated line per news item")
    items = pl.DataFrame(rows, schema={"item_id": pl.String, "title": pl.String, "description": pl.String,
                                       "category": pl.String}, orient="row")
    dupes = items.filter(pl.col("item_id").is_duplicated())
    if dupes.height:
        raise DataValidationError(f"{path}: news id {dupes['item_id'][0]!r} appears {dupes.height} times")
    return items


def read_behaviors(path: Path, encoding: str = "utf-8") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(impressions, history) from ``behaviors.tsv``.

    impressions: impression_id, user_id, timestamp, item_id, clicked (canonical schema).
    history: user_id, item_id, position (0 = oldest), one row per listed history entry.
    """
    imp_ids, imp_users, imp_times, imp_items, imp_clicked = [], [], [], [], []
    hist_users, hist_items, hist_pos = [], [], []
    seen_ids: set[str] = set()
    for number, line in read_lines(path, encoding):
        impression_id, user_id, time, history, shown = split_fields(path, number, line, "\t", 5)
        if impression_id in seen_ids:
            raise DataValidationError(f"{path}:{number}: impression id {impression_id!r} repeats an earlier line")
        seen_ids.add(impression_id)
        if not user_id.strip():
            raise DataValidationError(f"{path}:{number}: empty user id")
        when = parse_field(path, number, "time", time.strip(), _parse_time)
        for position, news in enumerate(history.split()):
            hist_users.append(user_id)
            hist_items.append(news)
            hist_pos.append(position)
        tokens = shown.split()
        if not tokens:
            raise DataValidationError(f"{path}:{number}: the impressions field is empty")
        for token in tokens:
            news, sep, label = token.rpartition("-")
            if not sep or not news or label not in ("0", "1"):
                raise DataValidationError(
                    f"{path}:{number}: impression entry {token!r} is not <news id>-<0|1>")
            imp_ids.append(impression_id)
            imp_users.append(user_id)
            imp_times.append(when)
            imp_items.append(news)
            imp_clicked.append(int(label))
    require_rows(path, len(seen_ids), "impressions", "A MIND behaviors.tsv has one tab-separated line per impression")
    impressions = pl.DataFrame({
        "impression_id": pl.Series(imp_ids, dtype=pl.String), "user_id": pl.Series(imp_users, dtype=pl.String),
        "timestamp": pl.Series(imp_times, dtype=pl.Datetime("us")), "item_id": pl.Series(imp_items, dtype=pl.String),
        "clicked": pl.Series(imp_clicked, dtype=pl.Int8),
    })
    history = pl.DataFrame({"user_id": pl.Series(hist_users, dtype=pl.String),
                            "item_id": pl.Series(hist_items, dtype=pl.String),
                            "position": pl.Series(hist_pos, dtype=pl.Int32)})
    return impressions, history


def import_mind(src: Path, *, encoding: str = "utf-8") -> tuple[dict[str, pl.DataFrame], dict]:
    """Canonical tables (items, interactions, impressions) and a report from a MIND folder."""
    src = Path(src)
    for name in ("behaviors.tsv", "news.tsv"):
        if not (src / name).exists():
            raise DataValidationError(f"{src}: {name} not found; a MIND folder has behaviors.tsv and news.tsv")
    items = read_news(src / "news.tsv", encoding)
    impressions, history = read_behaviors(src / "behaviors.tsv", encoding)
    log_start = impressions["timestamp"].min()
    history = (history.unique(["user_id", "item_id"], keep="first", maintain_order=True)
               .with_columns((pl.col("position") - pl.col("position").max().over("user_id") - 1).alias("offset")))
    history_events = history.select(
        "user_id", "item_id",
        (pl.lit(log_start) + pl.duration(seconds=pl.col("offset"))).alias("timestamp"),
        pl.lit(1.0, dtype=pl.Float32).alias("weight"))
    clicks = impressions.filter(pl.col("clicked") == 1).select(
        "user_id", "item_id", "timestamp", pl.lit(1.0, dtype=pl.Float32).alias("weight"))
    interactions = pl.concat([history_events, clicks]).sort("timestamp", maintain_order=True)
    if interactions.height == 0:
        raise DataValidationError(
            f"{src / 'behaviors.tsv'}: no impression has a click (N...-1) and no line lists a history: the import "
            f"would have 0 interactions from {impressions.height} shown item(s). Check the impressions column "
            "(clicks end in -1) or use the full behaviors file."
        )
    known = items["item_id"].implode()
    report = {
        "layout": "mind", "source": str(src), "n_items": items.height,
        "n_impressions": impressions["impression_id"].n_unique(), "n_impression_rows": impressions.height,
        "n_interactions": interactions.height, "n_history_interactions": history_events.height,
        "n_click_interactions": clicks.height, "n_users": interactions["user_id"].n_unique(),
        "history_placed_before": str(log_start - timedelta(seconds=1)),
        "interactions_without_news_row": interactions.filter(~pl.col("item_id").is_in(known)).height,
        "impression_rows_without_news_row": impressions.filter(~pl.col("item_id").is_in(known)).height,
    }
    return {"items": items, "interactions": interactions, "impressions": impressions}, report
