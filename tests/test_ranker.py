import re

import lightgbm as lgb
import numpy as np
import pytest

from features.ranking_frame import prior_scores
from recsys.config import RankerConfig
from recsys.errors import DataValidationError, NotFittedError
from recsys.metrics import auc_per_group
from training.prior_blend import mean_query_ndcg
from training.ranker import TRAIN_CURVE_SEED, LambdaRanker, _valid_only, curve_sample


def _data(n_queries=60, per_query=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n_queries * per_query)
    X = np.column_stack([y + rng.normal(0, 0.3, size=y.size), rng.normal(size=y.size)]).astype(np.float32)
    return X, y, np.full(n_queries, per_query)


def test_predict_before_fit_is_an_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        LambdaRanker(feature_names=("a", "b")).predict(np.zeros((1, 2), dtype=np.float32))


# The ranker without the defaults' prior and slow learning: these tests' features are synthetic.
PLAIN = {"prior_sources": (), "learning_rate": 0.1, "num_leaves": 15, "early_stopping_rounds": 20,
         "early_stopping_min_delta": 0.0}


def test_bad_labels_and_groups_are_rejected_with_observed_values():
    X, y, g = _data()
    ranker = LambdaRanker(feature_names=("signal", "noise"), config=RankerConfig(**PLAIN))
    with pytest.raises(DataValidationError, match=r"labels must be integers in 0..30, got range \[-1"):
        ranker.fit(X, y - 1, g, X_val=X, y_val=y, groups_val=g)
    with pytest.raises(DataValidationError, match="group sizes sum to 599 but there are 600 rows"):
        ranker.fit(X, y, np.append(g[:-1], 9), X_val=X, y_val=y, groups_val=g)
    with pytest.raises(DataValidationError, match=r"expected \(rows, 2\)"):
        ranker.fit(X[:, :1], y, g, X_val=X, y_val=y, groups_val=g)


def test_learns_the_signal_feature_and_round_trips(tmp_path):
    X, y, g = _data()
    Xv, yv, gv = _data(seed=1)
    ranker = LambdaRanker(feature_names=("signal", "noise"), config=RankerConfig(**{**PLAIN, "num_boost_round": 40,
                                                                                   "min_data_in_leaf": 5})).fit(
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
    config = RankerConfig(**{**PLAIN, "num_boost_round": 20, "min_data_in_leaf": 5})
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


def test_zscores_within_each_query_with_unknown_and_constant_scores():
    from features.ranking_frame import zscore_within_query

    query = np.array([0, 0, 0, 1, 1, 2, 2, 0])
    values = np.array([1.0, 2.0, 3.0, 5.0, 5.0, np.nan, 4.0, np.nan])
    z = zscore_within_query(query, values)
    # Unknown stays unknown (NaN); a constant query is 0; a one-value query is constant.
    np.testing.assert_allclose(z, [-np.sqrt(1.5), 0.0, np.sqrt(1.5), 0.0, 0.0, np.nan, 0.0, np.nan], atol=1e-6)


def test_query_ndcg_matches_a_hand_computed_table():
    from training.prior_blend import mean_query_ndcg

    groups = np.array([3, 2, 2])
    scores = np.array([0.9, 0.5, 0.1, 0.2, 0.8, 0.3, 0.4])
    labels = np.array([0, 1, 1, 1, 0, 0, 0])
    # query 0: ranked 0,1,2 -> gains at positions 2 and 3; ideal: positions 1 and 2
    q0 = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    q1 = (1 / np.log2(3)) / 1.0  # the positive is second
    assert mean_query_ndcg(groups, scores, labels, k=10) == pytest.approx((q0 + q1) / 2)  # query 2: no positive
    assert mean_query_ndcg(groups, scores, labels, k=1) == pytest.approx(0.0)


def _blend_data(seed=0, n_queries=200, per_query=20):
    """Two scores whose blend a + 0.4 b decides the labels, and a third that is noise."""
    rng = np.random.default_rng(seed)
    a, b, noise = rng.normal(size=(3, n_queries * per_query))
    truth = a + 0.4 * b
    query = np.repeat(np.arange(n_queries), per_query)
    labels = np.zeros(truth.size, dtype=np.int64)
    for q in range(n_queries):  # the 3 best of each query are the positives
        rows = np.flatnonzero(query == q)
        labels[rows[np.argsort(-truth[rows])[:3]]] = 1
    X = np.column_stack([a, b, noise]).astype(np.float32)
    return X, labels, np.full(n_queries, per_query)


def test_the_prior_weights_recover_the_blend_that_decides_the_labels():
    from training.prior_blend import fit_prior_weights

    X, y, g = _blend_data()
    columns = ("item_item_score_query_z", "als_score_query_z", "bpr_score_query_z")
    weights = fit_prior_weights(X, y, g, ("item_item_score", "als_score", "bpr_score"), columns, k=3)
    assert weights["item_item_score"] == 1.0
    assert 0.3 <= weights["als_score"] <= 0.6
    assert weights["bpr_score"] <= 0.1


def test_a_ranker_with_a_prior_adds_its_trees_to_the_fitted_blend(tmp_path):
    names = ("item_item_score_query_z", "als_score_query_z", "bpr_score_query_z")
    X, y, g = _blend_data()
    Xv, yv, gv = _blend_data(seed=1)
    config = RankerConfig(num_boost_round=30, min_data_in_leaf=5,
                          prior_sources=("item_item_score", "als_score", "bpr_score"))
    ranker = LambdaRanker(feature_names=names, config=config).fit(X, y, g, X_val=Xv, y_val=yv, groups_val=gv)
    assert ranker.prior_weights["item_item_score"] == 1.0 and ranker.prior_weights["als_score"] > 0.2
    blend = sum(w * Xv[:, names.index(f"{s}_query_z")] for s, w in ranker.prior_weights.items())
    trees = ranker.booster.predict(Xv, num_iteration=ranker.best_iteration)
    np.testing.assert_allclose(ranker.predict(Xv), trees + blend, rtol=1e-5, atol=1e-5)
    ranker.save(tmp_path / "ranker.txt")
    np.testing.assert_allclose(LambdaRanker.load(tmp_path / "ranker.txt").predict(Xv), ranker.predict(Xv), rtol=1e-6)
    ablation = LambdaRanker(feature_names=names, config=config)
    ablation.fit_dataset(ablation.dataset(X, y, g, X_val=Xv, y_val=yv, groups_val=gv),
                         unused_features=("als_score_query_z",))
    assert set(ablation.prior_weights) == {"item_item_score", "bpr_score"}
    missing = r"prior_sources need the features \['als_score_query_z', 'bpr_score_query_z'\]"
    with pytest.raises(DataValidationError, match=missing):
        LambdaRanker(feature_names=("item_item_score_query_z", "x", "y"), config=config).fit(
            X, y, g, X_val=Xv, y_val=yv, groups_val=gv)


def _leaf_values(ranker: LambdaRanker) -> list[float]:
    leaves = []

    def walk(node):
        if "leaf_value" in node:
            leaves.append(node["leaf_value"])
        else:
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in ranker.booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return leaves


def test_max_delta_step_caps_the_first_trees_steps_away_from_the_prior():
    """From a prior that already orders the queries, LambdaRank's hessians are near zero and a
    leaf's Newton step is large; max_delta_step caps each leaf at max_delta_step x learning_rate,
    so the first tree moves the blend less and keeps more of its order."""
    from training.prior_blend import mean_query_ndcg

    names = ("item_item_score_query_z", "als_score_query_z", "bpr_score_query_z")
    X, y, g = _blend_data()
    Xv, yv, gv = _blend_data(seed=1)
    fitted = {}
    for cap in (0.0, 0.1):
        config = RankerConfig(num_boost_round=1, early_stopping_rounds=1, min_data_in_leaf=5, learning_rate=0.1,
                              num_leaves=6, prior_sources=("item_item_score", "als_score", "bpr_score"),
                              max_delta_step=cap)
        fitted[cap] = LambdaRanker(feature_names=names, config=config).fit(X, y, g, X_val=Xv, y_val=yv,
                                                                         groups_val=gv)
    assert max(abs(v) for v in _leaf_values(fitted[0.1])) <= 0.1 * 0.1 + 1e-9
    assert max(abs(v) for v in _leaf_values(fitted[0.0])) > 0.05  # uncapped, the same tree steps further
    ndcg = {cap: mean_query_ndcg(gv, ranker.predict(Xv), yv, 10) for cap, ranker in fitted.items()}
    assert ndcg[0.1] > ndcg[0.0]


def test_a_negative_max_delta_step_is_refused():
    from recsys.config import PipelineConfig
    from recsys.errors import ConfigError

    for bad in (-0.5, "0.3", True):
        with pytest.raises(ConfigError, match=r"ranker.max_delta_step must be a number, 0 \(no cap\) or positive, "
                                              rf"got {re.escape(repr(bad))}"):
            PipelineConfig.from_dict({"ranker": {"max_delta_step": bad}})
    assert PipelineConfig.from_dict({"ranker": {"max_delta_step": 0.3}}).ranker.max_delta_step == 0.3


def test_prior_sources_must_be_stage_one_scores_and_json_lists_become_tuples():
    from recsys.config import PipelineConfig
    from recsys.errors import ConfigError

    config = PipelineConfig.from_dict({"ranker": {"prior_sources": ["item_item_score", "als_score"]}})
    assert config.ranker.prior_sources == ("item_item_score", "als_score")
    with pytest.raises(ConfigError, match=r"ranker.prior_sources \['item_pop_all'\] are not stage-1 scores"):
        PipelineConfig.from_dict({"ranker": {"prior_sources": ["item_item_score", "item_pop_all"]}})


def test_a_saved_bundle_keeps_its_prior_and_scores_booster_plus_blend(small_bundle, tmp_path):
    from dataclasses import replace

    from features.bundle import RankingBundle
    from features.ranking_frame import feature_matrix

    weights = {"item_item_score": 1.0, "als_score": 0.5}
    bundle = replace(small_bundle, prior_weights=weights)
    user_idx = np.arange(5, dtype=np.int32)
    candidates, arrays = bundle.candidate_features(user_idx)
    matrix = feature_matrix(arrays, bundle.feature_columns)
    blend = np.nan_to_num(arrays["item_item_score_query_z"]) + 0.5 * np.nan_to_num(arrays["als_score_query_z"])
    np.testing.assert_allclose(bundle.score(arrays), bundle.booster.predict(matrix) + blend, rtol=1e-5, atol=1e-5)
    loaded = RankingBundle.load(bundle.save(tmp_path / "bundle"))
    assert loaded.prior_weights == weights
    np.testing.assert_allclose(loaded.score_features(candidates, arrays)["score"].to_numpy(), bundle.score(arrays),
                               rtol=1e-6)


def test_the_listwise_objective_learns_the_signal_and_an_unknown_objective_is_refused():
    from recsys.config import PipelineConfig
    from recsys.errors import ConfigError

    X, y, g = _data()
    Xv, yv, gv = _data(seed=1)
    config = RankerConfig(**{**PLAIN, "num_boost_round": 40, "min_data_in_leaf": 5, "objective": "rank_xendcg"})
    ranker = LambdaRanker(feature_names=("signal", "noise"), config=config).fit(X, y, g, X_val=Xv, y_val=yv,
                                                                                groups_val=gv)
    assert "objective=rank_xendcg" in ranker.booster.model_to_string()
    assert auc_per_group(ranker.predict(Xv), yv, np.repeat(np.arange(len(gv)), gv)) > 0.9
    refused = r"ranker.objective must be one of \('lambdarank', 'rank_xendcg'\), got 'ndcg'"
    with pytest.raises(ConfigError, match=refused):
        PipelineConfig.from_dict({"ranker": {"objective": "ndcg"}})



def test_the_training_curve_sample_takes_whole_queries_seeded():
    g = np.array([3, 5, 2, 4, 6, 1, 7])
    rows, sizes = curve_sample(g, 3, seed=0)
    starts = np.r_[0, np.cumsum(g)[:-1]]
    picked = np.unique(np.repeat(np.arange(len(g)), g)[rows])
    assert len(picked) == 3
    np.testing.assert_array_equal(sizes, g[picked])
    np.testing.assert_array_equal(rows, np.concatenate([np.arange(starts[q], starts[q] + g[q]) for q in picked]))
    np.testing.assert_array_equal(curve_sample(g, 3, seed=0)[0], rows)
    assert any(not np.array_equal(curve_sample(g, 3, seed=s)[0], rows) for s in range(1, 6))
    assert curve_sample(g, 7, seed=0) is None and curve_sample(g, 9, seed=0) is None
    with pytest.raises(ValueError, match="needs at least 1 query, got 0"):
        curve_sample(g, 0, seed=0)


def test_the_sampled_training_curve_leaves_the_model_as_the_whole_training_set_did(monkeypatch):
    X, y, g = _data(n_queries=120)
    Xv, yv, gv = _data(n_queries=20, seed=1)
    config = RankerConfig(**{**PLAIN, "num_boost_round": 200, "min_data_in_leaf": 5})
    names = ("signal", "noise")
    sampled = LambdaRanker(feature_names=names, config=config)
    data = sampled.dataset(X, y, g, X_val=Xv, y_val=yv, groups_val=gv)
    assert len(data.curve_rows) == 20 * 10 and data.curve_queries == 20  # as many queries as validation has
    sampled.fit_dataset(data)
    valid = sampled.evals["valid"]["ndcg@10"]
    assert len(valid) < 200  # early stopping ended it ...
    assert sampled.best_iteration == int(np.argmax(valid)) + 1  # ... on the validation curve
    no_curve = LambdaRanker(feature_names=names, config=config)
    no_curve.fit_dataset(no_curve.dataset(X, y, g, X_val=Xv, y_val=yv, groups_val=gv, curve_queries=0))
    assert set(no_curve.evals) == {"valid"}
    # Before the sample: the whole training set as a validation set, LightGBM's early stopping unwrapped.
    monkeypatch.setattr("training.ranker._valid_only", lambda callback: callback)
    whole = LambdaRanker(feature_names=names, config=config)
    whole_data = whole.dataset(X, y, g, X_val=Xv, y_val=yv, groups_val=gv, curve_queries=len(g))
    assert whole_data.curve_rows is None and whole_data.curve is whole_data.train
    whole.fit_dataset(whole_data)
    for other in (whole, no_curve):
        assert sampled.booster.model_to_string() == other.booster.model_to_string()
        assert sampled.evals["valid"] == other.evals["valid"]
    curve, whole_curve = sampled.evals["train"]["ndcg@10"], whole.evals["train"]["ndcg@10"]
    assert len(curve) == len(whole_curve) == len(valid)
    assert curve != whole_curve  # another set of queries
    with pytest.raises(ValueError, match="curve_queries must be 0 \\(no training curve\\) or more, got -1"):
        whole.dataset(X, y, g, X_val=Xv, y_val=yv, groups_val=gv, curve_queries=-1)


def test_early_stopping_reads_the_validation_results_only():
    def rounds(callback, n=12):
        for i in range(n):  # the training curve flat from the start, validation rising every round
            callback(lgb.callback.CallbackEnv(
                model=None, params={}, iteration=i, begin_iteration=0, end_iteration=100,
                evaluation_result_list=[lgb.EvalResult("train", "ndcg@10", 0.9, True),
                                        lgb.EvalResult("valid", "ndcg@10", 0.1 + 0.01 * i, True)]))

    with pytest.raises(lgb.callback.EarlyStopException):  # unwrapped, the flat training curve stops it
        rounds(lgb.early_stopping(5, verbose=False))
    watched = _valid_only(lgb.early_stopping(5, verbose=False))
    rounds(watched)  # wrapped, it goes on while validation rises
    assert watched.order == 30 and watched.before_iteration is False


def test_the_sampled_training_curve_starts_from_the_prior_as_training_does():
    names = ("item_item_score_query_z", "als_score_query_z", "bpr_score_query_z")
    X, y, g = _blend_data()
    Xv, yv, gv = _blend_data(seed=1, n_queries=40)
    config = RankerConfig(num_boost_round=30, min_data_in_leaf=5,
                          prior_sources=("item_item_score", "als_score", "bpr_score"))
    ranker = LambdaRanker(feature_names=names, config=config, seed=3)
    data = ranker.dataset(X, y, g, X_val=Xv, y_val=yv, groups_val=gv)
    ranker.fit_dataset(data)
    rows, sizes = curve_sample(g, len(gv), 3 + TRAIN_CURVE_SEED)
    np.testing.assert_array_equal(rows, data.curve_rows)
    best = ranker.best_iteration
    trees = ranker.booster.predict(X[rows], num_iteration=best, raw_score=True)
    start = prior_scores(X[rows], ranker.prior_weights, names)
    curve = ranker.evals["train"]["ndcg@10"][best - 1]
    assert mean_query_ndcg(sizes, trees + start, y[rows], 10) == pytest.approx(curve, abs=1e-9)
    assert mean_query_ndcg(sizes, trees, y[rows], 10) != pytest.approx(curve, abs=1e-4)  # trees alone: another curve


def test_the_threads_reach_lightgbm_and_the_trees_do_not_depend_on_them():
    """A fit on one thread and on two give the same model, split for split, leaf for leaf (the
    variants' concurrent fits rely on it)."""
    rng = np.random.default_rng(5)
    n_queries, per_query = 400, 25
    y = rng.integers(0, 3, size=n_queries * per_query)
    X = np.column_stack([y * w + rng.normal(0, 1.0, size=y.size) for w in (0.8, 0.5, 0.3, 0.1, 0.0, 0.0)])
    X = X.astype(np.float32)
    groups = np.full(n_queries, per_query)
    config = RankerConfig(**{**PLAIN, "num_boost_round": 25, "feature_fraction": 0.8})
    names = tuple(f"f{i}" for i in range(X.shape[1]))
    texts = {}
    for threads in (1, 2):
        ranker = LambdaRanker(feature_names=names, config=config, seed=3, threads=threads)
        ranker.fit(X[:7500], y[:7500], groups[:300], X_val=X[7500:], y_val=y[7500:], groups_val=groups[300:])
        assert f"[num_threads: {threads}]" in ranker.booster.model_to_string()
        texts[threads] = ranker.model_text()
    assert texts[1].count("Tree=") >= 10  # a model with trees to differ in, not a stump
    assert texts[1] == texts[2]


def test_a_fit_asked_to_stop_ends_after_the_round_it_is_in():
    from recsys.errors import FitStopped

    X, y, g = _data()
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) >= 3

    ranker = LambdaRanker(feature_names=("signal", "noise"), config=RankerConfig(**{**PLAIN, "num_boost_round": 40}))
    sets = ranker.dataset(X, y, g, X_val=X, y_val=y, groups_val=g)
    with pytest.raises(FitStopped, match="stopped after round 3"):
        ranker.fit_dataset(sets, should_stop=should_stop)
    assert ranker.booster is None  # a stopped fit leaves no model behind


def test_a_thread_count_below_one_is_refused():
    with pytest.raises(ValueError, match="threads must be at least 1"):
        LambdaRanker(feature_names=("a",), threads=0)
