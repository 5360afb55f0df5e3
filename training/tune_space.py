"""The settings ``recsys tune`` searches, stage by stage, cheapest first.

Each stage proposes overrides of the flat ``PipelineConfig`` keys (``als_factors``,
``text.steps``, ``ranker.num_leaves``...) for one Optuna trial; the ranges are wide enough for a
data set nobody has looked at and narrow enough for a 30-minute search. ``with_overrides``
applies them to a config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from recsys.config import PipelineConfig

Suggest = Callable[[optuna.Trial], dict[str, object]]
# ranker.prior_sources, by name (Optuna wants plain values): off, or the blend of every stage-1 score.
PRIORS = {"none": (), "stage1": ("item_item_score", "als_score", "bpr_score", "text_score")}


def _als(t: optuna.Trial) -> dict[str, object]:
    return {"als_factors": t.suggest_int("als_factors", 16, 256, log=True),
            "als_regularization": t.suggest_float("als_regularization", 0.01, 100.0, log=True),
            # The confidence scale follows each window's values per user (als_alpha 0): the search
            # moves the per-user total, so the tuned setting carries over to the longer refit window.
            "als_alpha": 0.0,
            "als_user_confidence": t.suggest_float("als_user_confidence", 5.0, 5000.0, log=True),
            "als_iterations": t.suggest_int("als_iterations", 5, 30),
            "cf_use_weights": t.suggest_categorical("cf_use_weights", [True, False])}


def _bpr(t: optuna.Trial) -> dict[str, object]:
    return {"bpr_factors": t.suggest_int("bpr_factors", 32, 256, log=True),
            "bpr_iterations": t.suggest_int("bpr_iterations", 20, 200, step=10),
            # Up to 0.1: a batch applies a popular item's steps together (features/bpr.py).
            "bpr_learning_rate": t.suggest_float("bpr_learning_rate", 0.005, 0.1, log=True),
            "bpr_regularization": t.suggest_float("bpr_regularization", 1e-4, 0.1, log=True)}


def _item_item(t: optuna.Trial) -> dict[str, object]:
    gap = t.suggest_categorical("item_item_session_gap_seconds", [0.0, 60.0, 600.0, 3600.0, 86400.0])
    return {"item_item_regularization": t.suggest_float("item_item_regularization", 10.0, 3000.0, log=True),
            "item_item_dropout": t.suggest_float("item_item_dropout", 0.0, 0.8),
            "item_item_neighbours": t.suggest_int("item_item_neighbours", 50, 400, step=50),
            "item_item_session_gap_seconds": gap,
            "item_item_session_weight": t.suggest_float("item_item_session_weight", 0.25, 4.0, log=True)}


def _text(t: optuna.Trial) -> dict[str, object]:
    return {"text.trainable_layers": t.suggest_int("text.trainable_layers", 1, 3),
            "text.steps": t.suggest_int("text.steps", 50, 300, step=50),
            "text.temperature": t.suggest_float("text.temperature", 0.02, 0.2, log=True),
            "text.history_len": t.suggest_int("text.history_len", 5, 50, log=True),
            "text.learning_rate": t.suggest_float("text.learning_rate", 1e-5, 2e-4, log=True)}


def _candidates(t: optuna.Trial) -> dict[str, object]:
    return {"candidates.n_cf": t.suggest_int("candidates.n_cf", 0, 200, step=25),
            "candidates.n_item_item": t.suggest_int("candidates.n_item_item", 50, 200, step=25),
            "candidates.n_text": t.suggest_int("candidates.n_text", 0, 100, step=25),
            "candidates.n_popular": t.suggest_int("candidates.n_popular", 0, 100, step=25),
            "candidates.n_recent": t.suggest_int("candidates.n_recent", 0, 50, step=25)}


def _ranker(t: optuna.Trial) -> dict[str, object]:
    prior = t.suggest_categorical("ranker.prior", list(PRIORS))
    return {"ranker.learning_rate": t.suggest_float("ranker.learning_rate", 0.01, 0.2, log=True),
            "ranker.num_leaves": t.suggest_int("ranker.num_leaves", 3, 63, log=True),
            "ranker.min_data_in_leaf": t.suggest_int("ranker.min_data_in_leaf", 10, 400, log=True),
            "ranker.feature_fraction": t.suggest_float("ranker.feature_fraction", 0.5, 1.0),
            "ranker.early_stopping_min_delta": t.suggest_categorical("ranker.early_stopping_min_delta",
                                                                     [0.0, 0.001, 0.005]),
            "ranker.max_delta_step": t.suggest_categorical("ranker.max_delta_step", [0.0, 0.1, 0.3, 1.0]),
            "ranker.prior_sources": PRIORS[prior]}


@dataclass(frozen=True)
class Stage:
    """name: what it tunes; share: its part of the time budget (of the stages run);
    suggest: one trial's overrides; scored_by: what its objective measures (for the logs)."""

    name: str
    share: float
    suggest: Suggest
    scored_by: str


STAGES = (
    Stage("als", 1.0, _als, "ALS alone"),
    Stage("bpr", 2.0, _bpr, "BPR alone"),
    Stage("item_item", 1.0, _item_item, "EASE / co-occurrence alone"),
    Stage("text", 3.0, _text, "the text interest score alone"),
    Stage("candidates", 1.5, _candidates, "the ranker"),
    Stage("ranker", 2.5, _ranker, "the ranker"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def base_values(stage: Stage, config: PipelineConfig) -> dict[str, object]:
    """The trial parameters that reproduce ``config`` in ``stage``'s space (enqueued first, so a
    search never ends below the settings it started from). A number outside the space is kept
    as it is (Optuna runs it and warns); a choice that is not one of the space's is left to the
    sampler."""
    flat = config.flat()
    recorder = _Recorder()
    stage.suggest(recorder)
    values = {}
    for name, space in recorder.spaces.items():
        if name == "ranker.prior":
            value = next((k for k, v in PRIORS.items() if tuple(v) == tuple(flat["ranker.prior_sources"])), None)
        else:
            value = flat[name]
        if not isinstance(space, list) or value in space:
            values[name] = value
    return values


class _Recorder:
    """A stand-in trial that records each parameter's space: a list of choices or (low, high)."""

    def __init__(self) -> None:
        self.spaces: dict[str, list | tuple] = {}

    def suggest_categorical(self, name: str, choices: list):
        self.spaces[name] = list(choices)
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int, **_):
        self.spaces[name] = (low, high)
        return low

    suggest_float = suggest_int


def with_overrides(config: PipelineConfig, overrides: dict[str, object]) -> PipelineConfig:
    """``config`` with flat keys replaced (``text.steps`` goes to the text section)."""
    top: dict[str, object] = {}
    sections: dict[str, dict[str, object]] = {}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if section:
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, values in sections.items():
        top[section] = dataclasses.replace(getattr(config, section), **values)
    return dataclasses.replace(config, **top)
