"""SASRec (Kang & McAuley, 2018): an ID-only sequential baseline, written here for comparison.

A causal self-attention encoder reads a user's last ``max_len`` items in time order (item and
position embeddings); its output at the last position, dotted with the item embeddings, scores
the next item. It knows nothing of text: it says what order alone is worth, the yardstick the
text-based sequential literature reports against.

Training: every position of every training-window sequence predicts the item after it, with a
softmax over the whole catalog (RecBole's CE loss; ``negatives`` = 0) or a sampled one (the
true item against ``negatives`` items drawn uniformly per batch and shared by its positions; a
draw equal to the true item is masked out). The full softmax is what gets SASRec near its
published strength on the sparse Amazon sets; the sampled one is cheaper on large catalogs.
Early stopping: each user's last window item is held out, and the epoch with the best nDCG@10
of that item (full ranking, a seeded sample of up to ``VALIDATION_USERS`` users) is kept, so the
test split plays no part. ``patience`` epochs without a gain stop the fit, but never before
``min_epochs``: a fit that patience alone would stop at epoch ``min_epochs`` or later is unchanged
by the floor.
Scoring reads the whole window, held-out item included (the RecBole protocol). Order within a
user is time, then the seeded tie rule (``features.transitions.ordered_events``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from features.sequence_tower import right_aligned, trimmed_columns
from features.transitions import ordered_events
from recsys.progress import progress as progress_bar

log = logging.getLogger(__name__)

VALIDATION_USERS = 5_000


@dataclass(frozen=True)
class SASRecSettings:
    """Model and training settings (the paper's for sparse Amazon data, with RecBole's full softmax)."""

    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.5
    epochs: int = 200  # most passes; early stopping usually ends it well before
    batch_size: int = 256
    learning_rate: float = 1e-3
    negatives: int = 0  # 0 = softmax over every item; n > 0 = n uniform draws per batch
    patience: int = 5  # epochs without a better validation nDCG@10 before stopping
    # No stop before this epoch: the held-out nDCG@10 can dip for a few epochs after the first
    # (the softmax leaves its popularity-like start) and rise again; patience alone stopped an
    # Office fit in that dip and kept epoch 1 (seen on the validation curve). Epochs without a
    # gain before the floor still count (unlike the user tower's ``sequence_min_epochs``, where
    # they count only after it), so every fit that patience alone stopped at this epoch or
    # later is the same as before the floor.
    min_epochs: int = 10


class _Encoder(nn.Module):
    def __init__(self, n_items: int, s: SASRecSettings) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, s.dim, padding_idx=0)  # item i is row i + 1; 0 pads
        self.positions = nn.Embedding(s.max_len, s.dim)
        layer = nn.TransformerEncoderLayer(s.dim, s.heads, dim_feedforward=s.dim, dropout=s.dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, s.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(s.dim)
        self.drop = nn.Dropout(s.dropout)
        self.heads = s.heads
        causal = torch.triu(torch.ones(s.max_len, s.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        nn.init.normal_(self.items.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: int64 (B, L) left-padded item rows (0 = padding) -> float32 (B, L, dim) states."""
        length = seq.shape[1]
        x = self.items(seq) * math.sqrt(self.items.embedding_dim) + self.positions.weight[-length:]
        pad = seq == 0
        x = self.drop(x) * ~pad[..., None]
        # A large negative, not -inf: a padded position sees only padded keys and would give NaN.
        blocked = self.causal[:length, :length][None] | pad[:, None, :]
        mask = torch.zeros(blocked.shape, dtype=x.dtype).masked_fill(blocked, -1e9)
        h = self.blocks(x, mask=mask.repeat_interleave(self.heads, dim=0))
        return self.norm(h) * ~pad[..., None]


@dataclass
class SASRec:
    """A fitted model: ``user_scores`` for the users of the window it was fitted on."""

    encoder: _Encoder
    histories: np.ndarray  # int64 (n_users, max_len) left-padded item rows (item + 1; 0 = none)
    best_epoch: int
    validation_ndcg: float
    epochs_run: int = 0  # epochs trained before early stopping (or ``epochs``)

    def user_scores(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense float32 (len(user_idx), n_items); NaN rows for users without window items."""
        user_idx = np.asarray(user_idx)
        if user_idx.size and (user_idx.min() < 0 or user_idx.max() >= len(self.histories)):
            raise IndexError(f"user rows must be in 0..{len(self.histories) - 1}; mask unknown users (-1) first")
        seq = torch.from_numpy(trimmed_columns(self.histories[user_idx], pad=0))
        self.encoder.eval()
        with torch.inference_mode():
            scores = (self.encoder(seq)[:, -1] @ self.encoder.items.weight[1:].T).numpy().astype(np.float32)
        scores[~seq.numpy().any(axis=1)] = np.nan
        return scores


def fit_sasrec(events: pl.DataFrame, *, n_users: int, n_items: int, seed: int,
               settings: SASRecSettings = SASRecSettings(), progress: bool = True) -> SASRec:
    """Fit on one window's events (``user_idx``, ``item_idx`` in 0..n-1, ``timestamp``).

    Same events, settings and seed, same model: batches and negatives come from generators
    seeded with ``seed``, and dropout from torch's generator inside ``torch.random.fork_rng``.
    """
    user, item, _ = ordered_events(events, n_users=n_users, n_items=n_items, seed=seed)
    rows = item + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _fit(user, rows, n_users, n_items, seed, settings, progress)


def _left_padded(user: np.ndarray, rows: np.ndarray, n_users: int, width: int, drop_last: bool) -> np.ndarray:
    """int64 (n_users, width): each user's last ``width`` rows (without their very last one when
    ``drop_last``), right-aligned, 0 where fewer; user and rows grouped by user in time order."""
    return right_aligned(user, rows - 1, n_users, width, drop_last=drop_last).astype(np.int64) + 1


def _fit(user: np.ndarray, rows: np.ndarray, n_users: int, n_items: int, seed: int, s: SASRecSettings,
         progress: bool) -> SASRec:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    # Training sequences: each window without its last item, max_len + 1 long (inputs and targets).
    train = _left_padded(user, rows, n_users, s.max_len + 1, drop_last=True)
    train = train[(train != 0).sum(axis=1) >= 2]
    inputs = _left_padded(user, rows, n_users, s.max_len, drop_last=True)
    held_out = _left_padded(user, rows, n_users, 1, drop_last=False)[:, 0]
    val_users = np.flatnonzero(inputs.any(axis=1) & (held_out > 0))
    if len(val_users) > VALIDATION_USERS:
        val_users = np.sort(rng.choice(val_users, VALIDATION_USERS, replace=False))
    encoder = _Encoder(n_items, s)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=s.learning_rate)
    best = (-1.0, 0, copy.deepcopy(encoder.state_dict()))
    stale, epochs_run = 0, 0
    with progress_bar(total=s.epochs, desc="fit SASRec baseline", unit="epoch", enabled=progress) as bar:
        for epoch in range(1, s.epochs + 1):
            epochs_run = epoch
            loss = _epoch(encoder, optimizer, train, n_items, s, rng)
            ndcg = _validation_ndcg(encoder, inputs[val_users], held_out[val_users])
            bar.set_postfix(loss=f"{loss:.3f}", val_ndcg=f"{ndcg:.4f}", refresh=False)
            bar.update(1)
            if ndcg > best[0]:
                best, stale = (ndcg, epoch, copy.deepcopy(encoder.state_dict())), 0
            else:
                stale += 1
                if stale >= s.patience and epoch >= s.min_epochs:
                    break
    encoder.load_state_dict(best[2])
    encoder.eval()
    log.info("SASRec baseline: best epoch %d of %d, held-out nDCG@10 %.4f (%d users), %.0f s", best[1], epochs_run,
             best[0], len(val_users), time.perf_counter() - started)
    return SASRec(encoder=encoder, histories=_left_padded(user, rows, n_users, s.max_len, drop_last=False),
                  best_epoch=best[1], validation_ndcg=best[0], epochs_run=epochs_run)


def _epoch(encoder: _Encoder, optimizer: torch.optim.Optimizer, train: np.ndarray, n_items: int,
           s: SASRecSettings, rng: np.random.Generator) -> float:
    """One pass over the training sequences in seeded batches of similar length (each cut to its
    longest sequence: most histories are far shorter than max_len); returns the mean batch loss."""
    encoder.train()
    losses = []
    lengths = (train != 0).sum(axis=1)
    by_length = np.lexsort((rng.random(len(train)), lengths))  # similar lengths together, random within
    batches = [by_length[i:i + s.batch_size] for i in range(0, len(train), s.batch_size)]
    for b in rng.permutation(len(batches)):
        pick = batches[b]
        batch = torch.from_numpy(trimmed_columns(train[pick], pad=0))
        seq, target = batch[:, :-1], batch[:, 1:]
        h = encoder(seq)
        valid = (target != 0) & (seq != 0)  # an item to predict from an item (padding predicts nothing)
        h, target = h[valid], target[valid]
        table = encoder.items.weight
        if s.negatives == 0:  # full softmax over the catalog (RecBole's CE loss)
            loss = nn.functional.cross_entropy(h @ table[1:].T, target - 1)
        else:
            negatives = torch.from_numpy(rng.integers(1, n_items + 1, size=s.negatives))
            positive = (h * table[target]).sum(-1, keepdim=True)
            sampled = (h @ table[negatives].T).masked_fill(target[:, None] == negatives, -1e9)
            loss = nn.functional.cross_entropy(torch.cat([positive, sampled], dim=-1),
                                               torch.zeros(len(target), dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


def _validation_ndcg(encoder: _Encoder, inputs: np.ndarray, targets: np.ndarray, chunk: int = 1024) -> float:
    """Mean nDCG@10 of each user's held-out item (targets: item rows) in a full ranking."""
    if len(inputs) == 0:
        return 0.0
    encoder.eval()
    gains = []
    with torch.inference_mode():
        for start in range(0, len(inputs), chunk):
            h = encoder(torch.from_numpy(trimmed_columns(inputs[start:start + chunk], pad=0)))[:, -1]
            scores = h @ encoder.items.weight[1:].T
            true = scores.gather(1, torch.from_numpy(targets[start:start + chunk] - 1)[:, None])
            rank = (scores > true).sum(dim=1).numpy()  # 0-based; ties favour it (only epochs are compared)
            gains.append(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0))
    encoder.train()
    return float(np.concatenate(gains).mean())
