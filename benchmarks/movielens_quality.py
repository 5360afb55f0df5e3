"""MovieLens 100K quality against the published numbers: the issue's protocol, several seeds.

    .venv/bin/python benchmarks/movielens_quality.py [--seeds 0 1 2] [--cold-items 0.2]
        [--config best_config.json] [--src ../shared/data/movielens-100k]

Imports ML-100K with the IMDb plot outlines (`recsys import movielens`), then trains once per
seed (stratified 75/25 per user, k=10, full ranking over items the user has not rated in train)
with the defaults, or with `--config` (for example the `best_config.json` of `recsys tune`),
and once per seed on the cold-items protocol. Equivalent CLI, per seed S:

    recsys import movielens SRC/ml-100k data/ml100k --descriptions SRC/movielens100k_imdb_details.csv
    recsys train --data data/ml100k [--config FILE] --split stratified --seed S
    recsys train --data data/ml100k [--config FILE] --split stratified --seed S --cold-items 0.2

Prints per model the mean over seeds of nDCG@10 / P@10 / Recall@10 / MAP@10 (and each seed),
the ranker's bootstrap interval and paired lift over the best baseline, the cold-item Recall@10
of ranker, text, popularity and random, and the wall time of every run. MLflow writes to a
temporary folder. The IMDb `rating` / `num_review` columns are never imported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("ranker_finetuned_text", "ranker_pretrained_text", "ranker_no_text")
PUBLISHED = {"BiVAE": (0.475, 0.412), "BPR (published)": (0.442, 0.388), "LightGCN": (0.420, 0.380),
             "SAR": (0.382, 0.331)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cold-items", type=float, default=0.2, help="0 skips the cold-items runs")
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "movielens-100k")
    parser.add_argument("--config", type=Path, default=None, help="a config file (default: the defaults)")
    parser.add_argument("--json-out", type=Path, default=None, help="write every run's metrics here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.basicConfig(level=logging.WARNING)
    from recsys.cli import load_config
    from recsys.dataset import load_folder
    from recsys.importers.delimited import write_canonical_folder
    from recsys.importers.movielens import import_movielens
    from training.pipeline import train

    with tempfile.TemporaryDirectory(prefix="ml100k-bench-") as tmp:
        tables, report = import_movielens(args.src / "ml-100k",
                                          descriptions=[args.src / "movielens100k_imdb_details.csv"])
        write_canonical_folder(Path(tmp) / "ml100k", tables, report, overwrite=False)
        dataset = load_folder(Path(tmp) / "ml100k")
        print_rating_gaps(dataset.interactions)
        runs = {"plain": {}, "cold": {}}
        for seed in args.seeds:
            for protocol in ("plain", "cold") if args.cold_items > 0 else ("plain",):
                overrides = {"seed": seed, "split": "stratified"}
                if protocol == "cold":
                    overrides["cold_item_fraction"] = args.cold_items
                config = load_config(str(args.config) if args.config else None, **overrides)
                start = time.perf_counter()
                result = train(dataset, config, experiment=f"ml100k-{protocol}", register_name=None,
                               workdir=Path(tmp), progress=False)
                wall = time.perf_counter() - start
                runs[protocol][seed] = {"metrics": by_variant(result.metrics, result.shipped_variant),
                                        "validation": by_variant(result.validation_metrics, result.shipped_variant),
                                        "shipped_variant": result.shipped_variant,
                                        "shipped_reason": result.shipped_reason, "wall_s": wall,
                                        "timings": result.timings, "ranker_trees": result.ranker_trees,
                                        "prior_weights": result.prior_weights}
                print(f"seed {seed} {protocol}: ranker ({result.shipped_variant}, by {result.shipped_by}) nDCG@10 "
                      f"{result.metrics['ranker']['ndcg@10']:.4f} in {wall:.0f}s; {result.ranker_trees} trees, "
                      f"prior weights {result.prior_weights}", flush=True)
    report_runs(runs, args.seeds)
    if args.json_out:
        args.json_out.write_text(json.dumps(runs, indent=2, default=float))


def by_variant(metrics: dict, shipped: str) -> dict:
    """The run's table with the shipped variant also under its own name, so every seed has a row
    for each variant whichever one shipped."""
    return {**metrics, shipped: metrics["ranker"]}


def print_rating_gaps(interactions) -> None:
    """How much MovieLens users rate in sittings: the evidence for the item-to-item sessions."""
    import polars as pl

    gap = (interactions.sort("user_id", "timestamp")
           .select(pl.col("timestamp").diff().over("user_id").dt.total_seconds().alias("gap"))
           .drop_nulls())["gap"]
    print(f"ratings after the same user's previous one: {(gap == 0).mean():.0%} in the same second, "
          f"{(gap <= 60).mean():.0%} within 60 s (item_item_session_gap_seconds)", flush=True)


def report_runs(runs: dict, seeds: list[int]) -> None:
    plain = runs["plain"]
    models = sorted(plain[seeds[0]]["metrics"], key=lambda m: -np.mean([plain[s]["metrics"][m]["ndcg@10"]
                                                                          for s in seeds]))
    print(f"\nMovieLens 100K, stratified 75/25 per user, k=10, seeds {seeds} (mean; per seed in brackets)")
    print(f"{'model':24s}{'nDCG@10':>10s}{'P@10':>9s}{'R@10':>9s}{'MAP@10':>9s}   nDCG@10 per seed")
    for name in models:
        values = {key: [plain[s]["metrics"][name][key] for s in seeds]
                  for key in ("ndcg@10", "precision@10", "recall@10", "map@10")}
        per_seed = " ".join(f"{v:.4f}" for v in values["ndcg@10"])
        print(f"{name:24s}" + "".join(f"{np.mean(v):>9.4f} " for v in values.values()) + f"  [{per_seed}]")
    for name, (ndcg, p10) in PUBLISHED.items():
        print(f"{name + ' (published)' if 'published' not in name else name:24s}{ndcg:>9.3f} {p10:>9.3f}")
    for s in seeds:
        validation = ", ".join(f"{name.removeprefix('ranker_')} {plain[s]['validation'][name]['ndcg@10']:.4f}"
                               for name in VARIANTS)
        print(f"seed {s}: shipped {plain[s]['shipped_variant']} (validation nDCG@10: {validation})")
    for s in seeds:
        r = plain[s]["metrics"]["ranker"]
        print(f"seed {s}: ranker nDCG@10 95% CI {r['ndcg@10_ci_low']:.4f}-{r['ndcg@10_ci_high']:.4f}; paired lift "
              f"over the best baseline {r['lift_vs_best_baseline/ndcg@10']:+.4f} (95% CI "
              f"{r['lift_vs_best_baseline/ndcg@10_ci_low']:+.4f} to {r['lift_vs_best_baseline/ndcg@10_ci_high']:+.4f});"
              f" run {plain[s]['wall_s']:.0f}s")
    cold = runs.get("cold") or {}
    if cold:
        print("\ncold-items protocol (20% of items never in training; each user ranks the cold set)")
        for name in ("ranker", *VARIANTS, "text", "text_popularity", "popularity", "random"):
            recall = [cold[s]["metrics"][name]["cold_items/recall@10"] for s in seeds]
            ndcg = [cold[s]["metrics"][name]["cold_items/ndcg@10"] for s in seeds]
            print(f"{name:24s} Recall@10 {np.mean(recall):.4f}  nDCG@10 {np.mean(ndcg):.4f}  "
                  f"[{' '.join(f'{v:.4f}' for v in recall)}]")
        ratio = [cold[s]["metrics"]["ranker"]["cold_items/recall@10"]
                 / cold[s]["metrics"]["random"]["cold_items/recall@10"] for s in seeds]
        walls = " ".join(f"{cold[s]['wall_s']:.0f}s" for s in seeds)
        print(f"ranker / random cold Recall@10: {np.mean(ratio):.2f}x (per seed {' '.join(f'{r:.2f}' for r in ratio)});"
              f" runs {walls}")
        no_text = [cold[s]["metrics"]["ranker_no_text"]["cold_items/recall@10"]
                   / cold[s]["metrics"]["random"]["cold_items/recall@10"] for s in seeds]
        print(f"no-text ranker / random cold Recall@10: {np.mean(no_text):.2f}x "
              f"(per seed {' '.join(f'{r:.2f}' for r in no_text)}; no catalog-order signal: at most 1.5x)")


if __name__ == "__main__":
    main()
