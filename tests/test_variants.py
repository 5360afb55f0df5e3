"""Ranker variants: validation users, the shipped choice, honest ablations, one feature path."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from features.candidates import generate_candidates, source_scores, top_n
from features.ranking_frame import FEATURE_COLUMNS, feature_columns_of
from features.sources import candidate_counts
from recsys.config import CandidateConfig, ConfigError, PipelineConfig
from training import variants


def test_validation_holds_out_whole_users():
    frame = pl.DataFrame({"query_idx": [0, 0, 1, 1, 2, 2, 3, 3], "user_idx": [5, 5, 6, 6, 5, 5, 7, 7],
                          "item_idx": list(range(8)), "label": [1, 0] * 4}).cast(pl.Int32)
    train, val = variants.split_by_users(frame, np.array([5]))
    # User 5's candidate query 0 and impression query 2 are both validation; nothing of 5 trains.
    assert val["query_idx"].unique().sort().to_list() == [0, 2]
    assert 5 not in train["user_idx"].to_list()
    assert train["query_idx"].to_list() == [1, 1, 3, 3]


def test_validation_users_are_a_seeded_share_of_the_label_users():
    users = np.arange(100, 300)
    held = variants.validation_users(users, seed=4)
    assert len(held) == 30 and set(held) <= set(users) and np.all(np.diff(held) > 0)
    np.testing.assert_array_equal(held, variants.validation_users(users, seed=4))
    assert not np.array_equal(held, variants.validation_users(users, seed=5))
    assert len(variants.validation_users(np.array([3, 4]), seed=0)) == 1


def test_the_best_variant_on_validation_ships_and_ties_go_to_the_simpler():
    val = {variants.FINETUNED: {"ndcg@10": 0.30}, variants.PRETRAINED: {"ndcg@10": 0.32},
           variants.NO_TEXT: {"ndcg@10": 0.31}, "ease": {"ndcg@10": 0.50}}
    choice = variants.choose_variant(val, 10)
    assert choice.shipped == variants.PRETRAINED  # a baseline is never a variant
    assert "ranker_pretrained_text 0.3200, ranker_no_text 0.3100, ranker_finetuned_text 0.3000" in choice.reason()
    tied = {name: {"ndcg@10": 0.3} for name in variants.VARIANTS}
    assert variants.choose_variant(tied, 10).shipped == variants.NO_TEXT
    assert variants.shipped_names(val, variants.PRETRAINED)[variants.PRETRAINED] == "ranker"


def test_a_text_variant_ships_only_when_its_paired_lift_over_no_text_excludes_zero():
    rng = np.random.default_rng(0)
    no_text = rng.uniform(0.0, 0.6, size=400)
    val = lambda per_user: {name: {"ndcg@10": float(v.mean())} for name, v in per_user.items()}  # noqa: E731
    # Pretrained text: a small lift drowned in per-user noise; fine-tuned: a clear lift on most users.
    noisy = {variants.NO_TEXT: no_text, variants.PRETRAINED: no_text + rng.normal(0.004, 0.2, size=400),
             variants.FINETUNED: no_text - 0.01}
    choice = variants.choose_variant(val(noisy), 10, noisy, seed=1)
    assert choice.best == variants.PRETRAINED and choice.shipped == variants.NO_TEXT
    assert choice.lift[1] <= 0 < choice.lift[2]
    assert "no text variant earns its place" in choice.reason()
    assert "an interval that does not exclude 0" in choice.reason()
    clear = {**noisy, variants.FINETUNED: no_text + rng.uniform(0.0, 0.04, size=400)}
    choice = variants.choose_variant(val(clear), 10, clear, seed=1)
    assert choice.shipped == choice.best == variants.FINETUNED and choice.lift[1] > 0
    assert "its text earns its place" in choice.reason()
    # The best mean is noise, the runner-up a clear lift: the runner-up ships.
    runner_up = {variants.NO_TEXT: no_text, variants.FINETUNED: no_text + 0.02 + np.tile([0.5, -0.5], 200),
                 variants.PRETRAINED: no_text + rng.uniform(0.0, 0.02, size=400)}
    choice = variants.choose_variant(val(runner_up), 10, runner_up, seed=1)
    assert choice.best == variants.FINETUNED and choice.shipped == variants.PRETRAINED
    assert f"after {variants.FINETUNED}, whose text did not earn its place" in choice.reason()
    # Without per-user values the best mean ships, as before.
    assert variants.choose_variant(val(noisy), 10).shipped == variants.PRETRAINED


def test_ranker_ship_pins_a_variant_whatever_validation_says():
    val = {variants.FINETUNED: {"ndcg@10": 0.30}, variants.PRETRAINED: {"ndcg@10": 0.32},
           variants.NO_TEXT: {"ndcg@10": 0.31}}
    per_user = {name: np.full(50, v["ndcg@10"]) for name, v in val.items()}
    choice = variants.choose_variant(val, 10, per_user, seed=1, ship="finetuned_text")
    assert (choice.shipped, choice.best, choice.pinned) == (variants.FINETUNED, variants.PRETRAINED, True)
    assert choice.shipped_by == "ranker.ship (pinned)"
    assert variants.choose_variant(val, 10, per_user, seed=1).shipped_by == "validation"
    assert choice.reason().startswith("ranker_finetuned_text is shipped: pinned by ranker.ship")
    assert variants.choose_variant(val, 10, per_user, seed=1).shipped == variants.PRETRAINED  # auto
    with pytest.raises(ValueError, match="ranker.ship='pretrained_text' but this run fitted no ranker_pretrained_text"):
        variants.choose_variant({variants.NO_TEXT: {"ndcg@10": 0.3}}, 10, ship="pretrained_text")
    with pytest.raises(ConfigError, match=r"ranker.ship must be one of .*'finetuned'"):
        PipelineConfig.from_dict({"ranker": {"ship": "finetuned"}})


def test_new_items_or_ship_text_choose_among_the_text_variants_only():
    rng = np.random.default_rng(0)
    no_text = rng.uniform(0.0, 0.6, size=400)
    # No text is best on validation, and by a clear margin over both text variants.
    per_user = {variants.NO_TEXT: no_text, variants.PRETRAINED: no_text - 0.02, variants.FINETUNED: no_text - 0.01}
    val = {name: {"ndcg@10": float(v.mean())} for name, v in per_user.items()}
    assert variants.choose_variant(val, 10, per_user, seed=1).shipped == variants.NO_TEXT
    for choice, why in ((variants.choose_variant(val, 10, per_user, seed=1, new_items=True),
                         "the run takes items without behaviour"),
                        (variants.choose_variant(val, 10, per_user, seed=1, ship="text"), 'ranker.ship is "text"')):
        assert (choice.shipped, choice.best, choice.pinned) == (variants.FINETUNED, variants.NO_TEXT, False)
        assert choice.shipped_by == "validation, text variants only"
        assert choice.reason().startswith("ranker_finetuned_text is shipped: the best validation ndcg@10 of the "
                                          "text variants")
        assert "ranker_no_text was not a candidate" in choice.reason() and choice.reason().endswith(
            why + (" (cold_item_fraction above 0)" if choice.text_only == "new items" else ""))
    # Pretrained ahead of fine-tuned: the better text variant ships; a tie goes to the pretrained one.
    ahead = {**val, variants.PRETRAINED: {"ndcg@10": 0.9}}
    assert variants.choose_variant(ahead, 10, ship="text").shipped == variants.PRETRAINED
    tied = {**val, variants.PRETRAINED: val[variants.FINETUNED]}
    assert variants.choose_variant(tied, 10, new_items=True).shipped == variants.PRETRAINED
    # A pinned variant still wins over new items; "text" without a text variant is refused.
    assert variants.choose_variant(val, 10, ship="no_text", new_items=True).shipped == variants.NO_TEXT
    assert variants.choose_variant({variants.NO_TEXT: {"ndcg@10": 0.3}}, 10, new_items=True).shipped == \
        variants.NO_TEXT
    with pytest.raises(ValueError, match="ranker.ship='text' but this run fitted no text variant"):
        variants.choose_variant({variants.NO_TEXT: {"ndcg@10": 0.3}}, 10, ship="text")
    assert PipelineConfig.from_dict({"ranker": {"ship": "text"}}).ranker.ship == "text"


def test_the_model_card_says_a_pinned_variant_was_not_chosen_on_validation():
    from types import SimpleNamespace

    from training.model_card import run_summary

    val = {variants.FINETUNED: {"ndcg@10": 0.30}, variants.PRETRAINED: {"ndcg@10": 0.32},
           variants.NO_TEXT: {"ndcg@10": 0.31}}
    dataset = SimpleNamespace(source="d", summary=lambda: {"n_interactions": 9, "n_users": 3, "n_items": 3})
    tables = {"ranker": {"ndcg@10": 0.3}}
    pinned = run_summary(tables, tables, PipelineConfig(), dataset,
                         variants.choose_variant(val, 10, ship="finetuned_text"), "")
    chosen = run_summary(tables, tables, PipelineConfig(), dataset, variants.choose_variant(val, 10), "")
    assert "the shipped variant was pinned by `ranker.ship`" in pinned and "pinned by ranker.ship" in pinned
    assert "Choices (early stopping, the shipped variant, the baseline to beat) were made on validation" in chosen
    assert "pinned" not in chosen


def test_the_no_text_variant_proposes_no_text_candidates(small_bundle):
    config = variants.variant_config(variants.NO_TEXT, small_bundle.config)
    assert config.candidates.n_text == 0
    assert variants.variant_config(variants.FINETUNED, small_bundle.config) is small_bundle.config
    state = small_bundle.state
    users = np.arange(20, dtype=np.int32)
    assert config.sources["text_neighbours"]["candidates"] == 0  # a source that reads text proposes nothing either
    with_text = generate_candidates(state, users, small_bundle.config.candidates, seed=0,
                                    source_counts=candidate_counts(small_bundle.config))
    without = generate_candidates(state, users, config.candidates, seed=0, source_counts=candidate_counts(config))
    text_scores = source_scores(state, users, "text")
    text_scores[np.asarray(state.seen[users].todense()) > 0] = -np.inf
    text_top = top_n(text_scores, small_bundle.config.candidates.n_text, seed=0, query=users)
    text_pairs = {(q, i) for q, row in enumerate(text_top) for i in row if i >= 0}
    pairs = lambda frame: set(zip(frame["query_idx"].to_list(), frame["item_idx"].to_list(), strict=True))  # noqa: E731
    only_neighbours = CandidateConfig(n_cf=0, n_item_item=0, n_text=0, n_popular=0, n_recent=0)
    text_pairs |= pairs(generate_candidates(state, users, only_neighbours, seed=0,
                                            source_counts={**{n: 0 for n in state.sources}, "text_neighbours": 50}))
    assert text_pairs <= pairs(with_text)
    # Items only the text source proposes are gone; everything else is as with text.
    assert text_pairs - pairs(without)
    assert pairs(without) == pairs(with_text) - (text_pairs - pairs(without))


def test_training_and_serving_build_the_same_feature_rows(small_bundle):
    """The label-window frame (``labelled_frame``, the training path) and the bundle's request path
    (``candidate_features`` with carried source scores, the serving path) give the same rows and
    equal features for the same users over one state."""
    state = small_bundle.state
    users = np.array([0, 4, 9], dtype=np.int32)
    served, arrays = small_bundle.candidate_features(users)
    # One positive per user among its candidates, so every query is kept (it needs both labels).
    first = served.group_by("query_idx", maintain_order=True).agg(pl.col("item_idx").first())
    relevant = [np.array([item]) for item in first.sort("query_idx")["item_idx"].to_list()]
    trained = variants.labelled_frame(state, (users, relevant), None, small_bundle.config)
    columns = feature_columns_of(state)
    assert len(columns) > len(FEATURE_COLUMNS)  # the sequential-rules columns are compared too
    served = served.with_columns([pl.Series(name, arrays[name]) for name in columns])
    joined = trained.join(served, on=["query_idx", "user_idx", "item_idx"], how="full", suffix="_served")
    assert joined.height == trained.height == served.height
    for name in columns:
        np.testing.assert_allclose(joined[name].to_numpy(), joined[f"{name}_served"].to_numpy(), rtol=1e-5,
                                   atol=1e-6, equal_nan=True, err_msg=name)


def test_label_users_leave_out_users_without_feature_window_history(small_bundle):
    state = small_bundle.state
    events = pl.DataFrame({"user_id": state.users.ids.head(3).to_list(),
                           "item_id": state.items.ids.head(3).to_list(),
                           "timestamp": [state.ref_time] * 3})
    no_history = state.seen.copy().tolil()
    no_history[1, :] = 0
    from dataclasses import replace

    emptied = replace(state, seen=no_history.tocsr())
    config = PipelineConfig.from_dict({"ranker_max_users": 0})
    user_idx, _ = variants.label_users(emptied, events, config)
    assert user_idx.tolist() == [0, 2]
    assert emptied.has_profile(np.array([0, 1, -1])).tolist() == [True, False, False]


def test_validation_digest_names_the_validation_data():
    events = pl.DataFrame({"user_id": ["a", "b", "b"], "item_id": ["x", "y", "z"],
                           "timestamp": pl.Series([1, 2, 3]).cast(pl.Datetime("us"))})
    config = PipelineConfig()
    digest = variants.validation_digest(events, pl.Series(["b"]), events, config)
    # Row order does not matter; other users, another feature window or other settings do.
    assert digest == variants.validation_digest(events.reverse(), pl.Series(["b"]), events, config)
    assert digest != variants.validation_digest(events, pl.Series(["a", "b"]), events, config)
    assert digest != variants.validation_digest(events, pl.Series(["b"]), events.head(2), config)
    assert digest != variants.validation_digest(events, pl.Series(["b"]), events, PipelineConfig(label_fraction=0.3))
    assert len(digest) == 64


def test_stacked_frames_keep_every_query_distinct_and_every_row():
    first = pl.DataFrame({"query_idx": [0, 0, 1, 1], "user_idx": [5, 5, 6, 6], "item_idx": [1, 2, 1, 3],
                          "label": [1, 0, 0, 1]}).cast(pl.Int32)
    second = pl.DataFrame({"query_idx": [0, 0, 2, 2], "user_idx": [6, 6, 5, 5], "item_idx": [4, 1, 2, 9],
                           "label": [0, 1, 1, 0]}).cast(pl.Int32)
    stacked = variants.stacked_frames([first, second])
    assert stacked["query_idx"].to_list() == [0, 0, 1, 1, 2, 2, 4, 4]
    assert stacked["query_idx"].dtype == pl.Int32
    assert stacked.drop("query_idx").equals(pl.concat([first, second]).drop("query_idx"))
    # A held-out user's queries of every cut validate; nothing of theirs trains.
    train, val = variants.split_by_users(stacked, np.array([5]))
    assert val["query_idx"].unique().sort().to_list() == [0, 4]
    assert train["query_idx"].unique().sort().to_list() == [1, 2]


def test_add_items_warns_when_the_shipped_ranker_reads_no_text():
    from training.catalog import text_blind_note

    note = text_blind_note("shop", "3", variants.NO_TEXT)
    assert note.startswith("shop version 3 ships ranker_no_text, which reads no text: it takes no text candidates")
    assert '{"ranker": {"ship": "text"}}' in note
    assert text_blind_note("shop", "3", variants.PRETRAINED) == text_blind_note("shop", "3", "") == ""


def test_the_fit_plan_runs_every_variant_at_once_when_cores_are_few():
    assert variants.fit_plan(3, 2) == (3, 1)
    assert variants.fit_plan(3, 8) == (3, 2)
    assert variants.fit_plan(3, 1) == (1, 1)
    assert variants.fit_plan(1, 4) == (1, 4)


def test_jobs_in_threads_keep_their_order_and_the_callers_context():
    from recsys.progress import _enabled, quiet_progress

    with quiet_progress():
        seen = variants.in_threads([lambda i=i: (i, _enabled.get()) for i in range(3)], workers=3)
    assert seen == [(0, False), (1, False), (2, False)]


def test_jobs_in_threads_run_at_the_same_time():
    """Three jobs that each wait for the other two: run one after another they would time out."""
    import threading

    meet = threading.Barrier(3, timeout=10)
    assert variants.in_threads([lambda i=i: (meet.wait(), i)[1] for i in range(3)], workers=3) == [0, 1, 2]


def test_a_failing_job_stops_the_others_and_its_error_is_raised_once_they_end():
    import threading

    from recsys.errors import FitStopped

    stop = threading.Event()
    rounds = []

    def failing():
        raise ValueError("job 1 failed")

    def long_fit():  # a fit that reads the stop flag between rounds, as the rankers do
        for n in range(10_000):
            if stop.is_set():
                raise FitStopped(f"stopped after round {n}")
            rounds.append(n)
            threading.Event().wait(0.001)
        return "ran to its end"

    with pytest.raises(ValueError, match="job 1 failed"):
        variants.in_threads([long_fit, failing, lambda: 2], workers=3, stop=stop)
    assert stop.is_set() and len(rounds) < 10_000  # stopped, not run to its end (10 s)
    assert not [t for t in threading.enumerate() if t.name.startswith("ranker-fit")]
    ok = threading.Event()
    assert variants.in_threads([lambda: 1, lambda: 2], workers=2, stop=ok) == [1, 2] and not ok.is_set()


def test_the_variants_fitted_at_once_are_the_models_fitted_one_after_another(small_bundle, monkeypatch):
    state, config = small_bundle.state, small_bundle.config
    from recsys.demo_data import DemoSpec, generate_demo
    from recsys.split import split_interactions

    data = generate_demo(DemoSpec(n_users=120, n_items=150, days=20, seed=3))
    split = split_interactions(data.interactions, kind="temporal", test_fraction=0.25, impressions=data.impressions)
    users = variants.label_users(state, split.test, config)
    frame = variants.labelled_frame(state, users, split.impressions_test, config)
    frames = {name: frame for name in variants.VARIANTS}
    held_out = variants.validation_users(users[0], seed=0)
    monkeypatch.setattr(variants, "usable_cores", lambda: 2)
    fitted = {}
    for concurrent in (False, True):
        rankers = variants.fit_rankers(frames, held_out, config, label_users=users[0], concurrent=concurrent)
        threads = {r.threads for r in rankers.values()}
        assert threads == ({1} if concurrent else {2})
        fitted[concurrent] = {name: r.model_text() for name, r in rankers.items()}
    assert fitted[True] == fitted[False]
    # The no-text variant, on the same frame, never splits on a text column: a different model.
    assert fitted[True][variants.NO_TEXT] != fitted[True][variants.FINETUNED]
