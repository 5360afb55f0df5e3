"""Fine-tune the MiniLM item tower on next-interaction prediction.

Cost control on CPU: the lower ``6 - trainable_layers`` transformer layers stay frozen; their
output is computed for an item the first time training reads it and kept, so a step runs only
the upper layers, and only for the (deduplicated) target items of the batch. Training reads
only the items its batches and held-out examples touch, so its cost does not grow with the
catalog; the catalog is encoded once at the end, through the lower layers once and the upper
layers twice (pretrained and fine-tuned vectors).

Objective: for an example (history, next item), the user vector is the attention-pooled mean
of the history's item vectors (features/text_interest.py: a learned query over item vectors
plus a learned recency slope, starting as the plain recency-weighted mean) taken from a
snapshot of the item table (the upper weights as of the last refresh, every ``eval_every``
steps; rows computed when first read; no gradient to the items;
the pooling parameters learn through it); the target items of the batch are encoded with gradient,
and an in-batch softmax (InfoNCE, cosine / temperature) pushes each user's next item above
the other targets. Items that are the positive of several examples are not counted as
negatives for them. Where impressions exist, each click also brings up to
``hard_negatives`` items shown beside it and not clicked: they join the batch's softmax as
negatives for every example (encoded with gradient, deduplicated with the targets).
Validation loss on held-out examples (in-batch negatives only, comparable across runs)
decides early stopping, and the best weights are kept.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from features.text_encoder import TextEncoder, mean_pool
from features.text_interest import HistoryPooling
from recsys.config import TextModelConfig
from recsys.progress import progress as progress_bar

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """pretrained_vectors / finetuned_vectors: (n_items, 384) float32 unit vectors."""

    pretrained_vectors: np.ndarray
    finetuned_vectors: np.ndarray
    train_losses: list[float]
    val_losses: list[float]
    val_steps: list[int]
    best_step: int
    pooling: HistoryPooling | None = None
    rows_encoded: dict[str, int] = field(default_factory=dict)  # snapshot rows read, lower-layer rows kept
    catalog_dtype: str = "float32"  # the catalog pass's matrix products: float32 or bfloat16
    # The ordered user tower fitted after fine-tuning (``training.sequence_fit``); when set,
    # ``finetuned_vectors`` are already through its item adaptor.
    tower: object | None = None
    tower_fit: object | None = None  # its ``SequenceFit`` (curves, best epoch)
    encoder_vectors: np.ndarray | None = None  # with a tower: the fine-tuned vectors before its item adaptor

    @property
    def user_model(self):
        """What makes a user's interest vector from their items: the tower, else the pooling."""
        return self.tower if self.tower is not None else self.pooling


class _LazyTower:
    """The encoder split at ``n_layers - trainable_layers``: the frozen lower layers' output is
    computed for an item the first time it is needed and kept, the upper layers run on demand.

    Nothing here is per catalog up front, so fine-tuning's cost does not grow with the catalog:
    only the items a step or a held-out loss reads go through the lower layers (the catalog pass
    happens once, at the end, in :meth:`encode_catalog`). Kept rows are ragged (tokens, 384)
    float32, so memory is the touched items' tokens, not items x max_length.
    """

    def __init__(self, encoder: TextEncoder, texts: list[str], trainable_layers: int, batch_size: int) -> None:
        model = self.model = encoder.model
        self.split_at = model.config.num_hidden_layers - trainable_layers
        self.upper = model.encoder.layer[self.split_at:]
        self.batch_size = batch_size
        batch = encoder.tokenize(texts)
        self.ids = batch["input_ids"]
        self.lengths = batch["attention_mask"].sum(1)
        self.hidden_size = model.config.hidden_size
        self._lower: list[torch.Tensor | None] = [None] * len(texts)

    @property
    def n_items(self) -> int:
        return len(self._lower)

    @property
    def rows_kept(self) -> int:
        """Items whose lower-layer output is held."""
        return sum(row is not None for row in self._lower)

    def _mask(self, idx: torch.Tensor, width: int) -> torch.Tensor:
        """Attention mask (len(idx), width) int64: 1 on each row's tokens, 0 on padding (right-padded)."""
        return (torch.arange(width)[None, :] < self.lengths[idx, None]).long()

    def _run_lower(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-layer output (len(idx), width, 384) and mask for rows ``idx``, no gradient."""
        width = int(self.lengths[idx].max())
        ids = self.ids[idx, :width]
        mask = self._mask(idx, width)
        self.model.embeddings.eval()  # frozen: no dropout, also while the upper layers train
        for layer in self.model.encoder.layer[: self.split_at]:
            layer.eval()
        with torch.no_grad():
            h = self.model.embeddings(input_ids=ids)
            for layer in self.model.encoder.layer[: self.split_at]:
                h = _run_layer(layer, h, mask)
        return h, mask

    def _keep_lower(self, idx: torch.Tensor) -> None:
        missing = torch.tensor([i for i in idx.tolist() if self._lower[i] is None], dtype=torch.long)
        if len(missing) == 0:
            return
        missing = torch.unique(missing)
        missing = missing[torch.argsort(self.lengths[missing], descending=True, stable=True)]
        for start in range(0, len(missing), self.batch_size):
            part = missing[start:start + self.batch_size]
            h, _ = self._run_lower(part)
            for row, n, hidden in zip(part.tolist(), self.lengths[part].tolist(), h, strict=True):
                self._lower[row] = hidden[:n].clone()

    def lower(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-layer output padded to the longest of ``idx``: (len(idx), width, 384), mask (len(idx), width);
        rows not yet held are computed and kept."""
        self._keep_lower(idx)
        rows = [self._lower[i] for i in idx.tolist()]
        h = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = self._mask(idx, h.shape[1])
        return h, mask

    def encode(self, idx: torch.Tensor, layers: torch.nn.ModuleList | None = None) -> torch.Tensor:
        """Unit vectors (len(idx), 384) for item rows ``idx`` through the upper layers (or ``layers``)."""
        h, mask = self.lower(idx)
        return _upper(h, mask, self.upper if layers is None else layers)

    def encode_catalog(self, upper_stacks: list[torch.nn.ModuleList], *, bf16: bool,
                       progress: bool) -> list[np.ndarray]:
        """Every item through the lower layers once and then through each stack of upper layers:
        one float32 (n_items, 384) unit-vector table per stack, in length-sorted batches.
        ``bf16``: matrix products in bfloat16 (CPU autocast). The rows kept for fine-tuning are
        released first (gigabytes on a large catalog), so every item takes the same path."""
        self._lower = [None] * self.n_items
        tables = [np.zeros((self.n_items, self.hidden_size), dtype=np.float32) for _ in upper_stacks]
        order = torch.argsort(self.lengths, descending=True, stable=True)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), \
                progress_bar(total=self.n_items, desc="encode items", unit="item", enabled=progress) as bar:
            for start in range(0, self.n_items, self.batch_size):
                idx = order[start:start + self.batch_size]
                h, mask = self._run_lower(idx)
                for table, layers in zip(tables, upper_stacks, strict=True):
                    table[idx.numpy()] = _upper(h, mask, layers).float().numpy()
                bar.update(len(idx))
        return tables


class _SnapshotTable:
    """Item vectors under the upper layers' weights as of the last :meth:`refresh` (no gradient),
    each row computed the first time it is read: ``table[idx]`` -> (len(idx), 384) float32.

    Training reads history vectors from it, so a snapshot costs the rows the next steps read,
    not a pass over the catalog."""

    def __init__(self, tower: _LazyTower) -> None:
        self.tower = tower
        self.layers = copy.deepcopy(tower.upper)
        for p in self.layers.parameters():
            p.requires_grad_(False)
        self.layers.eval()
        self.rows = torch.zeros((tower.n_items, tower.hidden_size))
        self.ready = torch.zeros(tower.n_items, dtype=torch.bool)
        self.rows_computed = 0

    def refresh(self) -> None:
        """Take the tower's current upper weights; every row is computed again when next read."""
        self.layers.load_state_dict(self.tower.upper.state_dict())
        self.ready[:] = False

    def ensure(self, idx: torch.Tensor) -> None:
        missing = torch.unique(idx[~self.ready[idx]])
        if len(missing) == 0:
            return
        missing = missing[torch.argsort(self.tower.lengths[missing], descending=True, stable=True)]
        with torch.no_grad():  # not inference_mode: lower rows kept here are read again under autograd
            for start in range(0, len(missing), self.tower.batch_size):
                part = missing[start:start + self.tower.batch_size]
                self.rows[part] = self.tower.encode(part, self.layers)
        self.ready[missing] = True
        self.rows_computed += len(missing)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        self.ensure(idx)
        return self.rows[idx]


def _upper(h: torch.Tensor, mask: torch.Tensor, layers: torch.nn.ModuleList) -> torch.Tensor:
    for layer in layers:
        h = _run_layer(layer, h, mask)
    return mean_pool(h, mask)


def _run_layer(layer: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Additive mask (B, 1, 1, T): 0 where attended, a large negative where padded.
    additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    out = layer(hidden, additive)
    return out[0] if isinstance(out, tuple) else out


def next_item_examples(events: pl.DataFrame, history_len: int,
                       impressions: pl.DataFrame | None = None) -> pl.DataFrame:
    """(history: list[int32] oldest->newest, target: int32, negatives: list[int32]) for every
    interaction after a user's first, from ``user_idx, item_idx, timestamp`` rows.

    negatives: the items shown in the impression where the target was clicked and not clicked
    (``impressions``: impression_id, user_idx, item_idx, timestamp, clicked); empty without one.
    Rows come user by user (in order of first appearance after sorting), each user's examples in
    time order; events at the same time keep their input order (a stable sort).

    Built from flat arrays: each history is a slice of the user's time-ordered items, gathered
    once into one list column (memory ~ examples x ``history_len``, not users x their items^2,
    which exploding whole per-user lists would copy).
    """
    ordered = events.select("user_idx", "item_idx", "timestamp").sort("timestamp", maintain_order=True)
    by_user = ordered.with_row_index("_row").group_by("user_idx", maintain_order=True).agg("_row")["_row"]
    ordered = ordered[by_user.explode().to_numpy()]  # user by user, each user's rows in time order
    users = ordered["user_idx"].to_numpy()
    n = len(users)
    row = np.arange(n, dtype=np.int64)
    first = np.maximum.accumulate(np.where(np.r_[True, users[1:] != users[:-1]], row, 0)) if n else row
    at = np.flatnonzero(row - first >= 1)  # every row after its user's first is an example's target
    history_start = np.maximum(first[at], at - max(history_len, 0))
    lengths = at - history_start
    offsets = np.zeros(len(at) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = ordered["item_idx"]
    gather = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - history_start, lengths)
    values = pa.array(items.to_numpy()[gather])
    history = pl.Series("history", pa.LargeListArray.from_arrays(pa.array(offsets), values))
    examples = pl.DataFrame([history, items.gather(at).alias("target"),
                             ordered["timestamp"].gather(at).alias("_time"),
                             ordered["user_idx"].gather(at).alias("_user")])
    return with_hard_negatives(examples, impressions)


def with_hard_negatives(examples: pl.DataFrame, impressions: pl.DataFrame | None) -> pl.DataFrame:
    """``examples`` (history, target, _time, _user) with ``negatives``: the items left unclicked in
    the impression where the target was clicked (empty without one); _time and _user dropped."""
    empty = pl.lit([], dtype=pl.List(pl.Int32)).alias("negatives")
    if impressions is None or impressions.height == 0:
        return examples.with_columns(empty).drop("_time", "_user")
    shown = (impressions.select("impression_id", "user_idx", "item_idx", "timestamp", "clicked")
             .filter(pl.col("user_idx").is_not_null() & (pl.col("user_idx") >= 0)))
    clicks = shown.filter(pl.col("clicked") == 1).select(
        "impression_id", pl.col("user_idx").alias("_user"), pl.col("item_idx").alias("target"),
        pl.col("timestamp").alias("_time")).unique(["_user", "target", "_time"], keep="first", maintain_order=True)
    unclicked = shown.filter(pl.col("clicked") == 0).group_by("impression_id", maintain_order=True).agg(
        pl.col("item_idx").cast(pl.Int32).alias("negatives"))
    return (examples.join(clicks, on=["_user", "target", "_time"], how="left", maintain_order="left")
            .join(unclicked, on="impression_id", how="left", maintain_order="left")
            .with_columns(pl.col("negatives").fill_null(pl.lit([], dtype=pl.List(pl.Int32))))
            .drop("_time", "_user", "impression_id"))


class _Pooling(torch.nn.Module):
    """Attention pooling of history item vectors: logit = slope * positions_back + query . v."""

    def __init__(self, dim: int, half_life: float) -> None:
        super().__init__()
        start = HistoryPooling.recency(half_life, dim)
        self.query = torch.nn.Parameter(torch.zeros(dim))
        self.slope = torch.nn.Parameter(torch.tensor(float(start.slope)))

    def forward(self, table: _SnapshotTable, histories: list[np.ndarray]) -> torch.Tensor:
        table.ensure(torch.from_numpy(np.concatenate(histories).astype(np.int64)))  # missing rows in one pass
        rows = []
        for hist in histories:
            vecs = table[torch.from_numpy(hist.astype(np.int64))].clone()  # a normal tensor: grads reach the pooling
            back = torch.arange(len(hist) - 1, -1, -1, dtype=vecs.dtype)
            weights = torch.softmax(self.slope * back + (vecs @ self.query).clamp(-20, 20), dim=0)
            rows.append(weights @ vecs)
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    def export(self) -> HistoryPooling:
        return HistoryPooling(query=self.query.detach().numpy().astype(np.float32).copy(),
                              slope=float(self.slope.detach()))


def _info_nce(users: torch.Tensor, targets_vec: torch.Tensor, target_ids: torch.Tensor,
              position: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = users @ targets_vec.T / temperature
    # Another example's target that equals my own target is not a negative for me.
    same = target_ids[:, None] == target_ids[None, :]
    logits = logits.masked_fill(same & ~torch.eye(len(target_ids), dtype=torch.bool), float("-inf"))
    return torch.nn.functional.cross_entropy(logits, position)


def finetune(encoder: TextEncoder, texts: list[str], examples: pl.DataFrame, config: TextModelConfig, *,
             seed: int, eval_every: int = 20, patience: int = 2, progress: bool = True,
             log_metric: Callable[[str, float, int], None] | None = None) -> FinetuneResult:
    """Fine-tune ``encoder`` in place (best weights kept) and return item vectors before/after.

    texts: one per item index; examples: from :func:`next_item_examples`.
    Same inputs and ``seed``, same result: the validation cut, batches and hard negatives draw
    from generators seeded with ``seed``, and dropout from torch's global generator seeded with
    ``seed`` inside ``torch.random.fork_rng``, so the caller's global random state is untouched.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _finetune(encoder, texts, examples, config, seed=seed, eval_every=eval_every, patience=patience,
                         progress=progress, log_metric=log_metric)


def _finetune(encoder: TextEncoder, texts: list[str], examples: pl.DataFrame, config: TextModelConfig, *,
              seed: int, eval_every: int, patience: int, progress: bool,
              log_metric: Callable[[str, float, int], None] | None) -> FinetuneResult:
    """The stages: trainable tower and optimizer, the example split, the training loop with
    early stopping on the held-out examples, the best step's weights back in place."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    tower, pooling, optimizer = _trainable_tower(encoder, texts, config)
    pretrained_layers = copy.deepcopy(tower.upper).eval()
    data = _TrainingExamples.split(examples, tower, config, rng)
    table = _SnapshotTable(tower)
    curves = _Curves(val_losses=[_val_loss(table, data.val_hist, data.val_targets, config, pooling)])
    best = (curves.val_losses[0], 0, *_snapshot(tower, pooling))
    if log_metric:
        log_metric("text/val_loss", curves.val_losses[0], 0)
    best = _train_loop(tower, pooling, optimizer, table, data, config, curves, best, generator=generator, rng=rng,
                       eval_every=eval_every, patience=patience, progress=progress, log_metric=log_metric)
    for layer, state in zip(tower.upper, best[2], strict=True):
        layer.load_state_dict(state)
    pooling.load_state_dict(best[3])
    encoder.model.eval()
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    log.info("text fine-tuning read %d snapshot rows and kept %d lower-layer rows of %d items",
             table.rows_computed, tower.rows_kept, tower.n_items)
    rows_encoded = {"snapshot": table.rows_computed, "lower_kept": tower.rows_kept}
    del table  # its (n_items, 384) rows are not needed for the catalog pass
    bf16 = catalog_bf16(len(texts), config)
    pretrained, final = tower.encode_catalog([pretrained_layers, tower.upper], bf16=bf16, progress=progress)
    return FinetuneResult(pretrained_vectors=pretrained, finetuned_vectors=final,
                          train_losses=curves.train_losses, val_losses=curves.val_losses, val_steps=curves.val_steps,
                          best_step=best[1], pooling=pooling.export(),
                          rows_encoded=rows_encoded,
                          catalog_dtype="bfloat16" if bf16 else "float32")


def catalog_bf16(n_items: int, config: TextModelConfig) -> bool:
    """Whether the catalog pass of ``n_items`` items runs its matrix products in bfloat16: a
    catalog of at least ``config.bf16_min_items`` items on a CPU with native bfloat16 products."""
    return 0 < config.bf16_min_items <= n_items and native_bf16()


def native_bf16() -> bool:
    """The CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere autocast would be slower."""
    cpu = getattr(torch, "cpu", None)
    return any(bool(getattr(cpu, name, lambda: False)())
               for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _trainable_tower(encoder: TextEncoder, texts: list[str],
                     config: TextModelConfig) -> tuple[_LazyTower, _Pooling, torch.optim.Optimizer]:
    """The lazy tower with only its top ``trainable_layers`` trainable, the history pooling,
    and AdamW over both."""
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    tower = _LazyTower(encoder, texts, config.trainable_layers, config.encode_batch_size)
    params = [p for layer in tower.upper for p in layer.parameters()]
    for p in params:
        p.requires_grad_(True)
    pooling = _Pooling(tower.hidden_size, config.recency_half_life)
    # The pooling has a few hundred parameters starting from the plain recency mean: it needs a
    # far larger step than the transformer to move within 100 steps.
    optimizer = torch.optim.AdamW([{"params": params}, {"params": pooling.parameters(), "lr": 1e-3}],
                                  lr=config.learning_rate, weight_decay=0.01)
    return tower, pooling, optimizer


class _Ragged:
    """Int64 rows of different lengths in one flat array: ``rows[i]`` is a view (no per-row
    objects: millions of examples at scale would cost gigabytes as Python lists or arrays)."""

    def __init__(self, column: pl.Series) -> None:
        lengths = column.list.len().fill_null(0).to_numpy()
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.values = column.explode(empty_as_null=False, keep_nulls=False).to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        return self.values[self.offsets[i]:self.offsets[i + 1]]


@dataclass
class _TrainingExamples:
    """Next-item examples split into training and held-out: histories (int64 item indices per
    example), targets (int64), optional hard negatives, and the training targets' length bands."""

    histories: _Ragged
    targets: np.ndarray
    negatives: _Ragged | None
    buckets: list[np.ndarray]
    val_hist: list[np.ndarray]
    val_targets: torch.Tensor

    @classmethod
    def split(cls, examples: pl.DataFrame, tower: _LazyTower, config: TextModelConfig,
              rng: np.random.Generator) -> _TrainingExamples:
        perm = rng.permutation(examples.height)
        n_val = min(max(64, examples.height // 10), 512, examples.height // 2)
        val = examples[perm[:n_val]]
        train = examples[perm[n_val:]]
        targets = train["target"].to_numpy().astype(np.int64)
        negatives = (_Ragged(train["negatives"])
                     if "negatives" in train.columns and config.hard_negatives > 0 else None)
        return cls(histories=_Ragged(train["history"]), targets=targets,
                   negatives=negatives, buckets=_length_buckets(tower.lengths.numpy()[targets], config.length_buckets),
                   val_hist=[np.asarray(h, dtype=np.int64) for h in val["history"].to_list()],
                   val_targets=torch.from_numpy(val["target"].to_numpy().astype(np.int64)))


@dataclass
class _Curves:
    """Training loss per step; held-out loss at step 0 and at each evaluation."""

    val_losses: list[float]
    train_losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=lambda: [0])


def _train_loop(tower: _LazyTower, pooling: _Pooling, optimizer: torch.optim.Optimizer, table: _SnapshotTable,
                data: _TrainingExamples, config: TextModelConfig, curves: _Curves, best: tuple, *,
                generator: torch.Generator, rng: np.random.Generator, eval_every: int, patience: int,
                progress: bool, log_metric) -> tuple:
    """``config.steps`` steps (a batch from one length band each), the held-out loss every
    ``eval_every`` steps, a stop after ``patience`` evaluations without a new best. Appends to
    ``curves``; returns the best (loss, step, layer weights, pooling weights)."""
    model = tower.model
    bad_evals = 0
    shares = [len(b) / len(data.targets) for b in data.buckets]
    model.train()
    with progress_bar(total=config.steps, desc="fine-tune text", unit="step", enabled=progress) as bar:
        for step in range(1, config.steps + 1):
            bucket = data.buckets[rng.choice(len(data.buckets), p=shares)]
            pick = bucket[torch.randint(len(bucket), (config.batch_size,), generator=generator).numpy()]
            hard = (None if data.negatives is None
                    else _sample_negatives([data.negatives[i] for i in pick], config.hard_negatives, rng))
            loss = _batch_loss(tower, pooling, table, [data.histories[i] for i in pick],
                               torch.from_numpy(data.targets[pick]), hard, config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            curves.train_losses.append(loss.item())
            if log_metric:
                log_metric("text/train_loss", curves.train_losses[-1], step)
            bar.set_postfix(loss=f"{curves.train_losses[-1]:.3f}", refresh=False)
            bar.update(1)
            if step % eval_every == 0 or step == config.steps:
                table.refresh()
                curves.val_losses.append(_val_loss(table, data.val_hist, data.val_targets, config, pooling))
                curves.val_steps.append(step)
                if log_metric:
                    log_metric("text/val_loss", curves.val_losses[-1], step)
                if curves.val_losses[-1] < best[0]:
                    best = (curves.val_losses[-1], step, *_snapshot(tower, pooling))
                    bad_evals = 0
                else:
                    bad_evals += 1
                    if bad_evals >= patience:
                        log.info("early stop at step %d (best %d)", step, best[1])
                        break
    return best


def _snapshot(tower: _LazyTower, pooling: _Pooling) -> tuple[list[dict], dict]:
    """Copies of the upper layers' and the pooling's weights (to restore the best step)."""
    return copy.deepcopy([layer.state_dict() for layer in tower.upper]), copy.deepcopy(pooling.state_dict())


def _batch_loss(tower: _LazyTower, pooling: _Pooling, table: _SnapshotTable, histories: list[np.ndarray],
                targets: torch.Tensor, hard: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Scalar InfoNCE loss of one batch: histories (B arrays of item rows), targets int64 (B,),
    hard: int64 (n,) extra negatives shared by the batch, or None for in-batch negatives only."""
    users = pooling(table, histories)
    if hard is None:
        unique, position = torch.unique(targets, return_inverse=True)
        item_vecs = tower.encode(unique)  # duplicates in the batch are encoded once
        return _info_nce(users, item_vecs[position], targets, torch.arange(len(targets)), temperature)
    columns, position = torch.unique(torch.cat([targets, hard]), return_inverse=True)
    logits = users @ tower.encode(columns).T / temperature
    return torch.nn.functional.cross_entropy(logits, position[:len(targets)])


def _length_buckets(lengths: np.ndarray, n_buckets: int) -> list[np.ndarray]:
    """Example indices grouped into ``n_buckets`` quantile bands of target token length.

    A batch is drawn from one band, so the upper layers pad each batch to a similar length
    (bands are chosen in proportion to their size: every example keeps its sampling rate).
    """
    order = np.argsort(lengths, kind="stable")
    return [band for band in np.array_split(order, max(1, min(n_buckets, len(order)))) if len(band)]


def _sample_negatives(per_example: list[np.ndarray], k: int, rng: np.random.Generator) -> torch.Tensor:
    """Up to ``k`` hard negatives per example, drawn without replacement, concatenated (int64)."""
    picked = [n if len(n) <= k else rng.choice(n, size=k, replace=False) for n in per_example]
    return torch.from_numpy(np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64))


def _val_loss(table: _SnapshotTable, histories: list[np.ndarray], targets: torch.Tensor,
              config: TextModelConfig, pooling: _Pooling) -> float:
    """In-batch InfoNCE on held-out examples with the current item table (no gradient)."""
    with torch.no_grad():  # not inference_mode: lower-layer rows kept here are read again under autograd
        users = pooling(table, histories)
        losses = []
        for start in range(0, len(targets), config.batch_size):
            t = targets[start:start + config.batch_size]
            u = users[start:start + config.batch_size]
            losses.append(float(_info_nce(u, table[t], t, torch.arange(len(t)), config.temperature)))
    return float(np.mean(losses))
