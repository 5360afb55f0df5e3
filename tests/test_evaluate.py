"""Evaluation at scale: user sampling for the ranker's labels and the test metrics, and one
candidate set scored by every ranker that shares a state."""

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from features.bundle import RankingBundle, head_k
from features.sasrec import SASRecSettings, fit_sasrec
from features.state import with_indices
from recsys.config import PipelineConfig
from recsys.demo_data import DemoSpec, generate_demo
from recsys.errors import ConfigError
from recsys.split import split_interactions
from tests.conftest import tiny_config_dict
from training import evaluate
from training.evaluate import evaluate_all, rank_in_chunks, sample_users, topk_array
from training.variants import label_users, labelled_frame


@pytest.fixture(scope="module")
def split():
    """The split ``small_bundle`` (conftest) was fitted on: same generator, seed and protocol."""
    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    return split_interactions(data.interactions, kind="temporal", test_fraction=0.25, impressions=data.impressions)


def test_sample_users_keeps_order_and_pairs_each_user_with_its_items():
    users = np.arange(100, 200, dtype=np.int32)
    relevant = [np.array([u, u + 1]) for u in users]
    assert sample_users(users, relevant, 0, seed=1)[0] is users
    assert sample_users(users, relevant, 100, seed=1)[0] is users
    picked, picked_relevant = sample_users(users, relevant, 30, seed=1)
    assert len(picked) == 30 and len(np.unique(picked)) == 30
    assert np.all(np.diff(picked) > 0)
    assert all(r[0] == u for u, r in zip(picked, picked_relevant, strict=True))
    assert np.array_equal(sample_users(users, relevant, 30, seed=1)[0], picked)
    assert not np.array_equal(sample_users(users, relevant, 30, seed=2)[0], picked)


@pytest.mark.parametrize("name", ["ranker_max_users", "eval_max_users"])
def test_negative_user_caps_are_rejected(name):
    with pytest.raises(ConfigError, match=f"{name} must be 0 \\(every user\\) or a positive count, got -1"):
        PipelineConfig.from_dict({**tiny_config_dict(), name: -1})


def test_evaluation_of_a_user_sample_reports_the_sample_and_the_total(small_bundle, split):
    config = replace(small_bundle.config, eval_max_users=15)
    all_users, _ = evaluate.test_relevance(small_bundle.state, split.test)
    assert len(all_users) > 15
    evaluation = evaluate_all({"ranker": small_bundle}, split, config)
    assert evaluation.n_users_total == len(all_users)
    assert len(evaluation.user_idx) == 15 and set(evaluation.user_idx) <= set(all_users)
    assert evaluation.metrics["ranker"]["n_users"] == 15
    assert evaluation.metrics["popularity"]["n_users"] == 15
    assert evaluation.ranked["als"].shape == (15, config.k)
    # The impression metrics score a sample of as many users with test impressions.
    shown = with_indices(split.impressions_test, small_bundle.state.users, small_bundle.state.items)
    impression_users = shown.filter(pl.col("user_idx") >= 0)["user_idx"].n_unique()
    assert impression_users > 15
    assert evaluation.metrics["ranker"]["imp_users"] == 15
    whole = evaluate_all({"ranker": small_bundle}, split, replace(config, eval_max_users=0))
    assert len(whole.user_idx) == len(all_users)
    assert whole.metrics["ranker"]["imp_users"] == impression_users


def test_the_ranker_learns_from_at_most_ranker_max_users_label_users(small_bundle, split):
    capped_config = replace(small_bundle.config, ranker_max_users=10)
    whole_config = replace(small_bundle.config, ranker_max_users=0)
    capped_users = label_users(small_bundle.state, split.test, capped_config)
    whole_users = label_users(small_bundle.state, split.test, whole_config)
    assert len(capped_users[0]) == 10 and len(whole_users[0]) > 10
    capped = labelled_frame(small_bundle.state, capped_users, split.impressions_test, capped_config)
    whole = labelled_frame(small_bundle.state, whole_users, split.impressions_test, whole_config)
    assert 0 < capped["user_idx"].n_unique() <= 10
    assert whole["user_idx"].n_unique() > 10
    # Impression queries come from the same sampled users as the candidate queries.
    assert set(capped["user_idx"].unique()) < set(whole["user_idx"].unique())


def test_rankers_sharing_a_state_rank_one_candidate_set_as_each_would_alone(small_bundle, split):
    rng = np.random.default_rng(0)
    columns = list(small_bundle.feature_columns)
    other_booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 7},
                              lgb.Dataset(rng.normal(size=(400, len(columns))), rng.normal(size=400),
                                          feature_name=columns), num_boost_round=10)
    other = RankingBundle(config=small_bundle.config, state=small_bundle.state, booster=other_booster,
                          feature_columns=small_bundle.feature_columns)
    bundles = {"ranker": small_bundle, "other": other}
    users, relevant = evaluate.test_relevance(small_bundle.state, split.test)
    k = 5
    together = rank_in_chunks(bundles, users, relevant, k, keep_scores="ranker", seed=small_bundle.config.seed,
                               chunk_size=7)
    alone = {name: topk_array(head_k(bundle.score_candidates(users), k, seed=bundle.config.seed), len(users), k)
             for name, bundle in bundles.items()}
    assert np.array_equal(together["ranker"][0], alone["ranker"])
    assert np.array_equal(together["other"][0], alone["other"])
    assert not np.array_equal(alone["ranker"], alone["other"])  # the two boosters really differ
    assert together["other"][2] is None and len(together["ranker"][2][0]) > 0
    assert together["ranker"][1] == together["other"][1]  # one candidate set: one candidate recall
    assert pl.Series(together["ranker"][2][1]).is_in([0, 1]).all()


def _part_sizes(n: int, workers: int) -> list[int]:
    from features.rank_workers import part_slices

    return [s.stop - s.start for s in part_slices(n, workers, 1)]


def test_a_chunk_ranked_in_parts_on_threads_gives_the_one_pass_result(small_bundle, split, monkeypatch):
    from features import rank_workers

    users, relevant = evaluate.test_relevance(small_bundle.state, split.test)
    bundles = {"ranker": small_bundle}
    results = {}
    for workers in (1, 3):
        def forced(rank, n_users, *, workers=None, min_part=None, _forced=workers):
            assert workers is None  # the bundle's text rows are a kept table: the chunk may be split
            return rank_workers.map_parts(rank, n_users, workers=_forced, min_part=1)

        monkeypatch.setattr(evaluate, "map_parts", forced)
        calls = []
        score = small_bundle.candidate_features

        def counted(user_idx, *args, _calls=calls, _score=score, **kwargs):
            _calls.append(len(user_idx))
            return _score(user_idx, *args, **kwargs)

        monkeypatch.setattr(small_bundle, "candidate_features", counted)
        results[workers] = rank_in_chunks(bundles, users, relevant, 5, keep_scores="ranker",
                                          seed=small_bundle.config.seed, chunk_size=40)
        monkeypatch.undo()
        chunk_sizes = [min(40, len(users) - first) for first in range(0, len(users), 40)]
        # the parts of a chunk run on threads in any order: compare the sizes, not their order
        assert sorted(calls) == sorted(size for c in chunk_sizes for size in _part_sizes(c, workers))
        assert len(calls) > len(chunk_sizes) if workers > 1 else len(calls) == len(chunk_sizes)
    one, parts = results[1]["ranker"], results[3]["ranker"]
    assert np.array_equal(one[0], parts[0])
    assert (one[0] >= 0).all()
    assert one[1] == pytest.approx(parts[1], rel=1e-12)
    assert np.array_equal(one[2][0], parts[2][0]) and np.array_equal(one[2][1], parts[2][1])


def test_tower_text_rows_computed_per_read_keep_each_chunk_on_one_thread(small_bundle, split, monkeypatch):
    from features.sequence_tower import SequenceTower, SequenceUserVectors, TowerShape
    from features.text_interest import HistoryPooling

    state = small_bundle.state
    n_users, n_items = len(state.users), len(state.items)
    histories = np.random.default_rng(0).integers(-1, n_items, size=(n_users, 4)).astype(np.int32)
    tower = SequenceTower(TowerShape(history_len=4, dim=8, layers=1, heads=1), HistoryPooling.recency(5.0, 384))
    users, relevant = evaluate.test_relevance(state, split.test)
    asked = []

    def spy(rank, n_users, *, workers=None, min_part=None):
        asked.append(workers)
        return [rank(slice(0, n_users))]

    monkeypatch.setattr(evaluate, "map_parts", spy)
    for limit, expected in ((0, 1), (SequenceUserVectors.DENSE_MAX_BYTES, None)):
        monkeypatch.setattr(SequenceUserVectors, "DENSE_MAX_BYTES", limit)
        text = SequenceUserVectors(histories, state.item_vectors, tower)
        bundle = replace(small_bundle, state=replace(state, user_text=text))
        asked.clear()
        rank_in_chunks({"ranker": bundle}, users, relevant, 5, keep_scores="", seed=0, chunk_size=50)
        assert asked and set(asked) == {expected}  # 1: one thread; None: the usable cores


def _reference_percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between the two nearest order statistics (numpy's default quantile)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (position - low) * (sorted_values[high] - sorted_values[low])


def test_paired_lift_and_its_interval_match_a_slow_reference(small_bundle, split):
    from tests.test_metrics import reference_ndcg

    config = small_bundle.config
    k = config.k
    evaluation = evaluate_all({"ranker": small_bundle}, split, config)
    ranker = evaluation.metrics["ranker"]
    baselines = set(evaluation.ranked) - {"ranker"}
    best = max(sorted(baselines), key=lambda name: evaluation.metrics[name][f"ndcg@{k}"])
    assert evaluation.best_baseline == best

    def per_user(name: str) -> list[float]:
        return [reference_ndcg(row, set(rel.tolist()), k)
                for row, rel in zip(evaluation.ranked[name].tolist(), evaluation.relevant, strict=True)]

    diff = [a - b for a, b in zip(per_user("ranker"), per_user(best), strict=True)]
    n = len(diff)
    assert ranker[f"lift_vs_best_baseline/ndcg@{k}"] == pytest.approx(sum(diff) / n, abs=1e-12)
    assert sum(diff) != 0  # the check above is not 0 == 0
    # Paired percentile bootstrap, the slow way: resample users (the same draws as the code: one
    # seeded (1000, n) index matrix), each resample's mean difference, the 2.5% and 97.5% points.
    draws = np.random.default_rng(config.seed).integers(0, n, size=(1000, n)).tolist()
    means = sorted(sum(diff[i] for i in row) / n for row in draws)
    assert ranker[f"lift_vs_best_baseline/ndcg@{k}_ci_low"] == pytest.approx(_reference_percentile(means, 0.025))
    assert ranker[f"lift_vs_best_baseline/ndcg@{k}_ci_high"] == pytest.approx(_reference_percentile(means, 0.975))


def test_impression_metrics_in_chunks_equal_one_pass_and_the_direct_baseline_scores(small_bundle, monkeypatch):
    """The impression metrics score ranking frames in chunks of whole impressions; the ALS, BPR and
    item-to-item baselines come from the baselines' frame. Both give what one pass and the
    baselines' own formulas give."""
    from features.state import with_indices
    from features.ties import tie_keys
    from recsys import metrics

    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    split = split_interactions(data.interactions, kind="temporal", test_fraction=0.25, impressions=data.impressions)
    state = small_bundle.state
    other = replace(small_bundle, state=replace(state))  # a second state object: a second frame per chunk
    bundles = {"ranker": small_bundle, "ranker_other": other}
    whole = evaluate.impression_evaluation(bundles, split.impressions_test, seed=5, state=state)
    monkeypatch.setattr(evaluate, "IMPRESSION_CHUNK_ROWS", 7)
    chunked = evaluate.impression_evaluation(bundles, split.impressions_test, seed=5, state=state)
    assert whole.keys() == chunked.keys() and {"ranker", "ranker_other", "als", "ease", "text"} <= whole.keys()
    for name in whole:
        assert chunked[name] == pytest.approx(whole[name], abs=1e-9), name
    assert whole["ranker"] == whole["ranker_other"]

    shown = (with_indices(split.impressions_test, state.users, state.items).filter(pl.col("user_idx") >= 0)
             .with_columns(pl.col("impression_id").rank("dense").cast(pl.Int32).alias("query_idx") - 1)
             .sort("query_idx"))
    u, i = shown["user_idx"].to_numpy(), shown["item_idx"].to_numpy()
    known = state.pair_has_history(u, i)
    ease = state.item_item.pair_scores(state.history(), u, i)
    direct = {"als": np.where(known, state.als.pair_scores(u, i), np.nan),
              "ease": np.where(known & (ease != 0), ease, np.nan)}
    for name, scores in direct.items():
        expected = metrics.impression_metrics(np.nan_to_num(scores.astype(np.float64), nan=-1e9),
                                              shown["clicked"].to_numpy(), shown["query_idx"].to_numpy(),
                                              tiebreak=tie_keys(5, u, i))
        assert {k: v for k, v in whole[name].items() if k not in ("imp_count", "imp_users")} \
            == pytest.approx(expected), name


def test_impression_metrics_above_max_users_score_every_impression_of_a_seeded_user_sample(small_bundle):
    """Above ``max_users`` the metrics are those of the sampled users' impressions, all of them;
    at or under it, those of every user."""
    from features.state import with_indices
    from recsys import windows

    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    split = split_interactions(data.interactions, kind="temporal", test_fraction=0.25, impressions=data.impressions)
    state = small_bundle.state
    bundles = {"ranker": small_bundle}
    shown = with_indices(split.impressions_test, state.users, state.items).filter(pl.col("user_idx") >= 0)
    known = shown["user_idx"].unique().sort()
    assert len(known) > 20
    whole = evaluate.impression_evaluation(bundles, split.impressions_test, seed=5, state=state)
    assert whole["ranker"]["imp_users"] == len(known)
    assert whole["ranker"]["imp_count"] == shown["impression_id"].n_unique()
    assert evaluate.impression_evaluation(bundles, split.impressions_test, seed=5, state=state,
                                          max_users=len(known), sample_seed=9) == whole

    sampled = evaluate.impression_evaluation(bundles, split.impressions_test, seed=5, state=state, max_users=20,
                                             sample_seed=9)
    picked = known.gather(windows.sample_positions(len(known), 20, 9))
    kept = shown.filter(pl.col("user_idx").is_in(picked.implode()))
    subset = split.impressions_test.filter(pl.col("impression_id").is_in(kept["impression_id"].unique().implode()))
    expected = evaluate.impression_evaluation(bundles, subset, seed=5, state=state)
    assert sampled["ranker"]["imp_users"] == 20
    assert sampled["ranker"]["imp_count"] == kept["impression_id"].n_unique() < whole["ranker"]["imp_count"]
    for name in whole:
        assert sampled[name] == pytest.approx(expected[name], abs=1e-12), name
    assert sampled["ranker"]["imp_auc"] != whole["ranker"]["imp_auc"]


def test_an_evaluated_cosine_state_keeps_the_cooccurrence_baseline_from_its_own_fit(split):
    from features.item_item import COOCCURRENCE_NEIGHBOURS, fit_item_item
    from features.state import fit_feature_state
    from recsys.idmap import IdMap

    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    # 150 items above item_item_max_items: the state's item-to-item model is the plain cosine.
    config = PipelineConfig.from_dict({**tiny_config_dict(), "item_item_max_items": 100, "item_item_neighbours": 3})
    vectors = np.random.default_rng(0).normal(size=(150, 384)).astype(np.float32)
    users = IdMap(kind="user").fit(split.train["user_id"])
    items = IdMap(kind="item").fit(data.items["item_id"])
    fit = {flag: fit_feature_state(catalog=data.items, interactions=split.train, impressions=split.impressions_train,
                                   item_vectors=vectors, users=users, items=items, config=config,
                                   with_cooccurrence=flag) for flag in (False, True)}
    assert fit[False].cooccurrence is None
    state = fit[True]
    separate = fit_item_item(state.seen, kind="cosine", neighbours=COOCCURRENCE_NEIGHBOURS).weights
    assert (state.cooccurrence.weights != separate).nnz == 0
    assert (state.item_item.weights != fit[False].item_item.weights).nnz == 0  # the same 3-neighbour model
    assert np.diff(state.item_item.weights.indptr).max() == 3 < np.diff(separate.indptr).max()
    user_idx = np.arange(40)
    scores = evaluate.baseline_scorers(state, seed=0)["cooccurrence"](user_idx)
    np.testing.assert_array_equal(scores, evaluate.baseline_scorers(fit[False], seed=0)["cooccurrence"](user_idx))
    # The scorer reads the state's model, not a fit of its own: an emptied copy scores nothing.
    silent = replace(state, cooccurrence=replace(state.cooccurrence, weights=state.cooccurrence.weights * 0))
    assert np.isnan(evaluate.baseline_scorers(silent, seed=0)["cooccurrence"](user_idx)).all()


def test_the_transitions_baseline_is_the_states_source_or_fitted_on_the_window_the_state_saw(small_bundle, split):
    from features.state import with_indices
    from features.transitions import fit_sequential_rules

    state = small_bundle.state
    rules = state.sources["transitions"]  # a temporal split: the source is on
    users = np.arange(30)
    # A model no refit on the window would give (every vote doubled): the scorer must read it.
    doubled = replace(state, sources={"transitions": replace(rules, follows=rules.follows * 2)})
    own = evaluate.baseline_scorers(doubled, seed=0, window=split.train)["transitions"](users)
    expected = doubled.sources["transitions"].user_scores(users)
    voted = expected > 0
    assert voted.any()
    np.testing.assert_array_equal(own[voted], expected[voted])
    assert np.isnan(own[~voted]).all()  # no vote: never picked
    without = replace(state, sources={})
    assert "transitions" not in evaluate.baseline_scorers(without, seed=0)  # no window, no order to read
    got = evaluate.baseline_scorers(without, seed=5, window=split.train)["transitions"](users)
    events = with_indices(split.train, state.users, state.items)
    direct = fit_sequential_rules(events, n_users=state.n_users, n_items=state.n_items, seed=5).user_scores(users)
    np.testing.assert_array_equal(np.nan_to_num(got), direct)
    table = evaluate_all({"ranker": small_bundle}, split, replace(small_bundle.config, eval_max_users=0))
    assert "transitions" in table.metrics and table.ranked["transitions"].shape[1] == small_bundle.config.k


def test_the_sasrec_baseline_is_evaluated_only_when_asked(small_bundle, split):
    state = small_bundle.state
    assert "sasrec" not in evaluate.baseline_scorers(state, seed=0, window=split.train)
    scorers = evaluate.baseline_scorers(state, seed=0, window=split.train, sasrec_epochs=1)
    scores = scorers["sasrec"](np.arange(10))
    assert scores.shape == (10, state.n_items) and scores.dtype == np.float32
    # The model fitted on the window with the evaluation's seed and epochs (the fit is seeded).
    events = with_indices(split.train, state.users, state.items).filter(pl.col("user_idx") >= 0)
    direct = fit_sasrec(events, n_users=state.n_users, n_items=state.n_items, seed=0,
                        settings=SASRecSettings(epochs=1), progress=False)
    np.testing.assert_array_equal(scores, direct.user_scores(np.arange(10)))
    assert np.isfinite(scores).any()
    with pytest.raises(ConfigError, match="baseline_sasrec_epochs must be 0 .* got -1"):
        PipelineConfig.from_dict({**tiny_config_dict(), "baseline_sasrec_epochs": -1})


@pytest.mark.parametrize("shipped", ["ranker_no_text", "ranker_pretrained_text", "ranker_finetuned_text"])
def test_each_fine_tuned_text_model_gets_its_paired_lift_over_the_pretrained_one(shipped):
    from recsys import metrics
    from recsys.config import PipelineConfig
    from training.evaluate import _add_intervals

    rng = np.random.default_rng(0)
    n_users, k = 60, 3
    relevant = [np.array([u % 7]) for u in range(n_users)]
    # The shipped variant is listed as "ranker" (as the pipeline names it), the others keep their names.
    table = {name: "ranker" if name == shipped else name for name in
             ("ranker_no_text", "ranker_finetuned_text", "ranker_pretrained_text", "text", "text_pretrained", "als")}
    names = tuple(table.values())
    ranked = {name: rng.integers(0, 7, size=(n_users, k)) for name in names}
    results = {name: {} for name in names}
    _add_intervals(results, ranked, relevant, "als", PipelineConfig(k=k, seed=0), shipped=shipped)
    n_rel = np.ones(n_users, dtype=np.int64)

    def per_user(name):
        return metrics.ndcg_at_k(metrics.hits_matrix(ranked[name], relevant), n_rel)

    draws = np.random.default_rng(0).integers(0, n_users, size=(1000, n_users))
    for tuned, pretrained in (("text", "text_pretrained"),
                              (table["ranker_finetuned_text"], table["ranker_pretrained_text"])):
        diff = per_user(tuned) - per_user(pretrained)
        assert diff.any()
        got = results[tuned]
        assert got[f"lift_vs_pretrained_text/ndcg@{k}"] == pytest.approx(diff.mean(), abs=1e-12)
        means = diff[draws].mean(axis=1)
        assert got[f"lift_vs_pretrained_text/ndcg@{k}_ci_low"] == pytest.approx(np.quantile(means, 0.025))
        assert got[f"lift_vs_pretrained_text/ndcg@{k}_ci_high"] == pytest.approx(np.quantile(means, 0.975))
    others = set(names) - {"text", table["ranker_finetuned_text"]}
    assert not any(key.startswith("lift_vs_pretrained") for name in others for key in results[name])


def test_an_impression_id_shared_by_several_users_is_one_query_per_user(small_bundle):
    """Rows of one impression id from two users are two queries (as if each user had their own
    id), so a user sample keeps every query it touches whole."""
    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    split = split_interactions(data.interactions, kind="temporal", test_fraction=0.25, impressions=data.impressions)
    state = small_bundle.state
    bundles = {"ranker": small_bundle}
    one_id = split.impressions_test.with_columns(pl.lit("shared").alias("impression_id"))
    per_user = split.impressions_test.with_columns(pl.col("user_id").alias("impression_id"))
    shared = evaluate.impression_evaluation(bundles, one_id, seed=5, state=state)
    own = evaluate.impression_evaluation(bundles, per_user, seed=5, state=state)
    assert shared["ranker"]["imp_count"] == shared["ranker"]["imp_users"] > 20
    assert own.keys() == shared.keys()
    for name in set(own) - {"random"}:  # random draws one number per row, in row order
        assert shared[name] == pytest.approx(own[name], abs=1e-12), name
    sampled = evaluate.impression_evaluation(bundles, one_id, seed=5, state=state, max_users=20, sample_seed=9)
    assert sampled["ranker"]["imp_count"] == sampled["ranker"]["imp_users"] == 20
