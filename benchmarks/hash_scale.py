"""How polars' hash primitives grow on this machine between two data sizes: the baseline the
hash-bound training stages (load, data_checks, split) are compared against.

    .venv/bin/python benchmarks/hash_scale.py /tmp/scale-1 /tmp/scale-10 [--repeats 3]
    .venv/bin/python benchmarks/hash_scale.py /tmp/scale-1 /tmp/scale-10 --train-json /tmp/bench/train.json

Each primitive runs on the folders' own columns (``recsys generate DIR --scale S``), as those
stages run them, with string ids and, for comparison, with the same ids as integer codes:

- ``is_in items``: every interaction's and impression's item id looked up in the catalog (the
  load's known-item check);
- ``unique users``: the distinct user ids of the interactions (the split's user id map);
- ``anti join pairs``: impressions without a (user, item) pair of the interactions (what the
  split and the data checks compute, which match pairs on a 64-bit hash, ``recsys.split.pairs_seen``);
- on the string ids, the eager call against polars' streaming engine (``recsys.streamed``, which
  load, the data checks and the split use): whether every event's item is in the catalog (load),
  the rows per user (a ``group_by``), the distinct users, and the impression pair hashes matched
  against the interactions' (``pairs_seen``).

It prints each primitive's seconds (the fastest of ``--repeats``) and its exponent b (seconds ~
interactions^b) between the two folders; with ``--train-json`` (``benchmarks/train.py``'s output,
same two sizes) the exponents of the load, data_checks and split stages beside them. Work that
is linear in rows still grows faster than the rows once its hash tables outgrow the CPU caches:
when the primitives' exponents are as high as the stages', the stages are as linear as polars is
on this machine. Polars uses its default threads, as a training run does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
from train import exponent  # benchmarks/train.py's log-log slope, so both print the same figure

from recsys.split import pair_hashes
from recsys.streamed import all_in, distinct, rows_matching, rows_per_key

PAIR = ["user_id", "item_id"]


def best_seconds(work, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``work()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def primitives(folder: Path, repeats: int) -> tuple[int, dict[str, float]]:
    """(interactions, primitive name -> fastest seconds) on one data folder."""
    items = pl.read_parquet(folder / "items.parquet", columns=["item_id"]).select(pl.col("item_id").cast(pl.String))
    inter = pl.read_parquet(folder / "interactions.parquet", columns=PAIR).with_columns(pl.col(PAIR).cast(pl.String))
    shown = pl.read_parquet(folder / "impressions.parquet", columns=PAIR).with_columns(pl.col(PAIR).cast(pl.String))
    codes = {name: pl.concat([inter[name], shown[name]]).unique().sort() for name in PAIR}

    def coded(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.col(name).replace_strict(codes[name], np.arange(codes[name].len(), dtype=np.int32),
                                                              return_dtype=pl.Int32) for name in PAIR)

    inter_int, shown_int = coded(inter), coded(shown)
    catalog_int = pl.Series(np.arange(codes["item_id"].len(), dtype=np.int32))
    out = {}
    for kind, a, b, catalog in (("string", inter, shown, items["item_id"]), ("int", inter_int, shown_int, catalog_int)):
        out[f"is_in items ({kind})"] = best_seconds(
            lambda a=a, b=b, catalog=catalog: (a["item_id"].is_in(catalog.implode()),
                                               b["item_id"].is_in(catalog.implode())), repeats)
        out[f"unique users ({kind})"] = best_seconds(lambda a=a: a["user_id"].unique(), repeats)
        out[f"anti join pairs ({kind})"] = best_seconds(lambda a=a, b=b: b.join(a, on=PAIR, how="anti"), repeats)
    # What load, data_checks and split run on the streaming engine (recsys.streamed), beside the
    # eager calls of the same result, on the string ids.
    out["all items known (eager)"] = best_seconds(
        lambda: (inter["item_id"].is_in(items["item_id"].implode()).all(),
                 shown["item_id"].is_in(items["item_id"].implode()).all()), repeats)
    out["all items known (streaming)"] = best_seconds(
        lambda: (all_in(inter["item_id"], items["item_id"]), all_in(shown["item_id"], items["item_id"])), repeats)
    out["rows per user (eager)"] = best_seconds(lambda: inter.group_by("user_id").len(), repeats)
    out["rows per user (streaming)"] = best_seconds(lambda: rows_per_key(inter, "user_id", "n"), repeats)
    out["unique users (streaming)"] = best_seconds(lambda: distinct(inter["user_id"]), repeats)
    taken, seen = pair_hashes(inter), pair_hashes(shown)
    out["pair hashes matched (eager)"] = best_seconds(lambda: seen.is_in(taken.implode()), repeats)
    out["pair hashes matched (streaming)"] = best_seconds(lambda: rows_matching(seen, taken), repeats)
    return inter.height, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("small", type=Path)
    parser.add_argument("large", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-json", type=Path, default=None,
                        help="benchmarks/train.py's train.json at the same two sizes: its stage exponents beside")
    args = parser.parse_args()
    for folder in (args.small, args.large):
        if not (folder / "interactions.parquet").exists():
            raise SystemExit(f"{folder}: no interactions.parquet; write it with `recsys generate {folder} --scale S`")
    n_small, small = primitives(args.small, args.repeats)
    n_large, large = primitives(args.large, args.repeats)
    sizes = (n_small, n_large)
    print(f"{'primitive':30}{n_small:>14,}{n_large:>14,}{'exponent':>10}   (seconds, fastest of {args.repeats})")
    for name in small:
        print(f"{name:30}{small[name]:>14.3f}{large[name]:>14.3f}{exponent(sizes, (small[name], large[name])):>10.2f}")
    if args.train_json:
        runs = {r["interactions"]: r for r in json.loads(args.train_json.read_text())}
        if n_small not in runs or n_large not in runs:
            raise SystemExit(f"{args.train_json} has no runs at {n_small:,} and {n_large:,} interactions "
                             f"(it has {sorted(runs)}); run benchmarks/train.py on these two folders")
        print(f"\n{'training stage':30}{n_small:>14,}{n_large:>14,}{'exponent':>10}   (benchmarks/train.py)")
        for stage in ("load", "data_checks", "split"):
            seconds = (runs[n_small]["stages"][stage], runs[n_large]["stages"][stage])
            print(f"{stage:30}{seconds[0]:>14.3f}{seconds[1]:>14.3f}{exponent(sizes, seconds):>10.2f}")


if __name__ == "__main__":
    main()
