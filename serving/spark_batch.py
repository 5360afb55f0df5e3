"""Batch ranking on Spark: the same ranking as ``serving.batch``, with Spark doing the distribution.

``recsys rank --engine spark`` for user lists that outgrow one machine. The model is resolved
once on the driver to a local folder and shipped to the executors with ``SparkContext.addFile``
(what ``mlflow.pyfunc.spark_udf`` does); each executor's Python worker loads it once and ranks
its users with ``mapInPandas`` through ``serving.recommend.recommend_users``, the function the
single-machine job and the endpoint use, so the rankings are identical. The output is a Parquet
dataset (one part file per Spark task), written to ``<out>.partial`` by Spark's commit protocol
and renamed to ``<out>`` at the end: an interrupted job leaves no ``<out>``.

pyspark is an optional extra: ``pip install .[spark]`` (Java 17 on the PATH).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from recsys.errors import DataValidationError, RecsysError
from serving.batch import BatchReport

OUTPUT_SCHEMA = "user_id string, rank int, item_id string, score float, path string"
_loaded: dict[str, object] = {}  # per executor Python worker: model folder -> RankingBundle


def _bundle(folder: str):
    if folder not in _loaded:
        import mlflow

        _loaded[folder] = mlflow.pyfunc.load_model(folder).unwrap_python_model().bundle
    return _loaded[folder]


def _rank_partitions(model_name: str, k: int):
    """The mapInPandas function: pandas batches of user_id -> ranked rows (see OUTPUT_SCHEMA)."""

    def rank(batches):
        from pyspark import SparkFiles

        from serving.recommend import recommend_users

        bundle = _bundle(SparkFiles.get(model_name))
        for batch in batches:
            users = batch["user_id"].tolist()
            if users:
                yield recommend_users(bundle, users, k).to_pandas()

    return rank


def _read_users(spark, path: str):
    """Spark DataFrame of the user_id column of a Parquet or CSV file (nulls dropped)."""
    if not Path(path).exists():
        raise DataValidationError(f"users file {path} does not exist")
    frame = (spark.read.parquet(path) if path.endswith(".parquet")
             else spark.read.option("header", True).csv(path))
    if "user_id" not in frame.columns:
        raise DataValidationError(f"{path}: missing column 'user_id'; found {frame.columns}")
    return frame.selectExpr("cast(user_id as string) as user_id").where("user_id is not null")


def spark_session(master: str, app_name: str = "recsys-rank", *, progress: bool = True):
    """A Spark session whose Python workers run this interpreter, each on one thread per pool
    (Spark already runs one worker per core); Spark's console progress bar unless ``progress``
    is False, and only its errors logged."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS",
                 "RECSYS_RANK_WORKERS"):
        os.environ.setdefault(name, "1")
    session = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", str(progress).lower())
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "8")
               # One ranking thread per Python worker on executors of any master (local mode
               # workers also inherit the environment set above).
               .config("spark.executorEnv.RECSYS_RANK_WORKERS", "1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return session


def rank_users_spark(model_uri: str, out: str | Path, *, users_path: str | None, k: int,
                     master: str = "local[2]", partitions: int | None = None,
                     chunk_size: int = 2048, progress: bool = True) -> BatchReport:
    """Rank the users of ``users_path`` (default: every user the model knows) into the Parquet
    dataset ``out`` (user_id, rank, item_id, score). Duplicates are removed and counted; unknown
    users get the cold-start ranking and are counted.

    partitions: Spark tasks (default: 2 per core); chunk_size: users per pandas batch.
    """
    import mlflow
    import pyspark.sql.functions as F

    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RecsysError(f"{out} exists and is a file; the Spark engine writes a Parquet folder, choose a new --out")
    if users_path and not Path(users_path).exists():  # before paying for a Spark start
        raise DataValidationError(f"users file {users_path} does not exist")
    model_dir = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    bundle = _bundle(model_dir)
    spark = spark_session(master, progress=progress)
    try:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_size))
        spark.sparkContext.addFile(model_dir, recursive=True)
        known = spark.createDataFrame([(u,) for u in bundle.state.users.ids.to_list()], "user_id string")
        if users_path:
            users = _read_users(spark, users_path).cache()
        else:
            users = known
        n_input = users.count()
        unique = users.dropDuplicates(["user_id"]).cache()
        n_unique = unique.count()
        n_unknown = unique.join(F.broadcast(known), "user_id", "left_anti").count() if users_path else 0
        tasks = partitions or 2 * spark.sparkContext.defaultParallelism
        ranked = (unique.repartition(tasks, "user_id")
                  .mapInPandas(_rank_partitions(Path(model_dir).name, k), OUTPUT_SCHEMA))
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        ranked.write.parquet(str(partial))
        n_rows = spark.read.parquet(str(partial)).count()
    finally:
        spark.stop()
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return BatchReport(n_users=n_unique, n_unknown_users=n_unknown, n_duplicates_removed=n_input - n_unique,
                       n_rows=n_rows, n_chunks_resumed=0, seconds=time.perf_counter() - start)
