"""The ordered user tower: a small transformer over a user's last item text vectors, in order.

A user's interest vector is read from their last ``history_len`` items oldest -> newest (item
text vectors, positions included): a causal self-attention encoder (SASRec-style, over
projected text vectors instead of item-id embeddings) adds a learned correction to the
attention-pooled mean of ``features.text_interest``:

    user = normalize(pooled(history) + out(encoder(history))[newest])

``out`` starts at zero, so an untrained tower is exactly the pooled mean, and training keeps
an epoch only when it beats the pooled mean on held-out items (``training.sequence_fit``).
Items stay text vectors, so a new item is scored from its text at once; users need no
language-model pass, only item vectors from the catalog table and this tower (batch ranking
and serving share :meth:`SequenceTower.user_vectors`).

Histories are int32 (n, history_len) item rows right-aligned (the newest item in the last
column), -1 where a user has fewer items.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from features.text_interest import HistoryPooling, checked_user_rows


@dataclass(frozen=True)
class TowerShape:
    """item_dim: text vector size; history_len: items read; dim, layers, heads: the encoder's
    width, depth and attention heads; dropout: training dropout rate."""

    item_dim: int = 384
    history_len: int = 20
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2


class SequenceTower(nn.Module):
    """The pooled mean (fixed ``HistoryPooling``) plus a causal encoder's correction."""

    def __init__(self, shape: TowerShape, pooling: HistoryPooling) -> None:
        super().__init__()
        self.shape = shape
        self.register_buffer("query", torch.from_numpy(np.asarray(pooling.query, dtype=np.float32).copy()))
        self.register_buffer("slope", torch.tensor(float(pooling.slope)))
        self.project = nn.Linear(shape.item_dim, shape.dim)
        self.positions = nn.Embedding(shape.history_len, shape.dim)
        layer = nn.TransformerEncoderLayer(shape.dim, shape.heads, dim_feedforward=2 * shape.dim,
                                           dropout=shape.dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, shape.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(shape.dim)
        self.drop = nn.Dropout(shape.dropout)
        self.out = nn.Linear(shape.dim, shape.item_dim)
        # Item adaptor: one linear map of every text vector (history and scored items alike),
        # starting as the identity; items stay text-only, so a new item is mapped at once.
        self.adapt = nn.Linear(shape.item_dim, shape.item_dim)
        with torch.no_grad():
            self.adapt.weight.copy_(torch.eye(shape.item_dim))
            self.adapt.bias.zero_()
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        causal = torch.triu(torch.ones(shape.history_len, shape.history_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    @property
    def pooling(self) -> HistoryPooling:
        return HistoryPooling(query=self.query.numpy().copy(), slope=float(self.slope))

    def adapted(self, vectors: torch.Tensor) -> torch.Tensor:
        """Unit item vectors (..., item_dim) through the item adaptor."""
        return nn.functional.normalize(self.adapt(vectors), dim=-1)

    def item_vectors(self, text_vectors: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """float32 (n, item_dim) unit scoring vectors of items from their text vectors."""
        out = np.empty(text_vectors.shape, dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(text_vectors), chunk):
                out[start:start + chunk] = self.adapted(torch.from_numpy(text_vectors[start:start + chunk])).numpy()
        return out

    def adds_nothing(self) -> bool:
        """True while the output layer is all zeros (untrained, or kept at epoch 0): the encoder's
        correction is then exactly zero for finite item vectors, and the user vectors are the
        pooled mean."""
        return not (self.out.weight.any() or self.out.bias.any())

    def forward(self, vectors: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """vectors: float32 (B, L, item_dim) item vectors right-aligned (L <= history_len, any
        value where padded); valid: bool (B, L). Returns un-normalised user vectors at every
        position, (B, L, item_dim): position t reads positions <= t only."""
        length = vectors.shape[1]
        vectors = vectors * valid[..., None]
        blocked = self.causal[:length, :length][None] | ~valid[:, None, :]  # (B, L, L): query t, key s
        # Pooled mean at each position: weight exp(slope * (t - s) + query . v_s) over s <= t.
        back = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).to(vectors.dtype)
        logits = self.slope * back[None] + (vectors @ self.query).clamp(-20, 20)[:, None, :]
        weights = torch.softmax(logits.masked_fill(blocked, -1e9), dim=-1) * ~blocked
        pooled = weights @ vectors
        if not (self.training or torch.is_grad_enabled()) and self.adds_nothing():
            # For finite vectors out(h) is exactly +0.0 here, so the encoder cannot change a bit of
            # the answer (+ 0.0 turns a -0.0 into +0.0 as adding out(h) does): a tower skipped or
            # kept at epoch 0 serves the pooled mean at its cost. The path follows the weights'
            # values, so a torch.jit.trace of an untrained tower would record this shortcut.
            return (pooled + 0.0) * valid[..., None]
        x = self.project(vectors) + self.positions.weight[-length:]
        x = self.drop(x) * valid[..., None]
        # Every position also sees itself: a padded one would otherwise see no key at all, and
        # the fused attention of eval mode turns such a row into NaN that the next layer spreads.
        attend_blocked = blocked & ~torch.eye(length, dtype=torch.bool)[None]
        mask = torch.zeros(blocked.shape, dtype=x.dtype).masked_fill(attend_blocked, -1e9)
        h = self.norm(self.blocks(x, mask=mask.repeat_interleave(self.shape.heads, dim=0)))
        return (pooled + self.out(h)) * valid[..., None]

    def user_vectors(self, histories: np.ndarray, item_vectors: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """float32 (n, item_dim) unit interest vectors from ``histories`` int (n, L) right-aligned
        item rows (-1 = none; L <= history_len) over ``item_vectors`` (n_items, item_dim); all-zero
        rows for empty histories. The one path for batch ranking and serving."""
        histories = np.asarray(histories)
        if histories.ndim != 2 or histories.shape[1] > self.shape.history_len:
            raise ValueError(f"histories must be (n, <= {self.shape.history_len}) item rows; got {histories.shape}")
        out = np.zeros((len(histories), self.shape.item_dim), dtype=np.float32)
        self.eval()
        with torch.inference_mode():
            for start in range(0, len(histories), chunk):
                rows = trimmed_columns(histories[start:start + chunk])
                valid = rows >= 0
                if not valid.any():
                    continue
                vectors = torch.from_numpy(item_vectors[np.where(valid, rows, 0)])
                users = self(vectors, torch.from_numpy(valid))[:, -1]
                out[start:start + len(rows)] = nn.functional.normalize(users, dim=-1).numpy()
        out[~(histories >= 0).any(axis=1)] = 0.0
        return out

    def save(self, folder: Path) -> None:
        """Weights (``sequence_tower.pt``) and shape (``sequence_tower.json``) into ``folder``."""
        folder = Path(folder)
        torch.save(self.state_dict(), folder / "sequence_tower.pt")
        (folder / "sequence_tower.json").write_text(json.dumps(asdict(self.shape), indent=2))

    @classmethod
    def load(cls, folder: Path) -> SequenceTower:
        folder = Path(folder)
        shape = TowerShape(**json.loads((folder / "sequence_tower.json").read_text()))
        weights = torch.load(folder / "sequence_tower.pt", weights_only=True)
        tower = cls(shape, HistoryPooling(query=weights["query"].numpy(), slope=float(weights["slope"])))
        tower.load_state_dict(weights)
        return tower.eval()


def trimmed_columns(rows: np.ndarray, pad: int = -1) -> np.ndarray:
    """Right-aligned rows without the leading columns that are ``pad`` in every row (one kept)."""
    width = max(1, int((rows != pad).sum(axis=1).max(initial=0)))
    return rows[:, rows.shape[1] - width:]


def right_aligned(user: np.ndarray, item: np.ndarray, n_users: int, width: int, *,
                  drop_last: bool = False) -> np.ndarray:
    """int32 (n_users, width): each user's last ``width`` items (without their very last one when
    ``drop_last``), the newest in the last column, -1 where fewer; ``user`` and ``item`` grouped by
    user in time order (``features.transitions.ordered_events``)."""
    out = np.full((n_users, width), -1, dtype=np.int32)
    if user.size == 0 or width == 0:
        return out
    is_last = np.r_[user[1:] != user[:-1], True]
    end = np.flatnonzero(is_last)
    from_end = np.repeat(end, np.diff(np.r_[-1, end])) - np.arange(len(user))  # 0 = the user's newest
    if drop_last:
        keep = from_end >= 1
        user, item, from_end = user[keep], item[keep], from_end[keep] - 1
    keep = from_end < width
    out[user[keep], width - 1 - from_end[keep]] = item[keep]
    return out


def appended(history: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One right-aligned row (width,) int32: ``history`` (right-aligned, -1 = none) followed by
    ``items`` (oldest -> newest), the newest ``width`` kept."""
    known = history[history >= 0]
    joined = np.concatenate([known, np.asarray(items, dtype=np.int64)])[-len(history):]
    row = np.full(len(history), -1, dtype=np.int32)
    if len(joined):
        row[len(history) - len(joined):] = joined
    return row


class SequenceUserVectors:
    """Interest vectors (n_users, item_dim) float32 from each user's stored history through the
    tower, computed when read (``UserVectors``' interface: rows, ``materialize``, ``shape``).

    histories: int32 (n_users, history_len) right-aligned item rows (-1 = none);
    item_vectors: (n_items, item_dim) float32 the histories index (a catalog update may append
    rows; stored histories index old rows only).

    Rows read in different batches agree to float rounding (~1e-7), not bit for bit: the
    kernels' shapes follow the batch. ``materialize`` (batch ranking and the server call it
    through ``RankingBundle.warm`` up to ``DENSE_MAX_BYTES``) computes every row once, so reads
    from the kept table do not depend on how users are batched."""

    dtype = np.dtype(np.float32)
    DENSE_MAX_BYTES = 256 * 2**20

    def __init__(self, histories: np.ndarray, item_vectors: np.ndarray, tower: SequenceTower) -> None:
        if histories.ndim != 2 or histories.shape[1] != tower.shape.history_len:
            raise ValueError(f"histories must be (n_users, {tower.shape.history_len}); got {histories.shape}")
        if histories.size and histories.max() >= len(item_vectors):
            raise ValueError(f"histories index item {int(histories.max())} but only {len(item_vectors)} "
                             "item vectors were given")
        self.histories = histories
        self.item_vectors = item_vectors
        self.tower = tower
        self._dense: np.ndarray | None = None

    def with_item_vectors(self, item_vectors: np.ndarray) -> SequenceUserVectors:
        """The same users over a grown item table (a catalog update)."""
        return SequenceUserVectors(self.histories, item_vectors, self.tower)

    def materialize(self, max_bytes: int | None = None) -> bool:
        limit = self.DENSE_MAX_BYTES if max_bytes is None else max_bytes
        if self._dense is None and len(self) * self.shape[1] * 4 <= limit:
            self._dense = self.tower.user_vectors(self.histories, self.item_vectors)
        return self._dense is not None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.histories), self.tower.shape.item_dim

    def __len__(self) -> int:
        return len(self.histories)

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows)
        if rows.ndim == 0:
            return self[rows.reshape(1)][0]
        rows = checked_user_rows(rows, len(self))
        if self._dense is not None:
            return self._dense[rows]
        return self.tower.user_vectors(self.histories[rows], self.item_vectors)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._dense.copy() if self._dense is not None else self.tower.user_vectors(self.histories,
                                                                                         self.item_vectors)
        return out if dtype is None else out.astype(dtype)


def stored_histories(events: pl.DataFrame, *, n_users: int, n_items: int, history_len: int,
                     seed: int) -> np.ndarray:
    """int32 (n_users, history_len) right-aligned last items of each user in ``events``
    (``user_idx``, ``item_idx``, ``timestamp``), in time order with the seeded tie rule."""
    from features.transitions import ordered_events

    user, item, _ = ordered_events(events, n_users=n_users, n_items=n_items, seed=seed)
    return right_aligned(user, item, n_users, history_len)
