"""Time and peak memory of one item-to-item fit on a data folder's clicks.

    .venv/bin/python benchmarks/item_item_scale.py data/scale-1                  # EASE (dense, cubic)
    .venv/bin/python benchmarks/item_item_scale.py /tmp/scale-10 --kind cosine   # co-occurrence cosine
    .venv/bin/python benchmarks/item_item_scale.py /tmp/scale-10 --kind transitions  # sequential rules

EASE is fitted on every item with a click (``max_items`` lifted), as ``item_item_max_items`` would
allow it; the pipeline's default switches to cosine co-occurrence above 5,000 items. For the
cosine it also prints what its cost follows: the partial products (the sum over users of their
squared distinct items) and the distinct co-occurring item pairs (the off-diagonal entries of
X'X, as the fit counts them), with the fit's seconds per million pairs and the products' own
nanoseconds per partial product (one pass, on one thread): the same kind of work per partial
product at both sizes, so a rise there is the machine's memory (caches) and the larger output
per product, not more work per click. Beside it, implicit's ``all_pairs_knn`` (C++: one dense
accumulator and a top-K heap per item row, which never stores X'X) on the same cosines and
cores, with its seconds per million pairs: a second implementation's cost against the same pairs.
The sequential rules (``features/transitions.py``) are fitted on every click with its time, as a
state's fit does on its window.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import polars as pl
import scipy.sparse as sp


def sparse_product_seconds(x: sp.csr_matrix, block_entries: int = 30_000_000) -> float:
    """Seconds of the sparse products alone (``X'X`` of binary ``x``, users x items, in the fit's
    blocks of item rows, on one thread)."""
    xt = x.T.tocsr()
    cost = np.cumsum(xt @ np.diff(x.indptr).astype(np.int64)) // block_entries
    bounds = np.r_[np.flatnonzero(np.r_[True, cost[1:] != cost[:-1]]), x.shape[1]]
    seconds = 0.0
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        rows = xt[a:b]
        start = time.perf_counter()
        rows @ x
        seconds += time.perf_counter() - start
    return seconds


def _transitions(events: pl.DataFrame, users: np.ndarray, items: np.ndarray) -> None:
    from features.transitions import fit_sequential_rules

    indexed = pl.DataFrame({"user_idx": users, "item_idx": items, "timestamp": events["timestamp"]})
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    model = fit_sequential_rules(indexed, n_users=n_users, n_items=n_items, seed=0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"transitions on {len(indexed):,} clicks ({n_users:,} users x {n_items:,} items): {seconds:.1f} s, peak "
          f"RSS {peak:,.0f} MiB ({before:,.0f} MiB before the fit), {model.follows.nnz:,} follower weights kept")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a canonical data folder (interactions.parquet)")
    parser.add_argument("--kind", choices=("ease", "cosine", "transitions"), default="ease")
    parser.add_argument("--regularization", type=float, default=500.0)
    parser.add_argument("--neighbours", type=int, default=200, help="weights kept per item")
    args = parser.parse_args()
    from features.item_item import binary, fit_item_item
    from recsys.stage_timer import collect, work

    events = pl.read_parquet(f"{args.data}/interactions.parquet", columns=["user_id", "item_id", "timestamp"])
    users = events["user_id"].cast(pl.Categorical).to_physical().to_numpy()
    items = events["item_id"].cast(pl.Categorical).to_physical().to_numpy()
    if args.kind == "transitions":
        _transitions(events, users, items)
        return
    clicks = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with collect():  # the cosine fit records the distinct co-occurring pairs it counted
        start = time.perf_counter()
        model = fit_item_item(clicks, kind=args.kind, regularization=args.regularization, max_items=clicks.shape[1],
                              neighbours=args.neighbours)
        seconds = time.perf_counter() - start
        pairs = int(work().get("pairs", 0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.kind} on {clicks.shape[0]:,} users x {clicks.shape[1]:,} items: {seconds:.1f} s, peak RSS "
          f"{peak:,.0f} MiB ({before:,.0f} MiB before the fit), {model.weights.nnz:,} weights kept")
    if args.kind == "cosine":
        x = binary(clicks)
        per_user = np.diff(x.indptr).astype(np.int64)
        product_seconds = sparse_product_seconds(x)
        products = int((per_user ** 2).sum())
        print(f"  {x.nnz:,} distinct (user, item) clicks, {products:,} partial products, "
              f"{pairs:,} distinct co-occurring item pairs: {seconds / pairs * 1e6:.3f} s per million pairs")
        print(f"  the sparse products X'X alone (a second pass, as the fit blocks them): {product_seconds:.1f} s, "
              f"{product_seconds / products * 1e9:.1f} ns per partial product")
        from implicit._nearest_neighbours import all_pairs_knn

        from features.item_item import _COSINE_MAX_THREADS
        from features.rank_workers import usable_cores

        users_per_item = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
        factor = 1.0 / np.sqrt(np.maximum(users_per_item, 1.0))  # x'x of the scaled columns = the cosines
        scaled = sp.csr_matrix((factor[x.indices], x.indices, x.indptr), shape=x.shape)
        threads = min(_COSINE_MAX_THREADS, usable_cores())  # as many as the fit's blocks use
        start = time.perf_counter()
        all_pairs_knn(scaled, args.neighbours + 1, num_threads=threads, show_progress=False)  # + the item itself
        knn_seconds = time.perf_counter() - start
        print(f"  implicit's all_pairs_knn on the same cosines ({threads} threads): {knn_seconds:.1f} s, "
              f"{knn_seconds / pairs * 1e6:.3f} s per million pairs")
    print(f"rerun: .venv/bin/python benchmarks/item_item_scale.py {args.data} --kind {args.kind} "
          f"--neighbours {args.neighbours}")


if __name__ == "__main__":
    main()
