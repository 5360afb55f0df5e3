"""The offline batch ranking job: users in chunks -> top-K Parquet, never half-written.

Chunks are written under ``<out>.partial/`` and the final file appears with one atomic
rename, so an interrupted run leaves no output file behind (only the partial folder).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from features.bundle import RankingBundle
from recsys.errors import DataValidationError
from serving.recommend import recommend_users

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    n_users: int
    n_unknown_users: int
    n_duplicates_removed: int
    n_rows: int
    seconds: float

    @property
    def users_per_second(self) -> float:
        return self.n_users / self.seconds if self.seconds > 0 else float("inf")


def read_users_file(path: str | Path) -> list[str]:
    """User ids from a Parquet or CSV file with a ``user_id`` column (order kept)."""
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"users file {path} does not exist")
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=0)
    if "user_id" not in frame.columns:
        raise DataValidationError(f"{path}: missing column 'user_id'; found {frame.columns}")
    return frame["user_id"].cast(pl.String).drop_nulls().to_list()


def rank_users(bundle: RankingBundle, user_ids: list[str], out: str | Path, *, k: int, chunk_size: int = 2048,
               progress: bool = True) -> BatchReport:
    """Rank ``user_ids`` (duplicates removed, counted) into ``out`` with columns user_id, rank, item_id, score."""
    start = time.perf_counter()
    out = Path(out)
    unique = list(dict.fromkeys(user_ids))
    n_dupes = len(user_ids) - len(unique)
    if n_dupes:
        log.warning("removed %d duplicate user id(s) from the input", n_dupes)
    n_unknown = int(sum(u not in bundle.state.users for u in unique))
    if n_unknown:
        log.warning("%d user(s) are unknown to the model; they get the cold-start ranking", n_unknown)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    n_rows = 0
    with tqdm(total=len(unique), desc="rank users", unit="user", disable=not progress) as bar:
        for number, begin in enumerate(range(0, len(unique), chunk_size)):
            chunk = unique[begin:begin + chunk_size]
            ranked = recommend_users(bundle, chunk, k)
            ranked.write_parquet(partial / f"part-{number:06d}.parquet")
            n_rows += ranked.height
            bar.update(len(chunk))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = partial / "final.parquet.tmp"
    pl.scan_parquet(str(partial / "part-*.parquet")).sink_parquet(tmp_file)
    os.replace(tmp_file, out)
    shutil.rmtree(partial)
    return BatchReport(n_users=len(unique), n_unknown_users=n_unknown, n_duplicates_removed=n_dupes,
                       n_rows=n_rows, seconds=time.perf_counter() - start)
