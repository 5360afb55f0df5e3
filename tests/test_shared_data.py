"""Real public data (../shared/data) through the canonical loader and the splits."""

import polars as pl
import pytest

from recsys.dataset import Dataset
from recsys.split import split_interactions

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def movielens(shared_data) -> Dataset:
    root = shared_data / "movielens-100k" / "ml-100k"
    ratings = pl.read_csv(root / "u.data", separator="\t", has_header=False,
                          new_columns=["user_id", "item_id", "weight", "timestamp"])
    items = pl.read_csv(root / "u.item", separator="|", has_header=False, encoding="latin-1",
                        quote_char=None)
    items = items.select(items.columns[0], items.columns[1]).rename(
        {items.columns[0]: "item_id", items.columns[1]: "title"})
    return Dataset.from_frames(items=items.with_columns(pl.lit("").alias("description")),
                               interactions=ratings.with_columns(pl.col("weight").cast(pl.Float64)),
                               source="ml-100k")


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
