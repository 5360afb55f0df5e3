"""One owner for external-id <-> contiguous-index mapping (after lightfm's ``Dataset``).

Fitted once on training data, saved with the model as Parquet, used to build matrices many
times. Indices are int32 and contiguous from 0 in the order ids were first given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.errors import NotFittedError, UnknownIdError


class IdMap:
    """Maps string ids to int32 indices ``0..n-1`` and back.

    ``kind`` ("user" or "item") only appears in messages.
    """

    def __init__(self, *, kind: str) -> None:
        self.kind = kind
        self._ids: pl.Series | None = None
        self._index: dict[str, int] | None = None

    def fit(self, ids: pl.Series | list[str]) -> IdMap:
        """Fit the vocabulary: unique ids in first-seen order. Returns self."""
        series = pl.Series("id", ids, dtype=pl.String).drop_nulls()
        if not _strictly_increasing(series):  # sorted distinct ids (the training run's) are kept as given
            series = series.unique(maintain_order=True)
        self._ids = series
        self._index = None  # built on the first one-id lookup (a million Python strings at scale)
        return self

    def extend(self, ids: pl.Series | list[str]) -> IdMap:
        """Append ids not yet known (new catalog items); existing indices never move."""
        known = self._require()
        new = pl.Series("id", ids, dtype=pl.String).drop_nulls().unique(maintain_order=True)
        new = new.filter(~new.is_in(known.implode()))
        return IdMap(kind=self.kind).fit(pl.concat([known, new]))

    def _require(self) -> pl.Series:
        if self._ids is None:
            raise NotFittedError(f"{self.kind} id map is not fitted; call fit(ids) first")
        return self._ids

    def warm(self) -> None:
        """Build the one-id lookup now (a server before its first request), not on first use."""
        self._lookup()

    def _lookup(self) -> dict[str, int]:
        """id -> index for one-id lookups (requests), built once when first needed."""
        if self._index is None:
            self._index = {value: i for i, value in enumerate(self._require().to_list())}
        return self._index

    def __len__(self) -> int:
        return self._require().len()

    @property
    def ids(self) -> pl.Series:
        return self._require()

    def __contains__(self, external_id: str) -> bool:
        return external_id in self._lookup()

    def index_of(self, external_id: str) -> int:
        """Index of one id; raises UnknownIdError with a hint when the id was not fitted."""
        try:
            return self._lookup()[external_id]
        except KeyError:
            raise UnknownIdError(
                f"unknown {self.kind} id {external_id!r}: it was not in the training data. "
                f"Use the cold-start path for new {self.kind}s, or retrain with them."
            ) from None

    def to_index(self, ids: pl.Series | list[str], *, unknown: str = "raise") -> np.ndarray:
        """Vectorised lookup -> int32 array. ``unknown``: "raise", or "null" to return -1."""
        known = self._require()
        if not isinstance(ids, pl.Series) and len(ids) <= 256:  # a request: dict lookups beat a join
            index = self._lookup()
            joined_small = np.fromiter((index.get(i, -1) for i in ids), dtype=np.int32, count=len(ids))
            if unknown == "raise" and (joined_small < 0).any():
                example = ids[int(np.flatnonzero(joined_small < 0)[0])]
                raise UnknownIdError(
                    f"{int((joined_small < 0).sum())} unknown {self.kind} id(s), e.g. {example!r}: they were "
                    f"not in the training data. Use the cold-start path, or retrain with them."
                )
            return joined_small
        lookup = pl.DataFrame({"id": known, "idx": np.arange(known.len(), dtype=np.int32)})
        query = pl.DataFrame({"id": pl.Series(ids, dtype=pl.String)})
        joined = query.join(lookup, on="id", how="left", maintain_order="left")["idx"]
        if joined.null_count():
            if unknown == "raise":
                example = query.filter(joined.is_null())["id"][0]
                raise UnknownIdError(
                    f"{joined.null_count()} unknown {self.kind} id(s), e.g. {example!r}: they were "
                    f"not in the training data. Use the cold-start path, or retrain with them."
                )
            joined = joined.fill_null(-1)
        return joined.to_numpy().astype(np.int32, copy=False)

    def to_ids(self, index: np.ndarray) -> pl.Series:
        return self._require().gather(np.asarray(index, dtype=np.int64))

    def save(self, path: str | Path) -> None:
        pl.DataFrame({"id": self._require()}).write_parquet(path)

    @classmethod
    def load(cls, path: str | Path, *, kind: str) -> IdMap:
        return cls(kind=kind).fit(pl.read_parquet(path)["id"])


def _strictly_increasing(ids: pl.Series) -> bool:
    """Whether each id sorts after the one before (so none repeats): a linear scan, where
    ``unique`` would hash a million ids into a table larger than the CPU caches."""
    return ids.len() < 2 or bool((ids.slice(1) > ids.slice(0, ids.len() - 1)).all())
