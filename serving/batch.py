"""The offline batch ranking job: users in chunks -> top-K Parquet, never half-written.

Each chunk is written as ``<out>.partial/part-NNNNNN.parquet`` (through a temporary name and
an atomic rename), and the final file appears with one atomic rename at the end, so an
interrupted run (SIGKILL included) leaves no output file, only the partial folder. ``resume``
keeps the finished chunks of a previous run with the same users, k, chunk size and model
version (checked against ``manifest.json``, which pins the version and run id an alias resolved
to, so a promotion between the runs is refused, never mixed into one output) and ranks only
the rest: the output is identical to an uninterrupted run. Memory stays flat in the number of
users: one chunk at a time, and the final file is streamed from the parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.array_pool import reusing_arrays
from features.bundle import RankingBundle
from recsys import schemas
from recsys.errors import DataValidationError, RecsysError
from recsys.progress import progress as progress_bar
from serving.model_uri import ResolvedModel
from serving.recommend import recommend_users

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    n_users: int
    n_unknown_users: int
    n_duplicates_removed: int
    n_rows: int
    n_chunks_resumed: int
    seconds: float

    @property
    def users_per_second(self) -> float:
        return self.n_users / self.seconds if self.seconds > 0 else float("inf")


def read_users_file(path: str | Path) -> list[str]:
    """User ids from a Parquet or CSV file with a ``user_id`` column (order kept; nulls dropped and
    counted in a warning). DataValidationError when the file is unreadable or holds no user id."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"users file {path} does not exist or is not a file")
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=0)
    except Exception as exc:  # polars raises several types for a file that is not what its name says
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise DataValidationError(f"users file {path} cannot be read as {kind}: {str(exc).splitlines()[0][:200]}. "
                                  "Give a .parquet file, or a CSV file with a user_id header") from None
    if "user_id" not in frame.columns:
        raise DataValidationError(f"{path}: missing column 'user_id'; found {frame.columns}")
    ids = frame["user_id"].cast(pl.String)
    users = ids.drop_nulls().to_list()
    if len(users) < len(ids):
        log.warning("%s: skipped %d row(s) with an empty user_id", path, len(ids) - len(users))
    if not users:
        raise DataValidationError(f"users file {path} holds no user ids ({len(ids)} rows); leave out --users to "
                                  "rank every user the model knows")
    return users


PROVENANCE_KEYS = ("recsys.model_uri", "recsys.model", "recsys.model_name", "recsys.model_version",
                   "recsys.run_id", "recsys.k", "recsys.ranked_at", "recsys.version")


def provenance(model: ResolvedModel, k: int) -> dict[str, str]:
    """What the output file's Parquet key-value metadata records: the model as the user named it
    and pinned (name, version, run id), k, when (UTC, ISO 8601) and the recsys version.
    Read it back with ``polars.read_parquet_metadata(path)``."""
    from datetime import datetime, timezone

    from recsys import __version__

    values = (model.uri, model.pinned_uri, model.name, model.version, model.run_id, k,
              datetime.now(timezone.utc).isoformat(timespec="seconds"), __version__)
    return {key: "" if value is None else str(value) for key, value in zip(PROVENANCE_KEYS, values, strict=True)}


def check_users_file(path: str | Path) -> int:
    """The number of non-null user ids in a users file, counted by a streaming scan (no ids held in
    memory: the Spark engine's files can be large). Same refusals as ``read_users_file``."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"users file {path} does not exist or is not a file")
    kind = "Parquet" if path.suffix == ".parquet" else "CSV"
    try:
        scan = pl.scan_parquet(path) if kind == "Parquet" else pl.scan_csv(path, infer_schema_length=0)
        columns = scan.collect_schema().names()
        if "user_id" not in columns:
            raise DataValidationError(f"{path}: missing column 'user_id'; found {columns}")
        n = scan.select(pl.col("user_id").drop_nulls().len()).collect().item()
    except DataValidationError:
        raise
    except Exception as exc:  # polars raises several types for a file that is not what its name says
        raise DataValidationError(f"users file {path} cannot be read as {kind}: {str(exc).splitlines()[0][:200]}. "
                                  "Give a .parquet file, or a CSV file with a user_id header") from None
    if n == 0:
        raise DataValidationError(f"users file {path} holds no user ids; leave out --users to rank every user the "
                                  "model knows")
    return n


def _manifest(users: list[str], k: int, chunk_size: int, model: ResolvedModel) -> dict:
    digest = hashlib.sha256("\n".join(users).encode()).hexdigest()
    return {"users_sha256": digest, "n_users": len(users), "k": k, "chunk_size": chunk_size,
            "model": model.pinned_uri, "model_version": model.version, "run_id": model.run_id}


def _prepare_partial(partial: Path, manifest: dict, resume: bool) -> None:
    manifest_file = partial / "manifest.json"
    if partial.exists() and resume:
        try:
            before = json.loads(manifest_file.read_text())
        except (OSError, ValueError):
            raise RecsysError(f"cannot resume: {partial} has no readable manifest.json (the run stopped before "
                              "writing it); run again without --resume to start over") from None
        if "run_id" not in before:
            raise RecsysError(f"cannot resume: {partial} was written by an older recsys that did not pin the model "
                              "version; run again without --resume to start over")
        if (before.get("model"), before.get("run_id")) != (manifest["model"], manifest["run_id"]):
            raise RecsysError(f"cannot resume: {partial} was ranked with {before.get('model')} (run "
                              f"{before.get('run_id')}), and the model given now is {manifest['model']} (run "
                              f"{manifest['run_id']}); one output never mixes models. Resume with --model "
                              f"{before.get('model')}, or run again without --resume to start over")
        if before != manifest:
            raise RecsysError(f"cannot resume: {partial} was written for other users, k or chunk size; "
                              "run again without --resume to start over")
        return
    if partial.exists():
        log.warning("removing unfinished output %s from an earlier run (use --resume to keep it)", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    manifest_file.with_suffix(".tmp").write_text(json.dumps(manifest, indent=2))
    os.replace(manifest_file.with_suffix(".tmp"), manifest_file)  # never a half-written manifest


def rank_users(bundle: RankingBundle, user_ids: list[str], out: str | Path, *, k: int, chunk_size: int = 2048,
               resume: bool = False, model: ResolvedModel | None = None, progress: bool = True) -> BatchReport:
    """Rank ``user_ids`` (duplicates removed, counted) into ``out``: user_id, rank, item_id, score.

    model: the pinned model the bundle came from (recorded in the manifest; resume checks it).
    """
    if chunk_size < 1:
        raise RecsysError(f"chunk size must be at least 1, got {chunk_size}")
    model = model or ResolvedModel(uri="", pinned_uri="")
    start = time.perf_counter()
    out = Path(out)
    unique = list(dict.fromkeys(user_ids))
    n_dupes = len(user_ids) - len(unique)
    if n_dupes:
        log.warning("removed %d duplicate user id(s) from the input", n_dupes)
    n_unknown = int((bundle.state.users.to_index(unique, unknown="null") < 0).sum()) if unique else 0
    if n_unknown:
        log.warning("%d user(s) are unknown to the model; they get the cold-start ranking", n_unknown)
    partial = out.with_name(out.name + ".partial")
    _prepare_partial(partial, _manifest(unique, k, chunk_size, model), resume)
    n_rows = resumed = 0
    # Every chunk's (users, items) score arrays reuse the chunk before's (features.array_pool).
    with progress_bar(total=len(unique), desc="rank users", unit="user", enabled=progress) as bar, reusing_arrays():
        for number, begin in enumerate(range(0, len(unique), chunk_size)):
            chunk = unique[begin:begin + chunk_size]
            part = partial / f"part-{number:06d}.parquet"
            if part.exists():
                resumed += 1
                n_rows += pl.scan_parquet(part).select(pl.len()).collect().item()
            else:
                ranked = recommend_users(bundle, chunk, k)
                ranked.write_parquet(part.with_suffix(".tmp"))
                os.replace(part.with_suffix(".tmp"), part)
                n_rows += ranked.height
            bar.update(len(chunk))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = partial / "final.parquet.tmp"
    parts = sorted(partial.glob("part-*.parquet"))
    metadata = provenance(model, k)
    if parts:
        pl.scan_parquet(parts).sink_parquet(tmp_file, metadata=metadata)
    else:
        pl.DataFrame(schema=schemas.RANKING_OUTPUT).write_parquet(tmp_file, metadata=metadata)
    os.replace(tmp_file, out)
    shutil.rmtree(partial)
    return BatchReport(n_users=len(unique), n_unknown_users=n_unknown, n_duplicates_removed=n_dupes,
                       n_rows=n_rows, n_chunks_resumed=resumed, seconds=time.perf_counter() - start)
