"""Batch ranking users/s of one model bundle folder, through the oldest API that ranks a batch.

It only needs ``RankingBundle.load`` and ``serving.recommend.recommend_users``, which every
version of this project has, so the same script times today's code and an earlier commit's on
the same model on the same machine, back to back:

    B=$(ls -d mlruns/models/*/artifacts/artifacts/bundle | head -1)      # a `make demo` model
    git worktree add /tmp/old 44b3422                                    # the code before issue 19
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/batch_rank_speed.py --bundle $B
    .venv/bin/python benchmarks/batch_rank_speed.py --bundle $B

A bundle trained by newer code may hold settings an older code's config does not know;
``--drop-unknown-config`` ranks a copy whose ``config.json`` keeps only the fields the imported
code knows. It lists what it dropped and refuses to drop what ranking reads (candidate
settings, seed, k); compare the two codes' ``--out`` files to confirm the rankings agree.

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
    parser.add_argument("--drop-unknown-config", action="store_true",
                        help="rank a copy of the bundle without the config fields the imported code does not know")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import features
    from features.bundle import RankingBundle
    from serving.recommend import recommend_users

    folder = _known_config_copy(args.bundle) if args.drop_unknown_config else args.bundle
    bundle = RankingBundle.load(folder)
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
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"code {os.path.dirname(os.path.dirname(features.__file__))}: {len(users) / best:,.0f} users/s "
          f"({len(users)} users, {rows} rows, top-{args.k}, best of {args.repeat}; trees: {trees}; "
          f"peak RSS {peak_mb:,.0f} MB)")


def _known_config_copy(folder: str) -> str:
    """A temporary folder linking to the bundle's files, with ``config.json`` cut to the fields
    of the imported ``recsys.config.PipelineConfig`` (sections and their fields)."""
    import atexit
    import dataclasses
    import json
    import shutil
    import tempfile
    import typing
    from pathlib import Path

    from recsys.config import PipelineConfig

    source, copy = Path(folder).resolve(), Path(tempfile.mkdtemp(prefix="bundle-"))
    atexit.register(shutil.rmtree, copy, True)  # links and one small file: gone when the run ends
    for entry in source.iterdir():
        if entry.name != "config.json":
            (copy / entry.name).symlink_to(entry)
    hints = typing.get_type_hints(PipelineConfig)
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    config, dropped = {}, []
    for name, value in json.loads((source / "config.json").read_text()).items():
        if name not in known:
            dropped.append(name)
            continue
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]):
            fields = {f.name for f in dataclasses.fields(hints[name])}
            dropped += [f"{name}.{key}" for key in value if key not in fields]
            value = {key: v for key, v in value.items() if key in fields}
        config[name] = value
    ranking_reads = [name for name in dropped if name.startswith("candidates.") or name in ("seed", "k")]
    if ranking_reads:
        raise SystemExit(f"refusing --drop-unknown-config: ranking reads {', '.join(ranking_reads)}, which this "
                         f"code does not know; its rankings would not be the bundle's")
    (copy / "config.json").write_text(json.dumps(config))
    print(f"config fields this code does not know, dropped: {', '.join(dropped) or 'none'}")
    return str(copy)


if __name__ == "__main__":
    main()
