"""MLflow pyfunc wrapper (models-from-code): the file MLflow stores with every model version.

Heavy state loads once in ``load_context``; ``predict`` parses the request and ``answer`` ranks
it in a batch with the requests that arrive together (``serving/batcher.py``), under
``torch.inference_mode()``. ``recsys serve`` calls ``answer`` directly with the requests its guard
has already parsed (``serving/http_app.py``); ``predict`` is the way in for MLflow's own server,
``mlflow.pyfunc.load_model`` and Spark. Input: a DataFrame with one row per user (``user_id``; optional
``k``, ``candidates``, ``history``, ``exclude``; see ``serving/requests.py``). Output: one row
per user with ``user_id, item_ids, scores, path, unknown_ids``.

Errors map to an HTTP status in one place, ``error_reply``: a bad request 400, a request over the
work bounds 400 (``recsys serve`` answers 413 before it gets here), a request that waited or ran
past its deadline 503. Anything unexpected is logged with its traceback under an error id and
reported as a 500 that carries only that id. ``predict`` raises them as MlflowExceptions, whose
code MLflow's server maps to the same status.
"""

from __future__ import annotations

import logging
import os
import time

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from serving.batcher import RequestBatcher
from serving.requests import OUTPUT_COLUMNS, error_reply, parse_requests, rank_requests

log = logging.getLogger("recsys.serving")
# Seconds one request may wait for a thread and its turn, plus work. Through MLflow's server it is
# below MLflow's own 60 s timeout, so the client gets this model's 503 (and the work stops) rather
# than a 504 while work goes on; `recsys serve` counts it from the request's arrival.
DEADLINE_ENV = "RECSYS_REQUEST_DEADLINE_S"
DEFAULT_DEADLINE_S = 20.0


class RecommenderModel(PythonModel):
    def load_context(self, context) -> None:
        from features.bundle import RankingBundle

        self.bundle = RankingBundle.load(context.artifacts["bundle"])
        # Lookup tables and compiled trees (built or loaded from the cache) now, once per process,
        # not on the first request; and the one-id lookups requests use (a batch job joins instead).
        self.bundle.warm()
        self.bundle.state.users.warm()
        self.bundle.state.items.warm()
        # The server runs requests in a thread pool; ranking several at once only makes them
        # fight over the cores and the GIL, so requests that arrive together are ranked together,
        # one batch at a time (serving/batcher.py).
        self._batcher = RequestBatcher(self._rank)
        self.deadline_s = float(os.environ.get(DEADLINE_ENV, DEFAULT_DEADLINE_S))

    def _rank(self, requests, deadline):
        import torch

        with torch.inference_mode():
            return rank_requests(self.bundle, requests, deadline)

    def answer(self, requests, received: float | None = None) -> list[dict]:
        """Rank validated requests (``serving/requests.py``) in a batch with the requests that
        arrive together: one row dict per request (``OUTPUT_COLUMNS``). Raises RequestDeadlineError
        when the request waits or runs past its deadline, ``deadline_s`` after ``received`` (a
        ``time.monotonic()`` value; default now). ``recsys serve`` calls this directly, after its
        guard has parsed and checked the body."""
        deadline = (time.monotonic() if received is None else received) + self.deadline_s
        return self._batcher.rank(requests, deadline, wait_s=self.deadline_s)  # waited all of it by then

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos import databricks_pb2

        from serving.recommend import candidate_budget

        try:
            requests = parse_requests(model_input, self.bundle.config.k, candidate_budget(self.bundle))
            return pd.DataFrame(self.answer(requests), columns=OUTPUT_COLUMNS)
        except Exception as exc:
            _, code, message = error_reply(exc)
            raise MlflowException(message, error_code=getattr(databricks_pb2, code)) from None


mlflow.models.set_model(RecommenderModel())
