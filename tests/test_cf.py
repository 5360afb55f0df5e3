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


def _bpr_written_out(user_items, *, factors, iterations, learning_rate, regularization, seed):
    """The BPR steps written out as plain tensor expressions (the specification that
    ``features.bpr``'s in-place batch step must reproduce bit for bit)."""
    import torch

    from features.bpr import BATCH, FINAL_LR_SHARE, _with_bias

    n_users, n_items = user_items.shape
    coo = user_items.tocoo()
    users, items = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
    n = len(users)
    positive_keys = torch.sort(users * n_items + items).values
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    user_f = torch.from_numpy((rng.random((n_users, factors), dtype=np.float32) - 0.5) / factors)
    item_f = torch.from_numpy((rng.random((n_items, factors), dtype=np.float32) - 0.5) / factors)
    bias = torch.zeros(n_items)
    with torch.no_grad():
        for epoch in range(iterations):
            lr = learning_rate * (1.0 - (1.0 - FINAL_LR_SHARE) * epoch / max(iterations - 1, 1))
            picks = torch.randint(0, n, (n,), generator=generator)
            negatives = torch.randint(0, n_items, (n,), generator=generator)
            for start in range(0, n, BATCH):
                pick = picks[start:start + BATCH]
                u, i, j = users[pick], items[pick], negatives[start:start + BATCH]
                keys = u * n_items + j
                keep = positive_keys[torch.searchsorted(positive_keys, keys).clamp_(max=n - 1)] != keys
                u, i, j = u[keep], i[keep], j[keep]
                pu, qi, qj = user_f[u], item_f[i], item_f[j]
                z = torch.sigmoid(-(bias[i] - bias[j] + (pu * (qi - qj)).sum(1)))[:, None]
                user_f.index_add_(0, u, lr * (z * (qi - qj) - regularization * pu))
                item_f.index_add_(0, i, lr * (z * pu - regularization * qi))
                item_f.index_add_(0, j, lr * (-z * pu - regularization * qj))
                bias.index_add_(0, i, lr * (z[:, 0] - regularization * bias[i]))
                bias.index_add_(0, j, lr * (-z[:, 0] - regularization * bias[j]))
    return _with_bias(user_f, item_f, bias)


def test_bpr_batch_step_equals_the_written_out_steps_bit_for_bit():
    from features.bpr import BATCH, fit_bpr_factors

    rng = np.random.default_rng(3)
    # 12 items over 6,000 pairs: every item recurs within a batch, and a third of the negatives
    # are positives of their user (skipped), so the order of repeated updates is exercised.
    rows, cols = rng.integers(0, 1_500, 6_000), rng.integers(0, 12, 6_000)
    user_items = sp.csr_matrix((np.ones(6_000, dtype=np.float32), (rows, cols)), shape=(1_500, 12))
    user_items.data[:] = 1.0
    assert user_items.nnz > BATCH
    settings = dict(factors=8, iterations=6, learning_rate=0.1, regularization=0.05, seed=4)
    fast = fit_bpr_factors(user_items, **settings)
    slow = _bpr_written_out(user_items, **settings)
    for ours, spec in zip(fast, slow, strict=True):
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, spec)
    assert np.abs(fast[1][:, -1]).max() > 0  # the biases moved
