"""No catalog-order signal: the order of the rows of items.parquet changes no number of a run."""

from __future__ import annotations

import json

import polars as pl
import pytest

from recsys.demo_data import DemoSpec, generate_demo
from tests.conftest import tiny_config_dict
from tests.test_determinism import _differences, _recsys


def write_folder(folder, items: pl.DataFrame, data) -> None:
    folder.mkdir()
    items.write_parquet(folder / "items.parquet")
    data.interactions.write_parquet(folder / "interactions.parquet")
    data.impressions.write_parquet(folder / "impressions.parquet")


@pytest.mark.slow
def test_shuffling_the_catalog_rows_leaves_every_metric_identical(tmp_path):
    data = generate_demo(DemoSpec(n_users=100, n_items=100, days=15, seed=8))
    write_folder(tmp_path / "as_given", data.items, data)
    shuffled = data.items.sample(fraction=1.0, shuffle=True, seed=1)
    assert shuffled["item_id"].to_list() != data.items["item_id"].to_list()
    write_folder(tmp_path / "shuffled", shuffled, data)
    config = tiny_config_dict()
    config["text"]["steps"] = 4
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    for name in ("as_given", "shuffled"):
        _recsys(tmp_path, ["train", "--data", str(tmp_path / name), "--config", str(tmp_path / "tiny.json"),
                           "--k", "5", "--seed", "3", "--no-register", "--metrics-out", f"{name}.json"], hash_seed=1)
    first, second = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("as_given", "shuffled"))
    assert first["test"]["ranker"]["ndcg@5"] > first["test"]["random"]["ndcg@5"]
    differ = _differences(first, second)
    assert not differ, f"{len(differ)} metric(s) moved with the catalog's row order, e.g.\n" + "\n".join(differ[:20])
