"""In-fold confound removal for the voxel and region baselines.

:func:`write_fold_confounds` (rule ``fit_confounds``) builds a fold's features exactly as
:func:`brainlens.linear.fit.train_linear_fold` does, fits ``residualize`` or ``combat``
on its training rows (:mod:`brainlens.confounds.infold`) and saves the parameters;
:func:`apply_fold_confounds` (inside ``train_linear_fold``) audits them against the
folds table and applies them to the train, validation and test features.
``confounds_only`` is the covariates themselves and is never residualised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens.confounds.covariates import (
    TIV,
    covariate_names,
    covariates_of_rows,
)
from brainlens.confounds.infold import (
    apply_confounds,
    check_confound_provenance,
    encode_rows,
    fit_fold_confounds,
    load_fold_confounds,
    save_fold_confounds,
)
from brainlens.errors import ConfigError
from brainlens.folds import audit_folds, fold_part, read_folds
from brainlens.linear.features import LINEAR_MODELS, fold_features

#: The ``tiv`` rule's table.
TIV_TSV = "results/preprocess/tiv.tsv"


def fold_parts(folds: pd.DataFrame, fold: int) -> dict[str, pd.DataFrame]:
    """``train``, ``val``, ``test`` rows of a fold, with ``scan_id``."""
    return {role: fold_part(folds, fold, role) for role in ("train", "val", "test")}


def _all_rows(parts: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([p.assign(role=r) for r, p in parts.items()], ignore_index=True)


def write_fold_confounds(
    *,
    kind: str,
    folds_tsv: str | Path,
    fold: int,
    out_npz: str | Path,
    out_json: str | Path,
    participants_tsv: str | Path,
    covariates: Sequence[Any],
    method: str,
    fit_on: str = "train",
    site_column: str = "site",
    control_class: str | None = None,
    positive_class: str | None = None,
    tiv_tsv: str | Path | None = None,
    pack: tuple[str | Path, str | Path] | None = None,
    mask_nii: str | Path | None = None,
    atlas_nii: str | Path | None = None,
    atlas_tsv: str | Path | None = None,
) -> dict[str, Any]:
    """Fit one fold's confound removal on its training rows and save it.

    Parameters
    ----------
    kind : {"voxels", "regions"}
        The baseline features (as in :func:`brainlens.linear.fit.train_linear_fold`).
    folds_tsv : path
        Audited first.
    fold : int
    out_npz, out_json : path
        ``results/confounds/<kind>/fold-<k>.npz`` and ``.json`` (the fit scans).
    participants_tsv, tiv_tsv : path
        Covariate sources (``tiv_tsv`` when ``tiv`` is a covariate).
    covariates : sequence
        The ``covariates:`` config value.
    method, fit_on, site_column, control_class, positive_class
        ``confounds.*`` (see :func:`brainlens.confounds.infold.fit_fold_confounds`).
    pack, mask_nii, atlas_nii, atlas_tsv
        Feature sources.

    Returns
    -------
    dict
        The sidecar written to ``out_json``.
    """
    folds = read_folds(folds_tsv)
    audit_folds(folds)
    parts = fold_parts(folds, fold)
    x, _ = fold_features(
        kind, parts, pack=pack, mask_nii=mask_nii, atlas_nii=atlas_nii, atlas_tsv=atlas_tsv
    )
    rows = _all_rows(parts)
    values, kinds, site = covariates_of_rows(
        rows, participants_tsv, tiv_tsv, covariates, site_column if method == "combat" else None
    )
    params, meta = fit_fold_confounds(
        np.concatenate([x[r] for r in parts]),
        rows,
        values,
        kinds,
        method=method,
        fold=fold,
        fit_on=fit_on,
        site=site,
        control_class=control_class,
        positive_class=positive_class,
    )
    meta |= {
        "features": kind,
        "covariates": list(covariates),
        "site_column": site_column if method == "combat" else None,
    }
    save_fold_confounds(params, meta, out_npz, out_json)
    return meta


def apply_fold_confounds(
    x: Mapping[str, np.ndarray],
    parts: Mapping[str, pd.DataFrame],
    *,
    npz: str | Path,
    sidecar: str | Path,
    folds_tsv: str | Path,
    fold: int,
    participants_tsv: str | Path,
    tiv_tsv: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Audit a fold's saved parameters, then apply them to every part.

    Parameters
    ----------
    x : dict of str to ndarray, shape (n_part, V)
    parts : dict of str to DataFrame
        The rows of ``x`` (``participant_id``, ``scan_id``).
    npz, sidecar : path
        :func:`write_fold_confounds`' files.
    folds_tsv, fold
        For the leakage audit (:func:`check_confound_provenance`).
    participants_tsv, tiv_tsv : path

    Returns
    -------
    dict of str to ndarray
        The transformed features, same shapes.
    """
    check_confound_provenance(sidecar, folds_tsv, fold)
    params, meta = load_fold_confounds(npz, sidecar)
    if int(meta["n_features"]) != next(iter(x.values())).shape[1]:
        raise ConfigError(
            f"{sidecar}: fitted on {meta['n_features']} features, applied to "
            f"{next(iter(x.values())).shape[1]}. Fix: re-run fit_confounds"
        )
    out = {}
    for role, rows in parts.items():
        values, _, site = covariates_of_rows(
            rows, participants_tsv, tiv_tsv, meta["covariates"], meta.get("site_column")
        )
        c = encode_rows(values, meta, list(rows["scan_id"]))
        out[role] = apply_confounds(x[role], c, params, meta["method"], site=site)
    return out


def tiv_rule_inputs(covariates: Sequence[Any]) -> dict[str, str]:
    """``{"tiv": results/preprocess/tiv.tsv}`` when ``tiv`` is a covariate, else ``{}``."""
    return {"tiv": TIV_TSV} if TIV in covariate_names(covariates) else {}


def confound_rule_inputs(
    model: str, fold: int | str, *, method: str, covariates: Sequence[Any], participants_tsv: str
) -> dict[str, str]:
    """Extra inputs of ``train_linear`` / ``linear_pattern`` for one model and fold.

    ``confounds_only`` gets the TIV table when ``tiv`` is a covariate (its
    participants.tsv comes with its feature inputs); the voxel and region models get
    participants.tsv, the TIV table and ``results/confounds/<kind>/fold-<k>.npz`` +
    ``.json`` when ``method`` is not ``none``, else nothing.
    """
    kind = LINEAR_MODELS[model]
    if kind == "covariates":
        return tiv_rule_inputs(covariates)
    if method == "none":
        return {}
    stem = f"results/confounds/{kind}/fold-{fold}"
    return tiv_rule_inputs(covariates) | {
        "participants": participants_tsv,
        "confounds_npz": f"{stem}.npz",
        "confounds_json": f"{stem}.json",
    }
