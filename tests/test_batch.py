import json

import polars as pl
import pytest

from recsys.errors import DataValidationError, RecsysError
from serving.batch import _manifest, rank_users, read_users_file


def test_empty_user_list_writes_an_empty_file_with_the_schema(small_bundle, tmp_path):
    report = rank_users(small_bundle, [], tmp_path / "empty.parquet", k=5, progress=False)
    out = pl.read_parquet(tmp_path / "empty.parquet")
    assert out.height == 0 and out.columns == ["user_id", "rank", "item_id", "score"]
    assert report.n_users == 0


def test_resume_refuses_a_partial_folder_from_other_inputs(small_bundle, tmp_path):
    partial = tmp_path / "out.parquet.partial"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps(_manifest(["a"], 3, 10, "m")))
    with pytest.raises(RecsysError, match="cannot resume"):
        rank_users(small_bundle, ["a"], tmp_path / "out.parquet", k=5, chunk_size=10, model_id="m",
                   resume=True, progress=False)
    assert not (tmp_path / "out.parquet").exists()


def test_users_file_without_user_id_column(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("customer\nu1\n")
    with pytest.raises(DataValidationError, match=r"users\.csv: missing column 'user_id'; found \['customer'\]"):
        read_users_file(path)
