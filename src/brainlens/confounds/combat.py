"""ComBat site harmonisation fitted on training rows: :func:`fit_combat`, :func:`apply_combat`.

The fit is neuroCombat 0.2.12's ``neuroCombat`` (Fortin et al. 2017/2018; empirical
Bayes location/scale per site, the covariates' effects preserved), run on the fit rows
only. Its estimates are reduced to what one new row needs (per feature: the grand mean,
pooled variance, the covariates' betas; per site: the EB location ``gamma*`` and scale
``delta*``), so the parameters of a voxel model stay small.

:func:`apply_combat` is pure numpy and takes one sample or a matrix. For a row with
site ``s`` and covariates ``c`` it computes::

    z   = (x - mean - c @ beta) / sqrt(var)
    out = (z - gamma*[s]) / sqrt(delta*[s]) * sqrt(var) + mean + c @ beta

which reproduces ``neuroCombat(...)["data"]`` on the fit rows exactly; on new rows it
is ``neuroCombatFromTraining`` except that the row's own covariate effect is preserved
(``neuroCombatFromTraining`` takes no covariates and uses the fit rows' mean effect).
The label is never a covariate here: it is unknown for test rows. Features constant on
the fit rows are passed through unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pandas as pd

from brainlens.confounds.residualize import _rows
from brainlens.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)
#: The pinned implementation (pyproject.toml, envs/train.yaml).
NEUROCOMBAT_VERSION = "0.2.12"


def _neurocombat():
    try:
        from neuroCombat import neuroCombat
    except ImportError:
        raise ConfigError(
            "confounds.method combat needs neuroCombat, which is not installed. Fix: "
            f"pip install neuroCombat=={NEUROCOMBAT_VERSION} (or use the workflow's envs/train.yaml)"
        ) from None
    return neuroCombat


def _check_sites(sites: np.ndarray) -> None:
    levels, counts = np.unique(sites, return_counts=True)
    if len(levels) < 2:
        raise ConfigError(
            f"confounds.method combat: the fit rows come from one site only ({list(levels)}); "
            "there is nothing to harmonise. Fix: use confounds.method none or residualize"
        )
    few = [str(s) for s, k in zip(levels, counts, strict=True) if k < 2]
    if few:
        raise ConfigError(
            f"confounds.method combat: site(s) {few} have fewer than 2 fit rows, too few to "
            "estimate a site variance. Fix: stratify the folds by site (folds.stratify: "
            "[site]) or exclude those sites"
        )


def fit_combat(
    x: np.ndarray,
    site: np.ndarray,
    c: np.ndarray,
    train_rows: np.ndarray,
    *,
    eb: bool = True,
    parametric: bool = True,
) -> dict[str, np.ndarray]:
    """Fit ComBat (neuroCombat) on ``train_rows`` only.

    Parameters
    ----------
    x : ndarray, shape (n, V)
        Features of the fold's rows (only ``train_rows`` are read).
    site : ndarray of str, shape (n,)
    c : ndarray, shape (n, p)
        Covariates to preserve, encoded (reference-coded categoricals); never the label.
    train_rows : ndarray of bool, shape (n,), or of int
    eb, parametric : bool
        neuroCombat's empirical Bayes options.

    Returns
    -------
    dict
        ``sites`` (S,), ``keep`` (V,) bool, ``stand_mean`` (K,), ``var_pooled`` (K,),
        ``gamma_star`` (S, K), ``delta_star`` (S, K), ``beta`` (p, K), with K the
        number of kept (non-constant) features.

    Raises
    ------
    ConfigError
        One site, a site with < 2 rows, collinear covariates, neuroCombat missing or
        failing.
    """
    rows = _rows(train_rows, len(x))
    xf = np.asarray(x, np.float64)[rows]
    sites = np.asarray(site).astype(str)[rows]
    # neuroCombat casts continuous covariates to float32 in its design
    cf = np.asarray(c, np.float64)[rows].astype(np.float32).astype(np.float64)
    _check_sites(sites)
    levels = np.unique(sites)
    onehot = (sites[:, None] == levels[None, :]).astype(float)
    design = np.column_stack([onehot, cf])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ConfigError(
            "confounds.method combat: the covariates are collinear with each other or with "
            "site on the fit rows (e.g. a covariate constant within the training part, or "
            "one that codes the site). Fix: drop it from covariates"
        )
    keep = xf.std(axis=0) > 0
    names = [f"c{i}" for i in range(cf.shape[1])]
    covars = pd.DataFrame(cf, columns=names).assign(site=sites)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            out = _neurocombat()(
                xf[:, keep].T.copy(),
                covars,
                "site",
                continuous_cols=names,
                eb=eb,
                parametric=parametric,
            )
    except (AttributeError, TypeError, ValueError, np.linalg.LinAlgError) as err:
        raise ConfigError(
            f"neuroCombat {NEUROCOMBAT_VERSION} failed with numpy {np.__version__} and pandas "
            f"{pd.__version__}: {type(err).__name__}: {err}. Fix: check the installed "
            "neuroCombat version, or use confounds.method residualize"
        ) from err
    log.debug("neuroCombat: %s", buf.getvalue().strip().replace("\n", "; "))
    est = out["estimates"]
    if list(np.asarray(est["batches"]).astype(str)) != list(levels):
        raise ConfigError(f"neuroCombat site order {list(est['batches'])} != {list(levels)}")
    mod_mean = np.asarray(est["mod.mean"], np.float64)  # (K, n_fit) = (cf @ beta).T
    beta = (
        np.linalg.lstsq(cf, mod_mean.T, rcond=None)[0]
        if cf.shape[1]
        else np.zeros((0, int(keep.sum())))
    )
    return {
        "sites": levels,
        "keep": keep,
        "stand_mean": np.asarray(est["stand.mean"], np.float64)[:, 0],
        "var_pooled": np.asarray(est["var.pooled"], np.float64).ravel(),
        "gamma_star": np.asarray(est["gamma.star"], np.float64),
        "delta_star": np.asarray(est["delta.star"], np.float64),
        "beta": beta,
    }


def apply_combat(
    x: np.ndarray, site: np.ndarray | str, c: np.ndarray, params: dict[str, np.ndarray]
) -> np.ndarray:
    """Harmonise rows with fitted ComBat parameters (pure numpy).

    Parameters
    ----------
    x : ndarray, shape (n, V) or (V,)
    site : ndarray of str, shape (n,), or str
    c : ndarray, shape (n, p) or (p,)
        Covariates encoded as for the fit.
    params : dict
        :func:`fit_combat`.

    Returns
    -------
    ndarray, same shape as ``x``, float64

    Raises
    ------
    DatasetError
        A site that the fit rows did not have, named.
    """
    single = np.ndim(x) == 1
    x2 = np.atleast_2d(np.asarray(x, np.float64))
    c2 = np.asarray(c, np.float64).astype(np.float32).astype(np.float64).reshape(len(x2), -1)
    s = np.atleast_1d(np.asarray(site).astype(str))
    known = [str(v) for v in params["sites"]]
    unseen = sorted(set(s) - set(known))
    if unseen:
        raise DatasetError(
            f"ComBat: site(s) {unseen} never occur in the rows it was fitted on (sites "
            f"{known}); a site effect cannot be removed without training data from that "
            "site. Fix: stratify the folds by site (folds.stratify: [site]) so every site is "
            "in each training part, or exclude that site's scans"
        )
    keep = np.asarray(params["keep"], bool)
    if x2.shape[1] != keep.size or c2.shape[1] != params["beta"].shape[0]:
        raise ConfigError(
            f"ComBat parameters of {keep.size} features and {params['beta'].shape[0]} "
            f"covariates applied to {x2.shape[1]} features and {c2.shape[1]} covariates. "
            "Fix: refit them"
        )
    idx = np.searchsorted(np.asarray(known), s)
    sd = np.sqrt(params["var_pooled"])
    mean = params["stand_mean"] + c2 @ params["beta"]
    z = (x2[:, keep] - mean) / sd
    z = (z - params["gamma_star"][idx]) / np.sqrt(params["delta_star"][idx])
    out = x2.copy()
    out[:, keep] = z * sd + mean
    return out[0] if single else out
