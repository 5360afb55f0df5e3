"""Batch ranking throughput once the model is loaded: users/s for top-K, with a stage breakdown.

Run from a folder that holds the MLflow store with the model (after `make demo`):

    .venv/bin/python benchmarks/rank_throughput.py [--model models:/recsys-demo@champion] [--k 10]

Prints users/s of the whole batch path (`serving.recommend.recommend_users`, 2,048-user chunks),
the time share of each stage, the mean number of candidates per user, the in-process time of
one serving request (one user, no HTTP), and peak RSS. As the
same-run baseline it also times a popularity-only top-K over the same users (no candidates,
features or model): the ratio says how much the ranking pipeline costs over the floor.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # as `recsys rank` runs (recsys/cli.py cmd_rank)

import numpy as np
import polars as pl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/recsys-demo@champion")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2, help="passes over all users; the best is reported")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import mlflow

    from features.bundle import head_k
    from features.candidates import SOURCE_FEATURES, generate_candidates
    from features.ranking_frame import feature_arrays
    from serving.recommend import recommend_users
    from training.tracking import configure_tracking

    configure_tracking()
    bundle = mlflow.pyfunc.load_model(args.model).unwrap_python_model().bundle
    users = bundle.state.users.ids.to_list()
    chunks = [users[i:i + args.chunk_size] for i in range(0, len(users), args.chunk_size)]

    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        for chunk in chunks:
            recommend_users(bundle, chunk, args.k)
        best = min(best, time.perf_counter() - start)

    # Stage breakdown on the first chunk, the steps of RankingBundle.score_candidates.
    idx = bundle.state.users.to_index(chunks[0])
    t0 = time.perf_counter()
    cands = generate_candidates(bundle.state, idx, bundle.config.candidates, seed=bundle.config.seed,
                                with_scores=True)
    t1 = time.perf_counter()
    known = {name: cands[name].to_numpy() for name in SOURCE_FEATURES.values()}
    arrays = feature_arrays(bundle.state, cands["user_idx"].to_numpy(), cands["item_idx"].to_numpy(),
                            query_idx=cands["query_idx"].to_numpy(), known=known)
    t2 = time.perf_counter()
    scores = bundle.score(arrays)
    t3 = time.perf_counter()
    head_k(cands.select("query_idx", "user_idx", "item_idx").with_columns(pl.Series("score", scores)), args.k,
           seed=bundle.config.seed)
    t4 = time.perf_counter()

    pop = bundle.state.item_features["item_pop_all"].to_numpy()
    start = time.perf_counter()
    for chunk in chunks:
        from features.candidates import seen_mask, top_n
        chunk_idx = bundle.state.users.to_index(chunk)
        scores_pop = np.broadcast_to(pop, (len(chunk), len(pop))).copy()
        scores_pop[seen_mask(bundle.state, chunk_idx)] = -np.inf
        top_n(scores_pop, args.k, seed=bundle.config.seed, query=chunk_idx)
    floor = time.perf_counter() - start

    # One serving request (one user, the endpoint's code path minus HTTP), as the server runs it.
    import pandas as pd

    from serving.requests import predict_frame

    request = pd.DataFrame([{"user_id": users[0], "k": args.k}])
    for _ in range(20):
        predict_frame(bundle, request)
    start = time.perf_counter()
    for i in range(300):
        predict_frame(bundle, pd.DataFrame([{"user_id": users[i % len(users)], "k": args.k}]))
    per_request_ms = (time.perf_counter() - start) / 300 * 1000

    total = t4 - t0
    print(f"model {args.model}: {len(users)} users, {bundle.state.n_items} items, "
          f"{cands.height / len(chunks[0]):.0f} candidates/user, {bundle.booster.num_trees()} trees")
    print(f"batch ranking: {len(users) / best:,.0f} users/s (top-{args.k}, best of {args.repeat})")
    rows_per_s = cands.height / (t3 - t2)
    print(f"LightGBM: {rows_per_s:,.0f} rows/s ({cands.height:,} rows, {len(bundle.feature_columns)} features)")
    print(f"stages (first chunk): candidates {100 * (t1 - t0) / total:.0f}%, frame {100 * (t2 - t1) / total:.0f}%, "
          f"LightGBM {100 * (t3 - t2) / total:.0f}%, top-k {100 * (t4 - t3) / total:.0f}%")
    print(f"baseline popularity top-{args.k}: {len(users) / floor:,.0f} users/s; "
          f"ranking costs {floor and best / floor:.1f}x the floor")
    print(f"one request in process (no HTTP): {per_request_ms:.1f} ms")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"rerun: .venv/bin/python benchmarks/rank_throughput.py --model {args.model} --k {args.k}")


if __name__ == "__main__":
    main()
