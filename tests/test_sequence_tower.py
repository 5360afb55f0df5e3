"""The ordered user tower: starts as the pooled mean, reads order, learns what follows what,
and gives the same vectors in batch ranking, serving, a saved state and a catalog update."""

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from features.sequence_tower import (
    SequenceTower,
    SequenceUserVectors,
    TowerShape,
    appended,
    right_aligned,
    stored_histories,
)
from features.text_interest import HistoryPooling, history_weights, user_vectors, vector_from_history
from recsys.config import ConfigError, PipelineConfig, TextModelConfig
from tests.conftest import all_cores
from training.sequence_fit import fit_sequence_tower, refit_sequence_tower

DIM = 16


def _vectors(n_items=40, seed=0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n_items, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _tower(history_len=6, seed=0) -> SequenceTower:
    torch.manual_seed(seed)
    return SequenceTower(TowerShape(item_dim=DIM, history_len=history_len, dim=8, layers=1, heads=2),
                         HistoryPooling.recency(2.0, DIM))


def test_an_untrained_tower_is_the_pooled_recency_mean():
    items = _vectors()
    tower = _tower()
    histories = np.array([[-1, -1, -1, 3, 7, 1], [5, 6, 7, 8, 9, 10], [-1, -1, -1, -1, -1, 2]])
    got = tower.user_vectors(histories, items)
    for row, history in zip(got, histories, strict=True):
        want = vector_from_history(history[history >= 0], items, half_life=2.0)
        np.testing.assert_allclose(row, want, atol=1e-6)
    np.testing.assert_allclose(tower.item_vectors(items), items, atol=1e-6)  # the adaptor starts as the identity
    # With a learned attention query too: the same vectors the batch path pools (history_weights).
    learned = HistoryPooling(query=np.random.default_rng(2).normal(size=DIM).astype(np.float32) * 3, slope=-0.2)
    torch.manual_seed(0)
    tower = SequenceTower(TowerShape(item_dim=DIM, history_len=6, dim=8, layers=1, heads=2), learned)
    events = pl.DataFrame({"user_idx": [0, 0, 0, 1], "item_idx": [3, 7, 1, 2],
                           "timestamp": pl.Series([1, 2, 3, 1]).cast(pl.Datetime("us"))})
    weights = history_weights(events, n_users=2, n_items=40, history_len=6, half_life=2.0, pooling=learned,
                              item_vectors=items)
    np.testing.assert_allclose(tower.user_vectors(histories[[0, 2]], items), user_vectors(weights, items), atol=1e-6)


def test_empty_histories_give_zero_vectors_and_padding_never_gives_nan():
    tower = _tower()
    with torch.no_grad():
        tower.out.weight.normal_()  # a trained-looking correction: padding must stay harmless
    got = tower.user_vectors(np.array([[-1] * 6, [-1, -1, -1, -1, 4, 5]]), _vectors())
    assert not got[0].any()
    assert np.isfinite(got).all() and abs(np.linalg.norm(got[1]) - 1) < 1e-5


def test_each_position_reads_only_the_items_before_it():
    tower = _tower().eval()
    with torch.no_grad():
        tower.out.weight.normal_()
        x = torch.from_numpy(_vectors()[[1, 2, 3, 4, 5, 6]])[None]
        valid = torch.ones(1, 6, dtype=torch.bool)
        before = tower(x, valid)
        changed = x.clone()
        changed[0, 4] = torch.from_numpy(_vectors()[30])
        after = tower(changed, valid)
    torch.testing.assert_close(after[0, :4], before[0, :4])
    assert not torch.allclose(after[0, 4:], before[0, 4:])


def _alternating_world(n_users=300, length=8, n_items=40, seed=0) -> pl.DataFrame:
    """Each user walks a cycle: item i is followed by item i + 1 (mod 20) or i + 21 for odd users."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(0, 20))
        for t in range(length):
            step = (start + t) % 20
            rows.append((u, step if u % 2 == 0 else 20 + step, t))
    user, item, time = map(np.array, zip(*rows, strict=True))
    return pl.DataFrame({"user_idx": user.astype(np.int32), "item_idx": item.astype(np.int32),
                         "timestamp": pl.Series(time * 60_000_000).cast(pl.Datetime("us"))})


def _fit(events, seed=0, **settings):
    settings = {"sequence_epochs": 15, "sequence_learning_rate": 1e-2, "sequence_dropout": 0.0, **settings}
    config = TextModelConfig(history_len=6, sequence_dim=16, sequence_layers=1, sequence_heads=2,
                             sequence_batch_size=32,
                             sequence_negatives=16, **settings)
    return fit_sequence_tower(events, n_users=300, n_items=40, item_vectors=_vectors(), config=config, seed=seed,
                              pooling=HistoryPooling.recency(2.0, DIM), progress=False)


@pytest.fixture(scope="module")
def fitted():
    return _fit(_alternating_world())


def test_a_step_cap_under_one_pass_keeps_the_pooled_mean_untrained_and_says_how_to_train_it(caplog):
    # 300 users, 32 sequences a step: one pass is 10 steps.
    events = _alternating_world()
    with caplog.at_level("WARNING", logger="training.sequence_fit"):
        skipped = _fit(events, sequence_max_steps=9)
    assert skipped.best_epoch == 0 and skipped.train_losses == [] and len(skipped.val_ndcg) == 1
    state = skipped.tower.state_dict()
    assert torch.equal(state["adapt.weight"], torch.eye(DIM)) and not state["out.weight"].any()  # never stepped
    assert "user tower skipped: one pass over 300 training sequences takes 10 steps, more than " \
           "text.sequence_max_steps=9" in caplog.text
    assert "Raise text.sequence_max_steps to 10 or more" in caplog.text
    trained = _fit(events, sequence_max_steps=10)  # exactly one pass: it trains, one epoch
    assert len(trained.train_losses) == 1 and len(trained.val_ndcg) == 2
    assert skipped.val_ndcg[0] == trained.val_ndcg[0]  # the same pooled mean on the same held-out items


def test_the_tower_learns_what_follows_and_beats_the_pooled_mean_on_held_out_items(fitted):
    assert fitted.best_epoch > 0
    assert fitted.val_ndcg[fitted.best_epoch] > fitted.val_ndcg[0] + 0.6
    # Order matters: the same items in reverse order ask for another next item.
    items = fitted.tower.item_vectors(_vectors())
    forward, backward = fitted.tower.user_vectors(np.array([[2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2]]), items)
    assert int(np.argmax(items @ forward)) != int(np.argmax(items @ backward))
    scores = items @ forward
    scores[[2, 3, 4, 5, 6, 7]] = -np.inf  # seen items are not ranked
    assert int(np.argmax(scores)) == 8


def test_same_events_and_seed_give_the_same_tower(fitted):
    again = _fit(_alternating_world())
    for name, value in fitted.tower.state_dict().items():
        torch.testing.assert_close(again.tower.state_dict()[name], value, rtol=0, atol=0)


def test_a_tower_that_never_beats_the_pooled_mean_on_held_out_items_is_kept_at_it(monkeypatch):
    import training.sequence_fit as sequence_fit

    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01])  # epoch 0 (the pooled mean) is the best
    monkeypatch.setattr(sequence_fit, "_validation_ndcg", lambda *args, **kwargs: next(scores))
    kept = _fit(_alternating_world(), sequence_patience=3, sequence_min_epochs=2)
    assert kept.best_epoch == 0 and len(kept.train_losses) == 5  # 2 epochs before the patience counts, then 3
    history = np.array([[-1, -1, 1, 2, 3, 4]])
    np.testing.assert_allclose(kept.tower.user_vectors(history, _vectors())[0],
                               vector_from_history(np.array([1, 2, 3, 4]), _vectors(), half_life=2.0), atol=1e-6)
    np.testing.assert_allclose(kept.tower.item_vectors(_vectors()), _vectors(), atol=1e-6)


def _last_step_world(n_users=300, length=8) -> pl.DataFrame:
    """Each user walks 0..19 in a cycle (i then i + 1), except their last step, which goes from i to
    20 + i: a rule only each user's very last item shows."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        walk = [(int(rng.integers(0, 20)) + t) % 20 for t in range(length - 1)]
        for t, item in enumerate([*walk, 20 + walk[-1]]):
            rows.append((u, item, t))
    user, item, time = map(np.array, zip(*rows, strict=True))
    return pl.DataFrame({"user_idx": user.astype(np.int32), "item_idx": item.astype(np.int32),
                         "timestamp": pl.Series(time * 60_000_000).cast(pl.Datetime("us"))})


def _refit(events, epochs, seed=0, **settings):
    config = TextModelConfig(history_len=6, sequence_dim=16, sequence_layers=1, sequence_heads=2,
                             sequence_batch_size=32, sequence_negatives=16, sequence_learning_rate=1e-2,
                             sequence_dropout=0.0, **settings)
    return refit_sequence_tower(events, n_users=300, n_items=40, item_vectors=_vectors(), config=config, seed=seed,
                                pooling=HistoryPooling.recency(2.0, DIM), epochs=epochs, progress=False)


def _next_item(tower, history) -> int:
    items = tower.item_vectors(_vectors())
    scores = items @ tower.user_vectors(np.array([history]), items)[0]
    scores[history] = -np.inf
    return int(np.argmax(scores))


def test_a_refit_learns_from_each_users_last_item_which_the_early_stopping_fit_holds_out():
    events = _last_step_world()
    history = [2, 3, 4, 5, 6, 7]
    # The whole window: the last step's rule, 7 then 20 + 7, read at the newest position.
    assert _next_item(_refit(events, epochs=40), history) == 27
    # Without each user's last item (what the early-stopping fit trains on): the walk's rule.
    held_out = events.filter(pl.col("timestamp") < pl.col("timestamp").max().over("user_idx"))
    assert _next_item(_refit(held_out, epochs=40), history) == 8


def test_a_refit_of_one_seed_is_the_same_tower_and_zero_epochs_keep_the_pooled_mean():
    events = _last_step_world()
    first, second = _refit(events, epochs=3), _refit(events, epochs=3)
    for name, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[name], value, rtol=0, atol=0)
    assert not torch.equal(first.state_dict()["adapt.weight"], torch.eye(DIM))  # it trained
    untrained = _refit(events, epochs=0)
    assert not untrained.training
    np.testing.assert_allclose(untrained.user_vectors(np.array([[-1, -1, 1, 2, 3, 4]]), _vectors())[0],
                               vector_from_history(np.array([1, 2, 3, 4]), _vectors(), half_life=2.0), atol=1e-6)
    np.testing.assert_allclose(untrained.item_vectors(_vectors()), _vectors(), atol=1e-6)
    with pytest.raises(ValueError, match="epochs must be 0 or more, got -1"):
        _refit(events, epochs=-1)


def test_a_refit_stops_at_the_step_cap_part_way_through_a_pass_and_says_so(caplog, monkeypatch):
    import training.sequence_fit as sequence_fit

    steps = []
    real_epoch = sequence_fit._epoch

    def counted(*args):
        loss, done = real_epoch(*args)
        steps.append(done)
        return loss, done

    monkeypatch.setattr(sequence_fit, "_epoch", counted)
    events = _last_step_world()  # 300 users, 32 sequences a step: one pass is 10 steps
    with caplog.at_level("WARNING", logger="training.sequence_fit"):
        capped = _refit(events, epochs=3, sequence_max_steps=25)
    assert steps == [10, 10, 5]
    assert "user tower refit stopped at text.sequence_max_steps=25 steps of the 30 that 3 passes over 300 " \
           "sequences take; raise it to 30" in caplog.text
    steps.clear()
    caplog.clear()
    # A cap under one pass still trains (the fit that chose the passes did), part of one pass.
    with caplog.at_level("WARNING", logger="training.sequence_fit"):
        part = _refit(events, epochs=2, sequence_max_steps=4)
    assert steps == [4] and "stopped at text.sequence_max_steps=4 steps of the 20" in caplog.text
    assert not torch.equal(part.state_dict()["adapt.weight"], torch.eye(DIM))
    assert not torch.equal(part.state_dict()["adapt.weight"], capped.state_dict()["adapt.weight"])
    steps.clear()
    caplog.clear()
    with caplog.at_level("WARNING", logger="training.sequence_fit"):
        _refit(events, epochs=3, sequence_max_steps=30)
    assert steps == [10, 10, 10] and "refit stopped" not in caplog.text


def test_stored_histories_are_right_aligned_in_time_order():
    events = pl.DataFrame({"user_idx": [0, 1, 0, 0, 2], "item_idx": [5, 6, 7, 8, 9],
                           "timestamp": pl.Series([3, 1, 1, 2, 1]).cast(pl.Datetime("us"))})
    got = stored_histories(events, n_users=4, n_items=10, history_len=2, seed=0)
    np.testing.assert_array_equal(got, [[8, 5], [-1, 6], [-1, 9], [-1, -1]])
    np.testing.assert_array_equal(right_aligned(np.array([0, 0, 0]), np.array([1, 2, 3]), 1, 3, drop_last=True),
                                  [[-1, 1, 2]])
    np.testing.assert_array_equal(appended(np.array([-1, 4, 5], dtype=np.int32), np.array([6, 7])), [5, 6, 7])
    np.testing.assert_array_equal(appended(np.array([-1, -1, -1], dtype=np.int32), np.array([3])), [-1, -1, 3])


@pytest.mark.parametrize("kept", [False, True])
def test_user_vector_rows_equal_the_tower_on_the_whole_table(fitted, kept):
    items = fitted.tower.item_vectors(_vectors())
    histories = np.random.default_rng(1).integers(-1, 40, size=(50, 6)).astype(np.int32)
    histories[7] = -1
    users = SequenceUserVectors(histories, items, fitted.tower)
    assert users.materialize(50 * DIM * 4 if kept else 0) is kept
    full = fitted.tower.user_vectors(histories, items)
    rows = np.array([49, 0, 7, 7])
    np.testing.assert_allclose(users[rows], full[rows], atol=1e-6)
    np.testing.assert_allclose(users[3:9], full[3:9], atol=1e-6)
    assert not users[7].any() and users.shape == (50, DIM)
    with pytest.raises(IndexError, match="mask unknown users"):
        users[np.array([0, -1])]
    with pytest.raises(ValueError, match="histories index item 39 but only 30 item vectors"):
        SequenceUserVectors(histories, items[:30], fitted.tower)


def test_a_saved_tower_loads_to_the_same_vectors(fitted, tmp_path):
    fitted.tower.save(tmp_path)
    loaded = SequenceTower.load(tmp_path)
    histories = np.array([[-1, -1, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]])
    np.testing.assert_array_equal(loaded.user_vectors(histories, _vectors()),
                                  fitted.tower.user_vectors(histories, _vectors()))
    np.testing.assert_array_equal(loaded.item_vectors(_vectors()), fitted.tower.item_vectors(_vectors()))


def test_the_patience_counts_only_after_the_first_epochs_so_a_dip_does_not_end_the_fit(monkeypatch):
    import training.sequence_fit as sequence_fit

    curve = [0.5, 0.2, 0.1, 0.2, 0.3, 0.6, 0.7, 0.65, 0.6, 0.55, 0.5]  # the dip, then above the pooled mean
    for min_epochs, best, epochs in ((0, 0, 3), (4, 6, 9)):
        scores = iter(curve)
        monkeypatch.setattr(sequence_fit, "_validation_ndcg", lambda *args, scores=scores, **kwargs: next(scores))
        fit = _fit(_alternating_world(), sequence_patience=3, sequence_min_epochs=min_epochs)
        assert (fit.best_epoch, len(fit.train_losses)) == (best, epochs)
        assert fit.val_ndcg == curve[:epochs + 1]


def test_bad_tower_settings_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match=r"sequence_dim \(10\) must be a positive multiple of .*heads \(4\)"):
        PipelineConfig(text=TextModelConfig(sequence_dim=10, sequence_heads=4))
    with pytest.raises(ConfigError, match=r"heads \(0\), which must be at least 1"):
        PipelineConfig(text=TextModelConfig(sequence_heads=0))
    with pytest.raises(ConfigError, match="sequence_layers and text.sequence_epochs must be 0"):
        PipelineConfig(text=TextModelConfig(sequence_layers=-1))
    with pytest.raises(ConfigError, match="text.sequence_min_epochs must be 0 or more, got -1"):
        PipelineConfig(text=TextModelConfig(sequence_min_epochs=-1))
    with pytest.raises(ConfigError, match="text.sequence_refit must be true or false, got 'yes'"):
        PipelineConfig.from_dict({"text": {"sequence_refit": "yes"}})
    assert PipelineConfig(text=TextModelConfig(sequence_layers=0, sequence_dim=10, sequence_heads=4))  # off: unchecked


def test_state_save_load_serving_and_add_items_use_the_tower(small_bundle, tmp_path):
    from types import SimpleNamespace

    from features.catalog_update import add_items
    from features.state import FeatureState
    from serving.recommend import COLD_START, HISTORY_ONLY, PERSONALIZED, _interest_vectors

    state = small_bundle.state
    n_items, dim = state.item_vectors.shape
    histories = np.full((state.n_users, 6), -1, dtype=np.int32)
    histories[:, -3:] = np.random.default_rng(0).integers(0, n_items, size=(state.n_users, 3))
    tower = SequenceTower(TowerShape(item_dim=dim, history_len=6, dim=8, layers=1, heads=2),
                          HistoryPooling.recency(2.0, dim))
    with torch.no_grad():
        tower.out.weight.normal_(std=0.1)
        tower.adapt.weight.add_(torch.randn(dim, dim) * 0.1)
    with_tower = replace(state, user_text=SequenceUserVectors(histories, state.item_vectors, tower), pooling=None)
    with_tower.save(tmp_path / "state")
    loaded = FeatureState.load(tmp_path / "state")
    assert isinstance(loaded.user_text, SequenceUserVectors)
    np.testing.assert_array_equal(loaded.user_text[np.arange(5)], with_tower.user_text[np.arange(5)])
    # Serving: the stored items, then the request's, through the same tower.
    request = pl.DataFrame({"query_idx": [0, 0, 1], "item_idx": [4, 9, 2]})
    vectors, paths = _interest_vectors(SimpleNamespace(state=loaded), np.array([3, -1, 5, -1]), request, 4)
    want = tower.user_vectors(np.array([[-1, *histories[3, -3:], 4, 9], [-1, -1, -1, -1, -1, 2]]),
                              state.item_vectors)
    np.testing.assert_allclose(vectors[:2], want, atol=1e-6)
    np.testing.assert_allclose(vectors[2], loaded.user_text[5], atol=1e-6)  # no request history: the stored one
    assert not vectors[3].any()
    assert paths == [PERSONALIZED, HISTORY_ONLY, PERSONALIZED, COLD_START]
    # A catalog update maps the new items' text vectors through the item adaptor.
    new = np.random.default_rng(5).normal(size=(2, dim)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    grown = add_items(loaded, pl.DataFrame({"item_id": ["new-a", "new-b"], "title": ["a", "b"],
                                            "category": ["c", "c"], "description": ["", ""]}), new)
    np.testing.assert_allclose(grown.item_vectors[n_items:], tower.item_vectors(new), atol=1e-6)
    np.testing.assert_array_equal(grown.user_text[np.arange(3)], loaded.user_text[np.arange(3)])


@pytest.mark.slow
def test_two_fits_of_one_seed_give_the_same_bits_at_a_size_where_kernels_run_in_threads():
    # Without deterministic kernels this fails: the gathers' backward sums in thread order.
    rng = np.random.default_rng(3)
    n_users, n_items, dim = 3000, 2000, 384
    user = np.repeat(np.arange(n_users), 8)
    events = pl.DataFrame({"user_idx": user.astype(np.int32),
                           "item_idx": rng.integers(0, n_items, size=len(user)).astype(np.int32),
                           "timestamp": pl.Series(np.tile(np.arange(8), n_users) * 1_000_000).cast(pl.Datetime("us"))})
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = TextModelConfig(sequence_epochs=2, sequence_patience=5)

    def weights():
        fit = fit_sequence_tower(events, n_users=n_users, n_items=n_items, item_vectors=vectors, config=config,
                                 seed=0, pooling=HistoryPooling.recency(5.0, dim), progress=False)
        return fit.tower.state_dict()

    with all_cores():  # under `make test` this worker is pinned to one core: the kernels need more
        threads = torch.get_num_threads()
        torch.set_num_threads(max(2, threads))  # at least two threads even on a one-core machine
        try:
            first, second = weights(), weights()
        finally:
            torch.set_num_threads(threads)
    assert not torch.equal(first["adapt.weight"], torch.eye(dim))  # it trained
    for name, value in first.items():
        assert torch.equal(second[name], value), name


def test_a_tower_that_adds_nothing_serves_the_pooled_mean_without_running_its_encoder(monkeypatch):
    items = _vectors()
    histories = np.array([[-1, -1, -1, 3, 7, 1], [5, 6, 7, 8, 9, 10], [-1] * 6])
    seq = torch.from_numpy(items[np.maximum(histories, 0)])
    valid = torch.from_numpy(histories >= 0)
    tower = _tower()
    tower.eval()
    assert tower.adds_nothing()
    with monkeypatch.context() as forced, torch.inference_mode():
        forced.setattr(tower, "adds_nothing", lambda: False)
        full_users = tower.user_vectors(histories, items)  # the encoder runs; its correction is +0.0
        full_positions = tower(seq, valid).numpy()

    def encoder(*args, **kwargs):
        raise AssertionError("the encoder ran")

    monkeypatch.setattr(tower.blocks, "forward", encoder)
    with torch.inference_mode():
        short_positions = tower(seq, valid).numpy()
    short_users = tower.user_vectors(histories, items)
    # Bit for bit, every position (padded ones included), without the encoder.
    assert np.array_equal(short_positions.view(np.uint32), full_positions.view(np.uint32))
    assert np.array_equal(short_users.view(np.uint32), full_users.view(np.uint32))
    with torch.no_grad():
        tower.out.bias[0] = 1e-3  # a trained correction: the encoder must run again
    assert not tower.adds_nothing()
    with pytest.raises(AssertionError, match="the encoder ran"):
        tower.user_vectors(histories, items)
    with torch.no_grad():
        tower.out.bias.zero_()
    # With gradients on (eval mode) or in training mode (no gradients), it runs: the output
    # layer's gradient needs the encoder's output, and dropout makes training another function.
    with pytest.raises(AssertionError, match="the encoder ran"):
        tower(seq, valid)
    tower.train()
    with torch.no_grad(), pytest.raises(AssertionError, match="the encoder ran"):
        tower(seq, valid)


def test_each_window_reads_the_tower_refitted_on_its_own_events(interactions, monkeypatch):
    """``training.pipeline.window_text`` with ``text.sequence_refit``: the tower refitted on the
    window's events with the epochs early stopping chose, from the fine-tuned vectors before the
    adaptor; the text stage's own vectors and model when the chosen epoch is 0, there is no
    tower, or the refit is off (the default)."""
    from types import SimpleNamespace

    from recsys.idmap import IdMap
    from training import pipeline

    w = SimpleNamespace(users=IdMap(kind="user").fit(["u3", "u1", "u2", "u9"]),
                        items=IdMap(kind="item").fit(["a", "b", "c", "d"]))
    window = SimpleNamespace(train=interactions.filter(pl.col("user_id") != "u3").vstack(
        pl.DataFrame({"user_id": ["stranger"], "item_id": ["d"], "timestamp": [interactions["timestamp"][0]],
                      "weight": [1.0]})))
    encoder_vectors = np.eye(4, 8, dtype=np.float32)
    tower = SimpleNamespace(item_vectors=lambda v: v * 3)
    calls = []

    def refit(events, **kwargs):
        calls.append((events, kwargs))
        return tower

    monkeypatch.setattr(pipeline, "refit_sequence_tower", refit)
    text = SimpleNamespace(tower=object(), tower_fit=SimpleNamespace(best_epoch=7), encoder_vectors=encoder_vectors,
                           pooling=HistoryPooling.recency(2.0, 8), finetuned_vectors=np.zeros((4, 8), np.float32),
                           user_model="the text stage's tower")
    config = PipelineConfig(seed=5, text=TextModelConfig(sequence_refit=True))
    vectors, user_model = pipeline.window_text(w, window, text, config)
    assert user_model is tower
    np.testing.assert_array_equal(vectors, encoder_vectors * 3)
    (events, kwargs), = calls
    assert events.sort("timestamp").rows() == [(1, 0, interactions["timestamp"][0]),
                                               (1, 1, interactions["timestamp"][1]),
                                               (2, 0, interactions["timestamp"][2]),
                                               (2, 2, interactions["timestamp"][3]),
                                               (1, 2, interactions["timestamp"][5])]  # the stranger left out
    assert kwargs["epochs"] == 7 and kwargs["seed"] == 5 and kwargs["item_vectors"] is encoder_vectors
    assert kwargs["pooling"] is text.pooling and kwargs["config"] is config.text
    assert (kwargs["n_users"], kwargs["n_items"]) == (4, 4)
    calls.clear()
    for kept, settings in ((SimpleNamespace(**{**vars(text), "tower_fit": SimpleNamespace(best_epoch=0)}), config),
                           (SimpleNamespace(**{**vars(text), "tower": None}), config),
                           (text, PipelineConfig(seed=5))):  # the default: no refit
        vectors, user_model = pipeline.window_text(w, window, kept, settings)
        assert vectors is text.finetuned_vectors and user_model == "the text stage's tower" and not calls
