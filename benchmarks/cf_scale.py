"""ALS and BPR (``implicit``) fit time per interaction as the data grows past the CPU caches.

    .venv/bin/python benchmarks/cf_scale.py [--interactions 200000 2000000 4000000 8000000]

Draws a random user x item matrix per size with the scaled demo world's shape (20 interactions
per user, 100 per item, item popularity Zipf-like, seeded), fits each model with the pipeline's
settings (`features.cf.fit_cf`, 64 factors, ALS 15 / BPR 60 iterations, BLAS pinned to one
thread), best of 2 fits at each size, and prints seconds, nanoseconds per interaction per
iteration and the exponent of time vs interactions between neighbouring sizes.

Why: in `benchmarks/train.py` the cf stage grows 1.3x faster than the interactions from the
178,873- to the 2,005,084-interaction world. BPR updates random rows of the user and item
factor tables; at 10,000 users x 2,000 items they fit in the CPU caches (2.6 + 0.5 MB), at
100,000 x 20,000 (26 + 5 MB) every update waits on memory. If that is the cause, the cost per
interaction rises once, then stays flat at the sizes beyond.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.sparse as sp


def random_user_items(n_interactions: int, seed: int = 0) -> sp.csr_matrix:
    """0/1 CSR (n_interactions / 20 users, n_interactions / 100 items), Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(1, n_interactions // 20), max(1, n_interactions // 100)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=n_interactions, p=popularity / popularity.sum())
    users = rng.integers(0, n_users, size=n_interactions)
    matrix = sp.csr_matrix((np.ones(n_interactions, dtype=np.float32), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # duplicates summed: back to 0/1
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, nargs="+", default=[200_000, 2_000_000, 4_000_000, 8_000_000])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from features.cf import fit_cf
    from recsys.config import PipelineConfig

    config = PipelineConfig()
    settings = {"als": config.als_iterations, "bpr": config.bpr_iterations}
    rows = []
    for size in sorted(args.interactions):
        matrix = random_user_items(size)
        n_users, n_items = matrix.shape
        seconds = {}
        for name, iterations in settings.items():
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                fit_cf(name, matrix, n_users=n_users, n_items=n_items, factors=64, iterations=iterations,
                       regularization=config.als_regularization)
                best = min(best, time.perf_counter() - start)
            seconds[name] = best
        rows.append((matrix.nnz, n_users, n_items, seconds))
        print(f"{matrix.nnz:>11,} interactions, {n_users:>8,} users, {n_items:>7,} items: "
              + ", ".join(f"{name} {s:.2f} s ({s / (matrix.nnz * settings[name]) * 1e9:.0f} ns/interaction/iteration)"
                          for name, s in seconds.items()), flush=True)
    print("\nexponent of fit time vs interactions between neighbouring sizes")
    for (n0, *_, s0), (n1, *_, s1) in zip(rows, rows[1:], strict=False):
        print(f"{n0:>11,} -> {n1:>11,}: " + ", ".join(
            f"{name} {np.log(s1[name] / s0[name]) / np.log(n1 / n0):.2f}" for name in settings))
    print("\nrerun: .venv/bin/python benchmarks/cf_scale.py --interactions "
          + " ".join(str(size) for size in sorted(args.interactions)))


if __name__ == "__main__":
    main()
