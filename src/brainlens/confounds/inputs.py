"""In-fold confound removal of the CNN inputs (``confounds.scope: all``).

The CNNs read the packed, smoothed maps of ``train.inputs`` (one channel per pack, the
whole grid). :func:`write_input_confounds` (rule ``fit_confounds``, ``kind=inputs``)
fits ``residualize`` or ``combat`` on exactly those voxels, one fit per channel, from
the fold's training rows only (its training controls with ``fit_on:
train_controls``); validation and test maps are never read. Voxels constant on the
fit rows (outside the head) keep their value. The parameters go to
``results/confounds/inputs/fold-<k>.npz`` (keys ``<channel>__<param>``) with a
``.json`` sidecar listing the fit scans, the channels and the grid.

:func:`open_input_confounds` runs the leakage audit
(:func:`brainlens.confounds.infold.check_confound_provenance`) first, then returns an
:class:`InputConfounds`, whose :meth:`~InputConfounds.apply` maps one sample
``x -> apply_confounds(x, covariate row, params)`` per channel. It is the per-sample
transform of :class:`brainlens.training.dataset.PackedDataset` (train, val and test)
and of the attribution stage (maps, baselines, sanity checks), so a harmonised model
is trained, tested and explained on the same harmonised inputs; its relevance maps are
relevance *for the harmonised input*. ``model.pt`` records the files and their
SHA-256 (:meth:`InputConfounds.record`); the attribution stage refuses other files.

This module does not import torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens.confounds.covariates import covariates_of_rows
from brainlens.confounds.infold import (
    apply_confounds,
    check_confound_provenance,
    encode_rows,
    fit_fold_confounds,
    load_fold_confounds,
    save_fold_confounds,
)
from brainlens.errors import ConfigError, InputFileError
from brainlens.folds import audit_folds, fold_part, read_folds
from brainlens.packing import open_packs

#: ``features`` of the sidecar, and the ``kind`` wildcard of rule fit_confounds.
INPUTS_KIND = "inputs"
#: Keys of a confound spec (:func:`open_input_confounds`); ``tiv`` is optional.
SPEC_KEYS = ("npz", "json", "participants", "tiv")
_SEP = "__"


def input_confound_files(fold: int | str) -> dict[str, str]:
    """The fold's files: ``{"npz": results/confounds/inputs/fold-<k>.npz, "json": ...}``."""
    stem = f"results/confounds/{INPUTS_KIND}/fold-{fold}"
    return {"npz": f"{stem}.npz", "json": f"{stem}.json"}


def cnn_confound_spec(
    fold: int | str, *, harmonise: bool, participants_tsv: str, tiv_tsv: str | None
) -> dict[str, str | None]:
    """The spec of one fold for the rules (``{}`` when the CNN inputs are not harmonised).

    Returns
    -------
    dict
        ``{"npz", "json", "participants", "tiv"}`` (``tiv`` None when not a covariate),
        as :func:`open_input_confounds` and ``train_fold(confounds=...)`` take it.
    """
    if not harmonise:
        return {}
    return input_confound_files(fold) | {"participants": participants_tsv, "tiv": tiv_tsv}


def spec_rule_inputs(specs: Sequence[Mapping[str, Any]], *, lists: bool) -> dict[str, Any]:
    """Named rule inputs ``confounds_<key>`` of specs (one fold, or ``lists`` of all folds).

    Empty specs (harmonisation off) give ``{}``, so the rules' inputs stay as they were.
    """
    if not specs or not specs[0]:
        return {}
    keys = [k for k in SPEC_KEYS if specs[0].get(k)]
    if lists:
        return {f"confounds_{k}": [s[k] for s in specs] for k in keys}
    return {f"confounds_{k}": specs[0][k] for k in keys}


def fold_rows(folds: pd.DataFrame, fold: int, roles: Sequence[str]) -> pd.DataFrame:
    """Rows of ``fold`` with a role in ``roles``, with ``scan_id`` (sorted by scan)."""
    part = fold_part(folds, fold, list(roles))
    return part.sort_values("scan_id").reset_index(drop=True)


def write_input_confounds(
    *,
    packs: Mapping[str, tuple[str | Path, str | Path]],
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
) -> dict[str, Any]:
    """Fit one fold's confound removal on the CNN input voxels of its training rows.

    Parameters
    ----------
    packs : mapping of str to (npy, index)
        ``train.inputs`` in channel order (the CNN's packs); every voxel of the grid of
        each channel is a feature.
    folds_tsv : path
        Audited first; only the training rows of ``fold`` are read.
    fold : int
    out_npz, out_json : path
        ``results/confounds/inputs/fold-<k>.npz`` and ``.json``.
    participants_tsv, tiv_tsv : path
        Covariate sources (``tiv_tsv`` when ``tiv`` is a covariate).
    covariates : sequence
        The ``covariates:`` config value.
    method, fit_on, site_column, control_class, positive_class
        ``confounds.*`` (see :func:`brainlens.confounds.infold.fit_fold_confounds`).

    Returns
    -------
    dict
        The sidecar written to ``out_json`` (``features: inputs``, ``channels``,
        ``grid_shape``, ``n_features`` per channel, ``fit_scan_ids``, ...).
    """
    folds = read_folds(folds_tsv)
    audit_folds(folds)
    train = fold_rows(folds, fold, ["train"])
    site_col = site_column if method == "combat" else None
    values, kinds, site = covariates_of_rows(train, participants_tsv, tiv_tsv, covariates, site_col)
    opened = open_packs(packs)
    params: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for name, pack in opened.items():
        x = pack.array[pack.rows(list(train["scan_id"]))].reshape(len(train), -1)
        fitted, meta = fit_fold_confounds(
            np.asarray(x, np.float64),
            train,
            values,
            kinds,
            method=method,
            fold=fold,
            fit_on=fit_on,
            site=site,
            control_class=control_class,
            positive_class=positive_class,
        )
        params |= {f"{name}{_SEP}{k}": v for k, v in fitted.items()}
    first = next(iter(opened.values()))
    meta |= {
        "features": INPUTS_KIND,
        "channels": list(opened),
        "grid_shape": list(first.shape),
        "packs": [Path(p.npy).name for p in opened.values()],
        "covariates": list(covariates),
        "site_column": site_col,
    }
    save_fold_confounds(params, meta, out_npz, out_json)
    return meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class InputConfounds:
    """One fold's audited confound removal of the CNN inputs, ready to apply.

    Attributes
    ----------
    method : {"residualize", "combat"}
    fold : int
    channels : list of str
        Input names in channel order.
    grid_shape : tuple of int
        (X, Y, Z).
    params : dict of str to dict of ndarray
        Per channel, the fitted parameters (features = the flattened grid).
    covariates : dict of str to ndarray, shape (p,)
        Encoded covariates of every scan of the fold (train, val, test).
    sites : dict of str to str
        Site of every scan (``combat``; empty otherwise).
    files : dict of str to str
        The spec it was opened from (``npz, json, participants, tiv``).
    sha256 : str
        Of the ``.npz`` (recorded in ``model.pt``; baselines carry it too).
    meta : dict
        The sidecar.
    """

    method: str
    fold: int
    channels: list[str]
    grid_shape: tuple[int, ...]
    params: dict[str, dict[str, np.ndarray]]
    covariates: dict[str, np.ndarray]
    sites: dict[str, str]
    files: dict[str, str | None]
    sha256: str
    meta: dict[str, Any] = field(repr=False, default_factory=dict)

    def _row(self, sid: str) -> tuple[np.ndarray, str | None]:
        if sid not in self.covariates:
            raise ConfigError(
                f"{self.files['json']}: scan {sid!r} is not in fold {self.fold} of the folds "
                "table these confound parameters were opened with. Fix: harmonise a scan with "
                "the parameters of its own fold"
            )
        return self.covariates[sid], self.sites.get(sid)

    def apply(self, x: np.ndarray, sid: str) -> np.ndarray:
        """Harmonise one sample.

        Parameters
        ----------
        x : ndarray, shape (C, X, Y, Z)
            The packed maps of scan ``sid`` in channel order.
        sid : str
            Its scan ID (selects its covariate row and site).

        Returns
        -------
        ndarray, shape (C, X, Y, Z), float32
        """
        x = np.asarray(x)
        if x.shape != (len(self.channels), *self.grid_shape):
            raise ConfigError(
                f"{self.files['json']}: fitted on inputs {self.channels} of grid "
                f"{list(self.grid_shape)}, applied to a sample of shape {x.shape}. Fix: re-run "
                "fit_confounds on the model's packed inputs"
            )
        c, site = self._row(sid)
        out = np.empty(x.shape, np.float32)
        for i, name in enumerate(self.channels):
            flat = x[i].reshape(-1).astype(np.float64)
            out[i] = apply_confounds(flat, c, self.params[name], self.method, site=site).reshape(
                self.grid_shape
            )
        return out

    def apply_many(self, x: np.ndarray, scan_ids: Sequence[str]) -> np.ndarray:
        """:meth:`apply` to every sample of ``x`` (N, C, X, Y, Z); float32, same shape."""
        if len(x) != len(scan_ids):
            raise ConfigError(f"{len(x)} samples for {len(scan_ids)} scan IDs")
        return np.stack([self.apply(s, sid) for s, sid in zip(x, scan_ids, strict=True)])

    def record(self) -> dict[str, Any]:
        """What ``model.pt`` and a baseline sidecar keep: method, fold, files, SHA-256."""
        return {
            "method": self.method,
            "fold": int(self.fold),
            "fit_on": self.meta.get("fit_on"),
            "covariates": self.meta.get("covariates"),
            "channels": list(self.channels),
            "files": dict(self.files),
            "sha256": self.sha256,
            "input_space": "harmonised",
        }


def _spec(spec: Mapping[str, Any]) -> dict[str, str | None]:
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    missing = [k for k in SPEC_KEYS[:3] if not spec.get(k)]
    if unknown or missing:
        raise ConfigError(
            f"confounds: expected a mapping with keys {list(SPEC_KEYS)} (tiv optional), got "
            f"{sorted(spec)} (missing {missing}, unknown {unknown})"
        )
    return {k: (str(spec[k]) if spec.get(k) else None) for k in SPEC_KEYS}


def open_input_confounds(
    spec: Mapping[str, Any],
    *,
    folds_tsv: str | Path,
    fold: int,
    channels: Sequence[str] | None = None,
    grid_shape: Sequence[int] | None = None,
) -> InputConfounds:
    """Audit a fold's saved input confound parameters, then load them for applying.

    Parameters
    ----------
    spec : mapping
        ``{"npz", "json", "participants", "tiv"}``: the fold's
        :func:`write_input_confounds` files, participants.tsv and (when ``tiv`` is a
        covariate) results/preprocess/tiv.tsv.
    folds_tsv : path
    fold : int
    channels, grid_shape : optional
        The inputs (names, in order) and grid of the model; checked against the fit.

    Returns
    -------
    InputConfounds

    Raises
    ------
    LeakageError
        The parameters belong to another fold or were fitted on a scan outside its
        training part (:func:`~brainlens.confounds.infold.check_confound_provenance`).
    ConfigError
        Parameters of the linear baselines' features, or of other inputs or grid.
    """
    files = _spec(spec)
    check_confound_provenance(files["json"], folds_tsv, fold)  # the leakage audit, first
    flat, meta = load_fold_confounds(files["npz"], files["json"])
    if meta.get("features") != INPUTS_KIND:
        raise ConfigError(
            f"{files['json']}: confound parameters of the {meta.get('features')!r} features "
            f"(a linear baseline's), not of the CNN inputs. Fix: use "
            f"{input_confound_files(fold)['npz']} (rule fit_confounds, kind inputs)"
        )
    if channels is not None and list(channels) != list(meta["channels"]):
        raise ConfigError(
            f"{files['json']}: fitted on inputs {meta['channels']}, the model reads "
            f"{list(channels)}. Fix: re-run fit_confounds with train.inputs"
        )
    if grid_shape is not None and list(grid_shape) != list(meta["grid_shape"]):
        raise ConfigError(
            f"{files['json']}: fitted on grid {meta['grid_shape']}, the packs have "
            f"{list(grid_shape)}. Fix: re-run fit_confounds on the current packs"
        )
    params: dict[str, dict[str, np.ndarray]] = {name: {} for name in meta["channels"]}
    for key, value in flat.items():
        name, _, param = key.rpartition(_SEP)
        params[name][param] = value
    rows = fold_rows(read_folds(folds_tsv), fold, ["train", "val", "test"])
    ids = list(rows["scan_id"])
    values, _, site = covariates_of_rows(
        rows, files["participants"], files["tiv"], meta["covariates"], meta.get("site_column")
    )
    c = encode_rows(values, meta, ids)
    return InputConfounds(
        method=str(meta["method"]),
        fold=int(fold),
        channels=list(meta["channels"]),
        grid_shape=tuple(int(v) for v in meta["grid_shape"]),
        params=params,
        covariates={s: c[i] for i, s in enumerate(ids)},
        sites={} if site is None else dict(zip(ids, site, strict=True)),
        files=files,
        sha256=_sha256(Path(files["npz"])),
        meta=meta,
    )


def open_model_confounds(
    meta: Mapping[str, Any],
    confounds: Mapping[str, Any] | None,
    *,
    model_path: str | Path,
    folds_tsv: str | Path | None,
    fold: int,
    action: str,
) -> InputConfounds | None:
    """The confound fit a trained model's inputs need, audited and checked against it.

    Parameters
    ----------
    meta : mapping
        ``model.pt``'s metadata (its ``confounds`` record, ``inputs``, ``grid_shape``).
    confounds : mapping or None
        The fold's spec as ``train_model`` gets it; empty or None: the files ``model.pt``
        records (None there too: a model on raw inputs).
    model_path : str or Path
        For messages.
    folds_tsv : str or Path or None
        The folds table, for the leakage audit of the fit (required when harmonised).
    fold : int
        The model's fold.
    action : str
        What the caller does, for messages (``"explain a model"``).

    Returns
    -------
    InputConfounds or None
        None for a model trained on raw inputs.

    Raises
    ------
    ConfigError
        Harmonised inputs without ``folds_tsv``.
    InputFileError
        Files given for a raw model, or other parameters (SHA-256) than it was trained with.
    LeakageError
        The fit used scans outside the fold's training part.
    """
    recorded = meta.get("confounds")
    spec = confounds if confounds else (recorded or {}).get("files")
    if not spec:
        return None
    if folds_tsv is None:
        raise ConfigError(
            f"{model_path}: to {action} on harmonised inputs needs the folds table (the "
            "leakage audit of the confound parameters). Fix: pass results/folds/folds.tsv"
        )
    harmonise = open_input_confounds(
        spec,
        folds_tsv=folds_tsv,
        fold=fold,
        channels=meta.get("inputs"),
        grid_shape=meta.get("grid_shape"),
    )
    check_harmonisation(
        recorded,
        harmonise,
        str(model_path),
        f"{action} with the confound files it was trained with (re-run train_model after "
        "fit_confounds)",
    )
    return harmonise


def check_harmonisation(
    recorded: Mapping[str, Any] | None, used: InputConfounds | None, what: str, fix: str
) -> None:
    """``what`` (a model, a baseline) was made on the inputs the caller harmonises with.

    Parameters
    ----------
    recorded : mapping or None
        :meth:`InputConfounds.record` as kept by ``model.pt`` or a baseline sidecar
        (None: made on raw inputs).
    used : InputConfounds or None
        What the caller applies (None: raw inputs).
    what, fix : str
        For the message.

    Raises
    ------
    InputFileError
        Raw against harmonised, or other parameters (SHA-256).
    """
    want = None if used is None else used.sha256
    have = None if not recorded else recorded.get("sha256")
    if want != have:
        raise InputFileError(
            Path(what),
            f"made on {_space(have)}, but the inputs here are {_space(want)} (confounds.method)",
            fix,
        )


def _space(sha: str | None) -> str:
    return "raw inputs" if sha is None else f"inputs harmonised with parameters {sha[:12]}"


__all__ = [
    "INPUTS_KIND",
    "SPEC_KEYS",
    "InputConfounds",
    "check_harmonisation",
    "cnn_confound_spec",
    "fold_rows",
    "input_confound_files",
    "open_input_confounds",
    "spec_rule_inputs",
    "write_input_confounds",
]
