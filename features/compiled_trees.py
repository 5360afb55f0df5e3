"""The ranker's trees compiled to native code (lleaves), with LightGBM's ``predict`` as the fallback.

LightGBM's ``predict`` walks the trees row by row through a generic interpreter; lleaves turns
the LightGBM text model into one LLVM-compiled function whose branches are the trees' splits
(missing values and categorical splits follow LightGBM's rules), so the same scores come out
several times faster (``benchmarks/compiled_trees.py`` measures it against LightGBM and
treelite/tl2cgen on a model).

A model is compiled once per model text, never per request: the shared object is cached under
``RECSYS_CACHE_DIR`` (default ``~/.cache/recsys``) in ``compiled-trees/``, named by the sha256 of
the model text and of what the machine code depends on (lleaves and llvmlite versions, the host
CPU), and written atomically, so concurrent processes and an interrupted compile never leave a
half-written file. When lleaves is missing or compiling fails, ``compile_trees`` returns None
and the caller keeps LightGBM (a warning says why). ``RECSYS_COMPILED_TREES=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

ENABLE_ENV = "RECSYS_COMPILED_TREES"
CACHE_ENV = "RECSYS_CACHE_DIR"


def enabled() -> bool:
    """False when ``RECSYS_COMPILED_TREES`` is 0/false/no/off (then LightGBM predicts)."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recsys") / "compiled-trees"


class CompiledTrees:
    """A compiled model: ``predict(X)`` gives LightGBM's raw scores for float (rows, features)."""

    def __init__(self, model, path: Path) -> None:
        self._model = model
        self.path = path

    def predict(self, X: np.ndarray, threads: int = 0) -> np.ndarray:
        """float64 (rows,) scores; ``threads`` 0 = every core, as LightGBM's ``num_threads``."""
        return self._model.predict(np.ascontiguousarray(X, dtype=np.float64), n_jobs=threads or None)


def _cache_key(model_text: str) -> str:
    from importlib.metadata import version

    import llvmlite.binding as llvm

    parts = [model_text, version("lleaves"), version("llvmlite"), llvm.get_host_cpu_name(),
             llvm.get_host_cpu_features().flatten(), platform.machine()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def compile_trees(booster: lgb.Booster) -> CompiledTrees | None:
    """The booster's best iteration compiled (or loaded from the cache); None when disabled,
    when lleaves is not installed, or when compiling fails (logged as a warning)."""
    if not enabled():
        return None
    try:
        import lleaves
    except ImportError as exc:
        log.warning("compiled trees off (%s): LightGBM predicts; pip install lleaves for faster ranking", exc)
        return None
    try:
        model_text = booster.model_to_string()
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        key = _cache_key(model_text)
        library = folder / f"{key}.so"
        with tempfile.TemporaryDirectory(dir=folder, prefix=".compile-") as tmp:
            model_file = Path(tmp) / "model.txt"
            model_file.write_text(model_text)
            model = lleaves.Model(model_file=str(model_file))
            if library.exists():
                model.compile(cache=str(library))
            else:
                partial = Path(tmp) / "model.so"
                model.compile(cache=str(partial))
                os.replace(partial, library)  # atomic: readers see no file or a whole one
        return CompiledTrees(model, library)
    except Exception as exc:  # any failure of an optional speed-up falls back, loudly
        log.warning("compiling the ranker's trees failed (%s: %s): LightGBM predicts", type(exc).__name__, exc)
        return None
