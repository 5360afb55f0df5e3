"""The model bundle: everything needed to rank, in one folder of inspectable files.

Layout::

    config.json          PipelineConfig
    manifest.json        feature columns, format version
    ranker.txt           LightGBM text model (best iteration)
    state/               FeatureState (Parquet, npz/npy, JSON)
    encoder/             fine-tuned MiniLM (save_pretrained), for new item text

Training writes it; batch ranking, serving and evaluation read it through ``score``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from features.candidates import generate_candidates
from features.ranking_frame import build_ranking_frame, feature_matrix
from features.state import FeatureState
from recsys.config import PipelineConfig

FORMAT_VERSION = 1


@dataclass
class RankingBundle:
    config: PipelineConfig
    state: FeatureState
    booster: lgb.Booster
    feature_columns: tuple[str, ...]
    encoder_dir: Path | None = None

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        """float32 (rows,) ranker scores of a ranking frame."""
        if frame.height == 0:
            return np.zeros(0, dtype=np.float32)
        return self.booster.predict(feature_matrix(frame, self.feature_columns)).astype(np.float32)

    def score_candidates(self, user_idx: np.ndarray) -> pl.DataFrame:
        """Every candidate of every query with its score: (query_idx, user_idx, item_idx, score).

        user_idx: int32 (n,), one query per entry; -1 for users unknown to the model (they get
        the non-personal candidates and NaN personal features).
        """
        candidates = generate_candidates(self.state, np.asarray(user_idx, dtype=np.int32),
                                         self.config.candidates)
        frame = build_ranking_frame(self.state, candidates)
        return candidates.with_columns(pl.Series("score", self.score(frame)))

    def save(self, folder: str | Path, *, encoder_dir: Path | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / "config.json")
        manifest = {"format_version": FORMAT_VERSION, "feature_columns": list(self.feature_columns)}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        self.booster.save_model(str(folder / "ranker.txt"))
        self.state.save(folder / "state")
        source = encoder_dir or self.encoder_dir
        if source is not None:
            shutil.copytree(source, folder / "encoder", dirs_exist_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RankingBundle:
        folder = Path(folder)
        if not (folder / "manifest.json").exists():
            raise FileNotFoundError(f"{folder} is not a model bundle (manifest.json missing)")
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest["format_version"] != FORMAT_VERSION:
            raise ValueError(f"bundle format {manifest['format_version']} is not supported "
                             f"(this code reads {FORMAT_VERSION}); retrain or upgrade")
        encoder = folder / "encoder"
        return cls(
            config=PipelineConfig.load(folder / "config.json"),
            state=FeatureState.load(folder / "state"),
            booster=lgb.Booster(model_file=str(folder / "ranker.txt")),
            feature_columns=tuple(manifest["feature_columns"]),
            encoder_dir=encoder if encoder.exists() else None,
        )


def head_k(scored: pl.DataFrame, k: int) -> pl.DataFrame:
    """Top-k rows per query_idx by score (ties: smaller item_idx first), with 1-based ``rank``."""
    return (scored.sort(["query_idx", "score", "item_idx"], descending=[False, True, False])
            .group_by("query_idx", maintain_order=True).head(k)
            .with_columns((pl.int_range(pl.len()).over("query_idx") + 1).cast(pl.Int32).alias("rank")))
