"""Contract test for every CF algorithm (after implicit's recommender_base_test): on a
checkerboard of two user groups with one liked item withheld per user, that item comes first."""

import numpy as np
import pytest
import scipy.sparse as sp

from features.cf import ALGORITHMS, fit_cf
from recsys.errors import ConfigError, DataValidationError


def checkerboard(n_users=40, n_items=10):
    half = n_items // 2
    rows, cols, withheld = [], [], []
    for u in range(n_users):
        group = range(0, half) if u % 2 == 0 else range(half, n_items)
        held = list(group)[(u // 2) % half]
        withheld.append(held)
        for i in group:
            if i != held:
                rows.append(u)
                cols.append(i)
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))
    return matrix, np.array(withheld)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_withheld_item_comes_first(name):
    user_items, withheld = checkerboard()
    iterations = 30 if name == "als" else 400
    model = fit_cf(name, user_items, n_users=40, n_items=10, factors=4, iterations=iterations,
                   regularization=0.01, seed=0)
    scores = model.user_factors @ model.item_factors.T
    scores[user_items.toarray() > 0] = -np.inf
    assert (scores.argmax(axis=1) == withheld).mean() >= 0.9


def test_transposed_matrix_is_rejected_with_a_hint():
    user_items, _ = checkerboard()
    with pytest.raises(DataValidationError, match="did you pass item_users"):
        fit_cf("als", user_items.T.tocsr(), n_users=40, n_items=10, factors=4, iterations=2)


def test_unknown_algorithm_is_rejected():
    user_items, _ = checkerboard()
    with pytest.raises(ConfigError, match="unknown CF algorithm 'svd'"):
        fit_cf("svd", user_items, n_users=40, n_items=10, factors=4, iterations=2)


def test_pair_scores_are_nan_for_unknown_users():
    user_items, _ = checkerboard()
    model = fit_cf("als", user_items, n_users=40, n_items=10, factors=4, iterations=3)
    out = model.pair_scores(np.array([0, -1]), np.array([1, 1]))
    assert out.dtype == np.float32
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_bpr_reports_every_ten_epochs_and_a_raising_callback_stops_it():
    user_items, _ = checkerboard()
    seen = []

    def record(epochs, users, items):
        seen.append((epochs, users.shape, items.shape))

    fit_cf("bpr", user_items, n_users=40, n_items=10, factors=4, iterations=25, seed=0, after_epochs=record)
    # Every 10 epochs before the last; users carry a column of ones, items their bias.
    assert seen == [(10, (40, 5), (10, 5)), (20, (40, 5), (10, 5))]

    def stop(epochs, users, items):
        raise RuntimeError(f"stopped after {epochs}")

    with pytest.raises(RuntimeError, match="stopped after 10"):
        fit_cf("bpr", user_items, n_users=40, n_items=10, factors=4, iterations=25, seed=0, after_epochs=stop)


def test_bpr_uses_only_the_pattern_and_learns_faster_with_a_higher_rate():
    user_items, withheld = checkerboard()
    weighted = user_items.copy()
    weighted.data[:] = np.arange(1, weighted.nnz + 1, dtype=np.float32)
    same = [fit_cf("bpr", m, n_users=40, n_items=10, factors=4, iterations=20, seed=1) for m in (user_items, weighted)]
    np.testing.assert_array_equal(same[0].item_factors, same[1].item_factors)

    def hit_rate(learning_rate):
        model = fit_cf("bpr", user_items, n_users=40, n_items=10, factors=4, iterations=20,
                       learning_rate=learning_rate, regularization=0.0, seed=0)
        scores = model.user_factors @ model.item_factors.T
        scores[user_items.toarray() > 0] = -np.inf
        return (scores.argmax(axis=1) == withheld).mean()

    assert hit_rate(1e-5) < 0.7 <= hit_rate(0.1)


@pytest.mark.parametrize(("iterations", "max_samples", "pairs", "epochs"),
                         [(100, 1_000_000, 5_000, 100), (100, 1_000_000, 50_000, 20), (100, 1_000, 50_000, 5)])
def test_bpr_epochs_shrink_to_the_sample_budget_but_not_below_five(iterations, max_samples, pairs, epochs):
    from features.cf import bpr_epochs

    assert bpr_epochs(iterations, max_samples, pairs) == epochs


def test_als_confidence_from_the_data_evens_out_dense_and_sparse_users():
    from features.cf import als_alpha

    dense = sp.csr_matrix(np.array([[5.0, 4.0, 1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    # users with history sum to 10 and 2 (mean 6); the user without any is not counted
    assert als_alpha(0.0, 225.0, dense) == 37.5
    assert als_alpha(0.0, 225.0, dense * 10) == 3.75  # ten times the values per user: a tenth of the scale
    assert als_alpha(4.0, 225.0, dense) == 4.0  # a set scale is used as it is
    assert als_alpha(0.0, 100.0, sp.csr_matrix((2, 3), dtype=np.float32)) == 100.0  # no history at all


def test_config_refuses_a_negative_als_confidence():
    from recsys.config import PipelineConfig
    from recsys.errors import ConfigError

    with pytest.raises(ConfigError, match="als_alpha must be 0 .from the data. or positive"):
        PipelineConfig(als_alpha=-1.0)


def _written_out_step(user_f, item_f, bias, *, u, i, j, positive_keys, lr, regularization):
    """One BPR batch step written out as plain tensor expressions: the specification that
    ``features.bpr._batch_step``'s in-place arithmetic must reproduce bit for bit."""
    import torch

    keys = u * len(item_f) + j
    keep = positive_keys[torch.searchsorted(positive_keys, keys).clamp_(max=len(positive_keys) - 1)] != keys
    u, i, j = u[keep], i[keep], j[keep]
    pu, qi, qj = user_f[u], item_f[i], item_f[j]
    z = torch.sigmoid(-(bias[i] - bias[j] + (pu * (qi - qj)).sum(1)))[:, None]
    user_f.index_add_(0, u, lr * (z * (qi - qj) - regularization * pu))
    item_f.index_add_(0, i, lr * (z * pu - regularization * qi))
    item_f.index_add_(0, j, lr * (-z * pu - regularization * qj))
    bias.index_add_(0, i, lr * (z[:, 0] - regularization * bias[i]))
    bias.index_add_(0, j, lr * (-z[:, 0] - regularization * bias[j]))


def test_bpr_batch_step_equals_the_written_out_steps_bit_for_bit():
    import torch

    from features.bpr import _batch_step

    n_users, n_items, n_pairs = 300, 12, 1_500
    generator = torch.Generator().manual_seed(3)
    users = torch.randint(0, n_users, (n_pairs,), generator=generator)
    items = torch.randint(0, n_items, (n_pairs,), generator=generator)
    positive_keys = torch.unique(users * n_items + items)  # sorted
    tables = [torch.randn(n_users, 8, generator=generator), torch.randn(n_items, 8, generator=generator),
              torch.randn(n_items, generator=generator)]
    ours, spec = [t.clone() for t in tables], [t.clone() for t in tables]
    skipped = 0
    for _ in range(5):
        # 2,048 samples over 12 items: every item recurs within a batch (as positive and as
        # negative), and about a third of the negatives are positives of their user (skipped).
        pick = torch.randint(0, n_pairs, (2_048,), generator=generator)
        u, i, j = users[pick], items[pick], torch.randint(0, n_items, (2_048,), generator=generator)
        skipped += int(torch.isin(u * n_items + j, positive_keys).sum())
        step = dict(u=u, i=i, j=j, positive_keys=positive_keys, lr=0.1, regularization=0.05)
        _batch_step(*ours, **step)
        _written_out_step(*spec, **step)
    assert skipped > 1_000
    for mine, written in zip(ours, spec, strict=True):
        assert torch.equal(mine, written)
    assert not torch.equal(ours[2], tables[2])  # the steps moved the biases


def test_bpr_fit_is_the_written_out_steps_over_its_seeded_draws():
    """The whole fit: its seeded start and draws, batches of BATCH samples, the learning rate
    falling linearly to FINAL_LR_SHARE, each batch the written-out step; factors bit for bit."""
    import torch

    from features.bpr import BATCH, FINAL_LR_SHARE, _Start, _with_bias, fit_bpr_factors

    rng = np.random.default_rng(5)
    rows, cols = rng.integers(0, 900, 6_000), rng.integers(0, 40, 6_000)
    user_items = sp.csr_matrix((np.ones(6_000, dtype=np.float32), (rows, cols)), shape=(900, 40))
    user_items.sum_duplicates()
    user_items.data[:] = 1.0
    assert user_items.nnz > BATCH  # more than one batch per epoch
    learning_rate, regularization, iterations = 0.1, 0.02, 4
    start = _Start.of(user_items, 6, seed=2)
    with torch.no_grad():
        for epoch in range(iterations):
            lr = learning_rate * (1 - (1 - FINAL_LR_SHARE) * epoch / (iterations - 1))
            picks, negatives = start.epoch_draws()
            for first in range(0, len(picks), BATCH):
                pick = picks[first:first + BATCH]
                _written_out_step(start.user_f, start.item_f, start.bias, u=start.users[pick], i=start.items[pick],
                                  j=negatives[first:first + BATCH], positive_keys=start.positive_keys, lr=lr,
                                  regularization=regularization)
    fitted = fit_bpr_factors(user_items, factors=6, iterations=iterations, learning_rate=learning_rate,
                             regularization=regularization, seed=2)
    for ours, spec in zip(fitted, _with_bias(start.user_f, start.item_f, start.bias), strict=True):
        np.testing.assert_array_equal(ours, spec)
