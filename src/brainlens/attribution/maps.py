"""Writing relevance maps to NIfTI and averaging them per group."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from brainlens._io import save_nifti
from brainlens.attribution._common import AttributionError


def save_map(
    relevance: np.ndarray,
    affine: np.ndarray | None,
    path: str | Path,
    *,
    allow_identity: bool = False,
) -> Path:
    """Write a relevance map as a float32 NIfTI image.

    Parameters
    ----------
    relevance : np.ndarray, shape (X, Y, Z)
        Finite relevance values on the analysis grid.
    affine : np.ndarray, shape (4, 4)
        Voxel-to-world affine of the grid (e.g. :func:`brainlens.grid.mni_grid`).
        A missing or identity affine is refused: it would put the map in voxel
        space and silently break every atlas lookup downstream.
    path : str or Path
        Output file (``.nii`` or ``.nii.gz``); parent folders are created.
    allow_identity : bool
        Accept an identity affine (only for maps that truly live in voxel space).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    data = np.asarray(relevance)
    if data.ndim != 3:
        raise AttributionError(
            f"{path}: relevance map must have shape (X, Y, Z), got {data.shape}. "
            "Fix: reduce channels / pass one sample's map"
        )
    if not np.all(np.isfinite(data)):
        raise AttributionError(
            f"{path}: relevance map contains {int(np.sum(~np.isfinite(data)))} NaN/inf voxels. "
            "Fix: check the attribution method's output"
        )
    if affine is None:
        raise AttributionError(
            f"{path}: no affine given. Fix: pass the analysis grid's affine "
            "(brainlens.grid.mni_grid(resolution)[1])"
        )
    aff = np.asarray(affine, dtype=float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise AttributionError(
            f"{path}: affine must be a finite (4, 4) array, got shape {aff.shape}. "
            "Fix: pass the analysis grid's affine"
        )
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise AttributionError(f"{path}: affine is singular. Fix: pass the analysis grid's affine")
    if np.allclose(aff, np.eye(4)) and not allow_identity:
        raise AttributionError(
            f"{path}: affine is the identity (voxel space), expected the analysis grid's "
            "world affine. Fix: pass brainlens.grid.mni_grid(resolution)[1], or "
            "allow_identity=True if the map really is in voxel space"
        )
    code = "aligned" if np.allclose(aff, np.eye(4)) else "mni"
    return save_nifti(data, aff, path, code=code, dtype=np.float32)


def mean_maps(maps: Sequence[np.ndarray], labels: Sequence[Hashable]) -> dict[Hashable, np.ndarray]:
    """Voxel-wise mean map per label (e.g. per diagnosis or per predicted class).

    Parameters
    ----------
    maps : sequence of np.ndarray, each of shape (X, Y, Z)
        Relevance maps on one grid.
    labels : sequence
        One group label per map.

    Returns
    -------
    dict
        label -> float64 mean map of shape (X, Y, Z), labels in order of first appearance.
    """
    if len(maps) != len(labels):
        raise AttributionError(
            f"mean_maps: got {len(maps)} maps but {len(labels)} labels; expected one label per map"
        )
    if len(maps) == 0:
        raise AttributionError("mean_maps: got no maps; expected at least one")
    shape = np.shape(maps[0])
    sums: dict[Hashable, np.ndarray] = {}
    counts: dict[Hashable, int] = {}
    for i, (m, lab) in enumerate(zip(maps, labels, strict=True)):
        arr = np.asarray(m, dtype=np.float64)
        if arr.shape != shape:
            raise AttributionError(
                f"mean_maps: map {i} has shape {arr.shape}, expected {shape} like map 0"
            )
        if lab in sums:
            sums[lab] += arr
            counts[lab] += 1
        else:
            sums[lab] = arr.copy()
            counts[lab] = 1
    return {lab: sums[lab] / counts[lab] for lab in sums}
