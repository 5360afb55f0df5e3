"""Batch ranking users/s of one model bundle folder, through the oldest API that ranks a batch.

It only needs ``RankingBundle.load`` and ``serving.recommend.recommend_users``, which every
version of this project has, so the same script times today's code and an earlier commit's on
the same model on the same machine, back to back:

    B=$(ls -d mlruns/models/*/artifacts/artifacts/bundle | head -1)      # a `make demo` model
    git worktree add /tmp/old 44b3422                                    # the code before issue 19
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/batch_rank_speed.py --bundle $B
    .venv/bin/python benchmarks/batch_rank_speed.py --bundle $B

Prints users/s (every user of the model, top-k, 2,048-user chunks, best of ``--repeat`` passes)
and which code ran (the folder ``features`` was imported from), so the two lines compare;
``--out`` writes the rankings, so the two codes' answers can be compared too.
With ``RECSYS_COMPILED_TREES=0`` today's code predicts with LightGBM instead of compiled trees.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # as `recsys rank` runs (recsys/cli.py cmd_rank)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="a model bundle folder (features.bundle layout)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="passes over all users; the best is reported")
    parser.add_argument("--out", help="also write the rankings here (Parquet), to compare two codes' answers")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import features
    from features.bundle import RankingBundle
    from serving.recommend import recommend_users

    bundle = RankingBundle.load(args.bundle)
    users = bundle.state.users.ids.to_list()
    chunks = [users[i:i + args.chunk_size] for i in range(0, len(users), args.chunk_size)]
    recommend_users(bundle, chunks[0][:64], args.k)  # warm-up: lookup tables, compiled trees
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        ranked = [recommend_users(bundle, chunk, args.k) for chunk in chunks]
        best = min(best, time.perf_counter() - start)
    rows = sum(frame.height for frame in ranked)
    if args.out:
        import polars as pl

        pl.concat(ranked).write_parquet(args.out)  # the last timed pass's rankings
    trees = "compiled" if getattr(bundle, "_compiled", None) is not None else "LightGBM predict"
    print(f"code {os.path.dirname(os.path.dirname(features.__file__))}: {len(users) / best:,.0f} users/s "
          f"({len(users)} users, {rows} rows, top-{args.k}, best of {args.repeat}; trees: {trees})")


if __name__ == "__main__":
    main()
