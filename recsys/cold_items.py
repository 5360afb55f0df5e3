"""The cold-items protocol: a seeded share of items is removed from training entirely.

Those items keep their text and stay in test, so a model can only find them through what
their descriptions say. The same device, applied to the feature window, shows the ranker
items without behaviour during training (label-window positives with no history).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.errors import ConfigError


def pick_cold_items(interactions: pl.DataFrame, fraction: float, seed: int) -> pl.Series:
    """A seeded ``fraction`` of the item ids that occur in ``interactions`` (String Series, sorted)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"cold item fraction must be strictly between 0 and 1, got {fraction}")
    ids = interactions["item_id"].unique().sort()
    n_cold = int(round(fraction * ids.len()))
    if n_cold == 0 or n_cold == ids.len():
        raise ConfigError(f"a cold fraction of {fraction} of {ids.len()} interacted items leaves "
                          f"{n_cold} cold items; choose a fraction that leaves both kinds")
    rng = np.random.default_rng(seed)
    return ids.gather(np.sort(rng.choice(ids.len(), size=n_cold, replace=False))).alias("item_id")


def without_items(events: pl.DataFrame | None, items: pl.Series) -> pl.DataFrame | None:
    """``events`` without the rows of ``items`` (None stays None)."""
    if events is None:
        return None
    return events.filter(~pl.col("item_id").is_in(items.implode()))
