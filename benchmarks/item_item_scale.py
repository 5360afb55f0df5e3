"""Time and peak memory of one EASE fit on a data folder's clicks (the cubic, dense item-to-item model).

    .venv/bin/python benchmarks/item_item_scale.py data/scale-1      # after benchmarks/train.py or recsys generate

EASE is fitted on every item with a click (``max_items`` lifted), as ``item_item_max_items`` would
allow it; the pipeline's default switches to cosine co-occurrence above 5,000 items.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import polars as pl
import scipy.sparse as sp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a canonical data folder (interactions.parquet)")
    parser.add_argument("--regularization", type=float, default=500.0)
    args = parser.parse_args()
    from features.item_item import fit_item_item

    events = pl.read_parquet(f"{args.data}/interactions.parquet", columns=["user_id", "item_id"])
    users = events["user_id"].cast(pl.Categorical).to_physical().to_numpy()
    items = events["item_id"].cast(pl.Categorical).to_physical().to_numpy()
    clicks = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    model = fit_item_item(clicks, kind="ease", regularization=args.regularization, max_items=clicks.shape[1])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"EASE on {clicks.shape[0]:,} users x {clicks.shape[1]:,} items: {seconds:.0f} s, peak RSS {peak:,.0f} MB "
          f"({before:,.0f} MB before the fit), {model.weights.nnz:,} weights kept")
    print(f"rerun: .venv/bin/python benchmarks/item_item_scale.py {args.data}")


if __name__ == "__main__":
    main()
