"""Request parsing and validation for the serving endpoint (pandas only at this boundary).

A request row: ``user_id`` (str, required), and optionally ``k`` (integer 1..MAX_K),
``candidates`` (item ids to rank instead of the model's own candidates), ``history`` (item
ids the user just interacted with, oldest first) and ``exclude`` (item ids not to show).
Everything wrong is reported in a RecsysError naming the row and the field; the server turns
it into HTTP 400.

Work per request is bounded: at most MAX_USERS_PER_REQUEST users and MAX_PAIRS_PER_REQUEST
(user, item) pairs to score, where a user without ``candidates`` counts as the model's own
candidate budget (``candidate_budget``). Larger requests are refused before any work starts.
"""

from __future__ import annotations

import logging
import math
import reprlib
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.errors import DataValidationError, RecsysError, RequestDeadlineError, RequestTooLargeError

log = logging.getLogger("recsys.serving")

MAX_K = 100
MAX_USERS_PER_REQUEST = 1000
MAX_IDS_PER_LIST = 5000
# (user, item) pairs one request may ask to score: 1,000 users with the default candidate budget
# (450 each) fit; 1,000 users x 3,000 explicit candidates do not (use `recsys rank`).
MAX_PAIRS_PER_REQUEST = 450_000
LIST_FIELDS = ("candidates", "history", "exclude")
FIELDS = ("user_id", "k", *LIST_FIELDS)


@dataclass(frozen=True)
class RecommendRequest:
    """One user's request. ``candidates`` None means "use the model's candidates"."""

    user_id: str
    k: int
    candidates: tuple[str, ...] | None = None
    history: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


_SHOW = reprlib.Repr()  # keyword arguments need Python 3.12
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlist = _SHOW.maxdict = 5
_SHOW.maxlevel = 2


def show(value) -> str:
    """A short repr of client input for an error message (never megabytes echoed back)."""
    return _SHOW.repr(value)


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
        raise DataValidationError(f"row {row}: '{field}' must hold item ids as strings, got {show(bad)}")
    return tuple(dict.fromkeys(value))  # duplicates inside one list collapse: the list is a set


def _k(value, row: int, default_k: int) -> int:
    if _is_missing(value):
        return default_k
    try:
        integral = not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating) \
            and math.isfinite(value) and float(value) == int(value)
    except OverflowError:  # an int too large for a float: out of range anyway
        integral = False
    if not integral:
        raise DataValidationError(f"row {row}: k must be an integer between 1 and {MAX_K}, got {show(value)}")
    k = int(value)
    if not 1 <= k <= MAX_K:
        raise DataValidationError(f"row {row}: k must be between 1 and {MAX_K}, got {k}")
    return k


def check_fields(columns) -> None:
    """Raise naming the fields that are not request fields (a misspelling must not be ignored)."""
    unknown_fields = sorted(str(c) for c in columns if c not in FIELDS)
    if unknown_fields:
        more = f" and {len(unknown_fields) - 5} more" if len(unknown_fields) > 5 else ""
        raise DataValidationError(f"unknown request field(s) {[f[:40] for f in unknown_fields[:5]]}{more}; allowed: "
                                  f"{', '.join(FIELDS)}")


def check_size(n_users: int, candidate_counts, candidate_budget: int) -> None:
    """Refuse a request whose work is over the bounds, before any work starts.

    candidate_counts: per user, the number of explicit candidates, or None (the model's own,
        ``candidate_budget`` of them).
    """
    if n_users > MAX_USERS_PER_REQUEST:
        raise RequestTooLargeError(f"request has {n_users} users; at most {MAX_USERS_PER_REQUEST} per request "
                                   "(use `recsys rank` for batches)")
    pairs = sum(candidate_budget if c is None else c for c in candidate_counts)
    if pairs > MAX_PAIRS_PER_REQUEST:
        raise RequestTooLargeError(f"request asks to score {pairs:,} (user, item) pairs; at most "
                                   f"{MAX_PAIRS_PER_REQUEST:,} per request: send fewer users or shorter "
                                   "candidate lists, or use `recsys rank` for batches")


def parse_requests(model_input: pd.DataFrame, default_k: int, candidate_budget: int = 0) -> list[RecommendRequest]:
    """Validated requests, one per row of a request frame (the pyfunc's input); see
    :func:`parse_request_rows`."""
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame(model_input)
    names = list(model_input.columns)
    # Column lists, zipped: a third of ``to_dict("records")``'s cost on a one-row request, same values.
    rows = [dict(zip(names, values, strict=True))
            for values in zip(*(model_input[name].tolist() for name in names), strict=True)]
    return parse_request_rows(names, rows, default_k, candidate_budget)


def parse_request_rows(columns: list, rows: list[dict], default_k: int,
                       candidate_budget: int = 0) -> list[RecommendRequest]:
    """Validated requests, one per row; raises DataValidationError on anything malformed and
    RequestTooLargeError (a DataValidationError) when the work is over the bounds.

    columns: every field the request names (a field no row fills is still checked);
    rows: field -> value per user, a field a row leaves out meaning its default (as None or NaN do);
    candidate_budget: candidates the model generates for a user without an explicit list.
    """
    if "user_id" not in columns:
        raise DataValidationError(f"request needs a 'user_id' column; got columns {show(list(columns))}")
    check_fields(columns)
    if len(rows) == 0:
        raise DataValidationError("request has no rows; send at least one user_id")
    check_size(len(rows), [], 0)
    requests, seen, sent_counts = [], set(), []
    for row, rec in enumerate(rows):
        user = rec.get("user_id")
        if _is_missing(user) or not isinstance(user, str) or not user.strip():
            raise DataValidationError(f"row {row}: user_id must be a non-empty string, got {show(user)}")
        if user in seen:
            raise DataValidationError(f"row {row}: duplicate user_id {show(user)}; send each user once per "
                                      "request")
        seen.add(user)
        lists = {f: _id_list(rec.get(f), row, f) for f in LIST_FIELDS}
        sent_counts.append(None if lists["candidates"] is None else len(rec["candidates"]))  # as sent, repeats too
        requests.append(RecommendRequest(user_id=user, k=_k(rec.get("k"), row, default_k),
                                         candidates=lists["candidates"], history=lists["history"] or (),
                                         exclude=lists["exclude"] or ()))
    check_size(len(requests), sent_counts, candidate_budget)
    return requests


OUTPUT_COLUMNS = ["user_id", "item_ids", "scores", "path", "unknown_ids"]


def error_reply(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, MLflow error code, message) for an error raised while answering: a request
    that waited or ran past its deadline 503, a bad request 400 (``recsys serve`` answers 413 for
    one over the work bounds before it gets here), anything else 500 with only an error id, the
    traceback logged under it. Call it inside the ``except`` block."""
    if isinstance(exc, RequestDeadlineError):
        return 503, "TEMPORARILY_UNAVAILABLE", str(exc)
    if isinstance(exc, RecsysError):
        return 400, "INVALID_PARAMETER_VALUE", str(exc)
    error_id = uuid.uuid4().hex[:12]
    log.error("request failed (error id %s)", error_id, exc_info=exc)
    return 500, "INTERNAL_ERROR", f"internal error while ranking (error id {error_id}); the server log has the details"


def predict_frame(bundle, model_input: pd.DataFrame, deadline: float | None = None) -> pd.DataFrame:
    """Parse, validate and answer a request frame (the pyfunc's ``predict`` without batching).

    deadline: ``time.monotonic()`` value after which the work stops with RequestDeadlineError
        (checked between chunks of users, so an abandoned request does not keep the server busy).
    """
    from serving.recommend import candidate_budget

    requests = parse_requests(model_input, bundle.config.k, candidate_budget(bundle))
    return pd.DataFrame(rank_requests(bundle, requests, deadline), columns=OUTPUT_COLUMNS)


def rank_requests(bundle, requests: list[RecommendRequest], deadline: float | None = None) -> list[dict]:
    """One row dict per validated request (``recommend.recommend_requests``), in chunks of about
    CHUNK_PAIRS pairs, the deadline checked between chunks."""
    from serving.recommend import candidate_budget, recommend_requests

    budget = candidate_budget(bundle)
    rows: list[dict] = []
    for chunk in _chunks(requests, budget):
        if deadline is not None and time.monotonic() > deadline:
            raise RequestDeadlineError(f"request stopped after its deadline, {len(rows)} of {len(requests)} users "
                                       "ranked; send fewer users per request")
        rows += recommend_requests(bundle, chunk)
    return rows


CHUNK_PAIRS = 50_000


def _chunks(requests: list[RecommendRequest], budget: int):
    """Consecutive runs of requests with about CHUNK_PAIRS pairs to score each."""
    start, pairs = 0, 0
    for i, request in enumerate(requests):
        pairs += budget if request.candidates is None else len(request.candidates)
        if pairs >= CHUNK_PAIRS:
            yield requests[start:i + 1]
            start, pairs = i + 1, 0
    if start < len(requests):
        yield requests[start:]
