"""MLflow pyfunc wrapper (models-from-code): the file MLflow stores with every model version.

Heavy state loads once in ``load_context``; ``predict`` is light and runs under
``torch.inference_mode()``. Input: a DataFrame with ``user_id`` (str) and optionally ``k``
(int; the first row's value applies to the request). Output: one row per (user, rank) with
``user_id, rank, item_id, score, path``.
"""

from __future__ import annotations

import threading

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from serving.requests import predict_frame


class RecommenderModel(PythonModel):
    def load_context(self, context) -> None:
        from features.bundle import RankingBundle

        self.bundle = RankingBundle.load(context.artifacts["bundle"])
        self.bundle.state.dense_tables()  # build the lookup tables now, not on the first request
        # The server runs requests in a thread pool; letting several rank at once only makes
        # them fight over the cores and the GIL, so they take turns (measured: more req/s).
        self._lock = threading.Lock()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        import torch
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from recsys.errors import RecsysError

        try:
            with self._lock, torch.inference_mode():
                return predict_frame(self.bundle, model_input)
        except RecsysError as exc:  # the server answers 400 with this message, not a 500
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc


mlflow.models.set_model(RecommenderModel())
