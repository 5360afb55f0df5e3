"""The registry of added score sources and the loops over it.

To add a source: write one module with a ``features.score_source.ScoreSource`` subclass and add
the class to ``REGISTERED``. The state fits, saves and loads it; candidate generation takes its
top scores; the ranking frame gives the ranker its two views; the evaluation runs it alone as a
baseline; ``recsys add-items`` grows it; serving turns a request's history into its rows; the
config takes ``sources.<name>`` settings and the run logs ``data_choice.<name>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.score_source import USES, ScoreSource, SourceWindow
from features.text_neighbours import TextNeighbours
from features.transitions import SequentialRules
from recsys.errors import ConfigError

REGISTERED: tuple[type[ScoreSource], ...] = (SequentialRules, TextNeighbours)


def source_class(name: str) -> type[ScoreSource]:
    for cls in REGISTERED:
        if cls.name == name:
            return cls
    raise KeyError(f"unknown score source {name!r}; registered: {[c.name for c in REGISTERED]}")


def resolve_settings(given: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every registered source's settings: its defaults, then ``given[name]``; bad input is
    refused whole with a ``ConfigError`` that names the setting."""
    given = dict(given or {})
    names = [cls.name for cls in REGISTERED]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"sources {unknown} are not registered score sources; use some of {names}")
    out = {}
    for cls in REGISTERED:
        values = given.get(cls.name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"sources.{cls.name} must be an object of settings, got {values!r}")
        extra = sorted(set(values) - set(cls.defaults))
        if extra:
            raise ConfigError(f"sources.{cls.name} has no settings {extra}; it takes {sorted(cls.defaults)}")
        settings = {**cls.defaults, **values}
        if settings["use"] not in USES:
            raise ConfigError(f"sources.{cls.name}.use must be one of {USES}, got {settings['use']!r}")
        for key, default in cls.defaults.items():
            value = settings[key]
            if isinstance(default, int) and not isinstance(default, bool) and \
                    (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"sources.{cls.name}.{key} must be a whole number >= 0, got {value!r}")
        out[cls.name] = settings
    return out


def is_on(cls: type[ScoreSource], settings: dict[str, dict[str, Any]], split: str, n_items: int) -> bool:
    """Whether the source feeds the ranker under these resolved settings, protocol and catalog size."""
    use = settings[cls.name]["use"]
    return use == "on" or (use == "auto" and cls.auto_on(split) and cls.affordable(n_items))


def enabled_names(config, n_items: int) -> tuple[str, ...]:
    """Names of the sources ``config`` (a ``PipelineConfig``) turns on for a catalog of
    ``n_items``, in registry order."""
    return tuple(cls.name for cls in REGISTERED if is_on(cls, config.sources, config.split, n_items))


def fit_sources(window: SourceWindow, config) -> dict[str, ScoreSource]:
    """The sources ``config`` turns on, fitted on ``window``."""
    return {cls.name: cls.fit(window, config.sources[cls.name]) for cls in REGISTERED
            if is_on(cls, config.sources, config.split, window.n_items)}


def candidate_counts(config) -> dict[str, int]:
    """Candidates per user of each source (``sources.<name>.candidates``)."""
    return {name: int(settings["candidates"]) for name, settings in config.sources.items()}


def feature_columns(names) -> tuple[str, ...]:
    """The ranker's columns of the named sources, in registry order."""
    names = set(names)
    return tuple(c for cls in REGISTERED if cls.name in names for c in cls.feature_columns())


def score_columns() -> dict[str, str]:
    """Source name -> its raw score column."""
    return {cls.name: cls.score_column for cls in REGISTERED}


def save_sources(sources: dict[str, ScoreSource], folder: Path) -> None:
    for cls in REGISTERED:  # a state saved again without a source must not keep its old files
        for name in cls.files:
            (Path(folder) / name).unlink(missing_ok=True)
    for source in sources.values():
        source.save(Path(folder))


def load_sources(folder: Path, names: list[str] | None) -> dict[str, ScoreSource]:
    """The sources saved in a state folder. names: the ones its meta lists (None: a state saved
    before the list existed, read by the files present)."""
    folder = Path(folder)
    if names is None:
        names = [cls.name for cls in REGISTERED if all((folder / f).exists() for f in cls.files)]
    out = {}
    for name in names:
        try:
            cls = source_class(name)
        except KeyError as error:
            raise ValueError(f"{folder}: the state holds the score source {name!r}, which this code does not "
                             f"register ({error}); upgrade, or retrain") from None
        missing = [f for f in cls.files if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: the score source {name!r} is missing {missing}; "
                                    "save the model again from its run")
        out[name] = cls.load(folder)
    return out


def request_rows(sources: dict[str, ScoreSource], user_idx: np.ndarray, history: pl.DataFrame,
                 n: int) -> dict[str, Any]:
    """Each source's rows for ``n`` request queries (``ScoreSource.request_rows``); sources whose
    stored rows serve as they are are left out."""
    rows = {name: source.request_rows(user_idx, history, n) for name, source in sources.items()}
    return {name: value for name, value in rows.items() if value is not None}


def with_new_items(sources: dict[str, ScoreSource], n_new: int, item_vectors: np.ndarray) -> dict[str, ScoreSource]:
    """The sources over a catalog grown by ``n_new`` items (item_vectors: the grown catalog's)."""
    return {name: source.with_new_items(n_new, item_vectors) for name, source in sources.items()}


def with_item_vectors(sources: dict[str, ScoreSource], item_vectors: np.ndarray) -> dict[str, ScoreSource]:
    """The sources over other item text vectors: those that read text rebuilt, the others shared."""
    return {name: source.with_item_vectors(item_vectors) if source.reads_text else source
            for name, source in sources.items()}


def text_reading_names() -> tuple[str, ...]:
    """Names of the registered sources that read item text (``ScoreSource.reads_text``)."""
    return tuple(cls.name for cls in REGISTERED if cls.reads_text)
