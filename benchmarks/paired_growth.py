"""How the short hash-bound training stages grow between two sizes, timed in alternating pairs.

    .venv/bin/python benchmarks/paired_growth.py /tmp/scale-1 /tmp/scale-10 [--pairs 16]

One timing per size cannot pin down the exponent of a stage that takes tens of milliseconds at
the smaller size: the split takes about 25 ms at scale 1, and a 5 ms hiccup there moves its
exponent by 0.1 (``benchmarks/train.py`` and ``benchmarks/data_stages.py`` time each stage once
per run). This loads both folders into one process (``recsys.cli.load_data``, the default
config, the pipeline's own code), then runs ``check_trainable`` (data_checks) and
``split_windows`` (split) on one folder and at once on the other, ``--pairs`` times, the small
folder first in odd pairs and the large one first in even pairs. The first pair is the warm-up:
its calls write fresh memory, as a training run's single call does, and it is printed apart.
For each stage it prints, from the other pairs, the exponent b of each pair (b = ln(t_large /
t_small) / ln(n_large / n_small), n the interactions), their median and a distribution-free
interval of that median (order statistics of the pairs, the narrowest with at least 95%
coverage, which is printed; it covers the noise within this run, not between runs or
machines). It does the same for the split's user id map (``Cuts.training_users``: the feature
window's users, which the data checks counted, and the label window's rows, made distinct and
sorted) against its baseline in the same run, the distinct of every training-window row, then
sorted, as the split made it before; the two are timed after the split, in turns (the map
first in odd pairs). Both folders stay loaded, about 9.5 GB at scales 1 and 10.
"""

from __future__ import annotations

import argparse
import importlib
import math
import time
from pathlib import Path

import numpy as np

STAGES = ("data_checks", "split", "split: user id map", "baseline: every row's user")
COVERAGE = 0.95
MIN_VALUES = 6  # the fewest values whose outermost order statistics cover the median 95% of the time


def timed(work):
    """(result of ``work()``, its wall seconds)."""
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def one_call_each(world: dict, config, map_first: bool) -> dict[str, float]:
    """Seconds of each of ``STAGES`` on one loaded folder: the data checks and the split in the
    pipeline's order, then the user id map and its baseline (``map_first``: the map first)."""
    from recsys.data_checks import check_trainable
    from recsys.streamed import distinct
    from training.pipeline import split_windows

    cuts, checks = timed(lambda: check_trainable(world["dataset"], config))
    _, split = timed(lambda: split_windows(world["dataset"], config, cuts))

    def baseline():
        return distinct(cuts.split.train["user_id"]).sort()

    if map_first:
        users, users_seconds = timed(cuts.training_users)
        before, before_seconds = timed(baseline)
    else:
        before, before_seconds = timed(baseline)
        users, users_seconds = timed(cuts.training_users)
    if not users.equals(before, check_dtypes=True, check_names=True):
        raise AssertionError(f"{world['folder']}: the user id map differs from the training window's distinct users")
    world["rows"] = {"training rows": cuts.split.train.height, "feature-window users": len(cuts.feature_users),
                     "label-window rows": cuts.nested.test.height, "training users": len(users)}
    return {"data_checks": checks, "split": split, "split: user id map": users_seconds,
            "baseline: every row's user": before_seconds}


def interval_rank(n: int) -> tuple[int, float]:
    """(l, coverage): the largest l whose interval from the l-th smallest to the l-th largest of
    n independent values covers their median with probability 1 - 2 P(Bin(n, 1/2) <= l - 1) of
    at least ``COVERAGE`` (distribution-free), and that probability."""
    if n < MIN_VALUES:
        raise ValueError(f"{n} values are too few for a {COVERAGE:.0%} interval of their median; give {MIN_VALUES}")

    def coverage(rank: int) -> float:
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(rank)) / 2.0**n

    rank = 1
    while rank < n // 2 and coverage(rank + 1) >= COVERAGE:
        rank += 1
    return rank, coverage(rank)


def median_interval(values: np.ndarray) -> tuple[float, float, float]:
    """(median of ``values``, low, high): the interval of ``interval_rank``."""
    ordered = np.sort(values)
    rank, _ = interval_rank(len(ordered))
    return float(np.median(ordered)), float(ordered[rank - 1]), float(ordered[len(ordered) - rank])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("small", help="the smaller canonical data folder (recsys generate DIR --scale 1)")
    parser.add_argument("large", help="the larger one (recsys generate DIR --scale 10)")
    parser.add_argument("--pairs", type=int, default=16, help="alternating pairs of calls, the warm-up included")
    args = parser.parse_args()
    if args.pairs < MIN_VALUES + 1:
        parser.error(f"--pairs {args.pairs}: give at least {MIN_VALUES + 1} (one warm-up and {MIN_VALUES} for the "
                     f"median's {COVERAGE:.0%} interval)")
    for folder in (args.small, args.large):
        if not (Path(folder) / "interactions.parquet").exists():
            parser.error(f"{folder} has no interactions.parquet: make it with `recsys generate {folder} --scale S`")
    importlib.import_module("recsys.cli")  # first, as `recsys train` does: it sets polars' allocator up
    from recsys.cli import load_config, load_data
    from training.tracking import environment_tags

    config = load_config(None)
    worlds = []
    for folder in (args.small, args.large):
        dataset = load_data(folder)
        worlds.append({"folder": folder, "dataset": dataset, "interactions": dataset.interactions.height})
    size_ratio = math.log(worlds[1]["interactions"] / worlds[0]["interactions"])
    if size_ratio <= 0:
        parser.error(f"{args.large} ({worlds[1]['interactions']:,} interactions) is not larger than "
                     f"{args.small} ({worlds[0]['interactions']:,}): give the smaller folder first")
    tags = environment_tags()
    commit = tags.get("mlflow.source.git.commit", "unknown")[:7]
    print(f"{args.pairs} pairs (the first is the warm-up), {worlds[0]['interactions']:,} -> "
          f"{worlds[1]['interactions']:,} interactions, commit {commit}"
          + (" + uncommitted changes" if tags.get("git.dirty") == "true" else ""))
    seconds = {stage: np.zeros((args.pairs, 2)) for stage in STAGES}
    for pair in range(args.pairs):
        odd = pair % 2 == 0  # pairs are numbered from 1 when printed
        for side in (0, 1) if odd else (1, 0):
            for stage, value in one_call_each(worlds[side], config, map_first=odd).items():
                seconds[stage][pair, side] = value
        print(f"  pair {pair + 1}/{args.pairs}: " + ", ".join(
            f"{stage} {seconds[stage][pair, 0] * 1000:.1f} / {seconds[stage][pair, 1] * 1000:.1f} ms"
            for stage in STAGES[:2]), flush=True)
    print(f"\n{'stage':24s}{'warm-up pair':>24s}{'median of the rest':>28s}{'exponent: warm-up':>19s}"
          f"{'median (interval)':>22s}")
    for stage in STAGES:
        values = seconds[stage]
        exponents = np.log(values[:, 1] / values[:, 0]) / size_ratio
        median, low, high = median_interval(exponents[1:])
        small, large = np.median(values[1:, 0]), np.median(values[1:, 1])
        print(f"{stage:24s}{values[0, 0]:11.3f} / {values[0, 1]:6.3f} s{small:15.3f} / {large:6.3f} s"
              f"{exponents[0]:19.3f}{median:12.3f} ({low:.3f}-{high:.3f})")
    for name in worlds[0]["rows"]:
        print(f"{name:24s}" + "".join(f"{world['rows'][name]:>14,d}" for world in worlds))
    rank, covered = interval_rank(args.pairs - 1)
    print(f"interval: from the {rank}. smallest to the {rank}. largest of the {args.pairs - 1} pairs' exponents after "
          f"the warm-up, {covered:.1%} coverage of their median")
    print(f"rerun: .venv/bin/python benchmarks/paired_growth.py {args.small} {args.large} --pairs {args.pairs}")


if __name__ == "__main__":
    main()
