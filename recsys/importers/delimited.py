"""Strict line-based reading of delimited text files, and the atomic canonical-folder writer.

Public dataset files are read whole and checked line by line, so a wrong column count, an
unparsable number or time, or bytes that are not in the declared encoding raise an error that
names the file and the 1-based line. Nothing is dropped without a count.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recsys.errors import DataValidationError

ENCODING_HINT = "pass the file's encoding (e.g. --encoding latin-1)"


def read_lines(path: Path, encoding: str, hint: str = ENCODING_HINT) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line end) for every non-blank line of ``path``."""
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
            f"{path}:{line}: bytes {raw[exc.start:exc.end]!r} are not valid {encoding}; {hint}"
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    # Lines end at "\n" only (a "\r" before it is dropped): str.splitlines would also break at
    # characters such as U+0085 or U+2028 inside a title or abstract, shifting every line number.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def ends_mid_line(path: Path) -> bool:
    """True when ``path`` is not empty and its last byte is not a line end (a cut-off file)."""
    with Path(path).open("rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return False
        handle.seek(-1, 2)
        return handle.read(1) not in (b"\n", b"\r")


def require_rows(path: Path, rows: int, what: str, layout: str, *, header: bool = False) -> None:
    """An error naming ``path`` when it holds no data rows (an empty or header-only file)."""
    if rows == 0:
        raise DataValidationError(
            f"{path}: the file has no {what} lines (it is empty{' or only a header' if header else ''}). "
            f"{layout}; re-download or re-extract it."
        )


def csv_rows(path: Path, encoding: str, header: tuple[str, ...] = (),
             hint: str = ENCODING_HINT) -> Iterator[tuple[int, list[str]]]:
    """(1-based line, fields) of each data row of a CSV file whose header starts with ``header``.

    Line numbers are the file's own (blank lines count; a quoted field over several lines gives
    its last line). A row with another field count than the header, a row the csv module cannot
    read, or bytes outside ``encoding`` raise an error naming file and line.
    """
    current = [1]  # the file line the reader took last (streamed: no list of every line is kept)

    def lines() -> Iterator[str]:
        for number, line in read_lines(path, encoding, hint):
            current[0] = number
            yield line

    reader = csv.reader(lines())

    def line_of() -> int:
        return current[0]

    try:
        first = next(reader, None)
        if first is None:
            raise DataValidationError(f"{path}: the file is empty; expected a header line "
                                      + (f"starting with {','.join(header)}" if header else "with column names"))
        if tuple(first[:len(header)]) != header:
            raise DataValidationError(f"{path}:{line_of()}: expected a header starting with {','.join(header)}, "
                                      f"found {','.join(first)[:120]!r}")
        for fields in reader:
            if len(fields) != len(first):
                raise DataValidationError(
                    f"{path}:{line_of()}: expected {len(first)} comma-separated fields, found {len(fields)}: "
                    f"{fields}"[:300]
                )
            yield line_of(), fields
    except csv.Error as exc:
        raise DataValidationError(f"{path}:{line_of()}: not valid CSV: {exc}") from exc


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


def unix_seconds(value: str, since: int = 0) -> int:
    """Integer unix seconds within 1970..2100 (a plausible log time), or ``since``..2100."""
    seconds = int(value)
    if not since <= seconds < 4_102_444_800:
        start = datetime.fromtimestamp(since, tz=timezone.utc).date()
        raise ValueError(f"not a unix time in seconds between {start} and 2100-01-01")
    return seconds


def _sep_name(separator: str) -> str:
    return {"\t": "tab", ",": "comma", "|": "pipe", "::": "'::'"}.get(separator, repr(separator))


def check_destination(dst: Path, *, overwrite: bool) -> None:
    """Refuse an existing ``dst`` unless ``overwrite``: the commands call it before reading or
    generating anything, so a taken name fails at once instead of after minutes of work."""
    if Path(dst).exists() and not overwrite:
        raise DataValidationError(f"{dst} already exists; choose another destination or pass --overwrite")


def write_canonical_folder(dst: Path, tables: dict[str, pl.DataFrame], report: dict, *, overwrite: bool) -> Path:
    """Write ``<name>.parquet`` per table plus ``import.json`` into ``dst``, atomically.

    The folder is assembled beside ``dst`` and renamed into place, so an interrupted import
    never leaves a half-written dataset. An existing ``dst`` is replaced only with ``overwrite``.
    """
    dst = Path(dst)
    check_destination(dst, overwrite=overwrite)
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
