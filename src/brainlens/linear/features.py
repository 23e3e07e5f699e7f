"""Feature matrices of the linear baselines, read without torch.

:mod:`brainlens.packing` imports torch at module level (its dataset class), so the
packed maps are read here through :func:`read_pack`, which opens the same files
(``<name>.npy`` memory-mapped, ``<name>.tsv`` index, ``<name>.json`` sidecar) with
numpy and pandas only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens.confounds.covariates import (
    check_covariates,
    covariate_specs,
    covariate_values,
    encode,
    fit_encoding,
    read_participants,
    read_tiv,
)
from brainlens.errors import ConfigError, DatasetError, InputFileError

#: Model name -> feature kind.
LINEAR_MODELS = {
    "linear_svm_voxels": "voxels",
    "linear_svm_regions": "regions",
    "confounds_only": "covariates",
}


@dataclass(frozen=True)
class PackArrays:
    """A pack opened without torch.

    Attributes
    ----------
    array : ndarray, shape (N, X, Y, Z)
        Read-only memory map.
    rows : dict of str to int
        Scan ID -> row of ``array``.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of the grid.
    npy : Path
    """

    array: np.ndarray
    rows: dict[str, int]
    affine: np.ndarray
    npy: Path

    def take(self, scan_ids: Sequence[str]) -> np.ndarray:
        """Maps of ``scan_ids``, shape (len(scan_ids), X, Y, Z), float32."""
        missing = [s for s in scan_ids if s not in self.rows]
        if missing:
            raise DatasetError(
                f"pack {self.npy}: scan(s) {missing[:5]} ({len(missing)} in all) not packed. "
                "Fix: re-run the packing step with every scan in the folds table"
            )
        idx = np.array([self.rows[s] for s in scan_ids], dtype=np.int64)
        return np.asarray(self.array[idx], dtype=np.float32)


def read_pack(npy: str | Path, index: str | Path) -> PackArrays:
    """Open a pack of :func:`brainlens.packing.pack_volumes` with numpy only.

    Parameters
    ----------
    npy, index : path
        ``results/pack/<input>.npy`` and its index TSV (the sidecar JSON lies beside
        the array).

    Returns
    -------
    PackArrays
    """
    npy, index = Path(npy), Path(index)
    side = npy.with_suffix(".json")
    for p in (npy, index, side):
        if not p.is_file():
            raise InputFileError(p, "pack file not found", "run the packing step first")
    array = np.load(npy, mmap_mode="r")
    table = pd.read_csv(index, sep="\t", dtype={"scan_id": str})
    if array.ndim != 4 or len(table) != array.shape[0] or "scan_id" not in table:
        raise InputFileError(
            index,
            f"{len(table)} index rows (columns {list(table.columns)}) do not match the "
            f"array of shape {array.shape}",
            "re-run the packing step (the files come from different runs)",
        )
    meta = json.loads(side.read_text())
    rows = dict(zip(table["scan_id"], table["row"].astype(int), strict=True))
    return PackArrays(array=array, rows=rows, affine=np.asarray(meta["affine"]), npy=npy)


def load_mask(mask_nii: str | Path, shape: Sequence[int]) -> np.ndarray:
    """Boolean brain mask on the analysis grid, shape ``shape`` (X, Y, Z)."""
    path = Path(mask_nii)
    if not path.is_file():
        raise InputFileError(path, "brain mask not found", "run the templates rule first")
    mask = np.asanyarray(nib.load(str(path)).dataobj) > 0.5
    if mask.shape != tuple(shape):
        raise InputFileError(
            path,
            f"mask grid {mask.shape} differs from the pack's grid {tuple(shape)}",
            "use the template of the analysis resolution (preprocess.resolution)",
        )
    return mask


def voxel_features(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Voxels inside ``mask``: (n, X, Y, Z) maps -> (n, n_voxels) float64."""
    return maps[:, mask].astype(np.float64)


def region_volumes(maps: np.ndarray, labels: np.ndarray, label_ids: np.ndarray, voxel_ml: float):
    """Regional tissue volumes of modulated maps.

    Parameters
    ----------
    maps : ndarray, shape (n, X, Y, Z)
        Modulated tissue maps (tissue fraction x Jacobian), so a region's sum times the
        voxel volume is its native tissue volume.
    labels : ndarray of int, shape (X, Y, Z)
        Atlas on the same grid (0 = background).
    label_ids : ndarray of int, shape (R,)
        Regions, in order.
    voxel_ml : float
        Volume of one voxel in mL.

    Returns
    -------
    ndarray, shape (n, R)
        Volumes in mL (0 for a region without voxels on this grid).
    """
    if labels.shape != maps.shape[1:]:
        raise ConfigError(f"atlas grid {labels.shape} differs from the maps' {maps.shape[1:]}")
    flat = labels.reshape(-1)
    inside = flat > 0
    n_lab = int(max(flat.max(), label_ids.max())) + 1
    out = np.empty((len(maps), len(label_ids)))
    for i, m in enumerate(maps):
        sums = np.bincount(flat[inside], weights=m.reshape(-1)[inside], minlength=n_lab)
        out[i] = sums[label_ids] * voxel_ml
    return out


def covariate_features(
    parts: Mapping[str, pd.DataFrame],
    *,
    participants_tsv: str | Path | None,
    covariates: Sequence[Any],
    tiv_tsv: str | Path | None = None,
    label_column: str | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Covariates of each part, coded from the training part (``confounds_only``).

    Numeric columns stay numbers; categorical ones (sex, site) get one column per level
    seen in the training part (an unseen level codes as all zeros). ``n/a`` in a used
    column is an error (:func:`brainlens.confounds.covariates.covariate_values`).

    Parameters
    ----------
    parts : dict of str to DataFrame
        ``train``, ``val``, ``test`` rows (``participant_id``, ``scan_id``).
    participants_tsv : path
    covariates : sequence
        The ``covariates:`` config value.
    tiv_tsv : path, optional
        ``results/preprocess/tiv.tsv`` (when ``tiv`` is listed).
    label_column : str, optional

    Returns
    -------
    features : dict of str to ndarray, shape (n_part, p)
    names : list of str
    """
    if not covariate_specs(covariates):
        raise ConfigError(
            "covariates: empty, but confounds_only needs at least one column. Fix: list "
            "covariates (e.g. [age, sex]) or remove confounds_only from baselines.models"
        )
    rows = pd.concat([p.assign(role=r) for r, p in parts.items()], ignore_index=True)
    values, kinds = covariate_values(
        read_participants(participants_tsv),
        covariates,
        rows,
        tiv=read_tiv(tiv_tsv) if tiv_tsv is not None else None,
        label_column=label_column,
    )
    enc = fit_encoding(values, kinds, (rows["role"] == "train").to_numpy(), drop_first=False)
    x, names = encode(values, enc, unseen="zeros")
    return {r: x[(rows["role"] == r).to_numpy()] for r in parts}, names


def fold_features(
    kind: str,
    parts: Mapping[str, pd.DataFrame],
    *,
    pack: tuple[str | Path, str | Path] | None,
    mask_nii: str | Path | None,
    atlas_nii: str | Path | None,
    atlas_tsv: str | Path | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Voxel or region features of each part, and what defines them (for model.npz).

    Parameters
    ----------
    kind : {"voxels", "regions"}
    parts : dict of str to DataFrame
        Rows (``scan_id``) of each part.
    pack : (npy, index)
    mask_nii : path
        Brain mask (voxels).
    atlas_nii, atlas_tsv : path
        Atlas and label table (regions).

    Returns
    -------
    features : dict of str to ndarray, shape (n_part, V)
    meta : dict
    """
    if pack is None:
        raise ConfigError(f"{kind} features need a pack (results/pack/<input>.npy + .tsv)")
    arrays = read_pack(*pack)
    maps = {role: arrays.take(list(rows["scan_id"])) for role, rows in parts.items()}
    if kind == "voxels":
        mask = load_mask(mask_nii, arrays.array.shape[1:])
        return {r: voxel_features(m, mask) for r, m in maps.items()}, {
            "voxel_index": np.flatnonzero(mask.reshape(-1)).astype(np.int64),
            "grid_shape": np.array(mask.shape),
            "affine": arrays.affine,
        }
    if kind != "regions":
        raise ConfigError(f"feature kind {kind!r}: expected voxels or regions")
    labels = np.asanyarray(nib.load(str(atlas_nii)).dataobj).astype(np.int64)
    table = pd.read_csv(atlas_tsv, sep="\t")
    ids = table["index"].to_numpy(dtype=int)
    voxel_ml = abs(float(np.linalg.det(arrays.affine[:3, :3]))) / 1000.0
    feats = {r: region_volumes(m, labels, ids, voxel_ml) for r, m in maps.items()}
    return feats, {"feature_names": table["name"].astype(str).to_numpy(), "label_ids": ids}


__all__ = [
    "LINEAR_MODELS",
    "PackArrays",
    "check_covariates",
    "covariate_features",
    "fold_features",
    "load_mask",
    "read_pack",
    "region_volumes",
    "voxel_features",
]
