"""End to end, as a user runs it: a canonical data folder -> `recsys train` (real MiniLM, real
MLflow registry) -> `recsys rank` -> `recsys serve` (the real MLflow server on 127.0.0.1),
whose answers must equal the batch job's for the same users."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import requests

from features.sources import REGISTERED
from recsys.cli import main
from recsys.demo_data import DemoSpec, generate_demo
from serving import server_process
from tests.conftest import tiny_config_dict

pytestmark = pytest.mark.slow

K = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train and batch-rank once; yields the working folder and the batch output."""
    work = tmp_path_factory.mktemp("e2e")
    data = generate_demo(DemoSpec(n_users=150, n_items=150, days=20, seed=21))
    (work / "data").mkdir()
    data.items.write_parquet(work / "data" / "items.parquet")
    data.interactions.write_parquet(work / "data" / "interactions.parquet")
    data.impressions.write_parquet(work / "data" / "impressions.parquet")
    # Two label cuts: the ranker also learns on the label window before the first (test below).
    (work / "tiny.json").write_text(json.dumps({**tiny_config_dict(), "label_cuts": 2}))
    old_cwd = os.getcwd()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(work)
    try:
        assert main(["-q", "train", "--data", "data", "--config", "tiny.json", "--k", str(K),
                     "--register", "e2e", "--metrics-out", "metrics.json"]) == 0
        assert main(["-q", "rank", "--model", "models:/e2e@champion", "--out", "ranked.parquet",
                     "--k", str(K)]) == 0
    finally:
        os.chdir(old_cwd)
    return work, pl.read_parquet(work / "ranked.parquet")


VARIANTS = {"ranker_finetuned_text", "ranker_pretrained_text", "ranker_no_text"}


def _bundle_in(work: Path, uri: str):
    """The ranking bundle of ``uri`` from the MLflow store in the working folder ``work``."""
    from recsys.cli import _load_bundle

    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        return _load_bundle(uri)[0]
    finally:
        os.chdir(old_cwd)


def test_metrics_cover_the_ranker_and_every_baseline(trained):
    work, _ = trained
    document = json.loads((work / "metrics.json").read_text())
    metrics, validation, shipped = document["test"], document["validation"], document["shipped_variant"]
    assert shipped in VARIANTS
    expected = {"ranker", *(VARIANTS - {shipped}), "random", "popularity", "popularity_7d", "newest", "als", "bpr",
                "ease", "cooccurrence", "text", "text_pretrained", *(source.name for source in REGISTERED)}
    assert {"transitions", "text_neighbours"} <= expected
    assert set(metrics) == expected and set(validation) == expected
    # The shipped variant is the best of the three on validation, or the no-text one when the
    # best one's text does not earn its place (paired interval over no text); test played no part.
    variants_val = {name: validation[name][f"ndcg@{K}"] for name in validation if name.startswith("ranker")}
    if variants_val["ranker"] != max(variants_val.values()):  # the leader's text did not earn its place
        reason = document["shipped_reason"]
        assert ("no text variant earns its place" in reason if shipped == "ranker_no_text"
                else "whose text did not earn its place" in reason)
    assert document["shipped_reason"].startswith(f"{shipped} is shipped")
    leader = max(variants_val, key=variants_val.get)
    if (shipped if leader == "ranker" else leader) != "ranker_no_text":
        # A text variant led or shipped: the choice tested its paired lift over no text.
        assert "paired lift over ranker_no_text" in document["shipped_reason"]
    # The baseline to beat is chosen on validation too; every model has an nDCG interval on test,
    # and the paired lift (a mean of per-user differences over one set of users) equals
    # the difference of the two means. (tests/test_evaluate.py checks the interval itself.)
    baselines = sorted(name for name in metrics if not name.startswith("ranker"))
    best = document["best_baseline"]
    assert best == max(baselines, key=lambda name: validation[name][f"ndcg@{K}"])  # the first of equals, as chosen
    assert all(metrics[name][f"ndcg@{K}_ci_low"] <= metrics[name][f"ndcg@{K}"] <= metrics[name][f"ndcg@{K}_ci_high"]
               for name in metrics)
    assert metrics["ranker"][f"lift_vs_best_baseline/ndcg@{K}"] == pytest.approx(
        metrics["ranker"][f"ndcg@{K}"] - metrics[best][f"ndcg@{K}"], abs=1e-9)
    for values in metrics.values():
        assert 0.0 <= values[f"ndcg@{K}"] <= 1.0 and 0.0 <= values[f"recall@{K}"] <= 1.0
    assert metrics["ranker"][f"ndcg@{K}"] > metrics["random"][f"ndcg@{K}"]


def test_the_registry_keeps_validation_and_test_apart(trained):
    from mlflow.tracking import MlflowClient

    from training import registry

    work, _ = trained
    document = json.loads((work / "metrics.json").read_text())
    store = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    tags = client.get_model_version("e2e", "1").tags
    validation, test = document["validation"]["ranker"], document["test"]["ranker"]
    # Promotion compares this value: the validation nDCG, not the test one.
    assert float(tags[registry.VALUE_TAG]) == validation[f"ndcg@{K}"]
    assert float(tags[registry.VALUE_TAG]) != test[f"ndcg@{K}"]
    assert tags[f"validation.ndcg_at_{K}"] == f"{validation[f'ndcg@{K}']:.4f}"
    assert tags[f"test.ndcg_at_{K}"] == f"{test[f'ndcg@{K}']:.4f}"
    assert tags["shipped_variant"] == document["shipped_variant"]
    assert tags["shipped_variant_by"] == "validation"  # ranker.ship "auto"
    assert len(tags[registry.DIGEST_TAG]) == 64
    card = client.get_model_version("e2e", "1").description
    assert card.startswith("# e2e version 1\n\nText-aware LambdaRank recommender trained on `data`")
    assert f"**Shipped variant: `{document['shipped_variant']}`.**" in card
    assert f"| validation | {validation[f'ndcg@{K}']:.4f} [" in card and f"| test | {test[f'ndcg@{K}']:.4f} [" in card
    for section in ("## Inputs and outputs", "## Known limitations", "## Promotion history"):
        assert card.count(section) == 1, section
    assert "| promote | - | 1 | first champion" in card
    # The promotion gate's input: the shipped ranker's nDCG per validation user, whose mean is the
    # validation nDCG above (the paired interval is computed on these rows).
    import mlflow

    mlflow.set_tracking_uri(store)
    try:
        per_user = pl.read_parquet(mlflow.artifacts.download_artifacts(artifact_uri=tags[registry.PER_USER_TAG]))
    finally:
        mlflow.set_tracking_uri(None)
    assert per_user.columns == ["user_id", "ndcg"] and per_user["user_id"].n_unique() == per_user.height > 0
    assert per_user["ndcg"].mean() == pytest.approx(validation[f"ndcg@{K}"], abs=1e-9)


def test_the_shipped_encoder_is_the_one_its_item_vectors_came_from(trained):
    """add-items encodes new items with the bundle's encoder: it must be the encoder of the shipped
    variant (pretrained MiniLM for the pretrained-text variant), or new items land in another space."""
    from features.sequence_tower import SequenceUserVectors
    from features.text_encoder import TextEncoder, item_texts

    work, _ = trained
    bundle = _bundle_in(work, "models:/e2e/1")
    items = generate_demo(DemoSpec(n_users=150, n_items=150, days=20, seed=21)).items.head(5)
    encoder = TextEncoder(bundle.encoder_dir, max_length=bundle.config.text.max_length)
    vectors = encoder.encode(item_texts(items), progress=False)
    if isinstance(bundle.state.user_text, SequenceUserVectors):  # fine-tuned: through the tower's item adaptor
        vectors = bundle.state.user_text.tower.item_vectors(vectors)
    stored = bundle.state.item_vectors[bundle.state.items.to_index(items["item_id"])]
    np.testing.assert_allclose(np.sum(vectors * stored, axis=1), 1.0, atol=1e-4)


def test_batch_output_has_k_distinct_items_per_known_user(trained):
    _, ranked = trained
    assert ranked.columns == ["user_id", "rank", "item_id", "score", "path"]
    assert ranked["path"].unique().to_list() == ["personalized"]  # every user ranked here is known
    per_user = ranked.group_by("user_id").agg(pl.len(), pl.col("item_id").n_unique().alias("distinct"),
                                              pl.col("rank").min().alias("first"))
    assert per_user["len"].to_list() == [K] * per_user.height
    assert per_user["distinct"].to_list() == [K] * per_user.height
    assert set(per_user["first"].to_list()) == {1}
    # scores are non-increasing down each list
    diffs = ranked.sort("user_id", "rank").group_by("user_id", maintain_order=True).agg(pl.col("score").diff())
    assert all(d is None or d <= 1e-6 for row in diffs["score"].to_list() for d in row)


def test_server_answers_equal_the_batch_job(trained):
    work, ranked = trained
    port = server_process.free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    server = server_process.start([sys.executable, "-m", "recsys.cli", "serve", "--model", "models:/e2e@champion",
                                   "--port", str(port)], health_url=f"http://127.0.0.1:{port}/ping", cwd=work,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        users = ranked["user_id"].unique().sort().head(3).to_list()
        reply = requests.post(f"{base}/invocations", timeout=60, json={
            "dataframe_records": [{"user_id": u, "k": K} for u in users]})
        assert reply.status_code == 200, reply.text
        served = reply.json()["predictions"]
        assert [row["path"] for row in served] == ["personalized"] * 3
        for row in served:
            expected = ranked.filter(pl.col("user_id") == row["user_id"]).sort("rank")
            assert row["item_ids"] == expected["item_id"].to_list()
            assert row["scores"] == pytest.approx(expected["score"].to_list(), abs=1e-5)

        unknown = requests.post(f"{base}/invocations", timeout=60,
                                json={"dataframe_records": [{"user_id": "never-seen"}]})
        assert unknown.status_code == 200
        assert [row["path"] for row in unknown.json()["predictions"]] == ["cold-start"]

        bad_k = requests.post(f"{base}/invocations", timeout=60,
                              json={"dataframe_records": [{"user_id": users[0], "k": 1000}]})
        assert bad_k.status_code == 400
        assert "k must be between 1 and 100, got 1000" in bad_k.text
        missing = requests.post(f"{base}/invocations", timeout=60, json={"dataframe_records": [{"k": 3}]})
        assert missing.status_code == 400
        assert "user_id" in missing.text
    finally:
        server_process.stop(server)


def test_users_file_with_duplicates_and_unknown_users(trained, tmp_path, capsys):
    work, ranked = trained
    known = ranked["user_id"].unique().sort().head(2).to_list()
    users = tmp_path / "users.csv"
    users.write_text("user_id\n" + "\n".join([known[0], known[1], known[0], "stranger"]) + "\n")
    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        assert main(["-q", "rank", "--model", "models:/e2e@champion", "--users", str(users),
                     "--out", str(tmp_path / "some.parquet"), "--k", str(K)]) == 0
    finally:
        os.chdir(old_cwd)
    assert re.search(r"ranked 3 users with e2e version \d+ \(run \w+\) \(1 unknown -> cold start, 1 duplicates "
                     r"removed\)", capsys.readouterr().out)
    out = pl.read_parquet(tmp_path / "some.parquet")
    assert out["user_id"].unique(maintain_order=True).to_list() == [known[0], known[1], "stranger"]
    paths = dict(out.select("user_id", "path").unique().iter_rows())
    assert paths == {known[0]: "personalized", known[1]: "personalized", "stranger": "cold-start"}
    assert out.filter(pl.col("user_id") == known[0])["item_id"].to_list() == \
        ranked.filter(pl.col("user_id") == known[0]).sort("rank")["item_id"].to_list()
    assert not (tmp_path / "some.parquet.partial").exists()


# `recsys ...` whose batch job kills itself (SIGKILL: no handler, no cleanup) when it starts its
# 4th chunk, after writing three.
KILLED_AT_THE_FOURTH_CHUNK = """
import os, signal, sys
import serving.batch
real, calls = serving.batch.recommend_users, []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
serving.batch.recommend_users = dying
from recsys.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_batch_job_resumes_to_the_same_output(trained, tmp_path):
    """SIGKILL mid-way leaves no output file; --resume keeps finished chunks and the result equals an
    uninterrupted run (no user missing, none twice)."""
    work, ranked = trained
    users = tmp_path / "users.csv"
    many = ranked["user_id"].unique().sort().to_list() + [f"cold-{i}" for i in range(6000)]
    users.write_text("user_id\n" + "\n".join(many) + "\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    base = [sys.executable, "-m", "recsys.cli", "-q", "rank", "--model", "models:/e2e@champion", "--users",
            str(users), "--k", str(K), "--chunk-size", "100"]
    out, partial = tmp_path / "killed.parquet", tmp_path / "killed.parquet.partial"
    # The job SIGKILLs itself as it starts its 4th chunk: a fixed point, whatever the machine's load.
    job = subprocess.run([sys.executable, "-c", KILLED_AT_THE_FOURTH_CHUNK, *base[3:], "--out", str(out)], cwd=work,
                         env=env, timeout=300)
    assert job.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not leave an output file"
    done_before = len(list(partial.glob("part-*.parquet")))
    assert done_before == 3
    resumed = subprocess.run(base + ["--out", str(out), "--resume"], cwd=work, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before} chunks kept from the interrupted run" in resumed.stdout
    clean = subprocess.run(base + ["--out", str(tmp_path / "clean.parquet")], cwd=work, env=env, timeout=300)
    assert clean.returncode == 0
    got, expected = pl.read_parquet(out), pl.read_parquet(tmp_path / "clean.parquet")
    assert got.equals(expected)
    assert got["user_id"].n_unique() == len(many)
    assert got.group_by("user_id").len()["len"].max() == K


def test_spark_batch_job_equals_the_single_machine_job(trained, tmp_path, capsys):
    """`recsys rank --engine spark` in local[2] mode: a Parquet folder whose rows equal the local job's."""
    work, ranked = trained
    known = ranked["user_id"].unique().sort().to_list()
    users = tmp_path / "users.csv"
    users.write_text("user_id\n" + "\n".join([*known, known[0], "stranger"]) + "\n")
    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        assert main(["-q", "rank", "--engine", "spark", "--model", "models:/e2e@champion", "--users", str(users),
                     "--out", str(tmp_path / "spark"), "--k", str(K), "--partitions", "3"]) == 0
        assert main(["-q", "rank", "--model", "models:/e2e@champion", "--users", str(users),
                     "--out", str(tmp_path / "local.parquet"), "--k", str(K)]) == 0
        with pytest.raises(SystemExit, match="2"):  # argparse rejects an unknown engine
            main(["-q", "rank", "--engine", "ray", "--model", "models:/e2e@champion", "--out", "x"])
    finally:
        os.chdir(old_cwd)
    out = capsys.readouterr().out
    assert f"ranked {len(known) + 1} users on Spark local[2] (1 unknown -> cold start, 1 duplicates removed)" in out
    parts = sorted((tmp_path / "spark").glob("part-*.parquet"))
    assert len(parts) >= 2, "Spark writes one part file per task"
    assert not (tmp_path / "spark.partial").exists()
    spark_rows = pl.read_parquet(parts).sort("user_id", "rank")
    local_rows = pl.read_parquet(tmp_path / "local.parquet").sort("user_id", "rank")
    assert spark_rows.height == (len(known) + 1) * K
    assert spark_rows.equals(local_rows)


WITHOUT_PROJECT = Path(__file__).with_name("without_project.py")


def _ranked_lists(frame: pl.DataFrame) -> dict[str, list[str]]:
    return {user: group.sort("rank")["item_id"].to_list() for (user,), group in frame.group_by("user_id")}


def test_the_registered_model_is_self_contained(trained, tmp_path):
    """The model carries its code (MLmodel ``code``) and pinned requirements without the project,
    and a Python where the project is not importable loads ``models:/e2e@champion`` and answers
    as `recsys rank` does."""
    import yaml

    work, ranked = trained
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", PYTHONPATH="")
    script = tmp_path / "predict.py"
    users = ranked["user_id"].unique().sort().head(6).to_list()
    script.write_text(
        "import json, sys\nimport mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/e2e@champion')\n"
        f"local = mlflow.artifacts.download_artifacts('models:/e2e@champion', dst_path={str(tmp_path / 'model')!r})\n"
        f"out = model.predict(pd.DataFrame({{'user_id': {users!r}}}))\n"
        "print(json.dumps({'local': local, 'rows': {r.user_id: list(r.item_ids) for r in out.itertuples()}}))\n")
    done = subprocess.run([sys.executable, str(WITHOUT_PROJECT), str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    expected = _ranked_lists(ranked.filter(pl.col("user_id").is_in(users)))
    assert answer["rows"] == expected
    model_dir = Path(answer["local"])
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert meta["flavors"]["python_function"]["code"] == "code"
    assert {p.name for p in (model_dir / "code").iterdir()} == {"serving", "features", "recsys"}
    assert not list((model_dir / "code").rglob("__pycache__"))
    requirements = (model_dir / "requirements.txt").read_text()
    assert "lightgbm==" in requirements and "recsys" not in requirements
    inputs = {c["name"]: c for c in json.loads(meta["signature"]["inputs"])}
    assert inputs["k"]["type"] == "long"
    assert all(inputs[f]["type"] == "array" and inputs[f]["items"]["type"] == "string"
               for f in ("candidates", "history", "exclude"))
    example = json.loads((model_dir / "serving_input_example.json").read_text())
    assert set(example["dataframe_split"]["columns"]) == {"user_id", "k", "candidates", "history", "exclude"}


def test_spark_udf_on_workers_without_the_project_equals_recsys_rank(trained, tmp_path, monkeypatch):
    """``mlflow.pyfunc.spark_udf(spark, "models:/e2e@champion")`` in local[2], whose Python
    workers cannot import the project, gives the rows of `recsys rank`."""
    import mlflow
    import pyspark.sql.functions as F

    from serving.spark_batch import spark_session

    work, ranked = trained
    python = tmp_path / "python-without-project"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {WITHOUT_PROJECT} \"$@\"\n")
    python.chmod(0o755)
    monkeypatch.setenv("PYSPARK_PYTHON", str(python))  # the workers' interpreter
    users = ranked["user_id"].unique().sort().to_list()
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    spark = spark_session("local[2]", "spark-udf-test", progress=False)
    try:
        recommend = mlflow.pyfunc.spark_udf(spark, "models:/e2e@champion", env_manager="local")
        frame = spark.createDataFrame(pd.DataFrame({"user_id": users})).repartition(2)
        # One struct argument: the udf passes exactly these columns (named arguments would add
        # the signature's other optional columns filled with NaN, which the typed schema refuses).
        request = F.struct("user_id", F.lit(K).cast("long").alias("k"))
        rows = frame.withColumn("answer", recommend(request)).select("user_id", "answer.item_ids",
                                                                      "answer.path").toPandas()
    finally:
        spark.stop()
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    assert len(rows) == len(users)
    got = {row.user_id: list(row.item_ids) for row in rows.itertuples()}
    assert got == _ranked_lists(ranked)
    batch_paths = dict(ranked.select("user_id", "path").unique().iter_rows())
    assert {row.user_id: row.path for row in rows.itertuples()} == batch_paths


def test_runs_table_lists_the_run_with_its_metrics(trained, capsys):
    work, _ = trained
    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        assert main(["runs", "--k", str(K)]) == 0
    finally:
        os.chdir(old_cwd)
    out = capsys.readouterr().out
    assert f"ndcg_at_{K}" in out.splitlines()[0]
    row = next(line for line in out.splitlines() if line.startswith("ranker-temporal-seed42"))
    ndcg = json.loads((work / "metrics.json").read_text())["test"]["ranker"][f"ndcg@{K}"]
    assert f"{ndcg:.4f}*" in row  # the only run is the best in its column
    assert "baseline-" not in out  # child runs are not listed as runs of their own


def test_add_items_makes_new_items_recommendable_without_retraining(trained, tmp_path, capsys):
    """Cold-start catalog update: new items with text join the registered model as a new version."""
    import mlflow

    from serving.recommend import recommend_requests
    from serving.requests import parse_requests

    work, ranked = trained
    items = tmp_path / "new_items.csv"
    items.write_text("item_id,title,description,category\n"
                     "NEW1,Striker scores twice in the derby,The league leaders win at the stadium,sports\n"
                     "NEW2,Chef bakes bread,A recipe for dinner with spices,lifestyle\n")
    old_cwd, promoted = os.getcwd(), False
    os.chdir(work)
    try:
        promoted = main(["-q", "add-items", "--model", "models:/e2e@champion", str(items), "--promote"]) == 0
        assert promoted
        assert "+ 2 new item(s) (now champion)" in capsys.readouterr().out
        assert main(["-q", "add-items", "--model", "models:/e2e@champion", str(items)]) == 2
        assert "already in the model" in capsys.readouterr().err
        bundle = mlflow.pyfunc.load_model("models:/e2e@champion").unwrap_python_model().bundle
    finally:
        if promoted:  # leave the champion as the other tests expect, even when an assertion failed
            assert main(["-q", "rollback", "--name", "e2e"]) == 0
        os.chdir(old_cwd)
    state = bundle.state
    assert list(state.items.to_index(["NEW1", "NEW2"])) == [state.n_items - 2, state.n_items - 1]
    assert np.allclose(np.linalg.norm(state.item_vectors[-2:], axis=1), 1.0, atol=1e-4)
    user = ranked["user_id"][0]
    answer = recommend_requests(bundle, parse_requests(pd.DataFrame([
        {"user_id": user, "k": 2, "candidates": ["NEW1", "NEW2"]},
        {"user_id": "fan", "k": 3, "history": ["NEW1"]}]), default_k=K))
    assert sorted(answer[0]["item_ids"]) == ["NEW1", "NEW2"] and answer[0]["unknown_ids"] == []
    assert answer[1]["path"] == "history-only" and "NEW1" not in answer[1]["item_ids"]


def _champion_and_another(work: Path, tmp_path: Path) -> tuple[int, int]:
    """(the champion's version of ``e2e``, a registered version besides it): the highest other
    one there is, or a new one made by add-items (not promoted) when the module's other tests
    made none, so the test that needs it also runs alone. Run with ``work`` as the cwd."""
    from mlflow import MlflowClient

    store = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    champion = int(client.get_model_version_by_alias("e2e", "champion").version)
    others = sorted(int(v.version) for v in client.search_model_versions("name='e2e'") if int(v.version) != champion)
    if others:
        return champion, others[-1]
    items = tmp_path / "another_item.csv"
    items.write_text("item_id,title,description,category\nANOTHER1,Ferry timetable changes,"
                     "The harbour adds a late crossing,travel\n")
    assert main(["-q", "add-items", "--model", "models:/e2e@champion", str(items)]) == 0
    return champion, max(int(v.version) for v in client.search_model_versions("name='e2e'"))


def test_resume_after_the_champion_moved_refuses_to_mix_versions(trained, tmp_path, capsys, monkeypatch):
    """A run on models:/e2e@champion is interrupted, the champion moves (a real promote), and
    --resume refuses, naming the version the partial output was ranked with; finishing with that
    version works. The other version is add-items' (this module's earlier test leaves one; alone,
    the test makes its own)."""
    import serving.batch

    work, ranked = trained
    users = tmp_path / "users.csv"
    users.write_text("user_id\n" + "\n".join(ranked["user_id"].unique().sort().to_list()) + "\n")
    out = tmp_path / "ranked.parquet"
    base = ["-q", "rank", "--users", str(users), "--out", str(out), "--k", str(K), "--chunk-size", "20"]
    real, calls = serving.batch.recommend_users, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    old_cwd, promoted = os.getcwd(), False
    os.chdir(work)
    try:
        champion, other = _champion_and_another(work, tmp_path)
        assert champion == 1, "an earlier test left the champion off version 1, which made the fixture's ranking"
        monkeypatch.setattr(serving.batch, "recommend_users", interrupted)
        assert main([*base[:2], "--model", "models:/e2e@champion", *base[2:]]) == 130
        monkeypatch.setattr(serving.batch, "recommend_users", real)
        assert main(["-q", "promote", "--name", "e2e", "--version", str(other), "--force", "--reason", "test"]) == 0
        promoted = True
        capsys.readouterr()
        assert main([*base[:2], "--model", "models:/e2e@champion", *base[2:], "--resume"]) == 2
        err = capsys.readouterr().err
        assert re.search(rf"ranked with models:/e2e/1 \(run \w+\), and the model given now is models:/e2e/{other}", err)
        assert not out.exists()
        assert main([*base[:2], "--model", "models:/e2e/1", *base[2:], "--resume"]) == 0
        assert "2 chunks kept from the interrupted run" in capsys.readouterr().out
    finally:
        if promoted:  # leave the champion where the other tests expect it
            main(["-q", "rollback", "--name", "e2e"])
        os.chdir(old_cwd)
    # every user once, all from version 1: the same rows as the fixture's uninterrupted v1 run
    assert pl.read_parquet(out).sort("user_id", "rank").equals(ranked.sort("user_id", "rank"))


def test_the_run_logs_the_choices_it_made_from_the_data(trained):
    from mlflow.tracking import MlflowClient

    work, _ = trained
    store = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    run = client.get_run(client.get_model_version("e2e", "1").run_id)
    # 150 items: EASE (cosine co-occurrence only above item_item_max_items); the tiny config's 10
    # BPR epochs stay 10 (far below bpr_max_samples); well under 200 training label users: one ranker.
    assert run.data.params["data_choice.item_item"] == "ease"
    assert run.data.params["data_choice.bpr_epochs"] == "10"
    assert run.data.params["data_choice.ranker_folds"] == "1"


def test_a_second_label_cut_adds_ranker_queries_and_shrinks_the_text_window(trained):
    from mlflow.tracking import MlflowClient

    work, _ = trained
    store = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    run_id = client.get_model_version("e2e", "1").run_id
    diagnostics = client.search_runs([client.get_run(run_id).info.experiment_id],
                                     filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.role = "
                                                   "'diagnostics'")[0].data.metrics
    assert client.get_run(run_id).data.params["label_cuts"] == "2"
    assert diagnostics["data/label_users_cut2"] > 0
    # The text model learns on the second cut's feature window: inside the first's, without its labels.
    assert 0 < diagnostics["data/text_window_rows"] < diagnostics["data/feature_window_rows"]
    assert diagnostics["data/ranker_queries"] > diagnostics["data/ranker_queries_cut1"] > 0
    # Work sizes (benchmarks/train.py's exponents against them) go to the stage that did the work:
    # with 150 items the state's model is EASE (a dense inverse: no pairs recorded), and the
    # co-occurrence baseline's cosine fits count their pairs (at most 150 x 149 each) where
    # evaluation runs them.
    assert diagnostics["time/item_item_s"] > 0 and "work/item_item/pairs" not in diagnostics
    baseline_pairs = {k: v for k, v in diagnostics.items() if k.startswith("work/") and k.endswith("/pairs")}
    assert set(baseline_pairs) <= {"work/evaluation/pairs", "work/features/pairs"} and baseline_pairs
    assert all(0 < v <= 4 * 150 * 149 and v == int(v) for v in baseline_pairs.values())


@pytest.fixture(scope="module")
def trained_with_refit(tmp_path_factory):
    """A second run, on the same data and settings as ``trained`` but with ``text.sequence_refit``
    on (no ranking, serving or registry checks); yields the working folder and (rows of the
    window, the user model) per ``training.pipeline.window_text`` call."""
    from training import pipeline

    work = tmp_path_factory.mktemp("e2e-refit")
    data = generate_demo(DemoSpec(n_users=150, n_items=150, days=20, seed=21))  # the other run's data
    (work / "data").mkdir()
    data.items.write_parquet(work / "data" / "items.parquet")
    data.interactions.write_parquet(work / "data" / "interactions.parquet")
    data.impressions.write_parquet(work / "data" / "impressions.parquet")
    tiny = tiny_config_dict()
    (work / "refit.json").write_text(json.dumps({**tiny, "label_cuts": 2,
                                                 "text": {**tiny["text"], "sequence_refit": True}}))
    windows = []

    def recorded(w, window, *rest):
        vectors, user_model = real_window_text(w, window, *rest)
        windows.append((window.train.height, user_model))
        return vectors, user_model

    real_window_text = pipeline.window_text
    old_cwd = os.getcwd()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(work)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pipeline, "window_text", recorded)
            assert main(["-q", "train", "--data", "data", "--config", "refit.json", "--k", str(K),
                         "--register", "e2e-refit"]) == 0
    finally:
        os.chdir(old_cwd)
    return work, windows


def test_each_window_reads_a_tower_refitted_on_it_and_the_model_ships_the_training_windows(trained_with_refit):
    """With ``text.sequence_refit``: the feature window, the extra cut's window and the training
    window each get their own refitted tower; the registered model carries the training window's."""
    from mlflow.tracking import MlflowClient

    work, windows = trained_with_refit
    store = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    run = client.get_run(client.get_model_version("e2e-refit", "1").run_id)
    diagnostics = client.search_runs([run.info.experiment_id],
                                     filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.role = "
                                                   "'diagnostics'")[0].data.metrics
    rows = [rows for rows, _ in windows]
    assert rows == [diagnostics["data/feature_window_rows"], diagnostics["data/text_window_rows"],
                    run.data.metrics["size/train_rows"]]
    assert diagnostics["text/sequence_best_epoch"] > 0  # else no refit ran and this test shows nothing
    towers = [model for _, model in windows]
    assert len({id(t) for t in towers}) == 3
    bundle = _bundle_in(work, "models:/e2e-refit/1")
    shipped = bundle.state.user_text.tower.state_dict()
    for name, value in towers[2].state_dict().items():
        assert np.array_equal(shipped[name].numpy(), value.numpy()), name
    assert not np.array_equal(shipped["adapt.weight"].numpy(), towers[0].state_dict()["adapt.weight"].numpy())
