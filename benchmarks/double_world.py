"""A data folder with every user twice: twice the rows and users, the same items and times.

    .venv/bin/python benchmarks/double_world.py /tmp/scale-10 /tmp/scale-10x2
    .venv/bin/python benchmarks/data_stages.py /tmp/scale-10 /tmp/scale-10x2 --repeats 2

Why: ``recsys generate --scale 20`` would take over an hour and more memory than this machine
has. The copy doubles what the data stages (load, data_checks, split) do per row and per user,
so their exponent from a folder to its double says whether they grow like their rows once the
data is past the CPU caches (the step from scale 1 to 10 crosses them). It does not double the
item-to-item work: the copy adds no new item pairs (``item_item``'s pairs stay the same; only
their counts double), so read its exponent here as nothing.

The second copy's user ids are the first's with ``DST_USER_PREFIX`` in front (and impression ids
likewise); every row keeps its time, and each table is written in time order (the two copies
merged row by row on the timestamp, the first copy's row first among equal times), as
``recsys generate`` writes them. The items file is copied unchanged. Writes into a temporary
folder beside ``DST`` and renames it at the end, so an interrupted run leaves no half folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import polars as pl

DST_USER_PREFIX = "x2-"


def doubled(frame: pl.DataFrame, id_columns: list[str]) -> pl.DataFrame:
    """``frame`` (sorted by ``timestamp``) and its copy with ``DST_USER_PREFIX`` before each of
    ``id_columns``, merged in time order: 2 x the rows, the same columns and dtypes."""
    if not frame["timestamp"].is_sorted():
        raise ValueError("the folder's tables must be in time order (as recsys generate writes them)")
    copy = frame.with_columns([(pl.lit(DST_USER_PREFIX) + pl.col(c)).alias(c) for c in id_columns])
    return frame.merge_sorted(copy, key="timestamp", maintain_order=True)


def double_folder(src: Path, dst: Path) -> dict:
    """Write ``dst`` from ``src`` (a canonical folder with impressions); returns the row counts."""
    if dst.exists():
        raise FileExistsError(f"{dst} exists; remove it or give another folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    try:
        shutil.copy(src / "items.parquet", tmp / "items.parquet")
        counts = {}
        for name, ids in (("interactions", ["user_id"]), ("impressions", ["user_id", "impression_id"])):
            table = doubled(pl.read_parquet(src / f"{name}.parquet"), ids)
            table.write_parquet(tmp / f"{name}.parquet")
            counts[name] = table.height
            del table
        meta = json.loads((src / "import.json").read_text()) if (src / "import.json").exists() else {}
        meta.update({"doubled_from": str(src), "doubled_user_prefix": DST_USER_PREFIX,  # scale: the source's
                     "n_interactions": counts["interactions"], "n_impressions": counts["impressions"]})
        if "n_users" in meta:
            meta["n_users"] *= 2
        (tmp / "import.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="a canonical data folder with impressions (recsys generate DIR)")
    parser.add_argument("dst", type=Path, help="the folder to write (must not exist)")
    args = parser.parse_args()
    for name in ("items", "interactions", "impressions"):
        if not (args.src / f"{name}.parquet").exists():
            sys.exit(f"{args.src} has no {name}.parquet: make it with `recsys generate {args.src} --scale S`")
    counts = double_folder(args.src, args.dst)
    print(f"wrote {args.dst}: {counts['interactions']:,} interactions, {counts['impressions']:,} impressions")


if __name__ == "__main__":
    main()
