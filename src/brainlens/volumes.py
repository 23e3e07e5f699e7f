"""Torch-free helpers for 3D maps: read one volume, Gaussian smoothing in mm.

Used by the packing step (:mod:`brainlens.packing`) and the near-duplicate audit
(:mod:`brainlens.duplicates`), so both read and smooth maps the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from brainlens.errors import InputFileError


def load_volume(
    path: Path, *, fix: str = "pack one 3D map per scan"
) -> tuple[np.ndarray, np.ndarray]:
    """One 3D map as float32 and its affine; a clear error for a missing or broken file.

    Parameters
    ----------
    path : Path
        A NIfTI file holding one 3D volume (a trailing axis of length 1 is dropped).
    fix : str
        What the error for a map that is not 3D tells the user to do.

    Returns
    -------
    data : np.ndarray, shape (X, Y, Z), float32
    affine : np.ndarray, shape (4, 4)
    """
    if not path.is_file():
        raise InputFileError(path, "volume not found", "run preprocessing for this scan first")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for broken files
        raise InputFileError(path, f"cannot read NIfTI ({err})", "re-run preprocessing") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputFileError(path, f"expected a 3D volume, got shape {data.shape}", fix)
    return data, np.asarray(img.affine, dtype=float)


def fwhm_to_sigma_voxels(fwhm_mm: float, affine: np.ndarray) -> np.ndarray:
    """Gaussian sigma in voxels per axis for an isotropic FWHM in mm.

    Parameters
    ----------
    fwhm_mm : float
        Full width at half maximum in mm (>= 0).
    affine : np.ndarray, shape (4, 4)
        Voxel-to-world affine; voxel sizes are the norms of its first three columns.

    Returns
    -------
    np.ndarray, shape (3,)
        ``fwhm_mm / sqrt(8 ln 2) / voxel_size``.
    """
    voxel = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    return float(fwhm_mm) / np.sqrt(8.0 * np.log(2.0)) / voxel


def smooth_volume(data: np.ndarray, sigma_voxels: Sequence[float]) -> np.ndarray:
    """Gaussian-smooth one volume (the kernel sums to 1).

    Parameters
    ----------
    data : np.ndarray, shape (X, Y, Z)
    sigma_voxels : sequence of 3 float
        Sigma per axis in voxels (see :func:`fwhm_to_sigma_voxels`).

    Returns
    -------
    np.ndarray, shape (X, Y, Z), float32
        Borders are zero-padded (``mode="constant"``), so tissue is not mirrored
        back into the field of view; the total is kept except for mass within a
        few sigma of the grid's edge (none for brain maps, which are zero there).
    """
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(
        np.asarray(data, dtype=np.float32), sigma=list(sigma_voxels), mode="constant"
    )
