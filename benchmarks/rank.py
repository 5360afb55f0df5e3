"""Batch ranking users/s and memory at the sizes benchmarks/train.py trained, with the real CLI.

    .venv/bin/python benchmarks/rank.py [--k 10] [--engine local|spark]

Reads data/bench/train.json (written by benchmarks/train.py), and for each size runs
`recsys -q rank --model <that size's model> --out <tmp> --k 10` over every known user in a child
process: users/s as the job reports it (model loaded, output written) and the child's peak
resident memory (wait4), next to the model load time (wall minus ranking). As the same-run
baseline it also times a popularity top-k over the same users in this process (seen items
masked, no candidates, features or model): the ratio says what the ranking pipeline costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from train import RECSYS, ROOT, run_measured  # benchmarks/train.py, beside this script


def popularity_floor(data_folder: Path, k: int) -> float:
    """users/s of a popularity top-k with each user's seen items masked (numpy, chunks of 2,048)."""
    from features.candidates import top_n

    events = pl.read_parquet(data_folder / "interactions.parquet", columns=["user_id", "item_id"])
    users = events["user_id"].cast(pl.Categorical).to_physical().to_numpy()
    items = events["item_id"].cast(pl.Categorical).to_physical().to_numpy()
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    pop = np.bincount(items, minlength=n_items).astype(np.float32)
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], np.arange(n_users + 1))
    start = time.perf_counter()
    for first in range(0, n_users, 2048):
        rows = np.arange(first, min(first + 2048, n_users))
        scores = np.broadcast_to(pop, (len(rows), n_items)).copy()
        picks = order[bounds[rows[0]]:bounds[rows[-1] + 1]]
        scores[users[picks] - first, items[picks]] = -np.inf
        top_n(scores, k, seed=0, query=rows)
    return n_users / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--engine", choices=("local", "spark"), default="local")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    trained = json.loads((ROOT / args.data_dir / "bench" / "train.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in trained:
            out = Path(tmp) / (f"ranked-{size['scale']:g}" + ("" if args.engine == "spark" else ".parquet"))
            command = [*RECSYS, "-q", "rank", "--model", size["model_uri"], "--out", str(out), "--k", str(args.k),
                       "--engine", args.engine]
            output, wall, peak_mb = run_measured(command, env)
            users_per_s = float(re.search(r"([\d.]+) users/s", output).group(1))
            floor = popularity_floor(ROOT / args.data_dir / f"scale-{size['scale']:g}", args.k)
            ranking_s = size["users"] / users_per_s
            rows.append((size, users_per_s, wall - ranking_s, peak_mb, floor))
    print(f"\nbatch ranking, top-{args.k} for every known user, engine {args.engine}")
    print(f"{'interactions':>13} {'users':>8} {'items':>7} {'users/s':>9} {'load s':>7} {'peak MB':>8} "
          f"{'pop floor users/s':>18} {'cost x':>7}")
    for size, users_per_s, load_s, peak_mb, floor in rows:
        print(f"{size['interactions']:>13,} {size['users']:>8,} {size['items']:>7,} {users_per_s:>9,.0f} "
              f"{load_s:>7.1f} {peak_mb:>8,.0f} {floor:>18,.0f} {floor / users_per_s:>7.1f}")
    print(f"rerun: .venv/bin/python benchmarks/rank.py --k {args.k} --engine {args.engine}")


if __name__ == "__main__":
    main()
