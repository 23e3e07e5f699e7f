"""One fold's confound removal: config checks, fit, saved parameters, audit, apply.

``confounds.method``: ``none`` (default), ``residualize`` (per-feature OLS on the
covariates) or ``combat`` (site harmonisation, the covariates preserved). The fit uses
the fold's training rows (``fit_on: train``) or its training controls
(``train_controls``); validation and test rows are only transformed. The parameters
go to ``<name>.npz`` with a ``<name>.json`` sidecar that lists the scans they were
fitted on; :func:`check_confound_provenance` (the leakage audit) refuses them when that
list holds any scan outside the fold's training part, as
:func:`brainlens.attribution.baselines.check_baseline_provenance` does for baselines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens._io import atomic_output, write_text_atomic
from brainlens.confounds.covariates import covariate_names, encode, fit_encoding
from brainlens.confounds.residualize import apply_residualizer, fit_residualizer
from brainlens.errors import ConfigError, InputFileError, LeakageError
from brainlens.folds import fold_part, read_folds

METHODS = ("none", "residualize", "combat")
FIT_ON = ("train", "train_controls")
DEFAULTS = {
    "method": "none",
    "fit_on": "train",
    "site_column": "site",
    "control_class": None,
    "scope": "all",
}


def confound_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config["confounds"]`` with its defaults."""
    return DEFAULTS | dict(config.get("confounds") or {})


def check_confounds_config(config: Mapping[str, Any]) -> None:
    """Parse-time checks of ``covariates:`` and ``confounds:`` (no file is read).

    Raises
    ------
    ConfigError
        The removed ``baselines.covariates`` key; a bad covariate entry or the label
        as a covariate; ``residualize`` without covariates; the site column both
        harmonised and preserved. (``scope: all`` harmonises the CNN inputs as well:
        :mod:`brainlens.confounds.inputs`; ``scope: baselines`` the linear baselines only.)
    """
    if "covariates" in (config.get("baselines") or {}):
        raise ConfigError(
            "baselines.covariates: moved to the top-level key covariates (used by "
            "confounds_only, confounds.method and tiv). Fix: delete baselines.covariates and "
            f"write covariates: {config['baselines']['covariates']!r} at the top level"
        )
    names = covariate_names(config.get("covariates"))
    label = config.get("label_column")
    if label is not None and label in names:
        raise ConfigError(
            f"covariates: {label!r} is the label column; a model given the label scores "
            "perfectly. Fix: remove it from covariates"
        )
    s = confound_settings(config)
    if s["method"] == "residualize" and not names:
        raise ConfigError(
            "confounds.method residualize: covariates is empty, so there is nothing to "
            "regress out. Fix: list covariates (e.g. [age, sex, tiv]) or method: none"
        )
    if s["method"] == "combat" and s["site_column"] in names:
        raise ConfigError(
            f"confounds.method combat: the site column {s['site_column']!r} is also in "
            "covariates, which ComBat would preserve while removing it. Fix: remove it from "
            "covariates (ComBat removes site; residualize can regress site out instead)"
        )


def check_site_column(
    participants_tsv: str | Path, site_column: str, participant_ids: Sequence[str] | None = None
) -> None:
    """``confounds.site_column`` is a participants.tsv column without ``n/a`` (combat)."""
    from brainlens.confounds.covariates import check_covariates, read_participants

    columns = list(read_participants(participants_tsv).columns)
    if site_column not in columns:
        raise ConfigError(
            f"confounds.site_column: {site_column!r} is not a column of {participants_tsv} "
            f"(columns {columns}); ComBat harmonises that column. Fix: add the site of each "
            "participant there, or set confounds.site_column to the column that holds it"
        )
    check_covariates(participants_tsv, [{site_column: "categorical"}], None, participant_ids)


def control_rows(labels: pd.Series, control_class: str | None, positive_class: str | None):
    """Boolean mask of control rows; the control is the non-positive class of two."""
    classes = sorted(map(str, set(labels)))
    if control_class is None:
        if len(classes) != 2:
            raise ConfigError(
                f"confounds.fit_on train_controls: {len(classes)} classes {classes}; name "
                "the control class. Fix: set confounds.control_class"
            )
        positive = str(positive_class) if positive_class is not None else classes[-1]
        control_class = next(c for c in classes if c != positive)
    if str(control_class) not in classes:
        raise ConfigError(
            f"confounds.control_class: {control_class!r} is not a class of the training part "
            f"{classes}. Fix: set it to one of them"
        )
    return (labels.astype(str) == str(control_class)).to_numpy()


def fit_fold_confounds(
    x: np.ndarray,
    rows: pd.DataFrame,
    values: pd.DataFrame,
    kinds: Mapping[str, str],
    *,
    method: str,
    fold: int,
    fit_on: str = "train",
    site: np.ndarray | None = None,
    control_class: str | None = None,
    positive_class: str | None = None,
    fit_rows: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fit one fold's confound removal on its training rows.

    Parameters
    ----------
    x : ndarray, shape (n, V)
        Features of the fold's rows (train, val, test).
    rows : DataFrame, n rows
        ``scan_id``, ``label``, ``role`` of each row.
    values, kinds
        :func:`brainlens.confounds.covariates.covariate_values` of the rows.
    method : {"residualize", "combat"}
    fold : int
    fit_on : {"train", "train_controls"}
    site : ndarray of str, shape (n,), optional
        Site of each row (``combat``).
    control_class, positive_class : str, optional
        See :func:`control_rows`.
    fit_rows : ndarray of bool, shape (n,), optional
        Override of the fit rows (tests of the audit only).

    Returns
    -------
    params : dict of ndarray
    meta : dict
        JSON sidecar: ``method, fit_on, fold, encoding, n_fit, fit_scan_ids``.
    """
    if method not in METHODS[1:]:
        raise ConfigError(f"confounds.method: {method!r}; allowed {list(METHODS)}")
    if fit_on not in FIT_ON:
        raise ConfigError(f"confounds.fit_on: {fit_on!r}; allowed {list(FIT_ON)}")
    if fit_rows is None:
        fit_rows = (rows["role"] == "train").to_numpy()
        if fit_on == "train_controls":
            fit_rows &= control_rows(rows["label"], control_class, positive_class)
    fit_rows = np.asarray(fit_rows, bool)
    encoding = fit_encoding(values, kinds, fit_rows, drop_first=True)
    c, names = encode(values, encoding, unseen="zeros")  # only fit rows are read
    if method == "residualize":
        params = fit_residualizer(x, c, fit_rows)
    else:
        from brainlens.confounds.combat import NEUROCOMBAT_VERSION, fit_combat

        if site is None:
            raise ConfigError("confounds.method combat: no site column given")
        params = fit_combat(x, np.asarray(site).astype(str), c, fit_rows)
    meta = {
        "method": method,
        "fit_on": fit_on,
        "fold": int(fold),
        "encoding": encoding,
        "covariate_columns": names,
        "n_features": int(x.shape[1]),
        "n_fit": int(fit_rows.sum()),
        "fit_scan_ids": [str(s) for s in rows["scan_id"][fit_rows]],
    }
    if method == "combat":
        meta["neuroCombat"] = NEUROCOMBAT_VERSION
    return params, meta


def save_fold_confounds(
    params: Mapping[str, np.ndarray], meta: Mapping[str, Any], npz: str | Path, sidecar: str | Path
) -> None:
    """Write the parameters (``.npz``) and their sidecar (``.json``) atomically."""
    with atomic_output(npz) as tmp:
        np.savez_compressed(tmp, **params)
    write_text_atomic(sidecar, json.dumps(dict(meta), indent=1))


def load_fold_confounds(npz: str | Path, sidecar: str | Path) -> tuple[dict, dict]:
    """Read :func:`save_fold_confounds`' files."""
    for p in (Path(npz), Path(sidecar)):
        if not p.is_file():
            raise InputFileError(p, "confound parameters not found", "run the fit_confounds rule")
    with np.load(npz) as data:
        params = {k: data[k] for k in data.files}
    return params, json.loads(Path(sidecar).read_text())


def check_confound_provenance(json_path: str | Path, folds_tsv: str | Path, fold: int) -> None:
    """Leakage audit: the parameters were fitted on the fold's training part only.

    Raises
    ------
    LeakageError
        Naming the sidecar, when it belongs to another fold or lists a fit scan that is
        not in the training part of ``fold`` (a validation or test scan, or one missing
        from the folds table).
    """
    path = Path(json_path)
    if not path.is_file():
        raise InputFileError(path, "confound sidecar not found", "run the fit_confounds rule")
    meta = json.loads(path.read_text())
    if int(meta["fold"]) != int(fold):
        raise LeakageError(
            f"{path}: confound parameters of fold {meta['fold']} used for fold {fold}. Fix: "
            f"use the fold-{fold} files"
        )
    part = fold_part(read_folds(folds_tsv), fold)
    role = dict(zip(part["scan_id"], part["role"], strict=True))
    bad = [(s, role.get(s, "not in the folds table")) for s in meta["fit_scan_ids"]]
    bad = [(s, r) for s, r in bad if r != "train"]
    if bad or int(meta["n_fit"]) != len(meta["fit_scan_ids"]):
        shown = ", ".join(f"{s} ({r})" for s, r in bad[:5]) or "n_fit mismatch"
        raise LeakageError(
            f"{path}: the {meta['method']} parameters of fold {fold} were fitted on scans "
            f"outside its training part: {shown} ({len(bad)} in all). Fix: re-run "
            f"fit_confounds with {folds_tsv}"
        )


def apply_confounds(
    x: np.ndarray, c: np.ndarray, params: Mapping[str, np.ndarray], method: str, site=None
) -> np.ndarray:
    """Pure numpy apply step, one sample ((V,), (p,), site str) or many ((n, V), (n, p)).

    For the CNN inputs (:class:`brainlens.confounds.inputs.InputConfounds`, per sample)
    as well as the linear baselines; ``c`` is encoded with the fit's encoding
    (:func:`encode_rows`).
    """
    if method == "residualize":
        return apply_residualizer(x, c, params)
    if method == "combat":
        from brainlens.confounds.combat import apply_combat

        return apply_combat(x, site, c, params)
    raise ConfigError(f"confounds.method: {method!r}; allowed {list(METHODS[1:])}")


def encode_rows(values: pd.DataFrame, meta: Mapping[str, Any], ids: Sequence[str]) -> np.ndarray:
    """Covariates of rows with the fit's encoding; an unseen level is an error."""
    c, names = encode(values, meta["encoding"], unseen="error", ids=ids)
    if names != list(meta["covariate_columns"]):
        raise ConfigError(
            f"covariate columns {names} differ from the fit's {meta['covariate_columns']}"
        )
    return c


__all__ = [
    "FIT_ON",
    "METHODS",
    "apply_confounds",
    "check_confound_provenance",
    "check_confounds_config",
    "check_site_column",
    "confound_settings",
    "encode_rows",
    "fit_fold_confounds",
    "load_fold_confounds",
    "save_fold_confounds",
]
