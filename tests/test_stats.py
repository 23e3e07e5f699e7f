"""Tests of brainlens.stats: the corrected resampled t-test of Nadeau and Bengio."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from brainlens.errors import ConfigError
from brainlens.stats import corrected_resampled_t, naive_t

# Hand computation for diffs (0.02, 0.04, 0.06, 0.08), 75 train / 25 test subjects:
# mean 0.05, s^2 = 0.002 / 3, factor 1/4 + 25/75 = 7/12, se = sqrt(7/12 * 0.002/3)
# = 0.0197203, t = 0.05 / se = 2.535463, t(0.975, 3) = 3.182446, half = 0.062758.
HAND = ([0.02, 0.04, 0.06, 0.08], 75, 25, 0.05, -0.012758, 0.112758, 2.535463)


@pytest.mark.parametrize(
    "diffs, n_train, n_test, mean, low, high, t",
    [
        HAND,
        # sizes per fold: the mean ratio (1/3) is used, as above
        ([0.02, 0.04, 0.06, 0.08], [60, 90, 75, 75], [20, 30, 25, 25], *HAND[3:]),
        # a nan fold is left out with its sizes: K = 4 as above
        ([0.02, float("nan"), 0.04, 0.06, 0.08], 75, 25, *HAND[3:]),
        # symmetric around 0: t = 0
        ([-0.1, 0.1, -0.1, 0.1], 80, 20, 0.0, None, None, 0.0),
    ],
)
def test_corrected_t_table(diffs, n_train, n_test, mean, low, high, t):
    r = corrected_resampled_t(diffs, n_train, n_test)
    assert r.mean == pytest.approx(mean, abs=1e-9)
    assert r.t == pytest.approx(t, abs=1e-5)
    if low is not None:
        assert (r.ci_low, r.ci_high) == pytest.approx((low, high), abs=1e-5)
    k = np.isfinite(diffs).sum()
    assert r.p == pytest.approx(2 * stats.t.sf(abs(t), k - 1), abs=1e-6)
    m, lo, hi, tt, p = r  # unpacks as a 5-tuple
    assert (m, tt) == (r.mean, r.t)


def test_corrected_interval_is_wider_than_naive():
    rng = np.random.default_rng(3)
    for _ in range(5):
        d = rng.normal(0.03, 0.05, size=10)
        c, n = corrected_resampled_t(d, 90, 10), naive_t(d)
        assert c.mean == pytest.approx(n.mean)
        assert c.ci_high - c.ci_low > n.ci_high - n.ci_low
        assert abs(c.t) < abs(n.t) and c.p > n.p
        # 10 x 90/10: variance factor 1/10 + 1/9 against 1/10
        ratio = (c.ci_high - c.ci_low) / (n.ci_high - n.ci_low)
        assert ratio == pytest.approx(math.sqrt((0.1 + 1 / 9) / 0.1))


def test_one_fold_has_no_interval():
    r = corrected_resampled_t([0.7], 80, 20)
    assert r.mean == pytest.approx(0.7)
    assert all(math.isnan(v) for v in (r.ci_low, r.ci_high, r.t, r.p))
    empty = corrected_resampled_t([float("nan")], 80, 20)
    assert math.isnan(empty.mean)


def test_constant_differences():
    r = corrected_resampled_t([0.1, 0.1, 0.1], 80, 20)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.1, 0.1)) and r.p == 0.0
    z = corrected_resampled_t([0.0, 0.0, 0.0], 80, 20)
    assert math.isnan(z.t) and math.isnan(z.p)


@pytest.mark.parametrize(
    "diffs, n_train, n_test, alpha",
    [
        ([[0.1, 0.2]], 10, 5, 0.05),  # 2-D
        ([0.1, 0.2], [10, 10, 10], 5, 0.05),  # sizes of the wrong length
        ([0.1, 0.2], 0, 5, 0.05),  # no training subjects
        ([0.1, 0.2], 10, 5, 1.5),  # alpha out of range
    ],
)
def test_bad_inputs_raise(diffs, n_train, n_test, alpha):
    with pytest.raises(ConfigError):
        corrected_resampled_t(diffs, n_train, n_test, alpha)
