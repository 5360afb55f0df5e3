"""What the item-to-item fit's time follows as the data grows: interactions, products or pairs.

    .venv/bin/python benchmarks/item_item_work.py /tmp/scale-1 /tmp/scale-10 [--repeats 2]

Above ``item_item_max_items`` the fit is the cosine of the co-occurrence counts ``G = X'X``, each
item's strongest ``neighbours`` kept (features/item_item.py). Its work has two sizes: the partial
products (sum over users of history length squared: linear in the interactions when the
histories keep their length) and G's stored entries, the distinct co-occurring pairs, which grow
faster when the catalog grows with the users (a pair repeats less often). This times, per folder
in a fresh child process, on the whole training window's users x items matrix (as
benchmarks/data_stages.py builds it):

- ``ours``: the fit's cosine at the pipeline's width (``COOCCURRENCE_NEIGHBOURS``, one pass for
  the model and the co-occurrence baseline), scipy's sparse product in blocks of item rows and
  our pruning of each block;
- ``implicit``: implicit's ``all_pairs_knn`` (C++, one dense accumulator and a top-K heap per
  item row; it never stores G) on the same cosines (each column scaled by 1/sqrt(its users)),
  on the same cores;

and prints each one's seconds, their exponent against the interactions, the products and the
pairs, and nanoseconds per pair. Each keeps its fastest time over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

IMPLEMENTATIONS = ("ours", "implicit")


def child(folder: str) -> dict:
    import numpy as np
    import polars as pl
    import scipy.sparse as sp
    from implicit._nearest_neighbours import all_pairs_knn

    from features.item_item import COOCCURRENCE_NEIGHBOURS, _cosine_weights, binary
    from features.rank_workers import usable_cores
    from features.user_items import build_user_items
    from recsys.cli import load_config, load_data
    from recsys.data_checks import check_trainable
    from training.pipeline import split_windows

    dataset = load_data(folder)
    config = load_config(None)
    w = split_windows(dataset, config, check_trainable(dataset, config))
    window = w.split.train.filter(pl.col("user_id").is_in(w.users.ids.implode()))
    x = binary(build_user_items(window, w.users, w.items))
    lengths = np.diff(x.indptr).astype(np.int64)
    seconds = {}
    start = time.perf_counter()
    _, pairs = _cosine_weights(x, None, 1.0, COOCCURRENCE_NEIGHBOURS)
    seconds["ours"] = time.perf_counter() - start
    users_per_item = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
    scale = 1.0 / np.sqrt(np.maximum(users_per_item, 1.0))
    scaled = sp.csr_matrix((scale[x.indices], x.indices, x.indptr), shape=x.shape)
    start = time.perf_counter()
    all_pairs_knn(scaled, COOCCURRENCE_NEIGHBOURS + 1, num_threads=usable_cores(), show_progress=False)  # + itself
    seconds["implicit"] = time.perf_counter() - start
    return {"interactions": int(x.nnz), "items": int(x.shape[1]), "products": int((lengths**2).sum()),
            "pairs": int(pairs), "seconds": seconds}


def run_child(folder: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", folder], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if result.returncode != 0:
        sys.exit(f"child for {folder} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="canonical data folders, smallest first")
    parser.add_argument("--repeats", type=int, default=2, help="child runs per folder; each fit keeps its fastest")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    if len(args.folders) < 2:
        parser.error("give two or more data folders, smallest first (recsys generate DIR --scale S)")
    for folder in args.folders:
        if not (Path(folder) / "interactions.parquet").exists():
            parser.error(f"{folder} has no interactions.parquet: make it with `recsys generate {folder} --scale S`")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from data_stages import git_state
    from train import exponent

    results = []
    for folder in args.folders:
        runs = [run_child(folder) for _ in range(args.repeats)]
        best = {**runs[0], "seconds": {name: min(r["seconds"][name] for r in runs) for name in IMPLEMENTATIONS}}
        results.append(best)
        print(f"  {folder}: {best['interactions']:,} interactions, {best['items']:,} items, "
              f"{best['products']:,} products, {best['pairs']:,} pairs; "
              + ", ".join(f"{name} {best['seconds'][name]:.2f} s" for name in IMPLEMENTATIONS), flush=True)
    print(f"code timed: {git_state(str(Path(__file__).resolve().parents[1]))}; "
          f"{args.repeats} run(s) per folder, fastest kept")
    print(f"\n{'':22s}" + "".join(f"{Path(f).name:>14s}" for f in args.folders)
          + f"{'vs interactions':>17s}{'vs products':>13s}{'vs pairs':>10s}")
    sizes = {key: [r[key] for r in results] for key in ("interactions", "products", "pairs")}
    for key, values in sizes.items():
        print(f"{key:22s}" + "".join(f"{v:14,d}" for v in values)
              + f"{exponent(sizes['interactions'], values):17.2f}")
    for name in IMPLEMENTATIONS:
        times = [r["seconds"][name] for r in results]
        print(f"{name + ' seconds':22s}" + "".join(f"{t:14.2f}" for t in times)
              + "".join(f"{exponent(sizes[key], times):{width}.2f}"
                        for key, width in (("interactions", 17), ("products", 13), ("pairs", 10))))
        print(f"{name + ' ns per pair':22s}" + "".join(f"{1e9 * t / r['pairs']:14.1f}"
                                                     for t, r in zip(times, results, strict=True)))
    print(f"rerun: .venv/bin/python benchmarks/item_item_work.py {' '.join(args.folders)} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
