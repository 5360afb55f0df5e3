"""What reusing the per-chunk (users, items) arrays buys (features.array_pool), in one run.

    .venv/bin/python benchmarks/array_reuse.py [--items 200000] [--factors 128] [--users 1024]
    .venv/bin/python benchmarks/array_reuse.py --model models:/NAME/VERSION --sample-users 10000

First the primitive, on random factors: the product ``users x factors @ factors x items`` into a
new float32 array each time (what ranking did per chunk) against the same product into one
array reused, and the same for the ``>=`` mask that picks each row's top entries; alternated,
``--repeat`` rounds, the median of each.

With ``--model`` (a registered model) or ``--bundle`` (a model's ``artifacts/bundle`` folder) it
then ranks a seeded sample of the model's users with this checkout's code, as ``recsys rank``
does (2,048-user chunks split across the cores), with the arrays reused and with a new array
each time, alternated, ``--repeat`` rounds each; prints users/s of each, their ratio, and checks
that both give the same rankings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # as `recsys rank` runs (recsys/cli.py cmd_rank)

import numpy as np


def primitive(n_users: int, n_factors: int, n_items: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((n_items, n_factors), dtype=np.float32)
    rows = rng.standard_normal((n_users, n_factors), dtype=np.float32)
    reused = np.empty((n_users, n_items), dtype=np.float32)
    mask = np.empty((n_users, n_items), dtype=bool)
    times: dict[str, list[float]] = {"product, new array": [], "product, reused array": [],
                                     ">= mask, new array": [], ">= mask, reused array": []}
    for _ in range(repeat):
        start = time.perf_counter()
        fresh = rows @ table.T
        times["product, new array"].append(time.perf_counter() - start)
        start = time.perf_counter()
        np.matmul(rows, table.T, out=reused)
        times["product, reused array"].append(time.perf_counter() - start)
        assert np.array_equal(fresh, reused)
        del fresh
        start = time.perf_counter()
        picked = reused >= 0.5
        times[">= mask, new array"].append(time.perf_counter() - start)
        del picked
        start = time.perf_counter()
        np.greater_equal(reused, 0.5, out=mask)
        times[">= mask, reused array"].append(time.perf_counter() - start)
    gb = n_users * n_items * 4 / 1e9
    print(f"primitive: ({n_users:,} x {n_factors}) @ ({n_factors} x {n_items:,}) float32, {gb:.2f} GB per product, "
          f"median of {repeat}")
    for name, values in times.items():
        print(f"  {name:24s} {statistics.median(values):.3f} s")
    for what in ("product", ">= mask"):
        ratio = statistics.median(times[f"{what}, new array"]) / statistics.median(times[f"{what}, reused array"])
        print(f"  {what}: a new array takes {ratio:.2f}x the reused one")


def ranking(bundle, sample_users: int, k: int, chunk_size: int, repeat: int, seed: int) -> None:
    from features import array_pool, candidates
    from serving.recommend import recommend_users
    from training import evaluate

    ids = bundle.state.users.ids
    users = ids.sample(min(sample_users, len(ids)), seed=seed).to_list()
    chunks = [users[i:i + chunk_size] for i in range(0, len(users), chunk_size)]
    print(f"ranking {len(users):,} users of {len(ids):,} ({bundle.state.n_items:,} items), chunks of {chunk_size}, "
          f"code: {candidates.__file__}")

    def rank(reuse: bool):
        saved = candidates.reusing_arrays, evaluate.reusing_arrays
        if not reuse:  # every take a new array, as before the pool
            candidates.reusing_arrays = evaluate.reusing_arrays = contextlib.nullcontext
        try:
            start = time.perf_counter()
            with array_pool.reusing_arrays() if reuse else contextlib.nullcontext():
                out = [recommend_users(bundle, chunk, k) for chunk in chunks]
            return time.perf_counter() - start, out
        finally:
            candidates.reusing_arrays, evaluate.reusing_arrays = saved

    seconds: dict[bool, list[float]] = {True: [], False: []}
    results = {}
    for _ in range(repeat):
        for reuse in (False, True):
            took, results[reuse] = rank(reuse)
            seconds[reuse].append(took)
            label = 'reused' if reuse else 'new   '
            print(f"  {label} arrays: {took:.1f} s, {len(users) / took:,.0f} users/s", flush=True)
    same = all(a.equals(b) for a, b in zip(results[True], results[False], strict=True))
    new, reused = min(seconds[False]), min(seconds[True])
    print(f"best of {repeat}: new arrays {len(users) / new:,.0f} users/s, reused {len(users) / reused:,.0f} users/s: "
          f"{new / reused:.2f}x; same rankings: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--users", type=int, default=1024, help="rows per product (a ranking part)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", help="models:/NAME/VERSION: also rank a sample of its users both ways")
    parser.add_argument("--bundle", help="a model's artifacts/bundle folder, instead of --model")
    parser.add_argument("--sample-users", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    primitive(args.users, args.factors, args.items, args.repeat)
    if not (args.model or args.bundle):
        return
    import features.candidates  # noqa: F401  (this checkout's code, before the model's stored copy)
    import serving.recommend  # noqa: F401

    if args.bundle:
        from features.bundle import RankingBundle

        bundle = RankingBundle.load(args.bundle)
    else:
        import mlflow

        from training.tracking import configure_tracking

        configure_tracking()
        bundle = mlflow.pyfunc.load_model(args.model).unwrap_python_model().bundle
    ranking(bundle, args.sample_users, args.k, args.chunk_size, args.repeat, args.seed)


if __name__ == "__main__":
    main()
