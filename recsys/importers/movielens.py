"""MovieLens -> canonical folder.

Layouts (detected from the files present in SRC):
- 100K: ``u.data`` (tab: user, item, rating, unix time), ``u.item`` (pipe, latin-1: id, title,
  dates, URL, 19 genre flags), ``u.genre`` (optional; genre names).
- ml-latest / 20M / 25M: ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv``
  (movieId,title,genres with ``|``), optional ``links.csv`` (movieId,imdbId,tmdbId) and
  ``tags.csv`` (userId,movieId,tag,timestamp): an item's most used tags join its text.

Items: ``category`` = genres joined with ``|``; ``title`` = the title; ``description`` = the
description files' texts (``--descriptions``, matched by id, IMDb id or exact title) plus tags.
Interactions: one row per rating, ``weight`` = the rating.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from recsys.errors import DataValidationError
from recsys.importers.delimited import (
    csv_rows,
    ends_mid_line,
    parse_field,
    read_lines,
    require_rows,
    split_fields,
    unix_seconds,
)

log = logging.getLogger(__name__)

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
ID_COLUMNS = ("movie_id", "movieId", "item_id", "id")
IMDB_COLUMNS = ("imdb_id", "imdbId")
TITLE_COLUMNS = ("movie_title", "title")
TEXT_COLUMNS = ("description", "wiki_summary", "plot", "summary", "overview", "text")
MAX_TAGS = 10
# MovieLens has collected ratings since 1995 (ml-latest starts 1995-01-09): an earlier time is a
# damaged value, typically the timestamp of a file cut off mid-line.
FIRST_RATING_SECONDS = 788_918_400  # 1995-01-01


def import_movielens(src: Path, *, descriptions: list[Path] = (), encoding: str | None = None,
                     text_column: str | None = None) -> tuple[dict[str, pl.DataFrame], dict]:
    """Read a MovieLens folder; return canonical tables (items, interactions) and a report."""
    src = Path(src)
    if (src / "u.data").exists():
        items, interactions, imdb = _read_100k(src, encoding or "latin-1"), _read_100k_ratings(src), None
        layout = "ml-100k"
    elif (src / "ratings.csv").exists():
        items, interactions, imdb = _read_latest(src, encoding or "utf-8")
        layout = "ml-latest"
    else:
        raise DataValidationError(
            f"{src}: not a MovieLens folder: expected u.data + u.item (100K) or ratings.csv + movies.csv (ml-latest)"
        )
    unknown = interactions.filter(~pl.col("item_id").is_in(items["item_id"].implode()))
    if unknown.height:
        raise DataValidationError(
            f"{src}: {unknown.height} rating(s) name movies missing from the movie file, e.g. item "
            f"{unknown['item_id'][0]!r}; the folder is incomplete"
        )
    report = {"layout": layout, "source": str(src), "n_items": items.height, "n_interactions": interactions.height,
              "n_users": interactions["user_id"].n_unique(), "descriptions": {}}
    texts = []
    for path in descriptions:
        matched, text = _read_descriptions(Path(path), items, imdb, text_column)
        report["descriptions"][str(path)] = {"items_matched": matched, "items_without_text": items.height - matched}
        texts.append(text)
    if layout == "ml-latest" and (src / "tags.csv").exists():
        texts.append(_read_tags(src / "tags.csv", encoding or "utf-8"))
    items = _with_description(items, texts)
    report["items_with_description"] = int((items["description"].str.len_chars() > 0).sum())
    return {"items": items, "interactions": interactions}, report


def _read_100k_ratings(src: Path) -> pl.DataFrame:
    path = src / "u.data"
    rows = []
    for number, line in read_lines(path, "ascii"):
        user, item, rating, ts = split_fields(path, number, line.strip(), "\t", 4)
        rows.append((user, item, parse_field(path, number, "rating", rating, float), _rating_time(path, number, ts)))
    require_rows(path, len(rows), "ratings", "u.data has one tab-separated line per rating: user, item, rating, time")
    return _ratings_frame(rows)


def _rating_time(path: Path, number: int, value: str) -> int:
    """Unix seconds of a rating, 1995..2100; a damaged value names the line (and a cut-off file)."""
    try:
        return unix_seconds(value, since=FIRST_RATING_SECONDS)
    except ValueError as exc:
        cut = (" The file ends mid-line here: it looks cut off; re-download or re-extract it."
               if ends_mid_line(path) and number == _last_line_number(path) else "")
        raise DataValidationError(f"{path}:{number}: column 'timestamp': cannot parse {value!r} ({exc}; "
                                  f"MovieLens ratings start in 1995).{cut}") from exc


def _last_line_number(path: Path) -> int:
    return Path(path).read_bytes().count(b"\n") + 1


def _ratings_frame(rows: list[tuple]) -> pl.DataFrame:
    users, items, ratings, seconds = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pl.DataFrame({
        "user_id": pl.Series(users, dtype=pl.String),
        "item_id": pl.Series(items, dtype=pl.String),
        "timestamp": (pl.Series(seconds, dtype=pl.Int64) * 1_000_000).cast(pl.Datetime("us")),
        "weight": pl.Series(ratings, dtype=pl.Float32),
    })


def _read_100k(src: Path, encoding: str) -> pl.DataFrame:
    genres = list(ML100K_GENRES)
    if (src / "u.genre").exists():
        genre_path = src / "u.genre"
        pairs = [(name, parse_field(genre_path, n, "genre number", index, int))
                 for n, line in read_lines(genre_path, encoding)
                 for name, index in [split_fields(genre_path, n, line, "|", 2)]]
        require_rows(genre_path, len(pairs), "genres", "u.genre has one line per genre: name|number")
        genres = [name for name, _ in sorted(pairs, key=lambda p: p[1])]
    path = src / "u.item"
    ids, titles, categories = [], [], []
    for number, line in read_lines(path, encoding):
        fields = split_fields(path, number, line, "|", 5 + len(genres))
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataValidationError(f"{path}:{number}: genre flags must be 0 or 1, found {flags}")
        ids.append(fields[0])
        titles.append(fields[1].strip())
        categories.append("|".join(g for g, f in zip(genres, flags, strict=True) if f == "1" and g != "unknown"))
    require_rows(path, len(ids), "movies", "u.item has one pipe-separated line per movie")
    return pl.DataFrame({"item_id": ids, "title": titles, "category": categories}).with_columns(
        pl.when(pl.col("category") == "").then(pl.lit("unknown")).otherwise(pl.col("category")).alias("category"))


def _read_latest(src: Path, encoding: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    path = src / "ratings.csv"
    rows = [(u, i, parse_field(path, n, "rating", r, float), _rating_time(path, n, t))
            for n, (u, i, r, t) in csv_rows(path, encoding, ("userId", "movieId", "rating", "timestamp"))]
    require_rows(path, len(rows), "ratings", "ratings.csv has a header and one line per rating",
                 header=True)
    interactions = _ratings_frame(rows)
    movies = src / "movies.csv"
    if not movies.exists():
        raise DataValidationError(f"{src}: ratings.csv needs movies.csv beside it")
    items = [(m, t.strip(), "unknown" if g == "(no genres listed)" else g)
             for _, (m, t, g) in csv_rows(movies, encoding, ("movieId", "title", "genres"))]
    require_rows(movies, len(items), "movies", "movies.csv has a header and one line per movie",
                 header=True)
    items = pl.DataFrame(items, schema={"item_id": pl.String, "title": pl.String, "category": pl.String}, orient="row")
    imdb = None
    if (src / "links.csv").exists():
        links = [(m, i) for _, (m, i, *_) in csv_rows(src / "links.csv", encoding, ("movieId", "imdbId"))]
        imdb = pl.DataFrame(links, schema={"item_id": pl.String, "imdb_id": pl.String}, orient="row")
    return items, interactions, imdb


def _read_tags(path: Path, encoding: str) -> pl.DataFrame:
    """(item_id, text) with an item's most used tags: ``Tags: a, b, c``."""
    rows = [(m, tag.strip().lower()) for _, (_, m, tag, *_) in csv_rows(path, encoding, ("userId", "movieId", "tag"))]
    tags = pl.DataFrame(rows, schema={"item_id": pl.String, "tag": pl.String}, orient="row").filter(pl.col("tag") != "")
    return (tags.group_by("item_id", "tag").len().sort(["item_id", "len", "tag"], descending=[False, True, False])
            .group_by("item_id", maintain_order=True).agg(pl.col("tag").head(MAX_TAGS))
            .select("item_id", (pl.lit("Tags: ") + pl.col("tag").list.join(", ")).alias("text")))


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((c for c in wanted if c in columns), None)


def _read_descriptions(path: Path, items: pl.DataFrame, imdb: pl.DataFrame | None,
                       text_column: str | None) -> tuple[int, pl.DataFrame]:
    """(number of items matched, frame item_id -> text) from one description file."""
    try:
        table = pl.read_csv(path, infer_schema_length=0)  # every column as text
    except Exception as exc:  # polars raises many types: find the line, or name the file
        hint = "description files are read as UTF-8: convert it (e.g. iconv -f latin1 -t utf-8)"
        for _ in csv_rows(path, "utf-8", hint=hint):  # raises naming file and line (encoding, field count)
            pass
        raise DataValidationError(f"{path}: could not be read as CSV with a header: {exc}") from exc
    text_col = text_column or _pick(table.columns, TEXT_COLUMNS)
    if text_col not in table.columns:
        raise DataValidationError(f"{path}: no text column (one of {TEXT_COLUMNS} or --text-column); "
                                  f"found {table.columns}")
    id_col, imdb_col, title_col = (_pick(table.columns, c) for c in (ID_COLUMNS, IMDB_COLUMNS, TITLE_COLUMNS))
    if id_col:
        keyed = table.select(pl.col(id_col).str.strip_chars().alias("item_id"), pl.col(text_col).alias("text"))
    elif imdb_col and imdb is not None:
        keyed = table.select(pl.col(imdb_col).str.strip_chars("t ").str.strip_chars_start("0").alias("imdb_id"),
                             pl.col(text_col).alias("text")).join(
            imdb.with_columns(pl.col("imdb_id").str.strip_chars_start("0")), on="imdb_id").select("item_id", "text")
    elif title_col:
        keyed = table.select(pl.col(title_col).str.strip_chars().alias("title"), pl.col(text_col).alias("text")).join(
            items.select("item_id", "title"), on="title").select("item_id", "text")
    else:
        raise DataValidationError(f"{path}: no id column ({ID_COLUMNS}), IMDb id column with links.csv, or title "
                                  f"column ({TITLE_COLUMNS}) to match items; found {table.columns}")
    has_text = pl.col("text").str.strip_chars() != ""
    keyed = (keyed.filter(pl.col("item_id").is_in(items["item_id"].implode()) & has_text)
             .unique("item_id", keep="first", maintain_order=True))
    log.info("%s: text for %d of %d items", path, keyed.height, items.height)
    return keyed.height, keyed


def _with_description(items: pl.DataFrame, texts: list[pl.DataFrame]) -> pl.DataFrame:
    if not texts:
        return items.with_columns(pl.lit("").alias("description"))
    joined = (pl.concat([t.with_columns(pl.lit(i).alias("_order")) for i, t in enumerate(texts)])
              .sort("_order", maintain_order=True).group_by("item_id", maintain_order=True)
              .agg(pl.col("text").str.replace_all(r"\s+", " ").str.strip_chars().str.join(" ").alias("description")))
    return items.join(joined, on="item_id", how="left", maintain_order="left").with_columns(
        pl.col("description").fill_null(""))

