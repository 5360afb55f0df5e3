"""Request parsing and validation for the serving endpoint (pandas only at this boundary).

A request row: ``user_id`` (str, required), and optionally ``k`` (integer 1..MAX_K),
``candidates`` (item ids to rank instead of the model's own candidates), ``history`` (item
ids the user just interacted with, oldest first) and ``exclude`` (item ids not to show).
Everything wrong is reported in a RecsysError naming the row and the field; the server turns
it into HTTP 400.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.errors import DataValidationError

MAX_K = 100
MAX_USERS_PER_REQUEST = 1000
MAX_IDS_PER_LIST = 5000
LIST_FIELDS = ("candidates", "history", "exclude")


@dataclass(frozen=True)
class RecommendRequest:
    """One user's request. ``candidates`` None means "use the model's candidates"."""

    user_id: str
    k: int
    candidates: tuple[str, ...] | None = None
    history: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _id_list(value, row: int, field: str) -> tuple[str, ...] | None:
    if _is_missing(value):
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise DataValidationError(f"row {row}: '{field}' must be a list of item ids, got {type(value).__name__}")
    if len(value) > MAX_IDS_PER_LIST:
        raise DataValidationError(f"row {row}: '{field}' has {len(value)} ids; at most {MAX_IDS_PER_LIST}")
    if not all(isinstance(v, str) for v in value):
        bad = next(v for v in value if not isinstance(v, str))
        raise DataValidationError(f"row {row}: '{field}' must hold item ids as strings, got {bad!r}")
    return tuple(dict.fromkeys(value))  # duplicates inside one list collapse: the list is a set


def _k(value, row: int, default_k: int) -> int:
    if _is_missing(value):
        return default_k
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or float(value) != int(value):
        raise DataValidationError(f"row {row}: k must be an integer, got {value!r}")
    k = int(value)
    if not 1 <= k <= MAX_K:
        raise DataValidationError(f"row {row}: k must be between 1 and {MAX_K}, got {k}")
    return k


def parse_requests(model_input: pd.DataFrame, default_k: int) -> list[RecommendRequest]:
    """Validated requests, one per row; raises DataValidationError on anything malformed."""
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame(model_input)
    if "user_id" not in model_input.columns:
        raise DataValidationError(f"request needs a 'user_id' column; got columns {list(model_input.columns)}")
    unknown_fields = set(model_input.columns) - {"user_id", "k", *LIST_FIELDS}
    if unknown_fields:
        raise DataValidationError(f"unknown request field(s) {sorted(unknown_fields)}; allowed: user_id, k, "
                                  f"{', '.join(LIST_FIELDS)}")
    if len(model_input) == 0:
        raise DataValidationError("request has no rows; send at least one user_id")
    if len(model_input) > MAX_USERS_PER_REQUEST:
        raise DataValidationError(f"request has {len(model_input)} users; at most {MAX_USERS_PER_REQUEST} per "
                                  "request (use `recsys rank` for batches)")
    records = model_input.to_dict("records")
    requests, seen = [], set()
    for row, rec in enumerate(records):
        user = rec["user_id"]
        if _is_missing(user) or not isinstance(user, str) or not user.strip():
            raise DataValidationError(f"row {row}: user_id must be a non-empty string, got {user!r}")
        if user in seen:
            raise DataValidationError(f"row {row}: duplicate user_id {user!r}; send each user once per request")
        seen.add(user)
        lists = {f: _id_list(rec.get(f), row, f) for f in LIST_FIELDS}
        requests.append(RecommendRequest(user_id=user, k=_k(rec.get("k"), row, default_k),
                                         candidates=lists["candidates"], history=lists["history"] or (),
                                         exclude=lists["exclude"] or ()))
    return requests


def predict_frame(bundle, model_input: pd.DataFrame) -> pd.DataFrame:
    """Parse, validate and answer a request frame (the pyfunc's ``predict``)."""
    from serving.recommend import recommend_requests

    rows = recommend_requests(bundle, parse_requests(model_input, bundle.config.k))
    return pd.DataFrame(rows, columns=["user_id", "item_ids", "scores", "path", "unknown_ids"])
