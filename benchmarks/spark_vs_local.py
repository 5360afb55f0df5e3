"""Batch ranking on Spark (`local[N]`) against the single-machine job, per core, same model, same run.

    .venv/bin/python benchmarks/spark_vs_local.py --model models:/NAME/V [--master local[2]]
    .venv/bin/python benchmarks/spark_vs_local.py --model URI --sample-users 40000 --data data/scale-10

``--sample-users N --data DIR`` ranks a seeded uniform sample of N of the users in DIR's
interactions instead of every user the model knows (at scale 10 all 1,000,000 users would take
hours per job; a user the model does not know takes the fallback path in both engines).

Runs `recsys -q rank` with each engine in child processes, on the first half of the model's
users and on all of them, each job ``--repeat`` times (the fastest counts: the machine is
shared). Each job's fixed costs (model load; for Spark also the session, shipping the model to
the executors and the counts) are the same for both sizes, so the extra users over the extra
seconds is the engine's steady throughput; divided by the cores each engine ran on (the local
job: its ranking worker threads, `RECSYS_RANK_WORKERS` or every core; Spark: the N of
`local[N]`) it gives users/s per core. Also prints the fixed cost (seconds before the first
user) and whether both engines wrote the same rows. Needs the `spark` extra and Java 17.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECSYS = str(Path(sys.executable).with_name("recsys"))


def run_job(args: list[str]) -> float:
    """Wall seconds of one `recsys -q rank ...` child process (its output checked)."""
    start = time.perf_counter()
    done = subprocess.run([RECSYS, "-q", "rank", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or "ranked" not in done.stdout:
        raise SystemExit(f"recsys rank {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model URI, e.g. models:/recsys-scale1/1")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each job; the fastest counts")
    parser.add_argument("--sample-users", type=int, default=0, help="rank a seeded sample of this many users")
    parser.add_argument("--data", default=None, help="the data folder the sample is drawn from")
    args = parser.parse_args()
    if args.sample_users and not args.data:
        parser.error("--sample-users needs --data (the folder whose interactions name the users)")
    spark_cores = int(re.fullmatch(r"local\[(\d+)\]", args.master).group(1))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import polars as pl

    from features.rank_workers import rank_workers

    local_cores = rank_workers()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = ["--model", args.model, "--out", str(tmp / "all.parquet")]
        if args.sample_users:
            import numpy as np

            known = pl.read_parquet(Path(args.data) / "interactions.parquet", columns=["user_id"])["user_id"]
            known = known.unique().sort()
            pick = np.sort(np.random.default_rng(0).choice(len(known), min(args.sample_users, len(known)),
                                                           replace=False))
            pl.DataFrame({"user_id": known.gather(pick)}).write_parquet(tmp / "sample.parquet")
            warm += ["--users", str(tmp / "sample.parquet")]
        run_job(warm)  # warm: caches, compiled trees
        users = pl.read_parquet(tmp / "all.parquet")["user_id"].unique(maintain_order=True)
        pl.DataFrame({"user_id": users[: len(users) // 2]}).write_parquet(tmp / "half.parquet")
        pl.DataFrame({"user_id": users}).write_parquet(tmp / "users.parquet")
        sizes = {"half": len(users) // 2, "all": len(users)}
        seconds: dict[tuple[str, str], float] = {}
        for size in sizes:
            users_file = tmp / ("half.parquet" if size == "half" else "users.parquet")
            chosen = ["--model", args.model, "--users", str(users_file)]
            for _ in range(args.repeat):
                local = run_job([*chosen, "--overwrite", "--out", str(tmp / f"local-{size}.parquet")])
                seconds["local", size] = min(seconds.get(("local", size), local), local)
                spark = run_job(["--engine", "spark", "--spark-master", args.master, *chosen, "--overwrite",
                                 "--out", str(tmp / f"spark-{size}")])
                seconds["spark", size] = min(seconds.get(("spark", size), spark), spark)
        local = pl.read_parquet(tmp / "local-all.parquet").sort("user_id", "rank")
        spark = pl.read_parquet(str(tmp / "spark-all" / "*.parquet")).sort("user_id", "rank")
        same = local.select("user_id", "rank", "item_id").equals(spark.select("user_id", "rank", "item_id"))
    extra = sizes["all"] - sizes["half"]
    per_core = {}
    for engine, cores in (("local", local_cores), ("spark", spark_cores)):
        steady = extra / (seconds[engine, "all"] - seconds[engine, "half"])
        fixed = seconds[engine, "half"] - sizes["half"] / steady
        per_core[engine] = steady / cores
        print(f"{engine}: {sizes['half']:,} users {seconds[engine, 'half']:.1f} s, {sizes['all']:,} users "
              f"{seconds[engine, 'all']:.1f} s -> steady {steady:,.0f} users/s on {cores} cores "
              f"({per_core[engine]:,.0f} per core), fixed cost {fixed:.1f} s")
    print(f"Spark per core / local per core: {per_core['spark'] / per_core['local']:.2f}; "
          f"same rows from both engines: {same}")
    sample = f" --sample-users {args.sample_users} --data {args.data}" if args.sample_users else ""
    print(f"rerun: .venv/bin/python benchmarks/spark_vs_local.py --model {args.model} --master {args.master}"
          f" --repeat {args.repeat}{sample}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
