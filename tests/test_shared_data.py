"""Real public data (../shared/data): MovieLens 100K through the importer, the splits and the pipeline."""

import polars as pl
import pytest

from recsys.dataset import Dataset
from recsys.split import split_interactions

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def movielens(shared_data) -> Dataset:
    from recsys.importers.movielens import import_movielens

    src = shared_data / "movielens-100k"
    tables, _ = import_movielens(src / "ml-100k", descriptions=[src / "movielens100k_imdb_details.csv"])
    return Dataset.from_frames(**tables, source="ml100k")


def test_movielens_loads_whole(movielens):
    summary = movielens.summary()
    assert (summary["n_interactions"], summary["n_users"], summary["n_items"]) == (100_000, 943, 1682)
    assert sum(movielens.skipped.values()) == 0
    assert movielens.interactions["timestamp"].min().year == 1997


def test_movielens_stratified_split_is_75_25_per_user(movielens):
    split = split_interactions(movielens.interactions, kind="stratified", test_fraction=0.25, seed=1)
    share = split.test.height / movielens.interactions.height
    assert 0.24 < share < 0.26
    assert split.train["user_id"].n_unique() == 943
    per_user = split.test.group_by("user_id").len().join(
        movielens.interactions.group_by("user_id").len(), on="user_id", suffix="_all")
    assert per_user.select((pl.col("len") / pl.col("len_all")).min()).item() > 0.2


def test_leave_last_out_tests_each_users_last_rating(movielens):
    split = split_interactions(movielens.interactions, kind="leave-last-out")
    assert split.test.height == 943
    last = movielens.interactions.group_by("user_id").agg(pl.col("timestamp").max())
    assert split.test.join(last, on=["user_id", "timestamp"]).height == 943
