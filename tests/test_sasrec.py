"""The SASRec baseline (``features.sasrec``) learns an order a set-based model cannot see."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.sasrec import SASRecSettings, fit_sasrec

N_ITEMS = 20
SMALL = SASRecSettings(max_len=8, dim=16, layers=1, dropout=0.1, epochs=40, batch_size=64, learning_rate=5e-3,
                       negatives=10, patience=40)


def _chains(n_users=300, length=8, seed=0) -> pl.DataFrame:
    """Each user walks the cycle 0 -> 1 -> ... -> 19 -> 0 from a random start: the next item is
    always the last one + 1, while the set of items says little about which comes next."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        start = rng.integers(N_ITEMS)
        for p in range(length):
            users.append(u)
            items.append((start + p) % N_ITEMS)
            times.append(datetime(2024, 1, 1) + timedelta(days=int(p)))
    return pl.DataFrame({"user_idx": users, "item_idx": items, "timestamp": times},
                        schema={"user_idx": pl.Int32, "item_idx": pl.Int32, "timestamp": pl.Datetime("us")})


@pytest.fixture(scope="module")
def fitted():
    return fit_sasrec(_chains(), n_users=301, n_items=N_ITEMS, seed=0, settings=SMALL, progress=False)


def test_it_learns_what_comes_next(fitted):
    events = _chains()
    last = events.group_by("user_idx").agg(pl.col("item_idx").last()).sort("user_idx")["item_idx"].to_numpy()
    scores = fitted.user_scores(np.arange(300))
    hits = np.mean(scores.argmax(axis=1) == (last + 1) % N_ITEMS)
    assert hits > 0.9, hits
    assert fitted.validation_ndcg > 0.9 and 1 <= fitted.best_epoch <= SMALL.epochs
    assert scores.dtype == np.float32 and scores.shape == (300, N_ITEMS)


def test_the_full_softmax_learns_what_comes_next_too():
    full = fit_sasrec(_chains(), n_users=301, n_items=N_ITEMS, seed=0, progress=False,
                      settings=SASRecSettings(**{**SMALL.__dict__, "negatives": 0}))
    last = _chains().group_by("user_idx").agg(pl.col("item_idx").last()).sort("user_idx")["item_idx"].to_numpy()
    assert np.mean(full.user_scores(np.arange(300)).argmax(axis=1) == (last + 1) % N_ITEMS) > 0.9
    assert full.validation_ndcg > 0.9


def test_a_user_without_window_items_gets_no_scores_and_unknown_rows_are_refused(fitted):
    assert np.isnan(fitted.user_scores(np.array([300]))).all()
    with pytest.raises(IndexError, match="mask unknown users"):
        fitted.user_scores(np.array([-1]))


def test_same_events_and_seed_give_the_same_model():
    settings = SASRecSettings(max_len=8, dim=8, layers=1, epochs=2, batch_size=64, negatives=5)
    one = fit_sasrec(_chains(60), n_users=60, n_items=N_ITEMS, seed=3, settings=settings, progress=False)
    two = fit_sasrec(_chains(60), n_users=60, n_items=N_ITEMS, seed=3, settings=settings, progress=False)
    np.testing.assert_array_equal(one.user_scores(np.arange(60)), two.user_scores(np.arange(60)))


def test_bad_events_are_refused():
    with pytest.raises(ValueError, match="drop events of users or items outside"):
        fit_sasrec(_chains(10), n_users=5, n_items=N_ITEMS, seed=0, settings=SMALL, progress=False)
    with pytest.raises(ValueError, match="need a 'timestamp' column"):
        fit_sasrec(_chains(10).drop("timestamp"), n_users=10, n_items=N_ITEMS, seed=0, progress=False)


@pytest.mark.parametrize(("curve", "best_epoch", "epochs_run"), [
    # A dip after epoch 1 that patience alone (5) would end at epoch 6, keeping epoch 1: the fit
    # goes on past it, keeps the later best and stops 5 epochs after it.
    ([0.5] + [0.1] * 6 + [0.9] + [0.1] * 20, 8, 13),
    # Never better than epoch 1: the stop waits for the floor (10), then comes at once.
    ([0.5] + [0.1] * 30, 1, 10),
    # A fit that patience alone stops at the floor or later stops there, also when its stale
    # epochs began before the floor.
    ([0.1 * k for k in range(1, 13)] + [0.0] * 20, 12, 17),
    ([0.1 * k for k in range(1, 6)] + [0.0] * 30, 5, 10),
    ([0.1 * k for k in range(1, 7)] + [0.0] * 30, 6, 11),
    # Better every epoch: it runs out of epochs (30) and keeps the last.
    ([0.01 * k for k in range(1, 31)], 30, 30),
])
def test_no_early_stop_before_the_minimum_epochs(monkeypatch, caplog, curve, best_epoch, epochs_run):
    import features.sasrec as sasrec

    assert (SASRecSettings().min_epochs, SASRecSettings().patience) == (10, 5)  # the defaults the runs use

    calls = []

    def scripted(*_args, **_kwargs):
        calls.append(1)
        return curve[len(calls) - 1]

    monkeypatch.setattr(sasrec, "_validation_ndcg", scripted)
    settings = SASRecSettings(max_len=8, dim=8, layers=1, epochs=30, batch_size=64, negatives=5, patience=5,
                              min_epochs=10)
    with caplog.at_level("INFO", logger="features.sasrec"):
        model = fit_sasrec(_chains(60), n_users=60, n_items=N_ITEMS, seed=3, settings=settings, progress=False)
    assert (model.best_epoch, len(calls), model.validation_ndcg) == (best_epoch, epochs_run, curve[best_epoch - 1])
    assert model.epochs_run == epochs_run
    assert f"SASRec baseline: best epoch {best_epoch} of {epochs_run}, held-out nDCG@10 {curve[best_epoch - 1]:.4f}" \
        in caplog.text
