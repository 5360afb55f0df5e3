"""The HTTP endpoint ``recsys serve`` runs: MLflow's scoring server behind a request guard.

MLflow's server (``mlflow.pyfunc.scoring_server``) does the protocol (``/invocations`` with
``dataframe_records``, ``dataframe_split``, ``inputs`` or ``instances`` JSON, CSV or Parquet;
``/ping``; ``/version``). In front of it, ``RequestGuard`` (pure ASGI) makes the promises of
the README hold, which MLflow alone does not:

- an unknown field is a 400 naming it (MLflow's schema enforcement would drop it silently),
  for JSON, CSV and Parquet bodies;
- a missing, empty or unsupported ``Content-Type`` is a 415; MIME types match case-insensitively;
- a body over ``MAX_BODY_BYTES`` is a 413, as is a request whose (user, item) pairs are over the
  bounds of ``serving/requests.py``; JSON that is invalid, nested past Python's recursion limit,
  holds NaN/Infinity or has the wrong shape is a 400;
- error answers are ``{"error_code": ..., "message": ...}`` with the reason only: no stack trace,
  no server paths, no echo of the request. Unexpected errors are logged with an error id.

Start it with ``recsys serve`` (uvicorn, ``create_app`` as the factory); the model URI comes from
the ``RECSYS_SERVE_MODEL`` environment variable.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re

from anyio import to_thread

from recsys.errors import DataValidationError
from serving import requests as request_rules

log = logging.getLogger("recsys.serving")

MODEL_ENV = "RECSYS_SERVE_MODEL"
MAX_BODY_BYTES = 8 * 1024 * 1024
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
PARQUET_TYPES = ("application/x-parquet", "application/parquet")
ACCEPTED = "application/json, text/csv or application/x-parquet"
JSON_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")
_MLFLOW_ECHO = re.compile(r"^Failed to predict data .*\nError: ", re.DOTALL)  # MLflow repeats the input


class RequestRefused(Exception):
    """The guard's answer to a request it will not pass on: an HTTP status and a reason."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def create_app():
    """uvicorn factory: load the model named by RECSYS_SERVE_MODEL and build the guarded app."""
    import mlflow

    uri = os.environ.get(MODEL_ENV)
    if not uri:
        raise RuntimeError(f"set {MODEL_ENV} to the model URI or folder to serve (recsys serve does)")
    return build_app(mlflow.pyfunc.load_model(uri))


def build_app(model):
    """MLflow's scoring app for ``model`` (a loaded PyFuncModel) behind the RequestGuard."""
    from mlflow.pyfunc import scoring_server

    return RequestGuard(scoring_server.init(model), candidate_budget=_candidate_budget(model))


def _candidate_budget(model) -> int | None:
    """Candidates per user of a recsys model (for the work bound); None for any other pyfunc."""
    from serving.recommend import candidate_budget

    try:
        bundle = model.unwrap_python_model().bundle
    except Exception:  # not one of ours (a benchmark's echo model): no work bound to apply
        return None
    return candidate_budget(bundle)


class RequestGuard:
    """ASGI middleware for POST /invocations; every other path passes through untouched."""

    def __init__(self, app, *, candidate_budget: int | None):
        self.app = app
        self.candidate_budget = candidate_budget

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            body = await _read_body(scope, receive)
            if len(body) > 256 * 1024:  # parsing a large body off the event loop keeps /ping and others live
                scope = await to_thread.run_sync(self.check, scope, body)
            else:
                scope = self.check(scope, body)
        except RequestRefused as refused:
            return await _send_error(send, refused.status, refused.code, refused.message)

        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as the app expects

        await self.app(scope, replay, _clean_errors(send))

    def check(self, scope, body: bytes) -> dict:
        """The request's scope with a normalised Content-Type, or RequestRefused."""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        raw_type = next((v for k, v in scope["headers"] if k.lower() == b"content-type"), b"").decode("latin-1")
        mime, _, parameters = raw_type.partition(";")
        mime = mime.strip().lower()
        if not mime:
            raise RequestRefused(415, "UNSUPPORTED_MEDIA_TYPE", f"missing Content-Type header; send {ACCEPTED} "
                                 "(for example -H 'Content-Type: application/json')")
        if mime in JSON_TYPES:
            columns, counts = _json_shape(body)
        elif mime in CSV_TYPES:
            columns, counts = _csv_shape(body)
        elif mime in PARQUET_TYPES:
            columns, counts = _parquet_shape(body)
            mime = "application/x-parquet"
        else:
            raise RequestRefused(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type {raw_type!r} is not supported; send "
                                 f"{ACCEPTED}")
        try:
            request_rules.check_fields(columns)
            if self.candidate_budget is not None and counts is not None:
                request_rules.check_size(len(counts), counts, self.candidate_budget)
        except request_rules.RequestTooLargeError as exc:
            raise RequestRefused(413, "REQUEST_TOO_LARGE", str(exc)) from None
        except DataValidationError as exc:
            raise RequestRefused(400, "INVALID_PARAMETER_VALUE", str(exc)) from None
        content_type = mime + (";" + parameters if parameters else "")
        return {**scope, "headers": [*headers, (b"content-type", content_type.encode("latin-1"))]}


async def _read_body(scope, receive) -> bytes:
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestRefused(413, "REQUEST_TOO_LARGE", f"request body of {int(declared):,} bytes; at most "
                             f"{MAX_BODY_BYTES:,} (send fewer users per request, or use `recsys rank`)")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestRefused(400, "BAD_REQUEST", "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestRefused(413, "REQUEST_TOO_LARGE", f"request body over {MAX_BODY_BYTES:,} bytes (send "
                                 "fewer users per request, or use `recsys rank`)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number; send finite numbers")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a number; send finite numbers")
    return value


def _json_shape(body: bytes) -> tuple[list[str], list[int | None] | None]:
    """(field names, per-user explicit-candidate counts) of a JSON body, or RequestRefused."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise RequestRefused(400, "INVALID_PARAMETER_VALUE", "request JSON is nested too deeply; a request is "
                             "{\"dataframe_records\": [{\"user_id\": ...}, ...]}") from None
    except ValueError as exc:
        raise RequestRefused(400, "INVALID_PARAMETER_VALUE", f"request body is not valid UTF-8 JSON: "
                             f"{str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise RequestRefused(400, "INVALID_PARAMETER_VALUE", "request JSON must be an object such as "
                             "{\"dataframe_records\": [{\"user_id\": \"U1\"}]}, got " + type(document).__name__)
    keys = [k for k in document if k in JSON_KEYS]
    extra = sorted(k for k in document if k not in JSON_KEYS)
    if len(keys) != 1 or extra:
        raise RequestRefused(400, "INVALID_PARAMETER_VALUE", f"request JSON needs exactly one of {list(JSON_KEYS)}"
                             + (f"; unknown key(s) {extra}" if extra else f"; got {sorted(document)}"))
    rows = _rows(keys[0], document[keys[0]])
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return columns, [_explicit_count(row.get("candidates")) for row in rows]


def _rows(key: str, data) -> list[dict]:
    """The request rows of one JSON payload, as dicts; RequestRefused when the shape is wrong."""
    shape_error = RequestRefused(400, "INVALID_PARAMETER_VALUE", f"'{key}' must be a list of objects, one per "
                                 "user (dataframe_split: {\"columns\": [...], \"data\": [[...], ...]})")
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) \
                or not isinstance(data.get("data"), list) or not all(isinstance(r, list) for r in data["data"]):
            raise shape_error
        return [dict(zip(data["columns"], r, strict=False)) for r in data["data"]]
    if key in ("inputs", "instances") and isinstance(data, dict):  # columnar: field -> list of values
        if not all(isinstance(v, list) for v in data.values()):
            raise shape_error
        n = max((len(v) for v in data.values()), default=0)
        return [{f: v[i] for f, v in data.items() if i < len(v)} for i in range(n)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise shape_error
    return data


def _explicit_count(candidates) -> int | None:
    return len(candidates) if isinstance(candidates, list) else None


def _csv_shape(body: bytes) -> tuple[list[str], None]:
    import csv

    try:
        header = next(csv.reader(io.StringIO(body.decode("utf-8"))), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestRefused(400, "INVALID_PARAMETER_VALUE", f"CSV body is not valid UTF-8 CSV: {exc}") from None
    return header, None


def _parquet_shape(body: bytes) -> tuple[list[str], list[int | None] | None]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(body))
    except Exception as exc:  # pyarrow raises several types for a body that is not Parquet
        raise RequestRefused(400, "INVALID_PARAMETER_VALUE", f"body is not a Parquet file: {str(exc)[:200]}") \
            from None
    counts = None
    if "candidates" in table.column_names:
        counts = [len(c) if isinstance(c, list) else None for c in table.column("candidates").to_pylist()]
    return table.column_names, counts if counts is not None else [None] * table.num_rows


async def _send_error(send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _clean_errors(send):
    """Wrap ``send``: error answers keep their status and reason, lose stack traces and echoes."""
    held: dict = {}
    parts: list[bytes] = []

    async def wrapped(message):
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held["start"] = message
            return None
        if "start" not in held:
            return await send(message)
        parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        status = held["start"]["status"]
        code, reason = _error_reason(b"".join(parts), status)
        await _send_error(send, status, code, reason)

    return wrapped


def _error_reason(body: bytes, status: int) -> tuple[str, str]:
    try:
        error = json.loads(body)
        code, message = str(error.get("error_code", "")), str(error["message"])
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = "", body.decode("utf-8", errors="replace")
    message = _MLFLOW_ECHO.sub("", message)
    if status == 500 and "error id" not in message:
        log.error("server error %d: %s", status, message)
        message = "internal server error; the server log has the details"
    elif "Traceback" in message or 'File "' in message:
        message = message.split("\n", 1)[0]
    return code or ("INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST"), message.strip()
