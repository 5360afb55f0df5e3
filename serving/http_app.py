"""The HTTP endpoint ``recsys serve`` runs: MLflow's scoring protocol, answered by a request guard.

The protocol is MLflow's (``mlflow.pyfunc.scoring_server``): ``/invocations`` with
``dataframe_records``, ``dataframe_split``, ``inputs`` or ``instances`` JSON (or Parquet), the
answer ``{"predictions": [...]}``; ``/ping``, ``/health`` and ``/version``, which MLflow's app
serves. ``RequestGuard`` (pure ASGI, in front of that app) parses and checks every
``/invocations`` request and, for a recsys model, answers it itself through the model's
``answer`` (a model saved before ``answer`` existed, or any other pyfunc, is passed on to
MLflow's app). It makes the promises of the README hold, which MLflow alone does not:

- an unknown field is a 400 naming it (MLflow's schema enforcement would drop it silently),
  for JSON and Parquet bodies;
- a missing, empty or unsupported ``Content-Type`` is a 415 (CSV too: it cannot carry the list
  fields, and MLflow cannot parse it against this model's signature); MIME types match
  case-insensitively;
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
import sys
import time

import pandas as pd
import pyarrow.compute as pc
from anyio import to_thread

from recsys.errors import DataValidationError
from serving import requests as request_rules

log = logging.getLogger("recsys.serving")

MODEL_ENV = "RECSYS_SERVE_MODEL"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_PARQUET_BYTES = 64 * 1024 * 1024  # uncompressed size of a Parquet body's row groups
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)  # refused with a reason: see RequestGuard.check
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet")
ACCEPTED = "application/json or application/vnd.apache.parquet"
JSON_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")
_MLFLOW_ECHO = re.compile(r"^Failed to predict data .*\nError: ", re.DOTALL)  # MLflow repeats the input


class RequestRefused(Exception):
    """The guard's answer to a request it will not pass on: an HTTP status and a reason."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def create_app():
    """uvicorn factory: load the model named by RECSYS_SERVE_MODEL and build the guarded app.

    A model that cannot be loaded ends the process with uvicorn's startup-failure code (3), so
    with several workers the supervisor stops instead of restarting them forever.
    """
    import mlflow

    _object_strings()
    uri = os.environ.get(MODEL_ENV)
    try:
        if not uri:
            raise RuntimeError(f"set {MODEL_ENV} to the model folder to serve (recsys serve does)")
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # any load failure: one clear line, no traceback, a code uvicorn understands
        print(f"recsys serve: error: cannot load model {uri!r}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        sys.exit(3)
    return build_app(model)


def _object_strings() -> None:
    """In the server process only: pandas keeps strings as Python objects, as before pandas 3.

    Every request's frames are tiny (MLflow parses the body into one, enforces the signature on
    it, the model answers with one), and pandas 3's Arrow-backed string columns cost far more to
    build and read at that size than object columns: a profile of the server under load put a
    quarter of its time in their conversions (docs/results.md). The values are the same str
    objects. Where pandas no longer has the option (it is deprecated), nothing changes.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation warning (a Pandas4Warning in pandas 3.1)
        try:
            pd.set_option("future.infer_string", False)
        except (KeyError, ValueError, pd.errors.OptionError):
            log.info("pandas has no future.infer_string option: string columns stay as pandas makes them")


def build_app(model, *, direct: bool = True):
    """MLflow's scoring app for ``model`` (a loaded PyFuncModel) behind the RequestGuard.

    direct: for a recsys model, the guard answers ``/invocations`` itself (the model's ``answer``
    on the requests it has already parsed) instead of handing the body to MLflow's server to
    parse, check against the signature and convert again; the reply is the same
    ``{"predictions": [...]}``. False sends every request through MLflow's server (the tests
    compare the two)."""
    from mlflow.pyfunc import scoring_server

    from serving.recommend import candidate_budget

    python_model = _python_model(model)
    bundle = getattr(python_model, "bundle", None)
    if bundle is None:  # not one of ours (a benchmark's echo model): no request rules to apply
        return RequestGuard(scoring_server.init(model), candidate_budget=None)
    answer = getattr(python_model, "answer", None) if direct else None
    return RequestGuard(scoring_server.init(model), candidate_budget=candidate_budget(bundle),
                        default_k=bundle.config.k, answer=answer if callable(answer) else None)


def _python_model(model):
    try:
        return model.unwrap_python_model()
    except Exception:  # not a python-function model of ours
        return None


class RequestGuard:
    """ASGI middleware for POST /invocations; every other path passes through untouched.

    answer: the model's ``answer`` (validated requests -> one row dict per request), which the
    guard calls itself for the requests it has parsed; None passes every checked request on to
    MLflow's server (any pyfunc that is not a recsys model, or one saved before ``answer``).
    """

    def __init__(self, app, *, candidate_budget: int | None, default_k: int | None = None, answer=None):
        if answer is not None and default_k is None:
            raise ValueError("answer needs the model's request rules (default_k, candidate_budget)")
        self.app = app
        self.candidate_budget = candidate_budget
        self.default_k = default_k
        self.answer = answer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            body = await _read_body(scope, receive)
            if len(body) > 256 * 1024:  # parsing a large body off the event loop keeps /ping and others live
                scope, body, requests = await to_thread.run_sync(self.check, scope, body)
            else:
                scope, body, requests = self.check(scope, body)
        except RequestRefused as refused:
            return await _send_error(send, refused.status, refused.code, refused.message)
        if self.answer is not None:
            return await self._answer(requests, send)

        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as the app expects

        await self.app(scope, replay, _clean_errors(send))

    async def _answer(self, requests, send) -> None:
        """Rank the parsed requests and write MLflow's answer format, in a worker thread (ranking
        and a large answer's JSON hold the GIL in long stretches, and the batcher gathers the
        threads that wait together); the request's deadline counts from its arrival here."""
        received = time.monotonic()

        def reply() -> bytes:
            return json.dumps({"predictions": self.answer(requests, received)}).encode()

        try:
            body = await to_thread.run_sync(reply)
        except Exception as exc:
            return await _send_error(send, *request_rules.error_reply(exc))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def check(self, scope, body: bytes) -> tuple[dict, bytes, list | None]:
        """(the request's scope with a normalised Content-Type, the body to pass on, the parsed
        requests or None for a model that is not ours), or RequestRefused."""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        raw_type = next((v for k, v in scope["headers"] if k.lower() == b"content-type"), b"").decode("latin-1")
        mime, _, parameters = raw_type.partition(";")
        mime = mime.strip().lower()
        if not mime:
            raise RequestRefused(415, "UNSUPPORTED_MEDIA_TYPE", f"missing Content-Type header; send {ACCEPTED} "
                                 "(for example -H 'Content-Type: application/json')")
        if mime in JSON_TYPES:
            columns, rows = _json_rows(body)
        elif mime in CSV_TYPES:
            raise RequestRefused(415, "UNSUPPORTED_MEDIA_TYPE", "CSV cannot carry this endpoint's list fields "
                                 "(candidates, history, exclude) and MLflow cannot parse it against the model's "
                                 f"signature; send {ACCEPTED}")
        elif mime in PARQUET_TYPES:
            columns, rows = _parquet_rows(body)
            mime = PARQUET_TYPES[0]  # the name MLflow's server knows
        else:
            raise RequestRefused(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type {raw_type[:60]!r} is not supported; "
                                 f"send {ACCEPTED}")
        requests = None
        try:
            request_rules.check_fields(columns)
            if self.default_k is not None:
                # One of ours: every row is validated here, by the model's own rules, and answered
                # from the parsed requests (``_answer``); a model saved before ``answer`` existed
                # gets them from MLflow's server in a form its typed signature takes as it is.
                requests = request_rules.parse_request_rows(columns, rows, self.default_k, self.candidate_budget)
                if self.answer is None:
                    body = json.dumps(_canonical_split(requests, self.default_k)).encode()
                    mime, parameters = JSON_TYPES[0], ""
        except request_rules.RequestTooLargeError as exc:
            raise RequestRefused(413, "REQUEST_TOO_LARGE", str(exc)) from None
        except DataValidationError as exc:
            raise RequestRefused(400, "INVALID_PARAMETER_VALUE", str(exc)) from None
        content_type = mime + (";" + parameters if parameters else "")
        return {**scope, "headers": [*headers, (b"content-type", content_type.encode("latin-1"))]}, body, requests


def _canonical_split(requests: list, default_k: int) -> dict:
    """Validated requests as one ``dataframe_split`` payload that the model's typed signature takes
    as it is, so no row is coerced (5.5 -> 5) or refused for a field another row left out: ``k``
    when a row asks for other than ``default_k`` (then every row has an integer), ``candidates``
    when a row sends a list (null for the others: the model's own candidates), ``history``/
    ``exclude`` when a row has ids (``[]`` for the others)."""
    columns = ["user_id"]
    if any(r.k != default_k for r in requests):
        columns.append("k")
    if any(r.candidates is not None for r in requests):
        columns.append("candidates")
    columns += [field for field in ("history", "exclude") if any(getattr(r, field) for r in requests)]

    def value(request, column: str):
        got = getattr(request, column)
        return list(got) if isinstance(got, tuple) else got

    return {"dataframe_split": {"columns": columns, "data": [[value(r, c) for c in columns] for r in requests]}}


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


def _json_rows(body: bytes) -> tuple[list[str], list[dict]]:
    """(field names, request rows) of a JSON body, or RequestRefused."""
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
                             + (f"; unknown key(s) {request_rules.show(extra)}" if extra
                                else f"; got {request_rules.show(sorted(document))}"))
    return _rows(keys[0], document[keys[0]])


def _rows(key: str, data) -> tuple[list, list[dict]]:
    """(every field named, the request rows as dicts) of one JSON payload; RequestRefused when the
    shape is wrong. Fields come from the layout itself (split columns, columnar keys), so a field
    with no values is still checked."""
    shape_error = RequestRefused(400, "INVALID_PARAMETER_VALUE", f"'{key}' must be a list of objects, one per "
                                 "user (dataframe_split: {\"columns\": [...], \"data\": [[...], ...]})")
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) \
                or not isinstance(data.get("data"), list) or not all(isinstance(r, list) for r in data["data"]):
            raise shape_error
        columns = data["columns"]
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) < len(columns):
            raise RequestRefused(400, "INVALID_PARAMETER_VALUE", "'dataframe_split' columns must be distinct field "
                                 f"names (strings), got {request_rules.show(columns)}")
        return columns, [dict(zip(columns, r, strict=False)) for r in data["data"]]
    if key in ("inputs", "instances") and isinstance(data, dict):  # columnar: field -> list of values
        if not all(isinstance(v, list) for v in data.values()):
            raise shape_error
        n = max((len(v) for v in data.values()), default=0)
        return list(data), [{f: v[i] for f, v in data.items() if i < len(v)} for i in range(n)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise shape_error
    return list(dict.fromkeys(c for row in data for c in row)), data


def _parquet_rows(body: bytes) -> tuple[list[str], list[dict]]:
    """(field names, request rows) of a Parquet body, or RequestRefused. A file with more rows than
    one request may hold is refused unread."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(body))
        columns = parquet.schema_arrow.names
        try:
            request_rules.check_size(parquet.metadata.num_rows, [], 0)
        except request_rules.RequestTooLargeError as exc:
            raise RequestRefused(413, "REQUEST_TOO_LARGE", str(exc)) from None
        # A small file can decode to gigabytes (a long string repeated through its dictionary): read
        # every column dictionary-encoded (no expansion) and bound the decoded size first.
        paths = [parquet.schema.column(i).path for i in range(len(parquet.schema))]
        table = pq.ParquetFile(io.BytesIO(body), read_dictionary=paths).read()
        expanded = sum(_decoded_bytes(table.column(name)) for name in table.column_names)
        if expanded > MAX_PARQUET_BYTES:
            raise RequestRefused(413, "REQUEST_TOO_LARGE", f"Parquet body expands to {expanded:,} bytes; at most "
                                 f"{MAX_PARQUET_BYTES:,} (send fewer users per request, or use `recsys rank`)")
        rows = table.to_pylist()
    except RequestRefused:
        raise
    except Exception as exc:  # pyarrow raises several types for a body that is not Parquet
        raise RequestRefused(400, "INVALID_PARAMETER_VALUE", f"body is not a Parquet file: {str(exc)[:200]}") \
            from None
    return columns, rows


def _decoded_bytes(column) -> int:
    """Bytes a (possibly dictionary-encoded, possibly list) Arrow column takes once decoded."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        return sum(_decoded_bytes(chunk) for chunk in column.chunks)
    if pa.types.is_dictionary(column.type):
        values = column.dictionary
        if pa.types.is_string(values.type) or pa.types.is_binary(values.type) \
                or pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type):
            lengths = pc.take(pc.binary_length(values), column.indices)
            return int(pc.sum(lengths).as_py() or 0) + 8 * len(column)
        return values.nbytes // max(len(values), 1) * len(column)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return _decoded_bytes(column.flatten()) + 8 * len(column)
    return column.nbytes


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
