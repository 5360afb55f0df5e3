import numpy as np
import polars as pl
import pytest

from recsys.errors import NotFittedError, UnknownIdError
from recsys.idmap import IdMap


def test_indices_are_contiguous_in_first_seen_order():
    ids = IdMap(kind="item").fit(["b", "a", "b", "c"])
    assert ids.to_index(["a", "b", "c"]).tolist() == [1, 0, 2]
    assert ids.to_index(["a"]).dtype == np.int32
    assert ids.to_ids(np.array([2, 0])).to_list() == ["c", "b"]


@pytest.mark.parametrize("ids, want", [
    (["a", "b", "c"], ["a", "b", "c"]),  # sorted and distinct: kept as given, no unique pass
    (["a", "b", "b", "c"], ["a", "b", "c"]),  # sorted with a repeat: the repeat goes
    (["c", "a", "c", None, "b"], ["c", "a", "b"]),  # unsorted: first-seen order, nulls dropped
    ([None, "a", "b"], ["a", "b"]),
    (["a", None, "b"], ["a", "b"]),  # sorted once the null is dropped
    ([], []),
])
def test_fit_keeps_each_id_once_in_first_seen_order(ids, want):
    fitted = IdMap(kind="user").fit(ids)
    assert fitted.to_ids(np.arange(len(fitted))).to_list() == want
    assert fitted.to_index(want).tolist() == list(range(len(want)))


def test_strictly_increasing_ids_skip_the_unique_pass():
    from recsys.idmap import _strictly_increasing

    assert _strictly_increasing(pl.Series(["a", "b", "c"])) and _strictly_increasing(pl.Series([], dtype=pl.String))
    assert _strictly_increasing(pl.Series(["a"]))
    assert not _strictly_increasing(pl.Series(["a", "b", "b"])) and not _strictly_increasing(pl.Series(["b", "a"]))


def test_unknown_id_message_says_what_to_do():
    ids = IdMap(kind="user").fit(["u1"])
    with pytest.raises(UnknownIdError, match="unknown user id 'u9'.*cold-start"):
        ids.index_of("u9")
    with pytest.raises(UnknownIdError, match="1 unknown user id"):
        ids.to_index(["u1", "u9"])
    assert ids.to_index(["u1", "u9"], unknown="null").tolist() == [0, -1]


def test_use_before_fit_is_an_error():
    with pytest.raises(NotFittedError, match="call fit"):
        len(IdMap(kind="item"))


def test_extend_keeps_existing_indices_and_save_load_round_trips(tmp_path):
    ids = IdMap(kind="item").fit(["x", "y"]).extend(["z", "x"])
    assert ids.to_index(["x", "y", "z"]).tolist() == [0, 1, 2]
    ids.save(tmp_path / "items.parquet")
    assert IdMap.load(tmp_path / "items.parquet", kind="item").ids.to_list() == ["x", "y", "z"]
