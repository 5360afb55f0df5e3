"""The fold ensemble of rankers (ranker.folds > 1): its folds, its averaged model, its config."""

import numpy as np
import polars as pl
import pytest

from features.ranking_frame import FEATURE_COLUMNS, feature_matrix, group_sizes
from recsys.config import PipelineConfig
from recsys.errors import ConfigError, DataValidationError
from tests.conftest import tiny_config_dict
from training.ranker import LambdaRanker
from training.ranker_folds import averaged_booster, fit_fold_ensemble, fold_frames, folds_from_data, user_folds


def _frame(n_users=40, per_query=12, seed=0) -> pl.DataFrame:
    """One query per user (user i = query i); als_score carries the label, the rest is noise."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n_users * per_query) < 0.25).astype(np.int8)
    label[::per_query] = 1
    label[1::per_query] = 0
    columns = {name: rng.normal(size=label.size).astype(np.float32) for name in FEATURE_COLUMNS}
    columns["als_score"] = (label + rng.normal(0, 0.7, size=label.size)).astype(np.float32)
    query = np.repeat(np.arange(n_users, dtype=np.int32), per_query)
    return pl.DataFrame({"query_idx": query, "user_idx": query * 3 + 1, "item_idx": np.arange(label.size) % 97,
                         "label": label, **columns})


def _config(folds: int) -> PipelineConfig:
    config = tiny_config_dict()
    config["ranker"] = {**config.get("ranker", {}), "folds": folds, "num_boost_round": 30, "learning_rate": 0.2,
                        "num_leaves": 4, "min_data_in_leaf": 5, "early_stopping_rounds": 5, "prior_sources": []}
    return PipelineConfig.from_dict(config)


def test_a_users_fold_is_a_seeded_function_of_that_user_alone():
    users = np.arange(10, 1010)
    folds = user_folds(users, 5, seed=3)
    assert set(folds.tolist()) == {0, 1, 2, 3, 4}
    assert np.bincount(folds).min() > 150  # 200 expected per fold
    subset = users[::7]
    np.testing.assert_array_equal(user_folds(subset, 5, seed=3), folds[::7])  # other users change nothing
    assert (user_folds(users, 5, seed=4) != folds).mean() > 0.5


def test_each_fold_stops_early_on_its_own_users_and_fits_on_all_the_others():
    frame = _frame()
    parts = fold_frames(frame, 4, seed=0)
    stop_users = [set(stop["user_idx"].to_list()) for _, stop in parts]
    assert set().union(*stop_users) == set(frame["user_idx"].to_list())
    assert sum(len(u) for u in stop_users) == frame["user_idx"].n_unique()  # disjoint
    for (fit, stop), users in zip(parts, stop_users, strict=True):
        assert set(fit["user_idx"].to_list()).isdisjoint(users)
        assert fit.height + stop.height == frame.height
        assert fit["query_idx"].is_sorted() and stop["query_idx"].is_sorted()  # queries stay contiguous
    few = frame.filter(pl.col("query_idx") < 3)
    with pytest.raises(DataValidationError, match=r"ranker.folds=5: the 3 training label users leave a fold empty "
                                                  r"\(users per fold: \[.*\]\); lower ranker.folds"):
        fold_frames(few, 5, seed=0)


def test_the_averaged_model_scores_the_mean_of_its_members():
    frame = _frame()
    ranker, members = fit_fold_ensemble(frame, _config(3), seed=0, eval_at=(5,))
    X = frame.select(FEATURE_COLUMNS).to_numpy().astype(np.float32)
    X[::7, 0] = np.nan
    mean = np.mean([m.booster.predict(X, num_iteration=m.best_iteration) for m in members], axis=0)
    np.testing.assert_allclose(ranker.booster.predict(X), mean, atol=1e-9)
    assert ranker.best_iteration == sum(m.best_iteration for m in members)
    assert all(set(m.evals) == {"valid"} for m in members)  # no member measures a training curve nobody logs
    first = members[0].booster.predict(X)
    assert all(not np.allclose(first, m.booster.predict(X)) for m in members[1:])  # each learnt other rows


def test_a_saved_averaged_model_loads_and_scores_the_same(tmp_path):
    frame = _frame(seed=1)
    ranker, _ = fit_fold_ensemble(frame, _config(2), seed=0, eval_at=(5,))
    ranker.save(tmp_path / "ranker.txt")
    X = frame.select(FEATURE_COLUMNS).to_numpy().astype(np.float32)
    np.testing.assert_allclose(LambdaRanker.load(tmp_path / "ranker.txt").predict(X), ranker.predict(X), rtol=1e-6)


def test_averaging_one_booster_is_that_booster_and_none_is_an_error():
    frame = _frame(seed=2)
    ranker, members = fit_fold_ensemble(frame, _config(2), seed=0, eval_at=(5,))
    X = frame.select(FEATURE_COLUMNS).to_numpy().astype(np.float32)
    np.testing.assert_allclose(averaged_booster([members[0].booster]).predict(X), members[0].booster.predict(X),
                               atol=1e-12)
    with pytest.raises(ValueError, match="at least one booster"):
        averaged_booster([])


@pytest.mark.parametrize("folds", [-1, 11])
def test_folds_outside_zero_to_ten_are_refused(folds):
    with pytest.raises(ConfigError, match=rf"ranker.folds must be 0..10 \(0 = from the data, 1 = one early-stopped "
                                          rf"model\), got {folds}"):
        _config(folds)


def test_folds_from_the_data_go_by_the_users_the_ranker_learns_from():
    assert [folds_from_data(0, n) for n in (0, 199, 200, 802, 1499, 1500, 50_000)] == [1, 1, 5, 5, 5, 1, 1]
    assert [folds_from_data(3, n) for n in (10, 802, 50_000)] == [3, 3, 3]  # a set value is kept
    assert PipelineConfig().ranker.folds == 0


@pytest.mark.parametrize(("n_label_users", "held", "members"), [(230, 30, 5), (230, 31, 1), (200, 1, 1)])
def test_fit_rankers_takes_the_folds_from_the_label_users_outside_the_held_out_ones(n_label_users, held, members):
    """The count goes by the label users, not by the frames: these hold fewer users, and not the
    same ones (a variant's or a tune trial's candidates drop different queries)."""
    import training.variants as variants

    label_users = np.arange(n_label_users, dtype=np.int32) * 3 + 1  # _frame's user_idx of queries 0..n-1
    held_out = label_users[:held]
    logged = {}
    rankers = variants.fit_rankers({variants.NO_TEXT: _frame(n_users=150, per_query=4),
                                    variants.PRETRAINED: _frame(n_users=120, per_query=4, seed=1)},
                                   held_out, _config(0), label_users=label_users,
                                   log_metric=lambda key, value, step: logged.setdefault(key, value))
    assert logged["ranker/folds"] == members
    assert {name: r.members for name, r in rankers.items()} == {variants.NO_TEXT: members,
                                                               variants.PRETRAINED: members}
    assert ("ranker/no_text/fold1_trees" in logged) == (members > 1)


def test_the_pipeline_fits_fold_members_without_the_held_out_validation_users(monkeypatch):
    import training.variants as variants

    frame = _frame(n_users=30)
    held_out = np.array([1, 4, 31], dtype=np.int32)  # user_idx = 3 * query + 1: queries 0, 1, 10
    seen = {}

    def record(train, config, **kwargs):
        seen["users"] = set(train["user_idx"].to_list())
        return fit_fold_ensemble(train, config, **kwargs)

    monkeypatch.setattr(variants, "fit_fold_ensemble", record)
    logged = {}
    rankers = variants.fit_rankers({variants.NO_TEXT: frame}, held_out, _config(3),
                                   log_metric=lambda key, value, step: logged.setdefault(key, value),
                                   label_users=np.unique(frame["user_idx"].to_numpy()))
    assert seen["users"] == set(frame["user_idx"].to_list()) - set(held_out.tolist())
    trees = rankers[variants.NO_TEXT].booster.num_trees()
    assert rankers[variants.NO_TEXT].best_iteration == trees
    assert logged["ranker/no_text/trees"] == trees == sum(logged[f"ranker/no_text/fold{k}_trees"] for k in (1, 2, 3))
    assert all(0 < logged[f"ranker/no_text/fold{k}_valid_ndcg_at_10"] <= 1 for k in (1, 2, 3))


def _seeds_config(seeds: int, folds: int = 1, **ranker) -> PipelineConfig:
    config = tiny_config_dict()
    config["ranker"] = {**config.get("ranker", {}), "folds": folds, "seeds": seeds, "num_boost_round": 30,
                        "learning_rate": 0.2, "num_leaves": 4, "min_data_in_leaf": 5, "early_stopping_rounds": 5,
                        "prior_sources": [], "feature_fraction": 0.5, **ranker}
    return PipelineConfig.from_dict(config)


@pytest.mark.parametrize("prior", [[], ["als_score", "bpr_score"]])
def test_a_seed_ensemble_averages_fits_that_differ_by_their_seed_alone(prior):
    import training.variants as variants

    frame = _frame(n_users=60)
    label_users = np.unique(frame["user_idx"].to_numpy())
    held_out = label_users[::4]
    logged = {}
    config = _seeds_config(3, prior_sources=prior, max_delta_step=1.0)
    ranker = variants.fit_rankers({variants.NO_TEXT: frame}, held_out, config, label_users=label_users,
                                  log_metric=lambda key, value, step: logged.setdefault((key, step), value)
                                  )[variants.NO_TEXT]
    single = variants.fit_rankers({variants.NO_TEXT: frame}, held_out, _seeds_config(1, prior_sources=prior,
                                                                                      max_delta_step=1.0),
                                  label_users=label_users)[variants.NO_TEXT]
    assert ranker.members == 3 and single.members == 1
    X = frame.select(FEATURE_COLUMNS).to_numpy().astype(np.float32)
    # Member i is the one-fit ranker with LightGBM seed config.seed + i, on the same rows.
    train, val = variants.split_by_users(frame, held_out)
    unused = tuple(c for c in variants.no_text_columns() if c in FEATURE_COLUMNS)
    members = []
    for i in range(3):
        member = LambdaRanker(feature_names=FEATURE_COLUMNS, config=config.ranker, seed=config.seed + i)
        sets = member.dataset(feature_matrix(train), train["label"].to_numpy(), group_sizes(train),
                              X_val=feature_matrix(val), y_val=val["label"].to_numpy(), groups_val=group_sizes(val))
        members.append(member.fit_dataset(sets, unused_features=unused, eval_at=(10,)))
    assert members[0].model_text() == single.model_text()  # seeds 1 is member 1, tree for tree
    assert single.members == 1
    scores = [m.predict(X) for m in members]  # each with the prior, when there is one
    assert not np.allclose(scores[0], scores[1]) and not np.allclose(scores[1], scores[2])
    np.testing.assert_allclose(ranker.predict(X), np.mean(scores, axis=0), atol=1e-5)
    assert ranker.prior_weights == members[0].prior_weights == single.prior_weights
    assert bool(ranker.prior_weights) == bool(prior)
    assert logged[("ranker/no_text/trees", 0)] == ranker.best_iteration == sum(m.best_iteration for m in members)
    assert [logged[(f"ranker/no_text/seed{k}_trees", 0)] for k in (1, 2, 3)] == [m.best_iteration for m in members]
    assert [logged[(f"ranker/no_text/seed{k}_valid_ndcg_at_10", 0)] for k in (1, 2, 3)] == [
        m.evals["valid"]["ndcg@10"][m.best_iteration - 1] for m in members]
    curve = members[0].evals["valid"]["ndcg@10"]  # the logged curve is the first member's
    assert [logged[("ranker/no_text/valid_ndcg_at_10", step)] for step in range(1, len(curve) + 1)] == curve


@pytest.mark.parametrize("seeds", [0, 11, True, 2.0])
def test_seeds_outside_one_to_ten_are_refused(seeds):
    with pytest.raises(ConfigError, match=rf"ranker.seeds must be a whole number 1..10 \(1 = one fit\), got {seeds!r}"):
        _seeds_config(seeds)


def test_seeds_need_columns_to_draw():
    with pytest.raises(ConfigError, match=r"ranker.seeds=3 needs ranker.feature_fraction below 1: the seed draws "
                                          r"each tree's columns, and with every column \(1.0\) the members are the "
                                          r"same fit"):
        _seeds_config(3, feature_fraction=1.0)
    assert _seeds_config(1, feature_fraction=1.0).ranker.seeds == 1


@pytest.mark.parametrize("folds", [0, 3])
def test_seeds_need_one_fold(folds):
    with pytest.raises(ConfigError, match=r"ranker.seeds=2 averages fits on the same users and needs ranker.folds 1 "
                                          rf"\(a fold ensemble averages fits on other users\), "
                                          rf"got ranker.folds={folds}"):
        _seeds_config(2, folds=folds)
    assert PipelineConfig().ranker.seeds == 1
