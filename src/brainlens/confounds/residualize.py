"""Per-feature linear confound removal, fitted on training rows only.

For every feature (voxel or region) ``x = a + C b + e`` is fitted by least squares on
the fit rows; any row is then mapped to ``x - (C - mean_fit(C)) b``: the covariates'
linear effect is removed and the fit rows' feature mean is kept, so residualised maps
stay in the maps' units. :func:`apply_residualizer` is pure numpy and takes one sample
(shape (V,)) as well as a matrix, for a torch Dataset to call per sample.
"""

from __future__ import annotations

import numpy as np

from brainlens.errors import ConfigError


def fit_residualizer(x: np.ndarray, c: np.ndarray, train_rows: np.ndarray) -> dict[str, np.ndarray]:
    """OLS betas of each feature on the covariates, from ``train_rows`` only.

    Parameters
    ----------
    x : ndarray, shape (n, V)
        Features of all rows of the fold (only ``train_rows`` are read).
    c : ndarray, shape (n, p)
        Encoded covariates (reference-coded categoricals).
    train_rows : ndarray of bool, shape (n,), or of int
        The fit rows.

    Returns
    -------
    dict
        ``c_mean`` (p,), ``beta`` (p, V) float64.

    Raises
    ------
    ConfigError
        Fewer fit rows than covariates + 2, or covariates that are collinear (or
        constant) on the fit rows.
    """
    rows = _rows(train_rows, len(x))
    xf, cf = np.asarray(x, np.float64)[rows], np.asarray(c, np.float64)[rows]
    n, p = cf.shape
    if n < p + 2:
        raise ConfigError(
            f"confounds.method residualize: {n} fit rows for {p} covariate columns. Fix: "
            "use fewer covariates or confounds.fit_on: train"
        )
    c_mean = cf.mean(axis=0)
    design = cf - c_mean
    if p and np.linalg.matrix_rank(design) < p:
        raise ConfigError(
            f"confounds.method residualize: the {p} covariate columns are collinear or "
            "constant on the fit rows (e.g. one sex only among the training controls). "
            "Fix: drop the redundant covariate"
        )
    beta = (
        np.linalg.lstsq(design, xf - xf.mean(axis=0), rcond=None)[0]
        if p
        else np.zeros((0, x.shape[1]))
    )
    return {"c_mean": c_mean, "beta": beta}


def apply_residualizer(x: np.ndarray, c: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Remove the fitted covariate effect: ``x - (c - c_mean) @ beta``.

    Parameters
    ----------
    x : ndarray, shape (n, V) or (V,)
    c : ndarray, shape (n, p) or (p,)
    params : dict
        :func:`fit_residualizer`.

    Returns
    -------
    ndarray, same shape as ``x``, float64
    """
    beta = params["beta"]
    if np.shape(c)[-1] != beta.shape[0] or np.shape(x)[-1] != beta.shape[1]:
        raise ConfigError(
            f"residualizer of {beta.shape[0]} covariates x {beta.shape[1]} features applied "
            f"to covariates {np.shape(c)} and features {np.shape(x)}. Fix: refit it"
        )
    return np.asarray(x, np.float64) - (np.asarray(c, np.float64) - params["c_mean"]) @ beta


def _rows(rows: np.ndarray, n: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise ConfigError(f"train_rows: boolean mask of shape {rows.shape}, expected ({n},)")
        return np.flatnonzero(rows)
    return rows.astype(np.int64)
