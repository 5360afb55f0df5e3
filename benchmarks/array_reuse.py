"""What reusing the per-chunk (users, items) arrays buys (features.array_pool), in one run.

    .venv/bin/python benchmarks/array_reuse.py [--items 200000] [--factors 128] [--users 1024]
    .venv/bin/python benchmarks/array_reuse.py --model models:/NAME/VERSION --sample-users 10000

First the primitive, on random factors: the product ``users x factors @ factors x items`` into a
new float32 array each time (what ranking did per chunk) against the same product into one
array reused, and the same for the ``>=`` mask that picks each row's top entries; alternated,
``--repeat`` rounds, the median of each.

With ``--model`` (a registered model) or ``--bundle`` (a model's ``artifacts/bundle`` folder) it
then ranks a seeded sample of the model's users with this checkout's code, as ``recsys rank``
does (2,048-user chunks split across the cores), three ways, alternated, ``--repeat`` rounds
each: a new array every time, arrays reused within each candidate-generation call, and reused
across the job; prints users/s and the peak resident set above the one before each pass (Linux:
the peak is reset through /proc/self/clear_refs), and checks that all give the same rankings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings
from pathlib import Path

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


MODES = {"new": "a new array every time (before the pool)",
         "call": "reused within each candidate-generation call (no block around the job)",
         "job": "reused across the job (one block around all chunks, as recsys rank runs)"}


def _peak_reset() -> bool:
    """Reset this process's peak resident set (Linux: /proc/self/clear_refs); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def ranking(bundle, sample_users: int, k: int, chunk_size: int, repeat: int, seed: int) -> None:
    from features import array_pool, candidates
    from serving.recommend import recommend_users
    from training import evaluate

    ids = bundle.state.users.ids
    users = ids.sample(min(sample_users, len(ids)), seed=seed).to_list()
    chunks = [users[i:i + chunk_size] for i in range(0, len(users), chunk_size)]
    print(f"ranking {len(users):,} users of {len(ids):,} ({bundle.state.n_items:,} items), chunks of {chunk_size}, "
          f"code: {candidates.__file__}")
    for mode, what in MODES.items():
        print(f"  {mode}: {what}")

    def rank(mode: str):
        saved = candidates.reusing_arrays, evaluate.reusing_arrays
        if mode == "new":
            candidates.reusing_arrays = evaluate.reusing_arrays = contextlib.nullcontext
        try:
            start = time.perf_counter()
            with array_pool.reusing_arrays() if mode == "job" else contextlib.nullcontext():
                out = [recommend_users(bundle, chunk, k) for chunk in chunks]
            return time.perf_counter() - start, out
        finally:
            candidates.reusing_arrays, evaluate.reusing_arrays = saved

    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    peaks: dict[str, list[float]] = {mode: [] for mode in MODES}
    results = {}
    for _ in range(repeat):
        for mode in MODES:
            resident = _peak_gb() if _peak_reset() else float("nan")
            took, results[mode] = rank(mode)
            seconds[mode].append(took)
            peaks[mode].append(_peak_gb() - resident)
            print(f"  {mode:4s}: {took:.1f} s, {len(users) / took:,.0f} users/s, peak {peaks[mode][-1]:.2f} GB above "
                  f"the {resident:.2f} GB resident before", flush=True)
    same = all(all(a.equals(b) for a, b in zip(results[mode], results["new"], strict=True)) for mode in MODES)
    best = {mode: min(values) for mode, values in seconds.items()}
    print(f"best of {repeat}: " + ", ".join(f"{mode} {len(users) / best[mode]:,.0f} users/s "
                                             f"(peak +{max(peaks[mode]):.2f} GB)" for mode in MODES))
    print(f"job / new: {best['new'] / best['job']:.2f}x, call / new: {best['new'] / best['call']:.2f}x; "
          f"same rankings: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--users", type=int, default=512, help="rows per product (a candidate chunk)")
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
