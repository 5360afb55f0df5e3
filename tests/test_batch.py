import json
import re

import polars as pl
import pytest

from recsys.errors import DataValidationError, RecsysError
from serving.batch import _manifest, rank_users, read_users_file
from serving.model_uri import ResolvedModel


def test_empty_user_list_writes_an_empty_file_with_the_schema(small_bundle, tmp_path):
    report = rank_users(small_bundle, [], tmp_path / "empty.parquet", k=5, progress=False)
    out = pl.read_parquet(tmp_path / "empty.parquet")
    assert out.height == 0 and out.columns == ["user_id", "rank", "item_id", "score", "path"]
    assert report.n_users == 0


def test_resume_refuses_a_partial_folder_from_other_inputs(small_bundle, tmp_path):
    partial = tmp_path / "out.parquet.partial"
    partial.mkdir()
    model = ResolvedModel(uri="models:/m@champion", pinned_uri="models:/m/1", name="m", version="1", run_id="r1")
    (partial / "manifest.json").write_text(json.dumps(_manifest(["a"], 3, 10, model)))
    with pytest.raises(RecsysError, match="cannot resume: .* written for other users, k or chunk size"):
        rank_users(small_bundle, ["a"], tmp_path / "out.parquet", k=5, chunk_size=10, model=model,
                   resume=True, progress=False)
    assert not (tmp_path / "out.parquet").exists()


def test_users_file_without_user_id_column(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("customer\nu1\n")
    with pytest.raises(DataValidationError, match=r"users\.csv: missing column 'user_id'; found \['customer'\]"):
        read_users_file(path)


def test_resume_refuses_a_partial_folder_ranked_by_another_model_version(small_bundle, tmp_path):
    """`recsys rank --resume` after the champion alias moved: refused, naming both versions."""
    out = tmp_path / "out.parquet"
    v1 = ResolvedModel(uri="models:/m@champion", pinned_uri="models:/m/1", name="m", version="1", run_id="r1")
    v2 = ResolvedModel(uri="models:/m@champion", pinned_uri="models:/m/2", name="m", version="2", run_id="r2")
    partial = tmp_path / "out.parquet.partial"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps(_manifest(["a", "b"], 5, 1, v1)))
    rank_users(small_bundle, ["a"], tmp_path / "part-src.parquet", k=5, progress=False)
    (tmp_path / "part-src.parquet").rename(partial / "part-000000.parquet")
    with pytest.raises(RecsysError, match=r"ranked with models:/m/1 \(run r1\).* now is models:/m/2 \(run r2\); "
                                          r"one output never mixes models. Resume with --model models:/m/1"):
        rank_users(small_bundle, ["a", "b"], out, k=5, chunk_size=1, model=v2, resume=True, progress=False)
    assert not out.exists() and (partial / "part-000000.parquet").exists()  # nothing lost, nothing mixed
    report = rank_users(small_bundle, ["a", "b"], out, k=5, chunk_size=1, model=v1, resume=True, progress=False)
    assert report.n_chunks_resumed == 1


def test_chunk_size_below_one_is_refused(small_bundle, tmp_path):
    with pytest.raises(RecsysError, match="chunk size must be at least 1, got 0"):
        rank_users(small_bundle, ["a"], tmp_path / "o.parquet", k=5, chunk_size=0, progress=False)


@pytest.mark.parametrize("name, content, message", [
    ("users.csv", "user_id\n", r"holds no user ids \(0 rows\); leave out --users"),
    ("users.csv", "user_id\n\n\n", "holds no user ids"),
    ("users.parquet", "user_id\nu1\n", r"users\.parquet cannot be read as Parquet: .*Give a \.parquet file"),
    ("missing.csv", None, "does not exist or is not a file"),
])
def test_unusable_users_files_are_refused_with_the_reason(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataValidationError, match=message):
        read_users_file(path)


@pytest.fixture
def no_model_needed(monkeypatch):
    """The output checks of `recsys rank` run before the model loads: loading fails loudly if reached."""
    import recsys.cli

    def _fail(uri):
        raise AssertionError("the model was loaded before the arguments were checked")
    monkeypatch.setattr(recsys.cli, "_load_bundle", _fail)


@pytest.mark.parametrize("setup, extra, message", [
    ("file", [], r"already exists; pass --overwrite to replace it"),
    ("folder", [], r"is a folder; give a file name such as"),
    ("none", ["--chunk-size", "-1"], r"--chunk-size: must be at least 1, got -1"),
    ("none", ["--chunk-size", "0"], r"--chunk-size: must be at least 1, got 0"),
    ("empty-users", [], r"holds no user ids"),
    ("text-parquet-users", [], r"cannot be read as Parquet"),
])
def test_rank_refuses_bad_arguments_up_front_with_exit_2(tmp_path, capsys, no_model_needed, setup, extra, message):
    from recsys.cli import main

    out = tmp_path / "out.parquet"
    if setup == "file":
        out.write_bytes(b"520 rows of an earlier ranking")
    elif setup == "folder":
        out.mkdir()
    args = ["-q", "rank", "--model", "models:/m@champion", "--out", str(out), *extra]
    if setup == "empty-users":
        (tmp_path / "u.csv").write_text("user_id\n")
        args += ["--users", str(tmp_path / "u.csv")]
    elif setup == "text-parquet-users":
        (tmp_path / "u.parquet").write_text("user_id\nu1\n")
        args += ["--users", str(tmp_path / "u.parquet")]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    if setup == "file":
        assert out.read_bytes() == b"520 rows of an earlier ranking"  # untouched


@pytest.mark.parametrize("manifest, message", [
    (None, "has no readable manifest.json"),
    ("{\"users_sha", "has no readable manifest.json"),
    (json.dumps({"users_sha256": "x", "n_users": 1, "k": 5, "chunk_size": 10, "model": "models:/m@champion"}),
     "written by an older recsys that did not pin the model version"),
])
def test_resume_of_a_partial_folder_without_a_usable_manifest_says_start_over(small_bundle, tmp_path, manifest,
                                                                             message):
    partial = tmp_path / "out.parquet.partial"
    partial.mkdir()
    if manifest is not None:
        (partial / "manifest.json").write_text(manifest)
    with pytest.raises(RecsysError, match=f"{message}.*run again without --resume"):
        rank_users(small_bundle, ["a"], tmp_path / "out.parquet", k=5, chunk_size=10, resume=True, progress=False)


@pytest.mark.parametrize("setup, message", [
    ("existing-folder", r"--out .* already exists; pass --overwrite"),
    ("file", r"--out .* is a file; the Spark engine writes a folder"),
    ("empty-users", r"holds no user ids"),
    ("text-parquet-users", r"cannot be read as Parquet"),
])
def test_spark_rank_refuses_the_same_mistakes_before_spark_starts(tmp_path, capsys, no_model_needed, monkeypatch,
                                                                  setup, message):
    import recsys.cli

    out = tmp_path / "ranked"
    args = ["-q", "rank", "--engine", "spark", "--model", "models:/m@champion", "--out", str(out)]
    if setup == "existing-folder":
        out.mkdir()
        (out / "part-0.parquet").write_bytes(b"earlier output")
    elif setup == "file":
        out.write_bytes(b"x")
    elif setup == "empty-users":
        (tmp_path / "u.csv").write_text("user_id\n")
        args += ["--users", str(tmp_path / "u.csv")]
    else:
        (tmp_path / "u.parquet").write_text("user_id\nu1\n")
        args += ["--users", str(tmp_path / "u.parquet")]
    assert recsys.cli.main(args) == 2
    assert re.search(message, capsys.readouterr().err)
    if setup == "existing-folder":
        assert (out / "part-0.parquet").read_bytes() == b"earlier output"


def test_the_output_file_records_its_provenance(small_bundle, tmp_path):
    model = ResolvedModel(uri="models:/m@champion", pinned_uri="models:/m/3", name="m", version="3", run_id="abc")
    out = tmp_path / "o.parquet"
    rank_users(small_bundle, small_bundle.state.users.ids.head(3).to_list(), out, k=4, model=model, progress=False)
    meta = pl.read_parquet_metadata(out)
    assert {key: meta[key] for key in ("recsys.model_uri", "recsys.model", "recsys.model_name",
                                       "recsys.model_version", "recsys.run_id", "recsys.k")} == \
        {"recsys.model_uri": "models:/m@champion", "recsys.model": "models:/m/3", "recsys.model_name": "m",
         "recsys.model_version": "3", "recsys.run_id": "abc", "recsys.k": "4"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", meta["recsys.ranked_at"])
    assert pl.read_parquet(out).height == 12
    empty = tmp_path / "e.parquet"
    rank_users(small_bundle, [], empty, k=4, model=model, progress=False)
    assert pl.read_parquet_metadata(empty)["recsys.model_version"] == "3"
