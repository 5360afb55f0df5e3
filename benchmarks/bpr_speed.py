"""What one BPR fit costs: today's ``features/bpr.py`` against the same file at an earlier
commit, on the demo's clicks (or a data folder's), in one process, alternating.

    .venv/bin/python benchmarks/bpr_speed.py                        # against 5cbff9b (before the in-place step)
    .venv/bin/python benchmarks/bpr_speed.py --baseline-rev REV --data data/scale-1 --iterations 20

The baseline is ``git show REV:features/bpr.py`` loaded as a module, so both fits read the same
matrix with the pipeline's BPR settings (``PipelineConfig``: factors, learning rate,
regularization; ``--iterations`` epochs, 100 by default as in the pipeline). It prints the fastest
of ``--repeats`` fits of each (alternating which goes first), their ratio, and whether the
factors are identical bit for bit. The matrix is every click of the data (all users and items,
through the pipeline's id maps), not a training window: one fit of the same kind and size as the
pipeline's (the demo's windows hold fewer pairs).
Both run on one thread (as the pipeline's do) in the same process, so the ratio holds on a busy
machine where the seconds do not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def baseline_module(rev: str) -> types.ModuleType:
    """``features/bpr.py`` as of git revision ``rev``, as a module of its own (nothing written to disk)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:features/bpr.py"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("bpr_baseline")
    exec(compile(source, f"{rev}:features/bpr.py", "exec"), module.__dict__)
    return module


def clicks(data: str):
    """Binary float32 CSR (users, items) of the demo's (``demo``) or a data folder's interactions,
    with id maps fitted on them (the pipeline's ``IdMap`` and ``build_user_items``)."""
    from features.item_item import binary
    from features.user_items import build_user_items
    from recsys.cli import load_data
    from recsys.idmap import IdMap

    frame = load_data(data).interactions
    return binary(build_user_items(frame, IdMap(kind="user").fit(frame["user_id"]),
                                   IdMap(kind="item").fit(frame["item_id"])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-rev", default="5cbff9b", help="git revision of the baseline bpr.py")
    parser.add_argument("--data", default="demo", help="'demo' or a canonical data folder")
    parser.add_argument("--iterations", type=int, default=100, help="BPR epochs per fit")
    parser.add_argument("--repeats", type=int, default=2, help="fits of each, alternating; the fastest counts")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1:
        parser.error(f"--iterations and --repeats must be at least 1, got {args.iterations} and {args.repeats}")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from features.bpr import fit_bpr_factors
    from recsys.config import PipelineConfig

    config = PipelineConfig()
    baseline = baseline_module(args.baseline_rev)
    user_items = clicks(args.data)
    settings = dict(factors=config.bpr_factors, iterations=args.iterations, learning_rate=config.bpr_learning_rate,
                    regularization=config.bpr_regularization, seed=config.seed)
    print(f"{args.data}: {user_items.shape[0]:,} users x {user_items.shape[1]:,} items, {user_items.nnz:,} pairs; "
          f"{args.iterations} epochs, {settings['factors']} factors")
    seconds = {"baseline": [], "today": []}
    results = {}
    fits = [("baseline", baseline.fit_bpr_factors), ("today", fit_bpr_factors)]
    for repeat in range(args.repeats):
        for name, fit in fits[::-1] if repeat % 2 else fits:  # alternate which goes first
            start = time.perf_counter()
            results[name] = fit(user_items, **settings)
            seconds[name].append(time.perf_counter() - start)
            print(f"  {name}: {seconds[name][-1]:.2f} s", flush=True)
    same = all(np.array_equal(a, b) for a, b in zip(results["baseline"], results["today"], strict=True))
    base, today = min(seconds["baseline"]), min(seconds["today"])
    print(f"fastest: baseline ({args.baseline_rev}) {base:.2f} s, today {today:.2f} s, "
          f"ratio {today / base:.2f}x; factors identical: {same}")


if __name__ == "__main__":
    main()
