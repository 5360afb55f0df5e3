"""The feature state's fit: BPR beside the rest gives the factors BPR gives alone, and a failure
of the rest stops it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from features import state as state_module
from features.cf import bpr_epochs, fit_cf


def test_bpr_fitted_beside_the_rest_of_the_state_has_the_factors_of_bpr_alone(small_bundle):
    state, config = small_bundle.state, small_bundle.config
    alone = fit_cf("bpr", state.seen, n_users=len(state.users), n_items=len(state.items), factors=config.bpr_factors,
                   iterations=bpr_epochs(config.bpr_iterations, config.bpr_max_samples, state.seen.nnz),
                   learning_rate=config.bpr_learning_rate, regularization=config.bpr_regularization, seed=config.seed)
    assert state.bpr.user_factors.shape == (len(state.users), config.bpr_factors + 1)
    np.testing.assert_array_equal(state.bpr.user_factors, alone.user_factors)
    np.testing.assert_array_equal(state.bpr.item_factors, alone.item_factors)


def test_a_failure_beside_the_job_stops_it_at_its_next_epoch_and_no_thread_outlives_the_call():
    epochs = []

    def fit(n, *, after_epochs, every):
        for epoch in range(n):
            time.sleep(0.05)
            epochs.append(epoch)
            after_epochs(epoch + 1)
        return "done"

    with pytest.raises(KeyError, match="the rest failed"), state_module._beside("job", fit, 1000) as job:
        time.sleep(0.12)
        raise KeyError("the rest failed")
    assert 1 <= len(epochs) <= 5  # stopped within an epoch of the failure, not after 1000
    with pytest.raises(state_module._Stopped, match="job stopped"):
        job.result(timeout=0)
    assert not [t for t in threading.enumerate() if t.name.startswith("job")]
    with state_module._beside("job", fit, 3) as job:
        pass
    assert job.result(timeout=0) == "done" and len(epochs) > 3  # a block that ends well waits for it
