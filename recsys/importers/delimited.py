"""Strict line-based reading of delimited text files, and the atomic canonical-folder writer.

Public dataset files are read whole and checked line by line, so a wrong column count, an
unparsable number or time, or bytes that are not in the declared encoding raise an error that
names the file and the 1-based line. Nothing is dropped without a count.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl

from recsys.errors import DataValidationError


def read_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline) for every non-empty line of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except LookupError as exc:
        raise DataValidationError(f"{path}: unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from exc
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataValidationError(
            f"{path}:{line}: bytes {raw[exc.start:exc.end]!r} are not valid {encoding}; "
            f"pass the file's encoding (e.g. --encoding latin-1)"
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def split_fields(path: Path, number: int, line: str, separator: str, n_fields: int) -> list[str]:
    """The fields of one line; exactly ``n_fields`` or an error naming file and line."""
    fields = line.split(separator)
    if len(fields) != n_fields:
        raise DataValidationError(
            f"{path}:{number}: expected {n_fields} {_sep_name(separator)}-separated fields, found "
            f"{len(fields)}: {line[:120]!r}"
        )
    return fields


def parse_field(path: Path, number: int, column: str, value: str, convert: Callable[[str], object]):
    """``convert(value)`` or an error naming file, line and column."""
    try:
        return convert(value)
    except (ValueError, OverflowError) as exc:
        raise DataValidationError(f"{path}:{number}: column {column!r}: cannot parse {value!r} ({exc})") from exc


def unix_seconds(value: str) -> int:
    """Integer unix seconds within 1970..2100 (a plausible log time)."""
    seconds = int(value)
    if not 0 <= seconds < 4_102_444_800:
        raise ValueError("not a unix time in seconds between 1970 and 2100")
    return seconds


def _sep_name(separator: str) -> str:
    return {"\t": "tab", ",": "comma", "|": "pipe", "::": "'::'"}.get(separator, repr(separator))


def write_canonical_folder(dst: Path, tables: dict[str, pl.DataFrame], report: dict, *, overwrite: bool) -> Path:
    """Write ``<name>.parquet`` per table plus ``import.json`` into ``dst``, atomically.

    The folder is assembled beside ``dst`` and renamed into place, so an interrupted import
    never leaves a half-written dataset. An existing ``dst`` is replaced only with ``overwrite``.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise DataValidationError(f"{dst} already exists; choose another destination or pass --overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        for name, table in tables.items():
            table.write_parquet(tmp / f"{name}.parquet")
        (tmp / "import.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
