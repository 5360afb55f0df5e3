"""What the ranker's training curve costs: one LightGBM fit on a demo run's own sets, with the
curve over every training query (the code before the sample), over the default sample (as many
queries as validation has) and with no training curve.

    .venv/bin/python benchmarks/ranker_curve.py [--repeats 3]

It runs ``recsys train --data demo --split temporal --k 10 --seed 42`` in-process, in a temporary
folder, up to its ``--fit``-th ranker fit (the text stage comes first: about four minutes in
all), keeps that fit's sets and stops the run. Then it fits the same ranker on fresh copies of those sets (binning
included) with each curve, alternating, ``--repeats`` times each, and prints the fastest fit of
each, their ratios to the whole-set fit, and whether the boosters are identical (the curve is a diagnostic: no fit
reads it). Both kinds of fit run in the same process on the same data, so the ratio holds on a
busy machine where the seconds do not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


class _Captured(Exception):
    """Raised from the first ranker fit, to stop the run once its sets are kept."""


def run_demo_training(stop: type[Exception]) -> int | None:
    """``recsys train --data demo --split temporal --k 10 --seed 42`` in-process, in a temporary
    folder: its exit code, or None when ``stop`` ended it (a function the caller patched raised
    it, having kept what it needed)."""
    from recsys.cli import main as recsys_main

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            return recsys_main(["-q", "train", "--data", "demo", "--split", "temporal", "--k", "10", "--seed", "42"])
        except stop:
            return None
        finally:
            os.chdir(cwd)


def capture_sets(fit: int):
    """(the ranker of the run's ``fit``-th ranker fit (1-based), its RankerData, the fit's keyword
    arguments); the fits before it run as usual."""
    from training.ranker import LambdaRanker

    kept, seen = {}, []
    original = LambdaRanker.fit_dataset

    def keep(self, data, **kwargs):
        seen.append(1)
        if len(seen) < fit:
            return original(self, data, **kwargs)
        # The run's metric logger writes to the run's store, gone with its folder: not kept.
        kept.update(ranker=self, data=data, kwargs={k: v for k, v in kwargs.items() if k != "log_metric"})
        raise _Captured

    LambdaRanker.fit_dataset = keep
    try:
        code = run_demo_training(_Captured)
    finally:
        LambdaRanker.fit_dataset = original
    if "ranker" not in kept:
        raise RuntimeError(f"the demo run ended (exit code {code}) after {len(seen)} ranker fit(s), before fit {fit}")
    return kept["ranker"], kept["data"], kept["kwargs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fits per curve; the fastest counts")
    parser.add_argument("--fit", type=int, default=3,
                        help="which of the run's ranker fits to take (1-based; the demo's third is the "
                             "fine-tuned-text variant, the largest set)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from training.ranker import LambdaRanker

    print(f"running the demo training up to its ranker fit {args.fit} ...", flush=True)
    ranker, data, kwargs = capture_sets(args.fit)
    y_val, groups_val = data.valid.get_label(), data.valid.get_group()
    n_queries = len(data.groups)
    print(f"sets: {data.n_rows:,} training rows in {n_queries:,} queries, {len(data.X_val):,} validation rows "
          f"in {len(groups_val):,} queries, {len(ranker.feature_names)} features")
    curves = {"whole training set": n_queries, "sample (default)": None, "no training curve": 0}
    seconds = {name: [] for name in curves}
    models = {}
    for _ in range(args.repeats):
        for name, queries in curves.items():
            fitted = LambdaRanker(feature_names=ranker.feature_names, config=ranker.config, seed=ranker.seed)
            start = time.perf_counter()
            sets = fitted.dataset(data.X, data.y, data.groups, X_val=data.X_val, y_val=y_val, groups_val=groups_val,
                                  curve_queries=queries)
            fitted.fit_dataset(sets, **kwargs)
            seconds[name].append(time.perf_counter() - start)
            rounds = len(next(iter(fitted.evals["valid"].values())))
            models[name] = (fitted.booster.model_to_string(), fitted.best_iteration, rounds)
    for name, times in seconds.items():
        _, best, rounds = models[name]
        print(f"{name:20s} fastest {min(times):6.2f} s of {', '.join(f'{t:.2f}' for t in times)} "
              f"({rounds} rounds, best iteration {best})")
    whole = min(seconds["whole training set"])
    for name in list(curves)[1:]:
        print(f"ratio {name} / whole training set: {min(seconds[name]) / whole:.2f}")
    same = len({model for model, _, _ in models.values()}) == 1
    print(f"boosters identical: {same}")
    if not same:
        sys.exit("the training curve changed the model")


if __name__ == "__main__":
    main()
