"""Batch ranking throughput once the model is loaded: users/s for top-K, with a stage breakdown.

Run from a folder that holds the MLflow store with the model (after `make demo`):

    .venv/bin/python benchmarks/rank_throughput.py [--model models:/recsys-demo@champion] [--k 10]

A registered model runs the code stored with it; ``--bundle FOLDER`` (a model's
``artifacts/bundle`` folder) ranks it with this checkout's code instead.

Prints, for LightGBM's own predict and for the compiled trees (lleaves, when installed), in one
run on one model: users/s of the whole batch path (`serving.recommend.recommend_users`, 2,048-user
chunks, each split across the cores as `recsys rank` does; `RECSYS_RANK_WORKERS=1` for one
thread), the time share of each stage (candidates, features, trees, top-k; first chunk, in the
main thread), the in-process time of one serving request (one user, no HTTP); and the ratio of
the two, the mean number of candidates per user and peak RSS. As the same-run baseline it also
times a popularity-only top-K over the same users (no candidates, features or model): the ratio
says how much the ranking pipeline costs over the floor.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from dataclasses import replace

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # as `recsys rank` runs (recsys/cli.py cmd_rank)

import numpy as np
import polars as pl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/recsys-demo@champion")
    parser.add_argument("--bundle", help="rank with this model bundle folder and this checkout's code, instead of "
                        "--model (a registered model runs the code stored with it)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2, help="passes over all users; the best is reported")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.bundle:
        from features.bundle import RankingBundle

        bundle = RankingBundle.load(args.bundle)
        args.model = args.bundle
    else:
        import mlflow

        from training.tracking import configure_tracking

        configure_tracking()
        bundle = mlflow.pyfunc.load_model(args.model).unwrap_python_model().bundle
    users = bundle.state.users.ids.to_list()
    chunks = [users[i:i + args.chunk_size] for i in range(0, len(users), args.chunk_size)]

    pop = bundle.state.item_features["item_pop_all"].to_numpy()
    start = time.perf_counter()
    for chunk in chunks:
        from features.candidates import seen_mask, top_n
        chunk_idx = bundle.state.users.to_index(chunk)
        scores_pop = np.broadcast_to(pop, (len(chunk), len(pop))).copy()
        scores_pop[seen_mask(bundle.state, chunk_idx)] = -np.inf
        top_n(scores_pop, args.k, seed=bundle.config.seed, query=chunk_idx)
    floor = time.perf_counter() - start

    compiled = bundle.compiled_trees() is not None
    modes = {"LightGBM predict": replace(bundle, use_compiled_trees=False)}
    if compiled:
        modes["compiled trees (lleaves)"] = bundle
    results = {name: _measure(b, users, chunks, args) for name, b in modes.items()}
    first = results["LightGBM predict"]
    print(f"model {args.model}: {len(users)} users, {bundle.state.n_items} items, "
          f"{first['rows'] / len(chunks[0]):.0f} candidates/user, {bundle.booster.num_trees()} trees")
    if not compiled:
        print("compiled trees unavailable (see the warning above): LightGBM predict only")
    for name, r in results.items():
        total = r["stages"]["total"]
        shares = ", ".join(f"{stage} {100 * r['stages'][stage] / total:.0f}%"
                           for stage in ("candidates", "frame", "trees", "top-k"))
        print(f"{name}: batch ranking {r['users_per_s']:,.0f} users/s (top-{args.k}, best of {args.repeat}); "
              f"trees {r['rows'] / r['stages']['trees']:,.0f} rows/s; stages (first chunk): {shares}; "
              f"one request in process (no HTTP) {r['request_ms']:.2f} ms")
    if compiled:
        fast = results["compiled trees (lleaves)"]
        print(f"compiled / LightGBM: {fast['users_per_s'] / first['users_per_s']:.2f}x users/s, "
              f"{first['request_ms'] / fast['request_ms']:.2f}x faster requests (same run, same model)")
    best = max(r["users_per_s"] for r in results.values())
    print(f"baseline popularity top-{args.k}: {len(users) / floor:,.0f} users/s; "
          f"ranking costs {len(users) / floor / best:.1f}x the floor")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    source = "--bundle" if args.bundle else "--model"
    print(f"rerun: .venv/bin/python benchmarks/rank_throughput.py {source} {args.model} --k {args.k}")


def _measure(bundle, users: list, chunks: list, args) -> dict:
    """users/s of the batch path, the first chunk's stage times (s) and one request's ms."""
    import pandas as pd

    from features.bundle import head_k
    from features.candidates import SOURCE_FEATURES, generate_candidates
    from features.ranking_frame import feature_arrays
    from features.sources import candidate_counts, score_columns
    from serving.recommend import recommend_users
    from serving.requests import predict_frame

    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        for chunk in chunks:
            recommend_users(bundle, chunk, args.k)
        best = min(best, time.perf_counter() - start)
    # Stage breakdown on the first chunk, the steps of RankingBundle.score_candidates; each stage's
    # best of ``repeat`` passes, as for the throughput.
    idx = bundle.state.users.to_index(chunks[0])
    stages = {name: float("inf") for name in ("candidates", "frame", "trees", "top-k")}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cands = generate_candidates(bundle.state, idx, bundle.config.candidates, seed=bundle.config.seed,
                                    with_scores=True, source_counts=candidate_counts(bundle.config))
        t1 = time.perf_counter()
        carried = (*SOURCE_FEATURES.values(), *score_columns().values())  # as RankingBundle.candidate_features
        known = {name: cands[name].to_numpy() for name in carried if name in cands.columns}
        arrays = feature_arrays(bundle.state, cands["user_idx"].to_numpy(), cands["item_idx"].to_numpy(),
                                query_idx=cands["query_idx"].to_numpy(), known=known)
        t2 = time.perf_counter()
        scores = bundle.score(arrays)
        t3 = time.perf_counter()
        head_k(cands.select("query_idx", "user_idx", "item_idx").with_columns(pl.Series("score", scores)), args.k,
               seed=bundle.config.seed)
        t4 = time.perf_counter()
        for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name] = min(stages[name], seconds)
    stages["total"] = sum(stages.values())
    # One serving request (one user, the endpoint's code path minus HTTP), as the server runs it.
    for _ in range(20):
        predict_frame(bundle, pd.DataFrame([{"user_id": users[0], "k": args.k}]))
    start = time.perf_counter()
    for i in range(300):
        predict_frame(bundle, pd.DataFrame([{"user_id": users[i % len(users)], "k": args.k}]))
    return {"users_per_s": len(users) / best, "rows": cands.height,
            "request_ms": (time.perf_counter() - start) / 300 * 1000,
            "stages": stages}


if __name__ == "__main__":
    main()
