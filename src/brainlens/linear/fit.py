"""Fit, select and test one linear baseline on one fold: :func:`train_linear_fold`.

Leakage is kept out as in :func:`brainlens.training.train_fold`: the folds table is
audited; standardisation, covariate coding and the classifier are fitted on the
fold's training part; the regularisation strength ``C`` is chosen on its validation
part by the monitored value (``val_loss`` by default, the CNNs' selection value);
only then is the test part read, once. The validation part never enters a fit, so
its value stays comparable with the CNNs' (trained on train, selected on val).

Outputs (``out_dir``), with the CNN's names and formats so that
:mod:`brainlens.summary` and the report read them unchanged: ``metrics.json`` (the
CNN's keys; ``best_epoch`` is null, ``C`` the chosen strength), ``predictions.tsv``
(``scan_id, participant_id, session_id, label, pred, prob_<class>``),
``history.tsv`` (one row per ``C``; no ``epoch`` column, so the report draws no
learning curve) and ``model.npz`` (weights, standardisation, feature indices).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from brainlens._io import atomic_output, save_nifti, write_text_atomic
from brainlens.errors import ConfigError, InputFileError
from brainlens.folds import audit_folds, read_folds
from brainlens.linear.confounds import apply_fold_confounds, fold_parts
from brainlens.linear.features import (
    LINEAR_MODELS,
    covariate_features,
    fold_features,
    read_pack,
)
from brainlens.metrics import classification_metrics, to_jsonable

log = logging.getLogger(__name__)
#: Monitored validation values (as the CNN's ``train.early_stopping.monitor``).
MONITORS = ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_roc_auc")
DEFAULT_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def weighted_log_loss(y: np.ndarray, proba: np.ndarray, class_weight: np.ndarray) -> float:
    """Class-weighted cross-entropy, as the CNN's ``val_loss`` with ``class_weights: true``.

    Parameters
    ----------
    y : ndarray of int, shape (n,)
    proba : ndarray, shape (n, K)
    class_weight : ndarray, shape (K,)
        Weights of the training part, ``n / (K * n_class)``.
    """
    w = class_weight[y]
    nll = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))
    return float((w * nll).sum() / w.sum())


def _val_values(y, proba, names, class_weight) -> dict[str, float]:
    m = classification_metrics(y, proba, names)
    return {
        "val_loss": weighted_log_loss(y, proba, class_weight),
        "val_accuracy": m["accuracy"],
        "val_balanced_accuracy": m["balanced_accuracy"],
        "val_roc_auc": m["roc_auc"],
    }


def select_and_fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    class_names: Sequence[str],
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    monitor: str = "val_loss",
    seed: int = 0,
    max_iter: int = 5000,
) -> tuple[LogisticRegression, StandardScaler, pd.DataFrame, int]:
    """Fit one L2 logistic regression per ``C`` on train, keep the best on val.

    Parameters
    ----------
    x_train, x_val : ndarray, shape (n_train, p), (n_val, p)
        Features; standardised with the training part's mean and SD.
    y_train, y_val : ndarray of int, shape (n_train,), (n_val,)
        Class codes into ``class_names``.
    class_names : sequence of str, length K
    c_grid : sequence of float
        Inverse regularisation strengths tried (sorted ascending; ties on the monitored
        value go to the smaller ``C``, the stronger regularisation).
    monitor : {"val_loss", "val_accuracy", "val_balanced_accuracy", "val_roc_auc"}
        Lower is better for the loss, higher for the others.
    seed : int
        ``random_state`` of the solver.
    max_iter : int

    Returns
    -------
    model : LogisticRegression
        The kept fit (balanced class weights), trained on ``x_train`` only.
    scaler : StandardScaler
    history : DataFrame
        One row per ``C``: ``C, log10_C, train_loss, val_loss, val_accuracy,
        val_balanced_accuracy, val_roc_auc, selected``.
    best : int
        Row of ``history`` that was kept.
    """
    if monitor not in MONITORS:
        raise ConfigError(f"baselines.monitor: expected one of {list(MONITORS)}, got {monitor!r}")
    grid = sorted(float(c) for c in c_grid)
    if not grid or min(grid) <= 0:
        raise ConfigError(f"baselines.C_grid: expected positive numbers, got {list(c_grid)!r}")
    k = len(class_names)
    counts = np.bincount(y_train, minlength=k)
    if (counts == 0).any():
        raise ConfigError(
            f"the training part has no sample of class(es) "
            f"{[class_names[i] for i in np.flatnonzero(counts == 0)]}. Fix: regenerate the "
            "folds (stratified)"
        )
    class_weight = len(y_train) / (k * counts)
    scaler = StandardScaler().fit(x_train)
    z_train, z_val = scaler.transform(x_train), scaler.transform(x_val)
    rows, fits = [], []
    for c in grid:
        clf = LogisticRegression(
            C=c, class_weight="balanced", max_iter=int(max_iter), random_state=int(seed)
        ).fit(z_train, y_train)
        if list(clf.classes_) != list(range(k)):
            raise ConfigError(f"classes {list(clf.classes_)} do not cover {list(class_names)}")
        train_loss = weighted_log_loss(y_train, clf.predict_proba(z_train), class_weight)
        vals = _val_values(y_val, clf.predict_proba(z_val), list(class_names), class_weight)
        rows.append({"C": c, "log10_C": float(np.log10(c)), "train_loss": train_loss} | vals)
        fits.append(clf)
    history = pd.DataFrame(rows)
    score = history[monitor].to_numpy(float)
    score = np.where(np.isnan(score), np.inf if monitor == "val_loss" else -np.inf, score)
    best = int(np.argmin(score) if monitor == "val_loss" else np.argmax(score))
    history["selected"] = np.arange(len(history)) == best
    return fits[best], scaler, history, best


def _role(folds: pd.DataFrame, fold: int, role: str) -> pd.DataFrame:
    return fold_parts(folds, fold)[role]


def _save_model(path: Path, clf, scaler, c: float, names: Sequence[str], meta: dict) -> None:
    """``model.npz``: weights (standardised features), standardisation, C, feature info."""
    with atomic_output(path) as tmp:
        np.savez_compressed(
            tmp,
            coef=clf.coef_,
            intercept=clf.intercept_,
            mean=scaler.mean_,
            scale=scaler.scale_,
            C=c,
            class_names=np.array(names),
            **meta,
        )


def _write_predictions(
    path: Path, rows: pd.DataFrame, proba: np.ndarray, names: Sequence[str]
) -> None:
    """``predictions.tsv`` of the CNN's format; ``proba`` has shape (n_test, K)."""
    table = rows[["scan_id", "participant_id", "session_id", "label"]].copy()
    table["pred"] = [names[i] for i in proba.argmax(axis=1)]
    for i, c in enumerate(names):
        table[f"prob_{c}"] = proba[:, i]
    write_text_atomic(path, table.to_csv(sep="\t", index=False, float_format="%.6g"))


def _fold_metrics(
    y: Mapping[str, np.ndarray],
    proba: np.ndarray,
    names: Sequence[str],
    kept: pd.Series,
    *,
    monitor: str,
    model: str,
    fold: int,
    seed: int,
) -> dict[str, Any]:
    """Test metrics plus the CNN's ``metrics.json`` facts (``best_epoch`` null, ``C``)."""
    metrics = classification_metrics(y["test"], proba, list(names))
    return metrics | {
        "fold": int(fold),
        "model": model,
        "best_epoch": None,
        "restart": 0,
        "restarts": 1,
        "epochs_run": None,
        "stopped_early": False,
        "monitor": monitor,
        "best_val": float(kept[monitor]),
        "n_train": len(y["train"]),
        "n_val": len(y["val"]),
        "n_test": len(y["test"]),
        "device": "cpu",
        "C": float(kept["C"]),
        "features": LINEAR_MODELS[model],
        "seed": int(seed),
    }


def _audited_folds(folds_tsv: str | Path, fold: int) -> pd.DataFrame:
    """The folds table, audited for leakage; raise unless it has ``fold``."""
    folds = read_folds(folds_tsv)
    audit_folds(folds)
    if fold not in set(folds["fold"]):
        raise ConfigError(f"fold={fold!r}: not in {folds_tsv} (folds {sorted(set(folds['fold']))})")
    return folds


def _linear_features(
    kind: str,
    parts: dict[str, pd.DataFrame],
    *,
    pack: tuple[str | Path, str | Path] | None,
    mask_nii: str | Path | None,
    atlas_nii: str | Path | None,
    atlas_tsv: str | Path | None,
    participants_tsv: str | Path | None,
    covariates: Sequence[Any],
    tiv_tsv: str | Path | None,
    confounds: tuple[str | Path, str | Path] | None,
    folds_tsv: str | Path,
    fold: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Features per part (``train``, ``val``, ``test``) of a :data:`LINEAR_MODELS` kind and
    what ``model.npz`` keeps of them (``feature_names``, ...).

    ``covariates``: the covariates themselves (never residualised: ``confounds`` is
    refused). Voxels or regions: :func:`brainlens.linear.features.fold_features`, then the
    fold's confound removal when ``confounds`` is given (audited against ``folds_tsv``).
    """
    if kind == "covariates":
        if confounds is not None:
            raise ConfigError(
                "confounds_only is the covariates themselves and is never residualised or "
                "harmonised. Fix: pass no confound parameters for it"
            )
        x, names_cov = covariate_features(
            parts, participants_tsv=participants_tsv, covariates=covariates, tiv_tsv=tiv_tsv
        )
        return x, {"feature_names": np.array(names_cov)}
    x, meta = fold_features(
        kind, parts, pack=pack, mask_nii=mask_nii, atlas_nii=atlas_nii, atlas_tsv=atlas_tsv
    )
    files = {"folds_tsv": folds_tsv, "participants_tsv": participants_tsv, "tiv_tsv": tiv_tsv}
    return _without_confounds(x, parts, confounds, fold=fold, **files), meta


def _without_confounds(
    x: dict[str, np.ndarray],
    parts: dict[str, pd.DataFrame],
    confounds: tuple[str | Path, str | Path] | None,
    *,
    folds_tsv: str | Path,
    fold: int,
    participants_tsv: str | Path | None,
    tiv_tsv: str | Path | None,
) -> dict[str, np.ndarray]:
    """``x`` with the fold's confounds removed
    (:func:`~brainlens.linear.confounds.apply_fold_confounds`, audited first); as it is
    without ``confounds``."""
    if confounds is None:
        return x
    return apply_fold_confounds(
        x,
        parts,
        npz=confounds[0],
        sidecar=confounds[1],
        folds_tsv=folds_tsv,
        fold=fold,
        participants_tsv=participants_tsv,
        tiv_tsv=tiv_tsv,
    )


def train_linear_fold(
    *,
    model: str,
    folds_tsv: str | Path,
    fold: int,
    out_dir: str | Path,
    pack: tuple[str | Path, str | Path] | None = None,
    mask_nii: str | Path | None = None,
    atlas_nii: str | Path | None = None,
    atlas_tsv: str | Path | None = None,
    participants_tsv: str | Path | None = None,
    covariates: Sequence[Any] = (),
    tiv_tsv: str | Path | None = None,
    confounds: tuple[str | Path, str | Path] | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    monitor: str = "val_loss",
    max_iter: int = 5000,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fit one linear baseline on a fold's train part, choose C on val, test once.

    Parameters
    ----------
    model : {"linear_svm_voxels", "linear_svm_regions", "confounds_only"}
    folds_tsv : path
        ``results/folds/folds.tsv`` (audited first).
    fold : int
    out_dir : path
        ``results/train/<model>/fold-<k>``: ``metrics.json``, ``predictions.tsv``,
        ``history.tsv``, ``model.npz``.
    pack : (npy, index), optional
        Packed smoothed modulated GM (voxel and region models).
    mask_nii : path, optional
        Template brain mask on the analysis grid (voxel model).
    atlas_nii, atlas_tsv : path, optional
        Atlas on the analysis grid and its label table (region model).
    participants_tsv : path, optional
        BIDS ``participants.tsv`` (confounds model, and ``confounds``).
    covariates : sequence
        The ``covariates:`` config value, used by ``confounds_only``.
    tiv_tsv : path, optional
        ``results/preprocess/tiv.tsv`` (when ``tiv`` is a covariate).
    confounds : (npz, json), optional
        In-fold confound removal of the voxel / region features fitted by
        :func:`brainlens.linear.confounds.write_fold_confounds` on this fold's training
        rows: audited, then applied to all parts before standardisation. Refused for
        ``confounds_only``.
    c_grid, monitor, max_iter, seed
        See :func:`select_and_fit`.
    class_names : sequence of str, optional
        Class order; default the sorted labels of the folds table (as the CNNs).

    Returns
    -------
    dict
        The test metrics as written to ``metrics.json``.
    """
    if model not in LINEAR_MODELS:
        raise ConfigError(f"baselines.models: unknown {model!r}; allowed {sorted(LINEAR_MODELS)}")
    folds = _audited_folds(folds_tsv, fold)
    names = [str(c) for c in class_names] if class_names else sorted(folds["label"].unique())
    code = {c: i for i, c in enumerate(names)}
    parts = fold_parts(folds, fold)
    x, meta = _linear_features(
        LINEAR_MODELS[model], parts, pack=pack, mask_nii=mask_nii, atlas_nii=atlas_nii,
        atlas_tsv=atlas_tsv, participants_tsv=participants_tsv, covariates=covariates,
        tiv_tsv=tiv_tsv, confounds=confounds, folds_tsv=folds_tsv, fold=fold,
    )  # fmt: skip
    y = {r: np.array([code[v] for v in rows["label"]], dtype=int) for r, rows in parts.items()}
    clf, scaler, history, best = select_and_fit(
        x["train"], y["train"], x["val"], y["val"], class_names=names, c_grid=c_grid,
        monitor=monitor, seed=seed, max_iter=max_iter,
    )  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "history.tsv", history.to_csv(sep="\t", index=False, float_format="%.6g")
    )
    _save_model(out / "model.npz", clf, scaler, float(history["C"][best]), names, meta)
    # The model is fixed here; only now is the test part read.
    proba = clf.predict_proba(scaler.transform(x["test"]))
    _write_predictions(out / "predictions.tsv", parts["test"], proba, names)
    metrics = _fold_metrics(
        y, proba, names, history.iloc[best], monitor=monitor, model=model, fold=fold, seed=seed
    )
    metrics |= {
        "n_features": int(x["train"].shape[1]),
        "random_labels": bool(folds.get("random_labels", pd.Series([False])).any()),
    }
    metrics = to_jsonable(metrics)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    log.info("%s fold %s: C=%g, %s %.4g", model, fold, metrics["C"], monitor, metrics["best_val"])
    return metrics


def haufe_pattern(z_train: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Activation pattern of a linear decision score (Haufe et al. 2014).

    Parameters
    ----------
    z_train : ndarray, shape (n, p)
        The features the weights act on, of the training part.
    w : ndarray, shape (p,)
        The weights.

    Returns
    -------
    ndarray, shape (p,)
        ``A = Cov(Z) w / Var(Z w)``: each feature's covariance with the decision score
        ``s = Z w``, per unit variance of ``s`` (the regression of each feature on the
        score). Unlike ``w``, ``A`` is large where the features carry the signal, not
        where they cancel noise.
    """
    zc = z_train - z_train.mean(axis=0)
    s = zc @ w
    denom = float(s @ s)
    return zc.T @ s / denom if denom > 0 else np.zeros(z_train.shape[1])


def write_pattern(
    *,
    model_npz: str | Path,
    pack: tuple[str | Path, str | Path],
    folds_tsv: str | Path,
    fold: int,
    out_nii: str | Path,
    out_tsv: str | Path,
    confounds: tuple[str | Path, str | Path] | None = None,
    participants_tsv: str | Path | None = None,
    tiv_tsv: str | Path | None = None,
) -> np.ndarray:
    """The voxel model's Haufe pattern on the analysis grid, and its attribution table.

    Parameters
    ----------
    model_npz : path
        ``model.npz`` of :func:`train_linear_fold` for ``linear_svm_voxels``.
    pack : (npy, index)
        The pack it was trained on; the pattern is computed on the fold's training part.
    folds_tsv : path
    fold : int
    out_nii : path
        ``pattern.nii.gz``, shape (X, Y, Z), the pack's affine; in the maps' units per
        unit of the decision score, positive where the maps are higher in the positive
        class (the last class name); 0 outside the brain mask. With more than two
        classes: the pattern of the last class's (one-vs-rest) weights.
    out_tsv : path
        One-row table ``fold, scan_id, label, path`` (label ``all``, the attribution
        tables' format) for :func:`brainlens.regions.write_region_tables`.
    confounds, participants_tsv, tiv_tsv : optional
        The fold's confound parameters the model was trained with (see
        :func:`train_linear_fold`): the training maps are transformed the same way.

    Returns
    -------
    ndarray, shape (X, Y, Z)
    """
    p = Path(model_npz)
    if not p.is_file():
        raise InputFileError(p, "linear model not found", "run the train_linear rule first")
    m = np.load(p)
    if "voxel_index" not in m:
        raise InputFileError(p, "not a voxel model (no voxel_index)", "pass linear_svm_voxels")
    train = _role(read_folds(folds_tsv), fold, "train")
    maps = read_pack(*pack).take(list(train["scan_id"]))
    x = maps.reshape(len(maps), -1)[:, m["voxel_index"]].astype(np.float64)
    files = {"folds_tsv": folds_tsv, "participants_tsv": participants_tsv, "tiv_tsv": tiv_tsv}
    x = _without_confounds({"train": x}, {"train": train}, confounds, fold=fold, **files)["train"]
    z = (x - m["mean"]) / m["scale"]
    # standardised-feature pattern back in map units: Cov(x, s) = scale * Cov(z, s)
    a = haufe_pattern(z, m["coef"][-1]) * m["scale"]
    vol = np.zeros(int(np.prod(m["grid_shape"])), dtype=np.float32)
    vol[m["voxel_index"]] = a
    vol = vol.reshape(tuple(int(v) for v in m["grid_shape"]))
    out_nii, out_tsv = Path(out_nii), Path(out_tsv)
    save_nifti(vol, np.asarray(m["affine"], dtype=float), out_nii)
    row = pd.DataFrame(
        [{"fold": int(fold), "scan_id": "pattern", "label": "all", "path": str(out_nii)}]
    )
    write_text_atomic(out_tsv, row.to_csv(sep="\t", index=False))
    return vol
