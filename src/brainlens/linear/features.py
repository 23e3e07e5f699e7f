"""Feature matrices of the linear baselines, read without torch.

:mod:`brainlens.packing` imports torch at module level (its dataset class), so the
packed maps are read here through :func:`read_pack`, which opens the same files
(``<name>.npy`` memory-mapped, ``<name>.tsv`` index, ``<name>.json`` sidecar) with
numpy and pandas only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens.errors import ConfigError, DatasetError, InputFileError

#: Model name -> feature kind.
LINEAR_MODELS = {
    "linear_svm_voxels": "voxels",
    "linear_svm_regions": "regions",
    "confounds_only": "covariates",
}
#: Missing-value spellings in participants.tsv.
MISSING = ("", "n/a", "na", "nan")


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


def read_participants(path: str | Path) -> pd.DataFrame:
    """``participants.tsv`` as strings (``n/a`` kept literally)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(
            p,
            "participants table not found (confounds_only reads its covariates)",
            "add participants.tsv to the BIDS root, or remove confounds_only from baselines.models",
        )
    return pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)


def check_covariates(
    participants_tsv: str | Path, covariates: Sequence[str], label_column: str | None = None
) -> None:
    """Raise ConfigError unless every covariate is a column of ``participants.tsv``.

    Parameters
    ----------
    participants_tsv : path
    covariates : sequence of str
        ``baselines.covariates``.
    label_column : str, optional
        The diagnosis column: refused as a covariate (it is the label).
    """
    if not covariates:
        raise ConfigError(
            "baselines.covariates: empty, but confounds_only needs at least one column. "
            "Fix: list covariates (e.g. [age, sex]) or remove confounds_only from baselines.models"
        )
    if label_column is not None and label_column in covariates:
        raise ConfigError(
            f"baselines.covariates: {label_column!r} is the label column; a model given the "
            "label scores perfectly. Fix: remove it from baselines.covariates"
        )
    table = read_participants(participants_tsv)
    missing = [c for c in covariates if c not in table.columns]
    if missing:
        raise ConfigError(
            f"baselines.covariates: column(s) {missing} not in {participants_tsv} (columns "
            f"{list(table.columns)}). Fix: add them to participants.tsv or remove them from "
            "baselines.covariates (TIV is not computed by brainlens yet)"
        )


def _is_numeric(values: pd.Series) -> bool:
    present = values[~values.str.lower().isin(MISSING)]
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().all()


def covariate_matrix(
    table: pd.DataFrame,
    covariates: Sequence[str],
    participant_ids: Sequence[str],
    train_ids: Sequence[str],
) -> tuple[np.ndarray, list[str]]:
    """Covariates of participants, encoded from the training part only.

    Numeric columns (every present value parses as a number) stay numbers, a missing
    value takes the training part's mean; other columns (sex, site) are one-hot coded
    with the categories seen in the training part (an unseen category codes as all
    zeros; ``n/a`` is a category of its own).

    Parameters
    ----------
    table : DataFrame
        ``participants.tsv`` (strings), with ``participant_id``.
    covariates : sequence of str
    participant_ids : sequence of str, length n
        Rows wanted (one per scan; sessions repeat their participant).
    train_ids : sequence of str
        Participant IDs of the training part (define means and categories).

    Returns
    -------
    X : ndarray, shape (n, n_features)
    names : list of str
        Feature names (``age``, ``sex=F``, ...).
    """
    check = [c for c in ["participant_id", *covariates] if c not in table.columns]
    if check:
        raise ConfigError(
            f"baselines.covariates: column(s) {check} not in participants.tsv (columns "
            f"{list(table.columns)}). Fix: add them or remove them from baselines.covariates"
        )
    by_id = table.drop_duplicates("participant_id").set_index("participant_id")
    unknown = sorted(set(participant_ids) - set(by_id.index))
    if unknown:
        raise DatasetError(
            f"participants.tsv lacks participant(s) {unknown[:5]} of the folds table. "
            "Fix: list every participant in participants.tsv"
        )
    rows, train = by_id.loc[list(participant_ids)], by_id.loc[sorted(set(train_ids))]
    cols, names = [], []
    for c in covariates:
        values = rows[c].astype(str)
        if _is_numeric(by_id[c].astype(str)):
            num = pd.to_numeric(values, errors="coerce")
            mean = pd.to_numeric(train[c], errors="coerce").mean()
            cols.append(num.fillna(0.0 if np.isnan(mean) else mean).to_numpy(float))
            names.append(c)
        else:
            for cat in sorted(set(train[c].astype(str))):
                cols.append((values == cat).to_numpy(float))
                names.append(f"{c}={cat}")
    return np.column_stack(cols), names
