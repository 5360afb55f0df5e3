"""MLflow pyfunc wrapper (models-from-code): the file MLflow stores with every model version.

Heavy state loads once in ``load_context``; ``predict`` parses the request in its own thread
and ranks it in a batch with the requests that arrive together (``serving/batcher.py``), under
``torch.inference_mode()``. Input: a DataFrame with one row per user (``user_id``; optional
``k``, ``candidates``, ``history``, ``exclude``; see ``serving/requests.py``). Output: one row
per user with ``user_id, item_ids, scores, path, unknown_ids``.

Errors reach the client as MlflowExceptions whose code MLflow maps to the HTTP status: a bad
request 400, a request over the work bounds 400 (``recsys serve`` answers 413 before it gets
here), a request that waited or ran past its deadline 503. Anything unexpected is logged here
with its traceback under an error id and reported as a 500 that carries only that id.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from serving.batcher import RequestBatcher
from serving.requests import OUTPUT_COLUMNS, parse_requests, rank_requests

log = logging.getLogger("recsys.serving")
# Seconds one request may wait for its turn plus work; below MLflow's own 60 s timeout, so the
# client gets this model's 503 (and the work stops) rather than a 504 while work goes on.
DEADLINE_ENV = "RECSYS_REQUEST_DEADLINE_S"
DEFAULT_DEADLINE_S = 20.0


class RecommenderModel(PythonModel):
    def load_context(self, context) -> None:
        from features.bundle import RankingBundle

        self.bundle = RankingBundle.load(context.artifacts["bundle"])
        self.bundle.state.dense_tables()  # build the lookup tables now, not on the first request
        self.bundle.compiled_trees()  # compile (or load the cached) trees now, once per process
        # The server runs requests in a thread pool; ranking several at once only makes them
        # fight over the cores and the GIL, so requests that arrive together are ranked together,
        # one batch at a time (serving/batcher.py).
        self._batcher = RequestBatcher(self._rank)
        self.deadline_s = float(os.environ.get(DEADLINE_ENV, DEFAULT_DEADLINE_S))

    def _rank(self, requests, deadline):
        import torch

        with torch.inference_mode():
            return rank_requests(self.bundle, requests, deadline)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

        from recsys.errors import RecsysError, RequestDeadlineError
        from serving.recommend import candidate_budget

        deadline = time.monotonic() + self.deadline_s
        try:
            requests = parse_requests(model_input, self.bundle.config.k, candidate_budget(self.bundle))
            rows = self._batcher.rank(requests, deadline, wait_s=self.deadline_s)
            return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)
        except RequestDeadlineError as exc:
            raise MlflowException(str(exc), error_code=TEMPORARILY_UNAVAILABLE) from None
        except RecsysError as exc:  # the server answers 400 with this message, not a 500
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("request failed (error id %s)", error_id)
            raise MlflowException(f"internal error while ranking (error id {error_id}); the server log has the "
                                  "details", error_code=INTERNAL_ERROR) from None


mlflow.models.set_model(RecommenderModel())
