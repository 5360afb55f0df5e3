"""RecBole atomic files -> canonical folder.

RecBole's atomic files are tab-separated with a typed header (``field:type``; types ``token``,
``token_seq``, ``float``, ``float_seq``). Two layouts are read, detected from the files in SRC:

- **Plain**: ``X.inter`` (``user_id:token``, ``item_id:token``, optional ``rating:float`` as the
  weight and ``timestamp:float`` in unix seconds) with ``X.item``. Without a timestamp column
  the file's row order per user is the order (synthetic times, see :mod:`.ordered`).
- **UniSRec split**: ``X.{train,valid,test}.inter`` (any of them; ``user_id:token``,
  ``item_id_list:token_seq`` = the history oldest first, ``item_id:token`` = the next item) with
  ``X.text`` (``item_id:token``, ``text:token_seq``) or ``X.item``. Each user's rows are merged
  into one sequence; a row that does not continue what the earlier rows say is refused, naming
  its line. Only the order is known, so times are synthetic and the last item of each user is
  their ``test`` target: ``--split leave-last-out`` then tests exactly the files' test items.

Items: ``title`` from the first of ``title``/``movie_title``/``name``/``text``; ``description``
from ``description`` (with ``brand`` as "Brand: ..."); ``category`` from the first of
``categories``/``category``/``genre``/``class``. HTML entities (``&amp;``) are decoded. Items
used in interactions but missing from the item file are kept with empty text and counted.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from recsys.errors import DataValidationError
from recsys.importers.delimited import parse_field, read_lines, require_rows, split_fields, unix_seconds
from recsys.importers.ordered import ORDER_ONLY_NOTE, clean_text, items_with_placeholders, ordered_interactions

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
SPLIT_PARTS = ("train", "valid", "test")
TITLE_FIELDS = ("title", "movie_title", "name", "text")
CATEGORY_FIELDS = ("categories", "category", "genre", "class")


def read_atomic(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(field names, [(1-based line, values)]) of one atomic file whose header has ``required`` fields.

    The header is ``name:type`` per tab-separated column; every data line has as many fields.
    """
    lines = read_lines(path, "utf-8", hint="RecBole atomic files are UTF-8")
    try:
        _, header = next(lines)
    except StopIteration:
        raise DataValidationError(f"{path}: the file is empty; expected a header such as "
                                  f"{chr(9).join(f'{r}:token' for r in required)!r}") from None
    names = []
    for column in header.split("\t"):
        name, sep, kind = column.strip().partition(":")
        if not sep or kind not in FIELD_TYPES:
            raise DataValidationError(
                f"{path}:1: header column {column!r} is not name:type with a type of {FIELD_TYPES}; "
                "a RecBole atomic file starts with a typed header such as 'user_id:token'")
        names.append(name)
    missing = [r for r in required if r not in names]
    if missing:
        raise DataValidationError(f"{path}:1: the header lacks {missing}; found {names}. Name the columns as "
                                  f"RecBole does ({', '.join(f'{r}:token' for r in required)}).")
    rows = [(number, split_fields(path, number, line, "\t", len(names))) for number, line in lines]
    require_rows(path, len(rows), "data", "A RecBole atomic file has a typed header and one tab-separated line "
                 "per row", header=True)
    return names, rows


def import_recbole(src: Path) -> tuple[dict[str, pl.DataFrame], dict]:
    """Canonical tables (items, interactions) and a report from a folder of RecBole atomic files."""
    src = Path(src)
    if not src.is_dir():
        raise DataValidationError(f"{src}: not a folder; pass the folder that holds X.inter or "
                                  "X.{train,valid,test}.inter")
    stem, parts = _detect(src)
    if parts:
        users, sequences, checks = _merge_split_files(src, stem, parts)
        interactions = ordered_interactions(users, sequences, str(src / f"{stem}.{parts[-1]}.inter"))
        report = {"layout": "recbole-unisrec", "order_only": True, "timestamps": ORDER_ONLY_NOTE, **checks}
    else:
        interactions, order_only = _read_plain_inter(src / f"{stem}.inter")
        report = {"layout": "recbole-atomic", "order_only": order_only}
        if order_only:
            report["timestamps"] = ORDER_ONLY_NOTE
    items, item_file = _read_items(src, stem)
    items, placeholders = items_with_placeholders(items, interactions)
    report.update({
        "source": str(src), "dataset": stem, "item_file": item_file, "n_items": items.height,
        "n_interactions": interactions.height, "n_users": interactions["user_id"].n_unique(),
        "items_without_text_row": placeholders,
        "items_with_description": int((items["description"].str.len_chars() > 0).sum()),
    })
    return {"items": items, "interactions": interactions}, report


def _detect(src: Path) -> tuple[str, list[str]]:
    """(data set stem, split parts present in order; empty for the plain layout)."""
    inter = sorted(p.name for p in src.glob("*.inter"))
    stems: dict[str, list[str]] = {}
    for name in inter:
        base = name[: -len(".inter")]
        stem, _, part = base.rpartition(".")
        if stem and part in SPLIT_PARTS:
            stems.setdefault(stem, []).append(part)
        else:
            stems.setdefault(base, [])
    if len(stems) != 1:
        found = ", ".join(inter) or "no .inter file"
        if not inter and list(src.glob("*.inter.json")):
            raise DataValidationError(f"{src}: holds X.inter.json, not RecBole atomic files; use recsys import "
                                      "sequences")
        raise DataValidationError(
            f"{src}: expected the files of one RecBole data set (X.inter, or X.train/valid/test.inter), found "
            f"{found}. Put each data set in its own folder.")
    stem, parts = next(iter(stems.items()))
    if parts and (src / f"{stem}.inter").exists():
        raise DataValidationError(f"{src}: both {stem}.inter and {stem}.{parts[0]}.inter exist; keep one layout")
    return stem, [p for p in SPLIT_PARTS if p in parts]


def _merge_split_files(src: Path, stem: str, parts: list[str]) -> tuple[list[str], list[list[str]], dict]:
    """Each user's whole sequence from the split files, checked for consistency."""
    rows: dict[str, list[tuple[list[str], Path, int]]] = {}
    targets: dict[str, dict[str, str]] = {part: {} for part in parts}
    for part in parts:
        path = src / f"{stem}.{part}.inter"
        names, lines = read_atomic(path, ("user_id", "item_id_list", "item_id"))
        at = {n: names.index(n) for n in ("user_id", "item_id_list", "item_id")}
        for number, values in lines:
            user, item = values[at["user_id"]].strip(), values[at["item_id"]].strip()
            if not user or not item:
                raise DataValidationError(f"{path}:{number}: empty user or item id; every row needs both")
            rows.setdefault(user, []).append((values[at["item_id_list"]].split() + [item], path, number))
            if part != "train":
                if user in targets[part]:
                    raise DataValidationError(f"{path}:{number}: user {user!r} has a second {part} row; "
                                              f"a {part} file has one row per user")
                targets[part][user] = item
    users, sequences = [], []
    for user, user_rows in rows.items():
        users.append(user)
        sequences.append(_merged(user, user_rows))
    checks = {f"n_{part}_targets": len(targets[part]) for part in parts if part != "train"}
    last_part = "test" if "test" in parts else ("valid" if "valid" in parts else None)
    if last_part:
        by_user = dict(zip(users, sequences, strict=True))
        last_file = src / f"{stem}.{last_part}.inter"
        missing = [u for u in users if u not in targets[last_part]]
        if missing:
            raise DataValidationError(
                f"{last_file}: {len(missing)} user(s) of the other split files have no row here (e.g. user "
                f"{missing[0]!r}), so their last item would be tested in place of a {last_part} target. Use the "
                f"files of one release, where every user has a {last_part} row.")
        wrong = [u for u, item in targets[last_part].items() if by_user[u][-1] != item]
        if last_part == "test" and "valid" in parts:
            wrong += [u for u, item in targets["valid"].items() if len(by_user[u]) < 2 or by_user[u][-2] != item]
        if wrong:
            raise DataValidationError(
                f"{last_file}: once all rows are merged, {len(wrong)} user(s) do not end in their valid then "
                f"{last_part} target (e.g. user {wrong[0]!r}); the files disagree on the order. Use the files of "
                "one release.")
        checks["last_item_is_target_of"] = last_file.name
        # A target the user already took earlier is excluded from their ranking as seen: it can never be hit.
        checks["test_targets_seen_before"] = sum(by_user[u][-1] in by_user[u][:-1] for u in targets[last_part])
    return users, sequences, checks


def _merged(user: str, user_rows: list[tuple[list[str], Path, int]]) -> list[str]:
    """One user's sequence from rows of (history + target), shortest first.

    A row extends the sequence when its history is the sequence's tail (the files cap history
    length, so a later row may have lost its oldest items), replaces it when the sequence is
    the tail of the row's history (the row knows older items), and is already contained when it
    is the sequence's tail. Anything else contradicts an earlier row.
    """
    ordered = sorted(user_rows, key=lambda r: len(r[0]))
    merged = list(ordered[0][0])
    for seq, path, number in ordered[1:]:
        history = seq[:-1]
        if not history:  # a row without history starts the sequence: a second one cannot be placed
            raise DataValidationError(f"{path}:{number}: user {user!r} has a second row with an empty history; "
                                      "only their first item has none. Drop the duplicate row.")
        if _is_tail(history, merged):
            merged.append(seq[-1])
        elif _is_tail(merged, history):
            merged = list(seq)
        elif not _is_tail(seq, merged):
            raise DataValidationError(
                f"{path}:{number}: user {user!r}: this row's history does not continue the sequence of their "
                f"earlier rows (... {' '.join(merged[-5:])}); the files disagree on the order. Use the files of one "
                "release, or drop this row.")
    return merged


def _is_tail(part: list[str], whole: list[str]) -> bool:
    return len(part) <= len(whole) and whole[len(whole) - len(part):] == part


def _read_plain_inter(path: Path) -> tuple[pl.DataFrame, bool]:
    """(interactions, whether times are synthetic) from a plain ``X.inter``."""
    names, lines = read_atomic(path, ("user_id", "item_id"))
    user_at, item_at = names.index("user_id"), names.index("item_id")
    rating_at = names.index("rating") if "rating" in names else None
    time_at = names.index("timestamp") if "timestamp" in names else None
    users, items, weights, seconds = [], [], [], []
    for number, values in lines:
        users.append(values[user_at].strip())
        items.append(values[item_at].strip())
        if not users[-1] or not items[-1]:
            raise DataValidationError(f"{path}:{number}: empty user or item id; every row needs both")
        if rating_at is not None:
            weights.append(parse_field(path, number, "rating", values[rating_at], _weight))
        if time_at is not None:
            seconds.append(parse_field(path, number, "timestamp", values[time_at],
                                       lambda v: unix_seconds(str(int(float(v))))))
    if time_at is None:
        # ordered_interactions writes rows user by user: group the rows (and their weights) the same way
        by_user: dict[str, list[int]] = {}
        for row, user in enumerate(users):
            by_user.setdefault(user, []).append(row)
        interactions = ordered_interactions(list(by_user), [[items[r] for r in rows] for rows in by_user.values()],
                                            str(path))
        if rating_at is not None:
            interactions = interactions.with_columns(
                pl.Series("weight", [weights[r] for rows in by_user.values() for r in rows], dtype=pl.Float32))
        return interactions, True
    frame = pl.DataFrame({
        "user_id": pl.Series(users, dtype=pl.String), "item_id": pl.Series(items, dtype=pl.String),
        "timestamp": (pl.Series(seconds, dtype=pl.Int64) * 1_000_000).cast(pl.Datetime("us")),
        "weight": pl.Series(weights if rating_at is not None else [1.0] * len(users), dtype=pl.Float32),
    })
    return frame, False


def _text(values: list[str], at: int | None) -> str:
    return clean_text(values[at]) if at is not None else ""


def _weight(value: str) -> float:
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError("a rating must be a finite number >= 0")
    return weight


def _read_items(src: Path, stem: str) -> tuple[pl.DataFrame, str | None]:
    """Canonical items from ``X.item`` (or ``X.text``), and the file read; empty when neither exists."""
    path = next((p for p in (src / f"{stem}.item", src / f"{stem}.text") if p.exists()), None)
    if path is None:
        return pl.DataFrame(schema={"item_id": pl.String, "title": pl.String, "description": pl.String,
                                    "category": pl.String}), None
    names, lines = read_atomic(path, ("item_id",))
    title_at = next((names.index(f) for f in TITLE_FIELDS if f in names), None)
    category_at = next((names.index(f) for f in CATEGORY_FIELDS if f in names), None)
    description_at = names.index("description") if "description" in names else None
    brand_at = names.index("brand") if "brand" in names else None
    id_at = names.index("item_id")
    rows = []
    for _, values in lines:
        title, description, brand, category = (_text(values, at) for at in (title_at, description_at, brand_at,
                                                                            category_at))
        if brand:
            description = f"Brand: {brand}. {description}".strip()
        rows.append((values[id_at].strip(), title, description, category or "unknown"))
    items = pl.DataFrame(rows, schema={"item_id": pl.String, "title": pl.String, "description": pl.String,
                                       "category": pl.String}, orient="row")
    dupes = items.filter(pl.col("item_id").is_duplicated())
    if dupes.height:
        raise DataValidationError(f"{path}: item id {dupes['item_id'][0]!r} appears {dupes.height} times; "
                                  "each item has one row")
    return items, path.name
