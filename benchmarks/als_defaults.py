"""ALS's default settings across the shared data sets, on validation data only.

    .venv/bin/python benchmarks/als_defaults.py [--sets demo movielens office games] [--seed 0]

For each data set (imported as `benchmarks/defaults_check.py` does, with its protocol) ALS is
fitted on the feature window and scored by full ranking of the label-window users (what
`recsys tune`'s ALS stage measures; the test split is never read), with:
- the earlier defaults: 32 factors, confidence scale alpha 1;
- alpha from the data at 32 factors, and today's defaults: 128 factors, alpha from the data
  (`als_user_confidence` / the mean per-user sum of values);
- fixed scales alpha 10 and 40 at 128 factors, for reference.
Prints validation nDCG@10 per setting and the alpha the data gave.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "earlier defaults (32 factors, alpha 1)": {"als_factors": 32, "als_alpha": 1.0},
    "32 factors, alpha from the data": {"als_factors": 32, "als_alpha": 0.0},
    "defaults (128 factors, alpha from the data)": {},
    "128 factors, alpha 10": {"als_alpha": 10.0},
    "128 factors, alpha 40": {"als_alpha": 40.0},
}


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from defaults_check import SPLITS, load_set

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from features.cf import als_input
    from recsys.config import PipelineConfig
    from training.tune_validation import cf_scorer, ndcg_of_scores, validation_data

    with tempfile.TemporaryDirectory(prefix="als-defaults-") as tmp:
        for name in args.sets:
            dataset = load_set(name, args.shared, Path(tmp))
            base = PipelineConfig(split=SPLITS[name], seed=args.seed)
            data = validation_data(dataset, base)
            _, alpha = als_input(data.user_items, replace(base, als_alpha=0.0))
            print(f"\n{name} ({SPLITS[name]}, seed {args.seed}): alpha from the data = {alpha:g}")
            for label, overrides in SETTINGS.items():
                start = time.perf_counter()
                config = replace(base, **overrides)
                ndcg = ndcg_of_scores(data, cf_scorer(data, "als", config), 10, args.seed)
                print(f"  {label:46s} validation nDCG@10 {ndcg:.4f}  ({time.perf_counter() - start:.1f}s)",
                      flush=True)


if __name__ == "__main__":
    main()
