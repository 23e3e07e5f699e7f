"""Statistics over cross-validation folds: the corrected resampled t-test.

The folds (k-fold) or repeats (repeated random splits) of one analysis share most of
their training subjects, so their test scores are positively correlated and the
ordinary t-interval over folds (variance / K) is too narrow. Nadeau and Bengio (2003)
replace the factor ``1/K`` by ``1/K + n_test/n_train``; Bouckaert and Frank (2004)
showed the same correction works for (repeated) k-fold cross-validation. The
correction is an approximation (it assumes a correlation of ``n_test/(n_test +
n_train)`` between folds), not an exact interval, but it is far less optimistic than
the naive one.

References
----------
Nadeau C, Bengio Y (2003). Inference for the generalization error. Machine Learning
52:239-281.
Bouckaert RR, Frank E (2004). Evaluating the replicability of significance tests for
comparing learning algorithms. PAKDD, LNCS 3056:3-12.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats as _st

from brainlens.errors import ConfigError

__all__ = ["CorrectedT", "corrected_resampled_t", "naive_t"]


class CorrectedT(NamedTuple):
    """Result of :func:`corrected_resampled_t` (unpacks as ``mean, low, high, t, p``)."""

    mean: float
    ci_low: float
    ci_high: float
    t: float
    p: float


def _sizes(value: int | float | np.ndarray, k: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return np.full(k, float(arr))
    if arr.shape != (k,):
        raise ConfigError(
            f"corrected_resampled_t: {name} has shape {arr.shape}, expected one size "
            f"per fold ({k}). Fix: pass a single int or one value per fold"
        )
    return arr


def _t_result(diffs: np.ndarray, factor: float | None, alpha: float) -> CorrectedT:
    nan = float("nan")
    k = len(diffs)
    if k == 0:
        return CorrectedT(nan, nan, nan, nan, nan)
    mean = float(np.mean(diffs))
    if k < 2 or factor is None or not np.isfinite(factor):
        return CorrectedT(mean, nan, nan, nan, nan)
    se = 0.0 if np.ptp(diffs) == 0 else float(np.sqrt(factor * np.var(diffs, ddof=1)))
    half = float(_st.t.ppf(1 - alpha / 2, k - 1)) * se
    if se == 0:
        t = nan if mean == 0 else float(np.sign(mean) * np.inf)
    else:
        t = mean / se
    p = nan if np.isnan(t) else float(2 * _st.t.sf(abs(t), k - 1))
    return CorrectedT(mean, mean - half, mean + half, t, p)


def _check(diffs: np.ndarray | list[float], alpha: float) -> np.ndarray:
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1:
        raise ConfigError(
            f"corrected_resampled_t: expected one value per fold (1-D), got shape {d.shape}"
        )
    if not 0 < alpha < 1:
        raise ConfigError(f"corrected_resampled_t: alpha must lie in (0, 1), got {alpha!r}")
    return d


def corrected_resampled_t(
    diffs: np.ndarray | list[float],
    n_train: int | float | np.ndarray,
    n_test: int | float | np.ndarray,
    alpha: float = 0.05,
) -> CorrectedT:
    """Mean over folds with the corrected resampled t-interval and test of mean 0.

    Parameters
    ----------
    diffs : array-like, shape (K,)
        One value per fold or repeat: a paired difference between two models on the
        same folds (the test is then of "no difference"), or one model's score (only
        the interval is then of interest). Non-finite values (a metric undefined on
        a fold) are left out, together with their fold's sizes.
    n_train, n_test : int or array-like of shape (K,)
        Number of training and test units of each fold (subjects, when splits are by
        subject). The correction uses the mean of ``n_test / n_train`` over folds;
        nan sizes (unknown) give no interval.
    alpha : float
        1 - confidence level (0.05: 95 % interval).

    Returns
    -------
    CorrectedT
        ``mean``, ``ci_low``, ``ci_high``, ``t``, ``p`` (two-sided, K - 1 degrees of
        freedom), with variance ``(1/K + n_test/n_train) * s**2`` (``s``: SD of the
        values, ddof 1) instead of the naive ``s**2 / K``.

    Notes
    -----
    The interval accounts for the training sets of the folds overlapping (their
    scores are correlated); it is the approximation of Nadeau and Bengio (2003), see
    the module docstring. With one fold (hold-out) there is no interval: ``ci_low``,
    ``ci_high``, ``t`` and ``p`` are nan. With all values equal the interval has width
    0 and ``t`` is +-inf (``p`` 0) or, for a mean of 0, nan.
    """
    d = _check(diffs, alpha)
    tr = _sizes(n_train, len(d), "n_train")
    te = _sizes(n_test, len(d), "n_test")
    keep = np.isfinite(d)
    d, tr, te = d[keep], tr[keep], te[keep]
    if len(d) and (np.any(tr <= 0) or np.any(te <= 0)):
        raise ConfigError(
            f"corrected_resampled_t: n_train {tr.tolist()} and n_test {te.tolist()} must be "
            "positive sizes. Fix: count the train and test subjects of each fold"
        )
    factor = 1.0 / len(d) + float(np.mean(te / tr)) if len(d) else None  # nan: sizes unknown
    return _t_result(d, factor, alpha)


def naive_t(diffs: np.ndarray | list[float], alpha: float = 0.05) -> CorrectedT:
    """The uncorrected t-interval over folds (variance ``s**2 / K``), for comparison only.

    Parameters
    ----------
    diffs : array-like, shape (K,)
        One value per fold; non-finite values are left out.
    alpha : float
        1 - confidence level.

    Returns
    -------
    CorrectedT
        As :func:`corrected_resampled_t`, but it treats the folds as independent, which
        they are not: too narrow for cross-validation.
    """
    d = _check(diffs, alpha)
    d = d[np.isfinite(d)]
    return _t_result(d, 1.0 / len(d) if len(d) else None, alpha)
