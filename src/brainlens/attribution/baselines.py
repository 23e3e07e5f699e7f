"""Attribution baselines computed from the training part of a fold only.

Integrated gradients, occlusion, region occlusion and deletion replace (part of) a
scan by a *baseline*: "what the input looks like without the evidence". On
grey-matter maps a zero baseline is not neutral: with the true class as target a
patient's remaining tissue in an atrophied region argues against "patient", so its
signed relevance there is negative. A baseline from the training cohort is neutral
with respect to the classes. Kinds (``attribution.baseline.kind``):

``zero``
    all zeros (uses no scan).
``train_mean``
    voxel-wise mean of the fold's **training** scans, all classes (the default).
``train_control_mean``
    voxel-wise mean of the fold's training scans of ``control_class``.
``blur``
    the scan itself, Gaussian-blurred (``blur_fwhm_mm``); made per scan at attribution
    time, uses no other scan. The file written for it is a zero-size placeholder.

Every baseline file has a JSON sidecar naming the scans it was computed from
(``roles: ["train"]``); :func:`check_baseline_provenance` is the leakage audit that
the attribution stage runs before using a baseline: a validation or test scan in
the sidecar is a :class:`~brainlens.errors.LeakageError`.

With in-fold confound removal of the CNN inputs (``confounds``,
:mod:`brainlens.confounds.inputs`) the means are means of the **harmonised** training
inputs (the inputs the model was trained on), and the sidecar records the
harmonisation (``input_space: harmonised``, ``confounds``: files and SHA-256), which
the attribution stage checks against the model's; ``blur`` blurs the harmonised scan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from brainlens._io import atomic_output, write_text_atomic
from brainlens.attribution._common import AttributionError
from brainlens.errors import ConfigError, InputFileError, LeakageError
from brainlens.folds import fold_part, read_folds
from brainlens.packing import open_pack

BASELINE_KINDS = ("zero", "train_mean", "train_control_mean", "blur")
#: The only fold roles a baseline may be computed from.
BASELINE_ROLES = ("train",)
_FWHM_PER_SIGMA = math.sqrt(8 * math.log(2))


def _check_kind(kind: str) -> None:
    if kind not in BASELINE_KINDS:
        raise ConfigError(
            f"attribution.baseline.kind: expected one of {list(BASELINE_KINDS)}, got {kind!r}"
        )


def fold_baseline(
    volumes: np.ndarray,
    labels: Sequence[str],
    *,
    kind: str,
    control_class: str | None = None,
) -> np.ndarray:
    """The baseline of one fold from its training scans (in memory).

    Parameters
    ----------
    volumes : ndarray, shape (N, C, X, Y, Z)
        The fold's **training** scans (the caller selects them).
    labels : sequence of str, length N
        Their classes.
    kind : {"zero", "train_mean", "train_control_mean"}
        ``"blur"`` is per scan: use :func:`blur_baseline`.
    control_class : str or None
        The class averaged by ``train_control_mean``.

    Returns
    -------
    ndarray, shape (C, X, Y, Z), float32
    """
    _check_kind(kind)
    vols = np.asarray(volumes)
    if vols.ndim != 5:
        raise ConfigError(f"fold_baseline: expected volumes (N, C, X, Y, Z), got {vols.shape}")
    if len(labels) != len(vols):
        raise ConfigError(f"fold_baseline: {len(vols)} volumes but {len(labels)} labels")
    if kind == "blur":
        raise ConfigError(
            "attribution.baseline.kind: 'blur' is made per scan; use blur_baseline(x, sigma)"
        )
    if kind == "zero":
        return np.zeros(vols.shape[1:], np.float32)
    keep = np.ones(len(vols), bool)
    if kind == "train_control_mean":
        keep = np.asarray([str(lab) == str(control_class) for lab in labels], bool)
        if not keep.any():
            raise ConfigError(
                f"attribution.baseline.control_class: {control_class!r} is not among the "
                f"training classes {sorted(set(map(str, labels)))}. Fix: name one of them"
            )
    if not keep.any():
        raise ConfigError("fold_baseline: no training scans to average")
    return vols[keep].astype(np.float64).mean(axis=0).astype(np.float32)


def blur_baseline(x: np.ndarray, sigma_voxels: float | Sequence[float]) -> np.ndarray:
    """A blurred copy of one scan (uses no other scan).

    Parameters
    ----------
    x : ndarray, shape (C, X, Y, Z)
    sigma_voxels : float or sequence of 3 floats
        Gaussian SD per spatial axis, in voxels.

    Returns
    -------
    ndarray, shape (C, X, Y, Z), float32
    """
    arr = np.asarray(x, dtype=np.float32)
    sigma = tuple(np.broadcast_to(np.asarray(sigma_voxels, float), (arr.ndim - 1,)))
    return np.stack([gaussian_filter(c, sigma, mode="nearest") for c in arr]).astype(np.float32)


def captum_baseline(
    baseline: float | np.ndarray | torch.Tensor, x: torch.Tensor
) -> float | torch.Tensor:
    """A method's ``baseline`` option as Captum takes it: a float, or a tensor like ``x``.

    Parameters
    ----------
    baseline : float, or array/tensor of shape (1, C, *spatial) or (C, *spatial)
        A constant, or a baseline input (e.g. the training mean of the fold).
    x : torch.Tensor, shape (1, C, *spatial)
        The sample (on the model's device and dtype).
    """
    if isinstance(baseline, int | float | np.integer | np.floating) and not isinstance(
        baseline, bool
    ):
        return float(baseline)
    if not isinstance(baseline, np.ndarray | torch.Tensor):
        raise ConfigError(
            f"baseline: expected a number or an array of shape {tuple(x.shape)}, "
            f"got {type(baseline).__name__}"
        )
    t = torch.as_tensor(baseline)
    if t.ndim == x.ndim - 1:
        t = t[None]
    if tuple(t.shape) != tuple(x.shape):
        raise AttributionError(
            f"baseline: expected shape {tuple(x.shape)} (the input's), got "
            f"{tuple(torch.as_tensor(baseline).shape)}. Fix: compute the baseline on the "
            "model's input grid (2D models: apply the model's 3D->2D transform to it)"
        )
    return t.detach().to(device=x.device, dtype=x.dtype)


@dataclass(frozen=True)
class Baseline:
    """A fold's baseline as read from disk.

    Attributes
    ----------
    kind : str
        One of :data:`BASELINE_KINDS`.
    array : ndarray, shape (C, X, Y, Z), float32
        The baseline; zero-size for ``blur`` (made per scan).
    scan_ids : tuple of str
        The training scans it was computed from (empty for ``zero`` and ``blur``).
    sigma_voxels : tuple of float or None
        Gaussian SD per axis of ``blur``.
    confounds : dict or None
        The harmonisation of the inputs it was computed from
        (:meth:`brainlens.confounds.inputs.InputConfounds.record`); None: raw inputs.
    """

    kind: str
    array: np.ndarray
    scan_ids: tuple[str, ...] = ()
    sigma_voxels: tuple[float, ...] | None = None
    confounds: dict[str, Any] | None = None

    def for_scan(self, x: np.ndarray) -> np.ndarray:
        """The baseline of one scan.

        Parameters
        ----------
        x : ndarray, shape (C, X, Y, Z)

        Returns
        -------
        ndarray, shape (C, X, Y, Z), float32
        """
        x = np.asarray(x)
        if self.kind == "blur":
            return blur_baseline(x, self.sigma_voxels or (0.0,))
        if self.kind == "zero" and self.array.size == 0:
            return np.zeros(x.shape, np.float32)
        if self.array.shape != x.shape:
            raise ConfigError(
                f"baseline ({self.kind}): shape {self.array.shape} does not match the scan's "
                f"{x.shape}. Fix: recompute the baseline from the same packed inputs"
            )
        return self.array


#: The baseline used when none is given (e.g. a direct call without a baseline file).
ZERO_BASELINE = Baseline(kind="zero", array=np.zeros(0, np.float32))


def _train_scans(folds_tsv: Path, fold: int) -> tuple[list[str], list[str]]:
    part = fold_part(read_folds(folds_tsv), fold, BASELINE_ROLES)
    if part.empty:
        raise InputFileError(
            folds_tsv, f"fold {fold} has no training scans", "regenerate the folds table"
        )
    ids = list(part["scan_id"])
    order = np.argsort(ids)
    return [ids[i] for i in order], [str(part["label"].iloc[i]) for i in order]


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def _mean_of_scans(
    packs: Sequence[tuple[Path, Path]], ids: Sequence[str], harmonise: Any | None = None
) -> np.ndarray:
    """Channel-stacked mean of some scans, read in chunks (packs may be large).

    ``harmonise`` (an :class:`~brainlens.confounds.inputs.InputConfounds`): the mean of
    the harmonised scans.
    """
    if harmonise is not None:
        from brainlens.attribution.fold import load_volumes

        total = np.zeros((len(packs), *open_pack(*packs[0]).shape), np.float64)
        for start in range(0, len(ids), 16):
            chunk = list(ids[start : start + 16])
            total += load_volumes(packs, chunk, harmonise)[0].astype(np.float64).sum(axis=0)
        return (total / len(ids)).astype(np.float32)
    chans = []
    for npy, index in packs:
        pack = open_pack(npy, index)
        rows = pack.rows(list(ids))
        total = np.zeros(pack.shape, np.float64)
        for start in range(0, len(rows), 16):
            total += pack.array[np.sort(rows[start : start + 16])].astype(np.float64).sum(axis=0)
        chans.append(total / len(rows))
    return np.stack(chans).astype(np.float32)


def _control_scans(
    ids: Sequence[str], labels: Sequence[str], control_class: str | None, *, fold: int, folds_tsv
) -> list[str]:
    """The training scans of ``control_class`` (``train_control_mean``); it must occur."""
    if control_class not in set(labels):
        raise ConfigError(
            f"attribution.baseline.control_class: {control_class!r} is not a class of "
            f"the training part of fold {fold} in {folds_tsv} (classes: "
            f"{sorted(set(labels))}). Fix: name one of them"
        )
    return [i for i, lab in zip(ids, labels, strict=True) if lab == control_class]


def write_fold_baseline(
    *,
    packs: Sequence[tuple[Path, Path]],
    folds_tsv: Path,
    fold: int,
    kind: str,
    control_class: str | None = None,
    blur_fwhm_mm: float = 12.0,
    out_npy: Path,
    out_json: Path,
    confounds: Mapping[str, Any] | None = None,
) -> Baseline:
    """Compute one fold's baseline from its training part and write it with a sidecar.

    Parameters
    ----------
    packs : sequence of (npy, index)
        Packed inputs in the model's channel order.
    folds_tsv : Path
    fold : int
    kind : str
        One of :data:`BASELINE_KINDS`.
    control_class : str or None
        Class averaged by ``train_control_mean`` (must occur in the training part).
    blur_fwhm_mm : float
        FWHM of the ``blur`` baseline.
    out_npy, out_json : Path
        ``out_npy``: float32 array (C, X, Y, Z) (zero-size for ``blur``); ``out_json``:
        ``{kind, fold, control_class, roles, scan_ids, n_scans, shape, ...}``.
    confounds : mapping, optional
        The fold's confound files ``{"npz", "json", "participants", "tiv"}``
        (:func:`brainlens.confounds.inputs.open_input_confounds`, audited first): the
        means are of the harmonised training inputs; the sidecar adds
        ``input_space: harmonised`` and ``confounds``. None: raw inputs.

    Returns
    -------
    Baseline
    """
    _check_kind(kind)
    ids, labels = _train_scans(Path(folds_tsv), fold)
    first = open_pack(*packs[0])
    shape = (len(packs), *first.shape)
    harmonise = None
    if confounds is not None:
        from brainlens.confounds.inputs import open_input_confounds

        harmonise = open_input_confounds(
            confounds,
            folds_tsv=folds_tsv,
            fold=fold,
            channels=[Path(npy).stem for npy, _ in packs],
            grid_shape=first.shape,
        )
    sigma = None
    used: list[str] = []
    if kind == "zero":
        array = np.zeros(shape, np.float32)
    elif kind == "blur":
        sigma = tuple(float(s) for s in blur_fwhm_mm / _FWHM_PER_SIGMA / _voxel_sizes(first.affine))
        array = np.zeros(0, np.float32)
    else:
        used = ids
        if kind == "train_control_mean":
            used = _control_scans(ids, labels, control_class, fold=fold, folds_tsv=folds_tsv)
        array = _mean_of_scans(packs, used, harmonise)
    meta = {
        "kind": kind,
        "fold": int(fold),
        "control_class": control_class if kind == "train_control_mean" else None,
        "roles": list(BASELINE_ROLES),
        "scan_ids": used,
        "n_scans": len(used),
        "shape": list(array.shape),
        "inputs": [Path(npy).name for npy, _ in packs],
    }
    if harmonise is not None:
        meta.update(input_space="harmonised", confounds=harmonise.record())
    if kind == "blur":
        meta.update(
            blur_fwhm_mm=float(blur_fwhm_mm),
            sigma_voxels=list(sigma),
            note="placeholder array: the baseline is each scan blurred, made at attribution "
            "time from that scan alone",
        )
    with atomic_output(out_npy) as tmp:
        np.save(tmp, array)
    write_text_atomic(out_json, json.dumps(meta, indent=2) + "\n")
    return Baseline(
        kind=kind,
        array=array,
        scan_ids=tuple(used),
        sigma_voxels=sigma,
        confounds=None if harmonise is None else harmonise.record(),
    )


def _read_sidecar(json_path: Path) -> dict:
    path = Path(json_path)
    if not path.is_file():
        raise InputFileError(
            path, "baseline sidecar not found", "run the attribution_baseline rule"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(path, f"not JSON ({err})", "re-run attribution_baseline") from err
    missing = [k for k in ("kind", "fold", "roles", "scan_ids", "n_scans") if k not in meta]
    if missing:
        raise InputFileError(path, f"missing key(s) {missing}", "re-run attribution_baseline")
    return meta


def read_baseline(npy: Path, json_path: Path) -> Baseline:
    """Read a baseline written by :func:`write_fold_baseline`.

    Returns
    -------
    Baseline
    """
    meta = _read_sidecar(json_path)
    if meta["kind"] not in BASELINE_KINDS:
        raise InputFileError(
            json_path, f"unknown kind {meta['kind']!r}", f"use one of {list(BASELINE_KINDS)}"
        )
    array = np.load(npy).astype(np.float32)
    if list(array.shape) != list(meta.get("shape", array.shape)) or (
        meta["kind"] != "blur" and array.ndim != 4
    ):
        raise InputFileError(
            npy,
            f"array of shape {array.shape}, sidecar says {meta.get('shape')} (expected (C, X, Y, Z))",
            "re-run attribution_baseline (the files come from different runs)",
        )
    sigma = meta.get("sigma_voxels")
    return Baseline(
        kind=meta["kind"],
        array=array,
        scan_ids=tuple(meta["scan_ids"]),
        sigma_voxels=tuple(sigma) if sigma is not None else None,
        confounds=meta.get("confounds"),
    )


def check_baseline_provenance(json_path: Path, folds_tsv: Path, fold: int) -> None:
    """Leakage audit: the baseline was computed from the fold's training part only.

    Raises
    ------
    LeakageError
        Naming the sidecar, when it belongs to another fold, declares another role or
        lists a scan that is not in the training part of ``fold`` (a validation or a
        test scan, or one missing from the folds table).
    """
    meta = _read_sidecar(json_path)
    if int(meta["fold"]) != int(fold):
        raise LeakageError(
            f"{json_path}: baseline of fold {meta['fold']} used for fold {fold}. Fix: use "
            f"results/attribution/baselines/fold-{fold}.npy"
        )
    if list(meta["roles"]) != list(BASELINE_ROLES):
        raise LeakageError(
            f"{json_path}: baseline computed from roles {meta['roles']}; expected only "
            f"{list(BASELINE_ROLES)}. Fix: re-run attribution_baseline"
        )
    part = fold_part(read_folds(folds_tsv), fold)
    role = dict(zip(part["scan_id"], part["role"], strict=True))
    bad = [(s, role.get(s, "not in the folds table")) for s in meta["scan_ids"]]
    bad = [(s, r) for s, r in bad if r not in BASELINE_ROLES]
    if bad or int(meta["n_scans"]) != len(meta["scan_ids"]):
        shown = ", ".join(f"{s} ({r})" for s, r in bad[:5]) or "n_scans mismatch"
        raise LeakageError(
            f"{json_path}: the baseline of fold {fold} was computed from scans outside its "
            f"training part: {shown}. Fix: re-run attribution_baseline with {folds_tsv}"
        )


__all__ = [
    "BASELINE_KINDS",
    "ZERO_BASELINE",
    "Baseline",
    "blur_baseline",
    "captum_baseline",
    "check_baseline_provenance",
    "fold_baseline",
    "read_baseline",
    "write_fold_baseline",
]
