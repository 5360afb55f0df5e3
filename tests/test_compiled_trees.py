"""Compiled ranker trees: LightGBM's scores and top-k, built once per model, LightGBM as fallback."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import numpy as np
import pytest

from features import compiled_trees
from features.bundle import head_k


def _users(bundle, n: int = 60) -> np.ndarray:
    return np.arange(min(n, bundle.state.n_users), dtype=np.int32)


def test_compiled_scores_and_top_k_equal_lightgbms(small_bundle):
    pytest.importorskip("lleaves")
    compiled = replace(small_bundle, _compiled=None, _compile_tried=False)
    interpreted = replace(small_bundle, use_compiled_trees=False, _compiled=None, _compile_tried=False)
    assert compiled.compiled_trees() is not None
    candidates, arrays = compiled.candidate_features(_users(compiled))
    assert candidates.height > 1000
    np.testing.assert_allclose(compiled.score(arrays), interpreted.score(arrays), rtol=0, atol=1e-5)
    # The served lists: every user's top 10, item for item.
    top = lambda bundle: head_k(bundle.score_candidates(_users(bundle)), 10, seed=0)  # noqa: E731
    assert top(compiled).select("query_idx", "item_idx").equals(top(interpreted).select("query_idx", "item_idx"))


def test_a_model_is_compiled_once_and_then_loaded_from_the_cache(small_bundle, tmp_path, monkeypatch):
    pytest.importorskip("lleaves")
    monkeypatch.setenv(compiled_trees.CACHE_ENV, str(tmp_path))
    first = compiled_trees.compile_trees(small_bundle.booster)
    files = sorted((tmp_path / "compiled-trees").iterdir())
    assert [f.name for f in files] == [first.path.name] and first.path.suffix == ".so"
    stamp = first.path.stat().st_mtime_ns
    second = compiled_trees.compile_trees(small_bundle.booster)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert sorted((tmp_path / "compiled-trees").iterdir()) == files  # no temporary file left behind
    X = np.random.default_rng(0).normal(size=(50, small_bundle.booster.num_feature()))
    np.testing.assert_array_equal(first.predict(X, 1), second.predict(X, 1))


def test_without_lleaves_or_when_turned_off_lightgbm_predicts(small_bundle, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "lleaves", None)  # import lleaves raises ImportError
    with caplog.at_level(logging.WARNING, logger="features.compiled_trees"):
        assert compiled_trees.compile_trees(small_bundle.booster) is None
    assert "compiled trees off" in caplog.text and "pip install lleaves" in caplog.text
    bundle = replace(small_bundle, _compiled=None, _compile_tried=False)
    _, arrays = bundle.candidate_features(_users(bundle, 10))
    np.testing.assert_array_equal(bundle.score(arrays), replace(bundle, use_compiled_trees=False).score(arrays))
    monkeypatch.delitem(sys.modules, "lleaves")
    monkeypatch.setenv(compiled_trees.ENABLE_ENV, "0")
    assert not compiled_trees.enabled() and compiled_trees.compile_trees(small_bundle.booster) is None
