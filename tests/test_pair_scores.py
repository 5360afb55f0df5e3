import numpy as np
import pytest

from features.pair_scores import pair_dot


@pytest.mark.parametrize("n_right", [30, 5000])  # dense path, gather path
def test_pair_dot_matches_the_obvious_loop(n_right):
    rng = np.random.default_rng(0)
    left = rng.normal(size=(20, 8)).astype(np.float32)
    right = rng.normal(size=(n_right, 8)).astype(np.float32)
    li = rng.integers(-1, 20, size=400)
    ri = rng.integers(0, n_right, size=400)
    valid = np.ones(20, dtype=bool)
    valid[3] = False
    got = pair_dot(left, right, li, ri, valid_left=valid)
    expected = [np.nan if (u < 0 or u == 3) else float(left[u] @ right[i]) for u, i in zip(li, ri, strict=True)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
