"""The ranker variants fitted at the same time against one after another, on a demo run's frames.

    .venv/bin/python benchmarks/ranker_variants.py [--repeats 2]

It runs ``recsys train --data demo --split temporal --k 10 --seed 42`` in-process, in a temporary
folder, up to its ranker fits (the text stage comes first: about three minutes), keeps the
three variants' labelled frames and stops the run. Then it fits the three variants on those
frames, alternating, ``--repeats`` times each way: one after another with every usable core per
fit (``fit_rankers(..., concurrent=False)``, the code before) and at the same time
(``concurrent=True``, the default: ``fit_plan``), and prints the fastest of each, their ratio,
the process CPU seconds per wall second of each, and whether the models are identical (LightGBM's
model text without its ``num_threads`` parameter line). Both ways run in one process on the same
frames, so the ratio holds on a busy machine where the seconds do not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


class _Captured(Exception):
    """Raised from the run's ranker fits, to stop it once their inputs are kept."""


def capture_frames() -> dict:
    """The arguments of the demo run's ``variants.fit_rankers`` call (frames, held-out users,
    config, label users)."""
    from ranker_curve import run_demo_training  # beside this script

    from training import variants

    kept = {}
    original = variants.fit_rankers

    def keep(frames, held_out_users, config, log_metric=None, *, label_users, **_):
        kept.update(frames=frames, held_out_users=held_out_users, config=config, label_users=label_users)
        raise _Captured

    variants.fit_rankers = keep
    try:
        code = run_demo_training(_Captured)
    finally:
        variants.fit_rankers = original
    if not kept:
        raise RuntimeError(f"the demo run ended (exit code {code}) before its ranker fits")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2,
                        help="fits of the three variants each way; the fastest counts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from features.rank_workers import usable_cores
    from recsys.progress import quiet_progress
    from training import variants

    print("running the demo training up to its ranker fits ...", flush=True)
    kept = capture_frames()
    frames = kept["frames"]
    plan = variants.fit_plan(len(frames), usable_cores())
    print(f"frames: {', '.join(f'{name} {frame.height:,} rows' for name, frame in frames.items())}; "
          f"{usable_cores()} usable cores; plan for {len(frames)} fits: {plan} (fits at a time, threads each)")
    ways = {"one after another": False, "at the same time": True}
    seconds = {way: [] for way in ways}
    cpu = {way: [] for way in ways}
    models = {}
    for _ in range(args.repeats):
        for way, concurrent in ways.items():
            wall, used = time.perf_counter(), time.process_time()
            with quiet_progress():
                rankers = variants.fit_rankers(frames, kept["held_out_users"], kept["config"],
                                               label_users=kept["label_users"], concurrent=concurrent)
            seconds[way].append(time.perf_counter() - wall)
            cpu[way].append((time.process_time() - used) / seconds[way][-1])
            models[way] = {name: (r.model_text(), r.best_iteration) for name, r in rankers.items()}
    for way, times in seconds.items():
        trees = ", ".join(f"{name.removeprefix('ranker_')} {best}" for name, (_, best) in models[way].items())
        print(f"{way:18s} fastest {min(times):6.2f} s of {', '.join(f'{t:.2f}' for t in times)}; "
              f"CPU seconds per second {max(cpu[way]):.2f}; trees: {trees}")
    print(f"ratio at the same time / one after another: "
          f"{min(seconds['at the same time']) / min(seconds['one after another']):.2f}")
    same = models["one after another"] == models["at the same time"]
    print(f"models identical: {same}")
    if not same:
        sys.exit("fitting the variants at the same time changed a model")


if __name__ == "__main__":
    main()
