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
