"""The feature state's fit: BPR beside the rest gives the factors BPR gives alone, and a failure
of the rest stops it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from features import state as state_module
from features.cf import bpr_epochs, fit_cf
from recsys.errors import FitStopped


def test_bpr_fitted_beside_the_rest_of_the_state_has_the_factors_of_bpr_alone(small_bundle):
    state, config = small_bundle.state, small_bundle.config
    alone = fit_cf("bpr", state.seen, n_users=len(state.users), n_items=len(state.items), factors=config.bpr_factors,
                   iterations=bpr_epochs(config.bpr_iterations, config.bpr_max_samples, state.seen.nnz),
                   learning_rate=config.bpr_learning_rate, regularization=config.bpr_regularization, seed=config.seed)
    assert state.bpr.user_factors.shape == (len(state.users), config.bpr_factors + 1)
    np.testing.assert_array_equal(state.bpr.user_factors, alone.user_factors)
    np.testing.assert_array_equal(state.bpr.item_factors, alone.item_factors)


def test_a_failure_beside_the_job_stops_it_and_no_thread_outlives_the_call():
    epochs = []
    running = threading.Event()

    def fit(n, *, should_stop):
        for epoch in range(n):
            if should_stop():
                raise FitStopped(f"stopped after {epoch} epochs")
            epochs.append(epoch)
            running.set()
            time.sleep(0.01)
        return "done"

    with pytest.raises(KeyError, match="the rest failed"), state_module._beside("job", fit, 2_000) as job:
        assert running.wait(30)
        raise KeyError("the rest failed")
    with pytest.raises(FitStopped, match="stopped after"):
        job.result(timeout=0)  # ended before the call returned: no waiting here
    assert len(epochs) < 2_000  # stopped, not run to its end (20 s)
    assert not [t for t in threading.enumerate() if t.name.startswith("job")]
    epochs.clear()
    with state_module._beside("job", fit, 3) as job:
        pass  # a block that ends well waits for the job, which runs to its end
    assert job.result(timeout=0) == "done" and epochs == [0, 1, 2]


def test_bpr_asked_to_stop_raises_before_its_next_epoch():
    import scipy.sparse as sp

    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2

    pattern = sp.random(30, 20, density=0.2, format="csr", random_state=0, dtype=np.float32)
    with pytest.raises(FitStopped, match="BPR stopped after 2 of 50 epochs"):
        fit_cf("bpr", pattern, n_users=30, n_items=20, factors=4, iterations=50, seed=0, should_stop=should_stop)


def test_a_job_that_failed_before_the_block_failed_is_reported_beside_the_blocks_error(caplog):
    def fit(*, should_stop):
        raise RuntimeError("BPR ran out of memory")

    with pytest.raises(KeyError, match="the rest failed"), state_module._beside("bpr", fit) as job:
        with pytest.raises(RuntimeError):
            job.result(timeout=30)  # the job has failed first
        raise KeyError("the rest failed")
    assert "bpr failed as well: RuntimeError: BPR ran out of memory" in caplog.text
