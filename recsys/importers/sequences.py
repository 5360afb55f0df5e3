"""JSON sequence files (``X.inter.json`` + ``X.item.json``) -> canonical folder.

- ``X.inter.json``: ``{"user": [item, item, ...]}``, each list oldest first.
- ``X.item.json``: ``{"item": {"title": ..., "description": ..., "brand": ..., "categories": ...}}``;
  ``categories`` may be a string or a list (joined with ", "); every key but the title is optional.

Only the order is known, so times are synthetic (see :mod:`.ordered`): ``--split leave-last-out``
tests each user's last item. The description is led by the brand ("Brand: ..."); HTML
entities are decoded. Items in sequences but missing from the item file are kept with empty
text and counted; an id that is not a string or integer is refused, naming the user.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from recsys.errors import DataValidationError
from recsys.importers.ordered import ORDER_ONLY_NOTE, clean_text, items_with_placeholders, ordered_interactions


def import_sequences(src: Path) -> tuple[dict[str, pl.DataFrame], dict]:
    """Canonical tables (items, interactions) and a report from a folder with ``X.inter.json``."""
    src = Path(src)
    found = sorted(src.glob("*.inter.json")) if src.is_dir() else []
    if len(found) != 1:
        raise DataValidationError(
            f"{src}: expected one X.inter.json (user -> items in order) beside X.item.json, found "
            f"{[p.name for p in found] or 'none'}")
    inter_path = found[0]
    stem = inter_path.name[: -len(".inter.json")]
    raw = _read_json(inter_path, "an object of user id -> list of item ids in order")
    users, sequences = [], []
    for user, items in raw.items():
        if not isinstance(items, list) or not all(_is_id(i) for i in items):
            raise DataValidationError(f"{inter_path}: user {user!r}: expected a list of item ids (strings or "
                                      f"integers), found {str(items)[:80]}")
        if items:
            users.append(str(user))
            sequences.append([str(i) for i in items])
    if not users:
        raise DataValidationError(f"{inter_path}: no user has an item; the file holds no interactions")
    interactions = ordered_interactions(users, sequences, str(inter_path))
    item_path = src / f"{stem}.item.json"
    items = _read_items(item_path if item_path.exists() else None)
    items, placeholders = items_with_placeholders(items, interactions)
    report = {
        "layout": "sequences-json", "source": str(src), "dataset": stem, "order_only": True,
        "timestamps": ORDER_ONLY_NOTE, "item_file": item_path.name if item_path.exists() else None,
        "n_items": items.height, "n_interactions": interactions.height, "n_users": len(users),
        "users_without_items": len(raw) - len(users), "items_without_text_row": placeholders,
        "items_with_description": int((items["description"].str.len_chars() > 0).sum()),
    }
    return {"items": items, "interactions": interactions}, report


def _is_id(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=_refuse_duplicate_keys)
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}: not UTF-8 text ({exc})") from exc
    except _DuplicateKey as exc:
        raise DataValidationError(f"{path}: the key {exc.args[0]!r} appears twice in one object; a later one "
                                  "would silently replace the earlier. Merge them.") from exc
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise DataValidationError(f"{path}: expected {what}, found a JSON {type(data).__name__}")
    return data


def _read_items(path: Path | None) -> pl.DataFrame:
    schema = {"item_id": pl.String, "title": pl.String, "description": pl.String, "category": pl.String}
    if path is None:
        return pl.DataFrame(schema=schema)
    rows = []
    for item_id, fields in _read_json(path, "an object of item id -> {title, description, brand, "
                                            "categories}").items():
        if not isinstance(fields, dict):
            raise DataValidationError(f"{path}: item {item_id!r}: expected an object with a title, found "
                                      f"{str(fields)[:80]}")
        text = {key: _text(path, item_id, key, fields.get(key)) for key in ("title", "description", "brand",
                                                                           "categories")}
        description = f"Brand: {text['brand']}. {text['description']}".strip() if text["brand"] else text["description"]
        rows.append((str(item_id), text["title"], description, text["categories"] or "unknown"))
    return pl.DataFrame(rows, schema=schema, orient="row")


def _text(path: Path, item_id: str, key: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ", ".join(v.strip() for v in value if v.strip())
    if not isinstance(value, str):
        raise DataValidationError(f"{path}: item {item_id!r}: {key!r} must be text, found {str(value)[:80]}")
    return clean_text(value)
