"""Train the ordered user tower (``features.sequence_tower``) on next-item prediction.

Runs after the text model's fine-tuning, over its catalog vectors, which stay fixed: the
tower then costs no language-model pass, so it can read every user's sequence (their last
``history_len + 1`` window items) for several epochs (fine-tuning reads ``text.steps``
batches). Every position of every sequence predicts
the item after it (SASRec's causal training), scored by cosine / ``text.temperature`` against
the batch's other targets and ``text.sequence_negatives`` items drawn uniformly per batch; a
target the user already had earlier in the sequence is not a target (the evaluation ranks only
items new to the user).

Early stopping on the text window only: each user's last window item is held out (training
reads the window without it), and the epoch with the best nDCG@10 of that item in a full
ranking over the catalog, for a seeded sample of up to ``VALIDATION_USERS`` users, is kept.
Epochs without a gain count towards ``text.sequence_patience`` only after
``text.sequence_min_epochs``: the held-out nDCG@10 first dips below the pooled mean while the
item adaptor leaves the identity, then rises above it.
Epoch 0 is the untrained tower, which is exactly the attention-pooled mean: a tower that never
beats it is kept at it. When one pass over the training sequences takes more than
``text.sequence_max_steps`` steps, the tower is not trained at all and stays at epoch 0. This is a
time rule: the steps would then read each sequence at most once and the choice would be between
one partial epoch and the pooled mean; on the scaled world at 1,000,000 users
(``benchmarks/train.py --scales 1 10``) those 1,500 steps cost 546 s and the held-out nDCG@10
after them was level with the pooled mean's. A window of several passes within the cap (scale 1:
five) trains as before. ``text.sequence_layers`` 0 turns the tower off everywhere.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import nn

from features.sequence_tower import SequenceTower, TowerShape, right_aligned, trimmed_columns
from features.text_interest import HistoryPooling
from features.transitions import ordered_events
from recsys.config import TextModelConfig
from recsys.progress import progress as progress_bar

log = logging.getLogger(__name__)

VALIDATION_USERS = 5_000


@dataclass
class SequenceFit:
    """The tower at its best epoch (0 = the pooled mean) and the curves that chose it."""

    tower: SequenceTower
    best_epoch: int
    val_ndcg: list[float]  # held-out nDCG@10 after each epoch; [0] is the pooled mean
    train_losses: list[float] = field(default_factory=list)  # mean batch loss per epoch
    seconds: float = 0.0


def fit_sequence_tower(events: pl.DataFrame, *, n_users: int, n_items: int, item_vectors: np.ndarray,
                       pooling: HistoryPooling, config: TextModelConfig, seed: int, progress: bool = True,
                       log_metric: Callable[[str, float, int], None] | None = None) -> SequenceFit:
    """Fit on one window's events (``user_idx``, ``item_idx`` in 0..n-1, ``timestamp``).

    item_vectors: float32 (n_items, d) unit text vectors (fixed); pooling: the fine-tuned
    attention pooling the tower starts from. Same inputs and ``seed``, same tower: batches and
    negatives come from generators seeded with ``seed``, dropout and the initial weights from
    torch's generator seeded inside ``torch.random.fork_rng``.
    """
    user, item, vectors = _inputs(events, n_users, n_items, item_vectors, seed)
    return _seeded(seed, lambda: _fit(user, item, n_users, vectors, pooling, config, seed, progress, log_metric))


def refit_sequence_tower(events: pl.DataFrame, *, n_users: int, n_items: int, item_vectors: np.ndarray,
                         pooling: HistoryPooling, config: TextModelConfig, seed: int, epochs: int,
                         progress: bool = True) -> SequenceTower:
    """The tower trained afresh on a whole window for ``epochs`` passes, nothing held out.

    :func:`fit_sequence_tower` holds each user's last window item out to choose the epoch; a
    window whose features the tower gives (the ranker's feature window, the training window
    before test) is refitted here with that epoch count, so every user's most recent items are
    targets too, as every other stage-1 model of that window sees them. Same inputs as
    :func:`fit_sequence_tower`; ``epochs`` 0 is the untrained tower (the pooled mean). At most
    ``text.sequence_max_steps`` steps in all, as in the fit that chose ``epochs``: a larger
    window whose passes need more stops there, part-way through a pass if need be (never the
    untrained tower: the fit that chose ``epochs`` trained), and says so in a warning.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be 0 or more, got {epochs}")
    user, item, vectors = _inputs(events, n_users, n_items, item_vectors, seed)
    return _seeded(seed, lambda: _refit(user, item, n_users, vectors, pooling, config, seed, epochs, progress))


def _inputs(events: pl.DataFrame, n_users: int, n_items: int, item_vectors: np.ndarray,
            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The window's (user, item) rows grouped by user in time order, and the item vectors as float32."""
    if item_vectors.shape[0] != n_items:
        raise ValueError(f"item_vectors has {item_vectors.shape[0]} rows for {n_items} items")
    user, item, _ = ordered_events(events, n_users=n_users, n_items=n_items, seed=seed)
    return user, item, item_vectors.astype(np.float32, copy=False)


def _seeded(seed: int, fit: Callable):
    """``fit()`` with torch's generator seeded with ``seed`` (restored after) and deterministic kernels."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    # Deterministic kernels: the backward of the batch's row gathers otherwise sums in thread
    # order, and the last-bit differences grow over the epochs into different towers.
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return fit()
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _new_tower(item_dim: int, pooling: HistoryPooling,
               config: TextModelConfig) -> tuple[SequenceTower, torch.optim.Optimizer]:
    shape = TowerShape(item_dim=item_dim, history_len=config.history_len, dim=config.sequence_dim,
                       layers=config.sequence_layers, heads=config.sequence_heads, dropout=config.sequence_dropout)
    tower = SequenceTower(shape, pooling)
    return tower, torch.optim.AdamW(tower.parameters(), lr=config.sequence_learning_rate, weight_decay=0.01)


def _training_sequences(user: np.ndarray, item: np.ndarray, n_users: int, width: int, *,
                        drop_last: bool) -> np.ndarray:
    """int32 (sequences, width + 1): each user's last ``width + 1`` items (without their very last
    one when ``drop_last``), right-aligned; users with fewer than two left out."""
    train = right_aligned(user, item, n_users, width + 1, drop_last=drop_last)
    return train[(train >= 0).sum(axis=1) >= 2]


def _refit(user: np.ndarray, item: np.ndarray, n_users: int, item_vectors: np.ndarray, pooling: HistoryPooling,
           config: TextModelConfig, seed: int, epochs: int, progress: bool) -> SequenceTower:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    tower, optimizer = _new_tower(item_vectors.shape[1], pooling, config)
    train = _training_sequences(user, item, n_users, config.history_len, drop_last=False)
    planned = epochs * max(1, -(-len(train) // config.sequence_batch_size))
    steps = 0
    if epochs:
        vectors = torch.from_numpy(item_vectors)
        with progress_bar(total=epochs, desc="refit user tower", unit="epoch", enabled=progress) as bar:
            for _ in range(epochs):
                if steps >= config.sequence_max_steps:
                    break
                loss, done = _epoch(tower, optimizer, train, vectors, config, rng, config.sequence_max_steps - steps)
                steps += done
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                bar.update(1)
    tower.eval()
    if steps < planned:
        log.warning("user tower refit stopped at text.sequence_max_steps=%d steps of the %d that %d passes over "
                    "%d sequences take; raise it to %d to refit every pass", config.sequence_max_steps, planned,
                    epochs, len(train), planned)
    log.info("user tower refitted on %d sequences: %d steps (%d passes chosen), %.0f s", len(train), steps, epochs,
             time.perf_counter() - started)
    return tower


def _fit(user: np.ndarray, item: np.ndarray, n_users: int, item_vectors: np.ndarray, pooling: HistoryPooling,
         config: TextModelConfig, seed: int, progress: bool, log_metric) -> SequenceFit:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    width = config.history_len
    # Training sequences: each window without its last item, width + 1 long (inputs and targets).
    train = _training_sequences(user, item, n_users, width, drop_last=True)
    inputs = right_aligned(user, item, n_users, width, drop_last=True)
    held_out = right_aligned(user, item, n_users, 1)[:, 0]
    seen = _earlier_items(user, item, n_users, len(item_vectors))
    # As in the evaluation: only an item new to the user is a target, and seen items are not ranked.
    fresh = held_out >= 0
    fresh[fresh] = np.asarray(seen[np.flatnonzero(fresh), held_out[fresh]]).ravel() == 0
    val_users = np.flatnonzero((inputs >= 0).any(axis=1) & fresh)
    if len(val_users) > VALIDATION_USERS:
        val_users = np.sort(rng.choice(val_users, VALIDATION_USERS, replace=False))
    tower, optimizer = _new_tower(item_vectors.shape[1], pooling, config)
    vectors = torch.from_numpy(item_vectors)

    def validation() -> float:
        return _validation_ndcg(tower, inputs[val_users], held_out[val_users], item_vectors, seen[val_users])

    fit = SequenceFit(tower=tower, best_epoch=0, val_ndcg=[validation()])
    best_state, stale, steps = copy.deepcopy(tower.state_dict()), 0, 0
    if log_metric:
        log_metric("text/sequence_val_ndcg", fit.val_ndcg[0], 0)
    steps_per_epoch = max(1, -(-len(train) // config.sequence_batch_size))
    if steps_per_epoch > config.sequence_max_steps:
        # A time rule (module docstring): under one pass the steps choose between a partial epoch
        # and the pooled mean, and in the measured case they bought nothing.
        tower.eval()
        fit.seconds = time.perf_counter() - started
        log.warning("user tower skipped: one pass over %d training sequences takes %d steps, more than "
                    "text.sequence_max_steps=%d; the pooled mean serves (held-out nDCG@10 %.4f, %.0f s). Raise "
                    "text.sequence_max_steps to %d or more to train it", len(train), steps_per_epoch,
                    config.sequence_max_steps, fit.val_ndcg[0], fit.seconds, steps_per_epoch)
        return fit
    epochs = min(config.sequence_epochs, -(-config.sequence_max_steps // steps_per_epoch))
    with progress_bar(total=epochs, desc="fit user tower", unit="epoch", enabled=progress) as bar:
        for epoch in range(1, config.sequence_epochs + 1):
            steps_left = config.sequence_max_steps - steps
            if steps_left <= 0:
                break
            loss, done = _epoch(tower, optimizer, train, vectors, config, rng, steps_left)
            steps += done
            fit.train_losses.append(loss)
            fit.val_ndcg.append(validation())
            if log_metric:
                log_metric("text/sequence_train_loss", fit.train_losses[-1], epoch)
                log_metric("text/sequence_val_ndcg", fit.val_ndcg[-1], epoch)
            bar.set_postfix(loss=f"{fit.train_losses[-1]:.3f}", val_ndcg=f"{fit.val_ndcg[-1]:.4f}", refresh=False)
            bar.update(1)
            if fit.val_ndcg[-1] > fit.val_ndcg[fit.best_epoch]:
                fit.best_epoch, best_state, stale = epoch, copy.deepcopy(tower.state_dict()), 0
            elif epoch > config.sequence_min_epochs:
                stale += 1
                if stale >= config.sequence_patience:
                    break
    tower.load_state_dict(best_state)
    tower.eval()
    fit.seconds = time.perf_counter() - started
    log.info("user tower: best epoch %d of %d, held-out nDCG@10 %.4f (pooled mean %.4f), %.0f s",
             fit.best_epoch, len(fit.train_losses), fit.val_ndcg[fit.best_epoch], fit.val_ndcg[0], fit.seconds)
    return fit


def _epoch(tower: SequenceTower, optimizer: torch.optim.Optimizer, train: np.ndarray, vectors: torch.Tensor,
           config: TextModelConfig, rng: np.random.Generator, max_steps: int) -> tuple[float, int]:
    """One pass over the training sequences in seeded batches of similar length, at most
    ``max_steps`` of them; the mean batch loss and the steps taken."""
    tower.train()
    losses = []
    n_items = len(vectors)
    lengths = (train >= 0).sum(axis=1)
    by_length = np.lexsort((rng.random(len(train)), lengths))  # similar lengths together, random within
    size = config.sequence_batch_size
    batches = [by_length[i:i + size] for i in range(0, len(train), size)]
    for b in rng.permutation(len(batches))[:max_steps]:
        batch = torch.from_numpy(trimmed_columns(train[batches[b]]).astype(np.int64))
        seq, target = batch[:, :-1], batch[:, 1:]
        pairs = (seq >= 0) & (target >= 0)  # an item to predict from an item
        # ... and new to the user: the evaluation ranks only those.
        length = seq.shape[1]
        earlier = ~tower.causal[:length, :length][None] & (seq >= 0)[:, None, :]  # (B, t, s): s <= t, real
        pairs &= ~((seq[:, None, :] == target[:, :, None]) & earlier).any(-1)
        if not pairs.any():
            continue
        # Negatives: the batch's other targets (drawn as often as they are read, so the score
        # does not learn popularity, which the ranker has from the logs) and uniform draws.
        uniform = torch.from_numpy(rng.integers(0, n_items, size=min(config.sequence_negatives, n_items)))
        columns, column_of = torch.unique(torch.cat([target[pairs], uniform]), return_inverse=True)
        rows, position = torch.unique(torch.cat([seq.clamp(min=0).flatten(), columns]), return_inverse=True)
        table = tower.adapted(vectors[rows])  # every item the batch reads, adapted once
        history = table[position[:seq.numel()].view(seq.shape)]
        users = nn.functional.normalize(tower(history, seq >= 0), dim=-1)[pairs]
        logits = users @ table[position[seq.numel():]].T / config.temperature
        labels = column_of[:len(users)]
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return (float(np.mean(losses)) if losses else float("nan")), min(len(batches), max_steps)


def _earlier_items(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """CSR (n_users, n_items) 0/1: the items of each user's window before their last one."""
    keep = np.r_[user[1:] == user[:-1], False]  # every row but each user's last
    matrix = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (user[keep], item[keep])),
                           shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _validation_ndcg(tower: SequenceTower, inputs: np.ndarray, targets: np.ndarray, item_vectors: np.ndarray,
                     seen: sp.csr_matrix, chunk: int = 1024) -> float:
    """Mean nDCG@10 of each user's held-out item in a full ranking over the items not in ``seen``
    (CSR rows of the same users; ties count in the item's favour: only epochs of one tower are
    compared)."""
    if len(inputs) == 0:
        return 0.0
    gains = []
    item_vectors = tower.item_vectors(item_vectors)
    for start in range(0, len(inputs), chunk):
        users = tower.user_vectors(inputs[start:start + chunk], item_vectors)
        scores = users @ item_vectors.T
        part = seen[start:start + chunk].tocoo()
        scores[part.row, part.col] = -np.inf
        true = scores[np.arange(len(users)), targets[start:start + chunk]]
        rank = (scores > true[:, None]).sum(axis=1)
        gains.append(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0))
    return float(np.concatenate(gains).mean())
