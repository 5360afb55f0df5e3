"""Adding new items (with text, without interactions) to a fitted FeatureState.

The cold-start path: a new item gets its vector from the bundled fine-tuned encoder at once
and can be recommended (text top-N candidates, ``text_score``) without retraining the
ranker. Its behaviour features are those of an item never seen in training: zero counts,
unknown age, the CTR prior; its CF factors are zero (what ALS converges to for an item
without interactions).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.cf import CFFactors
from features.sequence_tower import SequenceUserVectors
from features.sources import with_new_items
from features.state import FeatureState
from features.text_interest import UserVectors
from recsys.errors import DataValidationError


def add_items(state: FeatureState, new_items: pl.DataFrame, new_vectors: np.ndarray) -> FeatureState:
    """A new state with ``new_items`` (canonical items schema, ids not yet known) appended.

    new_vectors: (len(new_items), d) float32 unit vectors from the state's encoder; a state with
    the ordered user tower maps them through its item adaptor, as training mapped the catalog.
    Existing indices never move, so the ranker and every stored table stay valid.
    """
    known = new_items.filter(pl.col("item_id").is_in(state.items.ids.implode()))
    if known.height:
        raise DataValidationError(
            f"{known.height} item(s) are already in the model, e.g. {known['item_id'][0]!r}; "
            "add-items only adds new ids (retrain to change existing items)"
        )
    if new_vectors.shape != (new_items.height, state.item_vectors.shape[1]):
        raise DataValidationError(f"new item vectors have shape {new_vectors.shape}, expected "
                                  f"({new_items.height}, {state.item_vectors.shape[1]})")
    n_old, n_new = state.n_items, new_items.height
    items = state.items.extend(new_items["item_id"])
    categories = state.categories.extend(new_items["category"])
    item_category = np.concatenate([state.item_category, categories.to_index(new_items["category"])])
    user_text = state.user_text
    if isinstance(user_text, SequenceUserVectors):
        new_vectors = user_text.tower.item_vectors(new_vectors.astype(np.float32))
    item_vectors = np.vstack([state.item_vectors, new_vectors.astype(np.float32)])
    if isinstance(user_text, SequenceUserVectors):
        user_text = user_text.with_item_vectors(item_vectors)
    elif isinstance(user_text, UserVectors):  # pool the same rows, held once (a view of the new table)
        user_text = UserVectors(user_text.weights, item_vectors[:user_text.item_vectors.shape[0]])
    return replace(
        state,
        items=items,
        categories=categories,
        item_category=item_category.astype(np.int32),
        als=_with_zero_items(state.als, n_new),
        bpr=_with_zero_items(state.bpr, n_new),
        item_item=state.item_item.with_new_items(n_new),
        cooccurrence=None,
        sources=with_new_items(state.sources, n_new, item_vectors),
        item_vectors=item_vectors,
        user_text=user_text,
        seen=sp.hstack([state.seen, sp.csr_matrix((state.n_users, n_new), dtype=np.float32)]).tocsr(),
        item_features=pl.concat([state.item_features, _unseen_item_rows(state, n_old, n_new)]),
        _dense=None,
        _history=None,
        _text_popularity=None,
        _item_has_history=None,
    )


def _with_zero_items(factors: CFFactors, n_new: int) -> CFFactors:
    extra = np.zeros((n_new, factors.item_factors.shape[1]), dtype=np.float32)
    return CFFactors(name=factors.name, user_factors=factors.user_factors,
                     item_factors=np.vstack([factors.item_factors, extra]))


def _unseen_item_rows(state: FeatureState, n_old: int, n_new: int) -> pl.DataFrame:
    """Feature rows of items with no history: counts 0, ages unknown, CTR at its prior (the
    value every never-shown item got in training; NaN when the data had no impressions)."""
    features = state.item_features
    never = features.filter(pl.col("item_pop_all") == 0)["item_ctr"].drop_nans().drop_nulls()
    prior = float(never.mode().sort()[0]) if never.len() else float("nan")
    values = {"item_idx": pl.Series(np.arange(n_old, n_old + n_new, dtype=np.int32))}
    for name in features.columns:
        if name == "item_idx":
            continue
        fill = 0.0 if name.startswith("item_pop") else (prior if name == "item_ctr" else float("nan"))
        values[name] = pl.Series(np.full(n_new, fill, dtype=np.float32))
    return pl.DataFrame(values).select(features.columns).cast(features.schema)
