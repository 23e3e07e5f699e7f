"""In-memory preprocessing helpers (numpy / nibabel images in, arrays or images out).

These are the bottom layer: no files, no subprocesses. The file-level functions in
:mod:`brainlens.preprocess.fileops` and the nipype interfaces in
:mod:`brainlens.preprocess.interfaces` wrap them.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from brainlens._io import nifti_image


def reorient_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorder voxel axes to RAS+ without resampling (world coordinates unchanged).

    Parameters
    ----------
    img : Nifti1Image
        3D image, any axis order; a trailing singleton 4th dim is dropped.

    Returns
    -------
    Nifti1Image
        Float32 image of shape (X, Y, Z) whose affine has axis codes ('R', 'A', 'S').
        Oblique images keep their rotation in the affine (no resampling).
    """
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    can = nib.as_closest_canonical(img)
    data = np.asarray(can.dataobj, dtype=np.float32)
    return nifti_image(data, can.affine, code="scanner", dtype=np.float32)


def coarser_grid(
    shape: tuple[int, int, int], affine: np.ndarray, min_voxel_mm: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid with the same axes and field of view whose voxels are no finer than given.

    Parameters
    ----------
    shape : tuple of int
        Shape (X, Y, Z) of the source grid.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of the source grid (any rotation).
    min_voxel_mm : float
        Smallest voxel size wanted, in mm.

    Returns
    -------
    shape : tuple of int
        ``ceil(extent / voxel)`` per axis, where ``voxel = max(source voxel, min_voxel_mm)``.
    affine : ndarray, shape (4, 4)
        Same axis directions; the first voxel's outer corner is the source's, so the
        new grid covers the source field of view. Axes already coarse enough keep their
        voxel size and shape; when all are, the source grid is returned unchanged.
    """
    if not np.isfinite(min_voxel_mm) or min_voxel_mm <= 0:
        raise ValueError(f"min_voxel_mm: expected a positive number, got {min_voxel_mm!r}")
    affine = np.asarray(affine, dtype=float)
    vox = np.sqrt((affine[:3, :3] ** 2).sum(0))
    # within 1 % of the target counts as coarse enough (header rounding)
    scale = np.where(vox < 0.99 * min_voxel_mm, min_voxel_mm / vox, 1.0)
    if np.all(scale == 1.0):
        return tuple(int(n) for n in shape), affine.copy()
    new_shape = tuple(int(n) for n in np.ceil(np.asarray(shape) / scale - 1e-6))
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * scale
    # the source's outer corner is at voxel -0.5; the new first centre half a new voxel in
    out[:3, 3] = affine[:3, :3] @ ((scale - 1.0) / 2.0) + affine[:3, 3]
    return new_shape, out


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest connected component of a binary mask, with holes filled.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)

    Returns
    -------
    ndarray of bool, shape (X, Y, Z)
    """
    mask = np.asarray(mask, dtype=bool)
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
        mask = lab == (int(np.argmax(sizes)) + 1)
    return ndi.binary_fill_holes(mask)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks of equal shape (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


def masked_corr(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two volumes inside a mask.

    Parameters
    ----------
    x, y : ndarray, shape (X, Y, Z)
    mask : ndarray of bool, shape (X, Y, Z)

    Returns
    -------
    float
        r in [-1, 1]; NaN when either is constant inside the mask.
    """
    m = np.asarray(mask, bool)
    a, b = np.asarray(x, np.float64)[m], np.asarray(y, np.float64)[m]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def normalize_priors(priors: np.ndarray, mask: np.ndarray, floor: float = 0.01) -> np.ndarray:
    """Make tissue priors a proper distribution inside a brain mask.

    Parameters
    ----------
    priors : ndarray, shape (C, X, Y, Z)
        Prior probabilities (warped template maps), any non-negative values.
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask of the scan.
    floor : float
        Added to every class before normalising, so that no voxel of the mask has all
        priors at 0 (where the scan's mask reaches beyond the warped template).

    Returns
    -------
    ndarray, shape (C, X, Y, Z), float32
        Sums to 1 over C inside the mask, 0 outside.
    """
    p = np.clip(np.asarray(priors, np.float32), 0, None) + floor
    p /= p.sum(axis=0, keepdims=True)
    p *= np.asarray(mask, bool)[None]
    return p.astype(np.float32)


def modulate(prob_mni: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    """Jacobian modulation of a tissue map resampled into template space.

    Convention (CAT12 "mwp", SPM "preserve amount"): let ``phi`` map template (MNI)
    points x to native points ``phi(x)`` (the transform ANTs uses to resample a native
    image into MNI, i.e. the composite ``from-T1w_to-MNI``). With
    ``prob_mni(x) = p_native(phi(x))`` and ``jacobian(x) = det D phi(x)``::

        modulated(x) = prob_mni(x) * jacobian(x)
        sum_x modulated(x) * v_mni  ~=  integral p_native(y) dy  = native tissue volume

    ``jacobian > 1`` where the subject's anatomy is larger than the template.

    Parameters
    ----------
    prob_mni : ndarray, shape (X, Y, Z)
        Tissue probability resampled into the template grid.
    jacobian : ndarray, shape (X, Y, Z)
        det D phi on the same grid (``CreateJacobianDeterminantImage`` of the composite
        displacement field, not its log).

    Returns
    -------
    ndarray, shape (X, Y, Z), float32
    """
    return (np.asarray(prob_mni, np.float32) * np.asarray(jacobian, np.float32)).astype(np.float32)


def robust_z(values: np.ndarray) -> np.ndarray:
    """Robust z-scores: (x - median) / (1.4826 * MAD); 0 where the MAD is 0.

    Parameters
    ----------
    values : ndarray, shape (N,)

    Returns
    -------
    ndarray, shape (N,)
        NaN stays NaN.
    """
    v = np.asarray(values, np.float64)
    med = np.nanmedian(v)
    mad = 1.4826 * np.nanmedian(np.abs(v - med))
    if not np.isfinite(mad) or mad == 0:
        return np.where(np.isnan(v), np.nan, 0.0)
    return (v - med) / mad
