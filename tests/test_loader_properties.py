"""Property: whatever the input frames hold, the loader returns a valid Dataset or raises
DataValidationError, never another exception (issue 17)."""

from __future__ import annotations

import math
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from recsys import schemas
from recsys.dataset import Dataset, load_folder
from recsys.errors import DataValidationError

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
PLAUSIBLE_SECONDS = st.integers(min_value=0, max_value=4_102_444_799)
IDS = st.sampled_from(["a", "b", "c", "d", "", " ", "é", "1"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-1.0, 0.0, 1.0, 2.5, 1e300, -0.0])
TIME_TEXT = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2120, 1, 1))
    .map(lambda d: d.isoformat(sep=" ", timespec="seconds") + "Z"),
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2120, 1, 1))
    .map(lambda d: d.isoformat(timespec="minutes") + "+05:30"),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1)).map(str),
    PLAUSIBLE_SECONDS.map(str), TEXT,
)


# The types a column of each role usually has; any other type is drawn one time in five.
USUAL = {"id": ["ids"], "text": ["str"], "time": ["time_int", "time_text", "datetime", "date"],
         "number": ["float", "int"]}


def _column(draw, n: int, kind: str) -> pl.Series:
    """A Series of ``n`` values for a column whose role is ``kind``: usually of that role's types."""
    if draw(st.integers(0, 4)):
        choice = draw(st.sampled_from(USUAL[kind]))
    else:
        choice = draw(st.sampled_from(["str", "int", "float", "bool", "null", "int8", "uint64", "time_int",
                                       "time_text", "datetime", "date", "ids"]))
    maybe_null = (lambda s: st.none() | s) if draw(st.booleans()) else (lambda s: s)
    if choice == "ids":
        return pl.Series(draw(st.lists(maybe_null(IDS), min_size=n, max_size=n)), dtype=pl.String)
    if choice == "str":
        return pl.Series(draw(st.lists(maybe_null(TEXT), min_size=n, max_size=n)), dtype=pl.String)
    if choice == "int":
        return pl.Series(draw(st.lists(maybe_null(INT64), min_size=n, max_size=n)), dtype=pl.Int64)
    if choice == "int8":
        return pl.Series(draw(st.lists(maybe_null(st.integers(-128, 127)), min_size=n, max_size=n)), dtype=pl.Int8)
    if choice == "uint64":
        return pl.Series(draw(st.lists(maybe_null(st.integers(0, 2**64 - 1)), min_size=n, max_size=n)),
                         dtype=pl.UInt64)
    if choice == "float":
        return pl.Series(draw(st.lists(maybe_null(FLOATS), min_size=n, max_size=n)), dtype=pl.Float64)
    if choice == "bool":
        return pl.Series(draw(st.lists(maybe_null(st.booleans()), min_size=n, max_size=n)), dtype=pl.Boolean)
    if choice == "null":
        return pl.Series([None] * n)
    if choice == "time_int":
        values = st.one_of(PLAUSIBLE_SECONDS, PLAUSIBLE_SECONDS, PLAUSIBLE_SECONDS.map(lambda s: s * 1000), INT64)
        return pl.Series(draw(st.lists(maybe_null(values), min_size=n, max_size=n)), dtype=pl.Int64)
    if choice == "time_text":
        return pl.Series(draw(st.lists(maybe_null(TIME_TEXT), min_size=n, max_size=n)), dtype=pl.String)
    if choice == "datetime":
        unit, per_second = draw(st.sampled_from([("ms", 10**3), ("us", 10**6), ("ns", 10**9)]))
        plausible = PLAUSIBLE_SECONDS.map(lambda s: s * per_second)
        physical = pl.Series(draw(st.lists(maybe_null(st.one_of(plausible, plausible, INT64)), min_size=n,
                                           max_size=n)), dtype=pl.Int64)
        zone = draw(st.sampled_from([None, "UTC", "Asia/Kolkata"]))
        return physical.cast(pl.Datetime(unit, zone))  # the stored integers are UTC instants
    days = st.one_of(st.integers(0, 47_481), st.integers(-5_000, 60_000), st.integers(-(2**31), 2**31 - 1))
    physical = pl.Series(draw(st.lists(maybe_null(days), min_size=n, max_size=n)), dtype=pl.Int32)
    return physical.cast(pl.Date)


@st.composite
def frames(draw):
    """(items, interactions, impressions or None): random columns, some left out, some renamed away."""
    n_items = draw(st.integers(0, 5))
    if draw(st.integers(0, 4)):  # usually a valid catalog, so that the events get checked
        ids = draw(st.lists(IDS, min_size=n_items, max_size=n_items, unique=True))
        n_items = len(ids)
        items = {"item_id": pl.Series(ids, dtype=pl.String), "title": _column(draw, n_items, "text")}
    else:
        items = {"item_id": _column(draw, n_items, "id"), "title": _column(draw, n_items, "text")}
    for optional in ("description", "category"):
        if draw(st.booleans()):
            items[optional] = _column(draw, n_items, "text")
    n = draw(st.integers(0, 8))
    interactions = {"user_id": _column(draw, n, "id"), "item_id": _column(draw, n, "id"),
                    "timestamp": _column(draw, n, "time")}
    if draw(st.booleans()):
        interactions["weight"] = _column(draw, n, "number")
    if draw(st.integers(0, 19)) == 0:
        interactions.pop(draw(st.sampled_from(sorted(interactions))))
    impressions = None
    if draw(st.booleans()):
        m = draw(st.integers(0, 6))
        impressions = pl.DataFrame({"impression_id": _column(draw, m, "id"), "user_id": _column(draw, m, "id"),
                                    "timestamp": _column(draw, m, "time"), "item_id": _column(draw, m, "id"),
                                    "clicked": _column(draw, m, "number")})
    return pl.DataFrame(items), pl.DataFrame(interactions), impressions


@st.composite
def nearly_valid_frames(draw):
    """A valid catalog and ids; only the timestamps and weights are drawn at random."""
    ids = draw(st.lists(IDS, min_size=1, max_size=5, unique=True))
    items = pl.DataFrame({"item_id": ids, "title": [f"title {i}" for i in ids]})
    n = draw(st.integers(1, 8))
    interactions = {"user_id": draw(st.lists(st.sampled_from(["u1", "u2"]), min_size=n, max_size=n)),
                    "item_id": draw(st.lists(st.sampled_from(ids), min_size=n, max_size=n)),
                    "timestamp": _column(draw, n, "time")}
    if draw(st.booleans()):
        interactions["weight"] = _column(draw, n, "number")
    return items, pl.DataFrame(interactions)


def _assert_valid(data: Dataset) -> None:
    assert data.items.schema == pl.Schema(schemas.ITEMS)
    assert data.interactions.schema == pl.Schema(schemas.INTERACTIONS)
    assert data.interactions.height > 0
    assert data.interactions.null_count().row(0) == (0,) * 4
    weights = data.interactions["weight"].to_list()
    assert all(math.isfinite(w) and w >= 0 for w in weights)
    times = data.interactions["timestamp"]
    assert times.min() >= datetime(1970, 1, 1) and times.max() < datetime(2100, 1, 1)
    assert times.is_sorted()
    if data.impressions is not None:
        assert data.impressions.schema == pl.Schema(schemas.IMPRESSIONS)
        assert set(data.impressions["clicked"].to_list()) <= {0, 1}


@settings(max_examples=150, deadline=None)
@given(frames())
def test_from_frames_returns_a_valid_dataset_or_a_validation_error(tables):
    items, interactions, impressions = tables
    try:
        data = Dataset.from_frames(items=items, interactions=interactions, impressions=impressions)
    except DataValidationError:
        return
    _assert_valid(data)


@settings(max_examples=150, deadline=None)
@given(nearly_valid_frames())
def test_random_timestamps_and_weights_give_a_valid_dataset_or_a_validation_error(tables):
    items, interactions = tables
    try:
        data = Dataset.from_frames(items=items, interactions=interactions)
    except DataValidationError:
        return
    _assert_valid(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.sampled_from(["parquet", "csv"]))
def test_load_folder_returns_a_valid_dataset_or_a_validation_error(tables, suffix):
    items, interactions, impressions = tables
    with tempfile.TemporaryDirectory(prefix="recsys-prop-") as tmp:
        folder = Path(tmp)
        for name, frame in (("items", items), ("interactions", interactions), ("impressions", impressions)):
            if frame is None:
                continue
            if suffix == "parquet":
                frame.write_parquet(folder / f"{name}.parquet")
            else:  # CSV has no time zones or nested types: write what text would hold
                try:
                    frame.with_columns(pl.col(pl.Datetime).dt.replace_time_zone(None)).write_csv(folder / f"{name}.csv")
                except pl.exceptions.PanicException:  # polars cannot print a date past its calendar: no such file
                    assume(False)
        try:
            data = load_folder(folder)
        except DataValidationError:
            return
        _assert_valid(data)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["u1", "a", "1767225600", "2026-01-01T00:00:00Z", "nan", "-1", "", '"',
                                          "x,y", "1e400", "99999999999999999999"]), max_size=5), max_size=6))
def test_load_folder_on_ragged_csv_text_returns_a_valid_dataset_or_a_validation_error(rows):
    with tempfile.TemporaryDirectory(prefix="recsys-prop-") as tmp:
        folder = Path(tmp)
        (folder / "items.csv").write_text("item_id,title\na,Alpha\n1,One\n")
        body = "\n".join(",".join(row) for row in rows)
        (folder / "interactions.csv").write_text("user_id,item_id,timestamp,weight\n" + body)
        try:
            data = load_folder(folder)
        except DataValidationError:
            return
        _assert_valid(data)


def test_every_time_kind_lands_in_utc_microseconds():
    """The conversions the properties rely on, one example each (exact values)."""
    base = datetime(2026, 3, 1, 12)
    kinds = {
        "int": pl.Series([int((base - datetime(1970, 1, 1)).total_seconds())]),
        "text_z": pl.Series(["2026-03-01T12:00:00Z"]),
        "text_offset": pl.Series(["2026-03-01T17:30:00+05:30"]),
        "datetime_ns_tz": pl.Series([base + timedelta(hours=5, minutes=30)]).dt.cast_time_unit("ns")
        .dt.replace_time_zone("Asia/Kolkata"),
        "date": pl.Series([base.date()]),
    }
    items = pl.DataFrame({"item_id": ["a"], "title": ["A"]})
    for name, values in kinds.items():
        data = Dataset.from_frames(items=items, interactions=pl.DataFrame(
            {"user_id": ["u"], "item_id": ["a"], "timestamp": values}))
        expected = datetime(2026, 3, 1) if name == "date" else base
        assert data.interactions["timestamp"].to_list() == [expected], name


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(["a", "b", "c"]),
                          st.integers(min_value=0, max_value=4_102_444_799),
                          st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)),
                min_size=1, max_size=12, unique_by=lambda r: r[:3]))
def test_valid_rows_are_always_accepted_with_their_values(rows):
    """The other side of the properties above: a loader that refused everything, or shifted valid
    times or weights, would fail here. In-range unix seconds and finite non-negative weights load
    exactly (times as UTC, sorted stably by time)."""
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "B", "C"]})
    interactions = pl.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                                 "timestamp": [r[2] for r in rows], "weight": [r[3] for r in rows]},
                                schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                                        "weight": pl.Float32})
    data = Dataset.from_frames(items=items, interactions=interactions)
    order = sorted(range(len(rows)), key=lambda i: rows[i][2])  # stable: ties keep file order
    got = data.interactions
    assert got["user_id"].to_list() == [rows[i][0] for i in order]
    assert got["item_id"].to_list() == [rows[i][1] for i in order]
    assert got["timestamp"].to_list() == [datetime(1970, 1, 1) + timedelta(seconds=rows[i][2]) for i in order]
    assert got["weight"].to_list() == [rows[i][3] for i in order]
