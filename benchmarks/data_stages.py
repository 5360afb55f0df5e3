"""The training stages that grow fastest with the data, timed alone at two or more sizes.

    .venv/bin/python benchmarks/data_stages.py /tmp/scale-1 /tmp/scale-10 [--repeats 2] [--touch-gb 4]

``benchmarks/train.py --scales 1 10`` takes about 90 minutes; the four stages whose exponents
from scale 1 to 10 are over issue 19's 1.1 there (load, data_checks, split, item_item) take about
a minute at scale 10. This runs them with the pipeline's own code, in its order and with the
default config, in a fresh child process per folder and repeat: ``load_data``,
``check_trainable`` (which makes the run's cuts), ``split_windows``, then the item-to-item fit
of both stage-1 windows (the feature window and the whole training window, each with the
co-occurrence baseline, as the validation and test states fit them; without sessions, the default),
with the distinct co-occurring item pairs those fits counted, which item_item's cost follows. Each stage keeps its
fastest time over ``--repeats``; the exponent b (seconds ~ interactions^b) between the folders
is benchmarks/train.py's. ``PYTHONPATH=<another checkout>`` times that checkout's code (the
baseline of a change) with the same command. A second table splits each kept stage's CPU time
into user time (the stage's own work) and system time (the kernel, mostly zeroing pages the
process writes for the first time), with the minor page faults, and their exponents.

It also prints what first writing memory costs on this machine (``--touch-gb`` GB in a fresh
process, then the same amount again in that process): on a virtual machine whose host backs
guest memory on first use, a process pays that for every gigabyte its peak grows by, which the
stages that first raise the peak (load, data_checks) carry at scale 10 and not at scale 1.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("load", "data_checks", "split", "item_item")


def child(folder: str) -> dict:
    """Seconds per stage and the peak resident set (MiB) of one run over ``folder``."""
    importlib.import_module("recsys.cli")  # first, as `recsys train` does: it sets polars' allocator up
    import polars as pl

    from features.item_item import fit_with_cooccurrence
    from features.state import item_item_settings
    from features.user_items import build_user_items
    from recsys.cli import load_config, load_data
    from recsys.data_checks import check_trainable
    from recsys.stage_timer import collect, stage
    from training.pipeline import split_windows
    from training.tracking import environment_tags
    try:
        from recsys.stage_timer import work
    except ImportError:  # a checkout from before fits recorded their work: no pair counts
        def work() -> dict:
            return {}

    seconds, cpu = {}, {}

    def timed(name: str, job):
        """Run ``job()``; add its wall seconds, user and system CPU seconds and minor page faults
        (the whole process: every thread) to the stage ``name``."""
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = job()
        after = resource.getrusage(resource.RUSAGE_SELF)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        used = cpu.setdefault(name, {"user": 0.0, "system": 0.0, "faults": 0})
        used["user"] += after.ru_utime - before.ru_utime
        used["system"] += after.ru_stime - before.ru_stime
        used["faults"] += after.ru_minflt - before.ru_minflt
        return result

    dataset = timed("load", lambda: load_data(folder))
    config = load_config(None)
    cuts = timed("data_checks", lambda: check_trainable(dataset, config))
    w = timed("split", lambda: split_windows(dataset, config, cuts))
    settings = item_item_settings(config)  # without sessions, the default
    with collect():  # each cosine fit records its distinct co-occurring pairs in the open stage
        for window in (w.nested.train, w.split.train):  # as fit_feature_state builds and fits them
            user_items = build_user_items(window.filter(pl.col("user_id").is_in(w.users.ids.implode())), w.users,
                                          w.items)
            with stage("item_item"):
                timed("item_item", lambda user_items=user_items: fit_with_cooccurrence(user_items, **settings))
        pairs = work().get("item_item/pairs", float("nan"))  # NaN: EASE, or a checkout without the count
    return {"seconds": seconds, "cpu": cpu, "interactions": dataset.interactions.height, "item_item_pairs": pairs,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "code": str(Path(inspect.getfile(fit_with_cooccurrence)).resolve().parents[1]),
            "commit": code_version(environment_tags())}


def code_version(tags: dict[str, str]) -> str:
    """``commit <hash>`` from a run's environment tags (``training.tracking.environment_tags``),
    with ``+ uncommitted changes`` when the checkout differed from it; ``commit unknown`` outside git."""
    commit = tags.get("mlflow.source.git.commit")
    if commit is None:
        return "commit unknown"
    return f"commit {commit[:7]}" + (" + uncommitted changes" if tags.get("git.dirty") == "true" else "")


def touch(gigabytes: float) -> dict:
    """Seconds to write ``gigabytes`` of fresh memory, then the same amount again in this process."""
    import numpy as np

    out = {}
    for name in ("first", "again"):
        start = time.perf_counter()
        block = np.ones(int(gigabytes * 1e9) // 8)
        out[name] = time.perf_counter() - start
        del block
    return out


def run_child(args: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if result.returncode != 0:
        sys.exit(f"child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*",
                        help="canonical data folders, smallest first (recsys generate DIR --scale S)")
    parser.add_argument("--repeats", type=int, default=2, help="child runs per folder; each stage keeps its fastest")
    parser.add_argument("--touch-gb", type=float, default=4.0, help="GB written to measure first-touch cost (0: skip)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--touch", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    if args.touch:
        print(json.dumps(touch(args.touch)))
        return
    if len(args.folders) < 2:
        parser.error("give two or more data folders, smallest first")
    for folder in args.folders:
        if not (Path(folder) / "interactions.parquet").exists():
            parser.error(f"{folder} has no interactions.parquet: make it with `recsys generate {folder} --scale S`")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import exponent  # benchmarks/train.py's log-log slope: the same figure as its table

    print(f"{args.repeats} run(s) per folder, fastest per stage")
    results, code = [], set()
    for folder in args.folders:
        runs = []
        for repeat in range(args.repeats):
            runs.append(run_child(["--child", folder]))
            code.add((runs[-1]["code"], runs[-1]["commit"]))
            print(f"  {folder} run {repeat + 1}: " + ", ".join(f"{s} {runs[-1]['seconds'][s]:.2f} s" for s in STAGES)
                  + f", peak {runs[-1]['peak_mib']:,.0f} MiB", flush=True)
        fastest = {s: min(runs, key=lambda r, s=s: r["seconds"][s]) for s in STAGES}
        results.append({"folder": folder, "interactions": runs[0]["interactions"],
                        "item_item_pairs": runs[0]["item_item_pairs"],  # the same in every run
                        "seconds": {s: fastest[s]["seconds"][s] for s in STAGES},
                        "cpu": {s: fastest[s]["cpu"][s] for s in STAGES},  # of the run that kept the stage
                        "peak_mib": max(r["peak_mib"] for r in runs)})
    if len(code) != 1:
        sys.exit(f"the runs imported different checkouts: {sorted(code)}")
    checkout, commit = code.pop()
    print(f"code timed: {checkout} (the checkout the children imported), {commit}")
    sizes = [r["interactions"] for r in results]
    print(f"\n{'stage':12s}" + "".join(f"{Path(r['folder']).name:>14s}" for r in results) + f"{'exponent':>10s}")
    for stage in STAGES:
        times = [r["seconds"][stage] for r in results]
        print(f"{stage:12s}" + "".join(f"{t:13.2f}s" for t in times) + f"{exponent(sizes, times):10.2f}")
    print(f"{'interactions':12s}" + "".join(f"{n:14,d}" for n in sizes))
    pairs = [r["item_item_pairs"] for r in results]  # the same in every run of a folder
    if all(p == p for p in pairs):  # NaN where the fits were EASE or the checkout does not count them
        times = [r["seconds"]["item_item"] for r in results]
        print(f"{'ii pairs':12s}" + "".join(f"{n:14,.0f}" for n in pairs) + f"{exponent(pairs, times):10.2f}"
              "  (item_item's distinct co-occurring pairs, and its exponent against them)")
    print(f"{'peak MiB':12s}" + "".join(f"{r['peak_mib']:14,.0f}" for r in results))
    print("\nCPU seconds of the kept runs, user (the stage's own work) and system (the kernel: mostly "
          "zeroing pages on first write),\nand minor page faults; exponents against the interactions")
    print(f"{'stage':20s}" + "".join(f"{Path(r['folder']).name:>14s}" for r in results) + f"{'exponent':>10s}")
    for stage in STAGES:
        for kind in ("user", "system", "faults"):
            values = [r["cpu"][stage][kind] for r in results]
            cells = "".join(f"{v:14,d}" if kind == "faults" else f"{v:13.2f}s" for v in values)
            slope = exponent(sizes, values) if min(values) > 0 else float("nan")
            print(f"{stage + ' ' + kind:20s}"[:20] + cells + f"{slope:10.2f}")
    if args.touch_gb > 0:
        cost = run_child(["--touch", str(args.touch_gb)])
        print(f"\nfirst-touch cost: {args.touch_gb:g} GB in a fresh process {cost['first']:.2f} s "
              f"({cost['first'] / args.touch_gb:.2f} s/GB), the same again in that process {cost['again']:.2f} s "
              f"({cost['again'] / args.touch_gb:.2f} s/GB)")
    print(f"rerun: .venv/bin/python benchmarks/data_stages.py {' '.join(args.folders)} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
