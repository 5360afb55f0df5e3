"""The defaults (no config at all) on every shared data set, judged on validation.

    .venv/bin/python benchmarks/defaults_check.py [--sets demo movielens office games] [--seed 0]
        [--config FILE] [--cold-items F] [--shared ../shared/data] [--json-out FILE]

Each data set is imported as a user would (`recsys import ...`) and trained once with its
protocol: demo temporal; MovieLens 100K stratified 75/25 per user; Amazon Office 2014 and
Amazon Games 2018 leave-last-out (each user's last item is the test target, full ranking).
Equivalent CLI, per set:

    recsys train --data demo --split temporal --seed S
    recsys import movielens SHARED/movielens-100k/ml-100k data/ml100k \\
        --descriptions SHARED/movielens-100k/movielens100k_imdb_details.csv
    recsys train --data data/ml100k --split stratified --seed S
    recsys import sequences SHARED/amazon-office-2014 data/office
    recsys train --data data/office --split leave-last-out --seed S
    recsys import recbole SHARED/amazon-games-2018 data/games
    recsys train --data data/games --split leave-last-out --seed S

Prints, per set, the validation nDCG@10 (held-out label users, feature-window models: what the
defaults are judged on) of the shipped ranker and of the best single baseline, their ratio, the
test nDCG@10 of both (reported, never used to choose) with the ranker's paired lift over that
baseline and its 95% bootstrap interval, and the run's wall time. MLflow writes to
a temporary folder. ``--cold-items F`` runs the cold-items protocol (``recsys train --cold-items
F``: a seeded share F of the items is removed from training) and adds each model's cold
Recall@10 and its ratio to random's. The JSON also records the machine (``machine``: CPU, the
BLAS kernels, PyTorch's CPU capability, package versions): the figures reproduce to every digit
on the same kind of CPU and packages, and can move in the fourth decimal on another
(docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"demo": "temporal", "movielens": "stratified", "office": "leave-last-out", "games": "leave-last-out"}


def load_set(name: str, shared: Path, folder: Path):
    """The data set as a validated ``Dataset``, imported into ``folder`` first when it is a shared one."""
    from recsys.dataset import load_folder
    from recsys.demo_data import generate_demo
    from recsys.importers.delimited import write_canonical_folder

    if name == "demo":
        return generate_demo()
    if name == "movielens":
        from recsys.importers.movielens import import_movielens

        src = shared / "movielens-100k"
        tables, report = import_movielens(src / "ml-100k", descriptions=[src / "movielens100k_imdb_details.csv"])
    elif name == "office":
        from recsys.importers.sequences import import_sequences

        tables, report = import_sequences(shared / "amazon-office-2014")
    else:
        from recsys.importers.recbole import import_recbole

        tables, report = import_recbole(shared / "amazon-games-2018")
    write_canonical_folder(folder / name, tables, report, overwrite=True)
    return load_folder(folder / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None, help="a config file (default: the defaults)")
    parser.add_argument("--cold-items", type=float, default=None, metavar="F",
                        help="cold-items protocol: remove this seeded share of items from training")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.basicConfig(level=logging.WARNING)
    from recsys.cli import load_config
    from training.pipeline import train

    results = {}
    with tempfile.TemporaryDirectory(prefix="defaults-check-") as tmp:
        for name in args.sets:
            dataset = load_set(name, args.shared, Path(tmp))
            overrides = {} if args.cold_items is None else {"cold_item_fraction": args.cold_items}
            config = load_config(str(args.config) if args.config else None, seed=args.seed, split=SPLITS[name],
                                 **overrides)
            start = time.perf_counter()
            result = train(dataset, config, experiment=f"defaults-{name}", register_name=None, workdir=Path(tmp),
                           progress=False)
            wall = time.perf_counter() - start
            results[name] = {**summarise(result, wall), "machine": machine()}
            print(line_of(name, results[name]), flush=True)
    print(f"\nDefaults on validation, seed {args.seed}:")
    for name, row in results.items():
        print(line_of(name, row))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=float))


def machine() -> dict:
    """What can make a figure differ from another machine's with the same code: the CPU, the float
    kernels OpenBLAS and PyTorch chose for it, and the installed packages' versions."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch
    from threadpoolctl import threadpool_info

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    packages = {}
    for package in ("numpy", "scipy", "torch", "transformers", "lightgbm", "implicit", "polars", "mlflow"):
        try:
            packages[package] = version(package)
        except PackageNotFoundError:
            packages[package] = None
    return {"cpu": names[0] if names else platform.processor(), "python": platform.python_version(),
            "blas": [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                     for i in threadpool_info() if i.get("user_api") == "blas"],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "packages": packages}


def summarise(result, wall: float) -> dict:
    k = 10
    key = f"ndcg@{k}"
    baselines = {m: v for m, v in result.validation_metrics.items() if not m.startswith("ranker") and key in v}
    best = max(baselines, key=lambda m: baselines[m][key])
    return {"shipped": result.shipped_variant,
            "shipped_reason": result.shipped_reason,  # the variant rule's own words
            "validation_ranker": result.validation_metrics["ranker"][key],
            "validation_best_baseline": best, "validation_best_baseline_ndcg": baselines[best][key],
            "test_ranker": result.metrics["ranker"][key], "test_best_baseline": result.metrics[best][key],
            # The shipped ranker's paired test lift over the baseline chosen on validation, with its interval.
            "test_lift": [result.metrics["ranker"].get(f"lift_vs_best_baseline/{key}{end}", float("nan"))
                          for end in ("", "_ci_low", "_ci_high")],
            # Paired test lifts of the fine-tuned text models over their pretrained-text counterparts.
            "test_lift_vs_pretrained_text": {
                m: [v[f"lift_vs_pretrained_text/{key}{end}"] for end in ("", "_ci_low", "_ci_high")]
                for m, v in result.metrics.items() if f"lift_vs_pretrained_text/{key}" in v},
            "validation": {m: v[key] for m, v in result.validation_metrics.items() if key in v},
            "test": {m: v[key] for m, v in result.metrics.items() if key in v},
            "test_ci": {m: [v[f"{key}_ci_low"], v[f"{key}_ci_high"]] for m, v in result.metrics.items()
                        if f"{key}_ci_low" in v},
            # Cold-items protocol (--cold-items): Recall@10 over the held-out cold items, per model.
            "test_cold_recall": {m: v[f"cold_items/recall@{k}"] for m, v in result.metrics.items()
                                 if f"cold_items/recall@{k}" in v},
            "timings": result.timings,  # seconds per pipeline stage (time/<stage>_s)
            "wall_s": wall}


def line_of(name: str, row: dict) -> str:
    ratio = row["validation_ranker"] / max(row["validation_best_baseline_ndcg"], 1e-12)
    lift, low, high = row["test_lift"]
    tuned = "".join(f"\n{'':10s} test, fine-tuned {m} over pretrained: {d:+.4f} (95% CI {lo:+.4f} to {hi:+.4f})"
                    for m, (d, lo, hi) in row.get("test_lift_vs_pretrained_text", {}).items())
    cold = row.get("test_cold_recall", {})
    if "random" in cold and "ranker" in cold:
        tuned += "".join(f"\n{'':10s} cold-items Recall@10, {m}: {v:.4f} ({v / max(cold['random'], 1e-12):.2f}x random)"
                         for m, v in sorted(cold.items(), key=lambda kv: -kv[1]))
    return (f"{name:10s} validation nDCG@10: ranker ({row['shipped']}) {row['validation_ranker']:.4f} vs best "
            f"baseline {row['validation_best_baseline']} {row['validation_best_baseline_ndcg']:.4f} "
            f"({ratio:.2f}x) | test: ranker {row['test_ranker']:.4f}, {row['validation_best_baseline']} "
            f"{row['test_best_baseline']:.4f}, paired lift {lift:+.4f} (95% CI {low:+.4f} to {high:+.4f}) "
            f"| {row['wall_s']:.0f}s{tuned}")


if __name__ == "__main__":
    main()
