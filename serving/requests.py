"""Request parsing and validation for the pyfunc model (pandas only at this boundary)."""

from __future__ import annotations

import pandas as pd

from features.bundle import RankingBundle
from recsys.errors import DataValidationError
from serving.recommend import recommend

MAX_K = 100
MAX_USERS_PER_REQUEST = 1000


def parse_request(model_input: pd.DataFrame, default_k: int) -> tuple[list[str], int]:
    """Validated (user_ids, k) from a request frame; raises DataValidationError on bad input."""
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame(model_input)
    if "user_id" not in model_input.columns:
        raise DataValidationError(f"request needs a 'user_id' column; got columns {list(model_input.columns)}")
    if len(model_input) == 0:
        raise DataValidationError("request has no rows; send at least one user_id")
    if len(model_input) > MAX_USERS_PER_REQUEST:
        raise DataValidationError(
            f"request has {len(model_input)} users; at most {MAX_USERS_PER_REQUEST} per request (use `recsys rank`)"
        )
    if model_input["user_id"].isna().any():
        raise DataValidationError("user_id must not be null")
    k = default_k
    if "k" in model_input.columns and model_input["k"].notna().any():
        k = int(model_input["k"].dropna().iloc[0])
    if not 1 <= k <= MAX_K:
        raise DataValidationError(f"k must be between 1 and {MAX_K}, got {k}")
    return [str(u) for u in model_input["user_id"].tolist()], k


def predict_frame(bundle: RankingBundle, model_input: pd.DataFrame) -> pd.DataFrame:
    user_ids, k = parse_request(model_input, bundle.config.k)
    return recommend(bundle, user_ids, k).to_pandas()
