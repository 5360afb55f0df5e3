"""Training cost per pipeline stage at three sizes 10x apart, with the growth exponent of each stage.

    .venv/bin/python benchmarks/train.py [--scales 0.01 0.1 1.0] [--data-dir data] [--repeats 2]

For each scale it writes the scaled demo world once (`recsys generate data/scale-<s> --scale <s>`:
scale 1.0 = 100,000 users, 20,000 items, ~2,000,000 clicks, ~6,000,000 impressions; reused when
present, generation not timed), then runs the real `recsys train --data data/scale-<s>
--no-register` in a child process and reads its stage times back from the MLflow run
(`time/<stage>_s`, exclusive of nested stages; see recsys/stage_timer.py). Peak memory is the
child's own peak resident set (wait4). The machine is shared and a one-second stage varies 2x
between runs, so every size but the largest runs ``--repeats`` times and each stage keeps its
fastest time (the largest runs once: that bias can only raise the exponents). It prints a
stage x size table, the exponent b of time ~ size^b per stage (least squares on log-log over all
sizes, and per step between neighbouring sizes; size = interactions, and items for the text
model; item_item also against the distinct co-occurring item pairs its fits counted),
LightGBM training rows/s, the users the ranker and the evaluation used, and writes everything
to data/bench/train.json, which benchmarks/rank.py reads to rank with the models trained here.
Budgets: scale 1 under 45 min and 12 GB (issue 7); scale 10 (``--scales 1 10``) under 60 min and
16 GB with every stage's exponent from scale 1 to 10 at most 1.1 (issue 19).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECSYS = [sys.executable, "-m", "recsys.cli"]
STAGES = ("load", "data_checks", "split", "text_model", "user_tower", "cf", "item_item", "sources", "features",
          "candidates", "ranking_frame", "ranker", "evaluation", "logging")
# Stages whose cost follows a size of their own work, logged by the run as work/<stage>/<name>
# (recsys.stage_timer.add_work): the cosine item_item's cost follows the distinct co-occurring
# item pairs, which grow faster than the interactions when the catalog grows with them.
STAGE_WORK = {"item_item": "item_item/pairs"}
RANKER_MODELS = 3  # the ranker and its no-text and pretrained-text ablations, on the same rows


def run_measured(command: list[str], env: dict[str, str], log_path: Path | None = None) -> tuple[str, float, float]:
    """Run ``command``; return its stdout, wall seconds and peak RSS (MiB: ru_maxrss is in KiB) of that child alone.
    With ``log_path`` its output is also written there line by line as it comes (``tail -f`` to
    follow a long run: its stage lines and progress; one file per run, named with the scale, the
    run and when the benchmark started)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = []
    with open(log_path or os.devnull, "w") as log:
        for line in process.stdout:
            lines.append(line)
            log.write(line)
            log.flush()
    output = "".join(lines)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return output, seconds, usage.ru_maxrss / 1024


def ensure_data(folder: Path, scale: float, env: dict[str, str]) -> dict:
    if not (folder / "import.json").exists():
        print(f"generating {folder} (scale {scale}) ...", flush=True)
        run_measured([*RECSYS, "generate", str(folder), "--scale", str(scale), "--overwrite"], env)
    return json.loads((folder / "import.json").read_text())


def run_metrics(run_id: str) -> dict[str, float]:
    from training.tracking import configure_tracking
    from training.tracking import run_metrics as merged_metrics

    configure_tracking(ROOT)
    return merged_metrics(run_id)  # the parent's headline keys and its diagnostics child's


def exponent(sizes: list[float], seconds: list[float]) -> float:
    """b in seconds ~ size^b, least squares on log-log (stages under 10 ms at a size are left out)."""
    points = [(s, t) for s, t in zip(sizes, seconds, strict=True) if t >= 0.01]
    if len(points) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--config", default=None, help="a --config JSON for recsys train")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs at each size but the largest; each stage keeps its fastest (the largest runs once)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = []
    started = time.strftime("%Y%m%d-%H%M%S")  # in the log names: a rerun keeps the earlier logs
    for scale in sorted(args.scales):
        folder = ROOT / args.data_dir / f"scale-{scale:g}"
        info = ensure_data(folder, scale, env)
        command = [*RECSYS, "train", "--data", str(folder), "--no-register", "--experiment", "bench-train"]
        if args.config:
            command += ["--config", args.config]
        print(f"training at scale {scale:g}: {info['n_users']:,} users, {info['n_items']:,} items, "
              f"{info['n_interactions']:,} interactions ...", flush=True)
        runs = []
        for repeat in range(1 if scale == max(args.scales) else max(1, args.repeats)):
            log_path = ROOT / args.data_dir / "bench" / f"train-scale-{scale:g}-run{repeat + 1}-{started}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            print(f"  its output: {log_path}", flush=True)
            output, wall, peak_mb = run_measured(command, env, log_path)
            match = re.search(r"MLflow run (\w+) .*; model: (\S+)", output)
            runs.append((wall, peak_mb, match.group(1), match.group(2), run_metrics(match.group(1))))
        wall, peak_mb, run_id, model_uri, metrics = min(runs, key=lambda run: run[0])
        results.append({
            "scale": scale, "users": info["n_users"], "items": info["n_items"],
            "interactions": info["n_interactions"], "impressions": info["n_impressions"],
            "run_id": run_id, "model_uri": model_uri, "wall_s": wall, "peak_rss_mb": max(r[1] for r in runs),
            "runs": len(runs),
            "ranker_rows": metrics.get("data/ranker_rows", float("nan")),
            "ndcg_at_10": metrics.get("ndcg_at_10", float("nan")),
            "ndcg_at_10_ci": [metrics.get("test/ndcg_at_10_ci_low", float("nan")),
                              metrics.get("test/ndcg_at_10_ci_high", float("nan"))],
            "label_users": [metrics.get("data/label_users_used", float("nan")),
                            metrics.get("data/label_users", float("nan"))],
            "test_users": [metrics.get("data/test_users_evaluated", float("nan")),
                           metrics.get("data/test_users", float("nan"))],
            # The machine is shared: each stage keeps its fastest run at this size.
            "stages": {s: min(r[4].get(f"time/{s}_s", 0.0) for r in runs) for s in STAGES},
            # deterministic for given data and config: the same in every run at this size
            "work": {w: metrics[f"work/{w}"] for w in STAGE_WORK.values() if f"work/{w}" in metrics},
        })
        print(f"  {wall:,.0f} s wall, peak RSS {peak_mb:,.0f} MiB", flush=True)
    out = ROOT / args.data_dir / "bench" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    report(results)
    print(f"\nresults: {out}; rerun: .venv/bin/python benchmarks/train.py --scales "
          + " ".join(f"{r['scale']:g}" for r in results) + f" --data-dir {args.data_dir} --repeats {args.repeats}"
          + (f" --config {args.config}" if args.config else ""))


def report(results: list[dict]) -> None:
    interactions = [r["interactions"] for r in results]
    items = [r["items"] for r in results]
    header = "".join(f"{r['interactions']:>14,}" for r in results)
    steps = "".join(f"{f'step {i + 1}':>8}" for i in range(len(results) - 1))
    print(f"\nseconds per stage by training interactions (exclusive of nested stages); exponent = fit over all "
          f"sizes, step i = between size i and i+1\n{'stage':16}{header}{'exponent':>10}{steps}  vs")
    for stage in STAGES:
        seconds = [r["stages"][stage] for r in results]
        by_items = stage == "text_model"
        sizes = items if by_items else interactions
        per_step = "".join(f"{exponent(sizes[i:i + 2], seconds[i:i + 2]):>8.2f}" for i in range(len(results) - 1))
        print(f"{stage:16}" + "".join(f"{t:>14.1f}" for t in seconds)
              + f"{exponent(sizes, seconds):>10.2f}{per_step}  " + ("items" if by_items else "interactions"))
    for stage, name in STAGE_WORK.items():  # the same stage against its own work, where the runs logged it
        if all(name in r.get("work", {}) for r in results):
            sizes = [r["work"][name] for r in results]
            seconds = [r["stages"][stage] for r in results]
            per_step = "".join(f"{exponent(sizes[i:i + 2], seconds[i:i + 2]):>8.2f}" for i in range(len(results) - 1))
            print(f"{name:16}" + "".join(f"{size:>14,.0f}" for size in sizes)
                  + f"{exponent(sizes, seconds):>10.2f}{per_step}  {stage} seconds vs these sizes")
    print(f"{'runs (best of)':16}" + "".join(f"{r.get('runs', 1):>14}" for r in results))
    print(f"{'total (wall)':16}" + "".join(f"{r['wall_s']:>14.1f}" for r in results)
          + f"{exponent(interactions, [r['wall_s'] for r in results]):>10.2f}")
    print(f"{'peak RSS MiB':16}" + "".join(f"{r['peak_rss_mb']:>14,.0f}" for r in results))
    print(f"{'ranker rows':16}" + "".join(f"{r['ranker_rows']:>14,.0f}" for r in results))
    print(f"{'LightGBM rows/s':16}" + "".join(
        f"{RANKER_MODELS * r['ranker_rows'] / max(r['stages']['ranker'], 1e-9):>14,.0f}" for r in results)
        + "   (rows x 3 models / ranker stage s)")
    print(f"{'nDCG@10':16}" + "".join(f"{r['ndcg_at_10']:>14.4f}" for r in results))
    if all("ndcg_at_10_ci" in r for r in results):
        print(f"{'  95% interval':16}" + "".join(f"{r['ndcg_at_10_ci'][0]:>7.4f}-{r['ndcg_at_10_ci'][1]:.4f}"
                                                 for r in results))
        for key, label, cap in (("label_users", "label users", "ranker_max_users"),
                                ("test_users", "test users", "eval_max_users")):
            print(f"{label:16}" + "".join(f"{f'{r[key][0]:,.0f}/{r[key][1]:,.0f}':>14}" for r in results)
                  + f"   (used / all; {cap})")
    full = results[-1]
    minutes, gigabytes = (60, 16) if full["scale"] >= 10 else (45, 12)  # issue 19 at scale 10, issue 7 below
    print(f"\nbudget at {full['interactions']:,} interactions: {full['wall_s'] / 60:.1f} min ({minutes}), "
          f"{full['peak_rss_mb'] * 2**20 / 1e9:.1f} GB of 10^9 bytes ({gigabytes}; "
          f"{full['peak_rss_mb'] / 1024:.1f} GiB)")


if __name__ == "__main__":
    main()
