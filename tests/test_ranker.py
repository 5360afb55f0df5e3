import numpy as np
import pytest

from recsys.config import RankerConfig
from recsys.errors import DataValidationError, NotFittedError
from recsys.metrics import auc_per_group
from training.ranker import LambdaRanker


def _data(n_queries=60, per_query=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n_queries * per_query)
    X = np.column_stack([y + rng.normal(0, 0.3, size=y.size), rng.normal(size=y.size)]).astype(np.float32)
    return X, y, np.full(n_queries, per_query)


def test_predict_before_fit_is_an_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        LambdaRanker(feature_names=("a", "b")).predict(np.zeros((1, 2), dtype=np.float32))


def test_bad_labels_and_groups_are_rejected_with_observed_values():
    X, y, g = _data()
    ranker = LambdaRanker(feature_names=("signal", "noise"))
    with pytest.raises(DataValidationError, match=r"labels must be integers in 0..30, got range \[-1"):
        ranker.fit(X, y - 1, g, X_val=X, y_val=y, groups_val=g)
    with pytest.raises(DataValidationError, match="group sizes sum to 599 but there are 600 rows"):
        ranker.fit(X, y, np.append(g[:-1], 9), X_val=X, y_val=y, groups_val=g)
    with pytest.raises(DataValidationError, match=r"expected \(rows, 2\)"):
        ranker.fit(X[:, :1], y, g, X_val=X, y_val=y, groups_val=g)


def test_learns_the_signal_feature_and_round_trips(tmp_path):
    X, y, g = _data()
    Xv, yv, gv = _data(seed=1)
    ranker = LambdaRanker(feature_names=("signal", "noise"), config=RankerConfig(num_boost_round=40,
                                                                                min_data_in_leaf=5)).fit(
        X, y, g, X_val=Xv, y_val=yv, groups_val=gv)
    scores = ranker.predict(Xv)
    groups = np.repeat(np.arange(len(gv)), gv)
    assert auc_per_group(scores, yv, groups) > 0.9
    importance = ranker.feature_importance()
    assert importance["signal"] > 10 * importance["noise"]
    ranker.save(tmp_path / "ranker.txt")
    loaded = LambdaRanker.load(tmp_path / "ranker.txt")
    assert loaded.feature_names == ("signal", "noise")
    np.testing.assert_allclose(loaded.predict(Xv), scores, rtol=1e-6)


def test_unused_features_are_never_split_on_and_the_sets_are_binned_once():
    X, y, g = _data()
    Xv, yv, gv = _data(seed=1)
    config = RankerConfig(num_boost_round=20, early_stopping_rounds=20, min_data_in_leaf=5)
    full = LambdaRanker(feature_names=("signal", "noise"), config=config)
    data = full.dataset(X, y, g, X_val=Xv, y_val=yv, groups_val=gv)
    full.fit_dataset(data)
    binned = data.train._handle.value  # LightGBM keeps the constructed (binned) set behind this handle
    ablation = LambdaRanker(feature_names=("signal", "noise"), config=config).fit_dataset(
        data, unused_features=("signal",))
    assert data.train._handle.value == binned  # the second fit reused it instead of binning again
    assert ablation.feature_importance()["signal"] == 0.0
    assert full.feature_importance()["signal"] > 0.0
    shuffled = Xv.copy()
    shuffled[:, 0] = np.random.default_rng(2).permutation(shuffled[:, 0])
    np.testing.assert_array_equal(ablation.predict(shuffled), ablation.predict(Xv))
    with pytest.raises(DataValidationError, match=r"unused_features \['text'\] are not features"):
        ablation.fit_dataset(data, unused_features=("text",))
