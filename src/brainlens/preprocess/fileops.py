"""File-level preprocessing helpers: NIfTI paths in, NIfTI paths out.

Each function wraps one in-memory helper of :mod:`brainlens.preprocess.core` (or
deepbet) and writes its result to an explicit output path. The nipype interfaces in
:mod:`brainlens.preprocess.interfaces` call these.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from brainlens._io import save_image, save_nifti, save_nifti_like
from brainlens.errors import PreprocessingError
from brainlens.preprocess import core


def _save_like(data: np.ndarray, ref: nib.Nifti1Image, path: Path, dtype: type) -> Path:
    # the reference's qform/sform codes are kept (0 -> 1, scanner)
    return save_nifti_like(data, ref, path, dtype=dtype)


def reorient_file(in_file: Path, out_file: Path) -> Path:
    """Write ``in_file`` reoriented to RAS+ (float32, no resampling) to ``out_file``."""
    return save_image(core.reorient_ras(nib.load(in_file)), out_file)


def deepbet_mask_file(in_file: Path, out_mask: Path, *, threads: int = 1) -> Path:
    """Brain mask of a T1w head with deepbet (CPU), cleaned (largest component, filled).

    Parameters
    ----------
    in_file : Path
        T1w head image (RAS+, bias-corrected preferred).
    out_mask : Path
        Output uint8 mask, same grid as ``in_file``.
    threads : int
        torch intra-op threads.

    Returns
    -------
    Path
        ``out_mask``.
    """
    import torch
    from deepbet import BrainExtraction

    torch.set_num_threads(max(1, int(threads)))
    img = nib.load(in_file)
    try:
        bet = BrainExtraction(no_gpu=True)
        _, mask_img, _ = bet.run(img)
    except Exception as exc:  # deepbet raises AssertionError on empty foreground
        raise PreprocessingError(f"{in_file}: deepbet brain extraction failed: {exc}") from exc
    mask = np.asarray(mask_img.dataobj) > 0
    # deepbet returns the mask in the input's own orientation (it reorients back)
    mask = core.clean_mask(mask)
    if mask.sum() == 0:
        raise PreprocessingError(f"{in_file}: deepbet returned an empty brain mask")
    return _save_like(mask, img, out_mask, np.uint8)


def threshold_mask_file(in_file: Path, out_mask: Path, *, threshold: float = 0.5) -> Path:
    """Binarise a (warped, interpolated) mask at ``threshold`` and clean it."""
    img = nib.load(in_file)
    mask = core.clean_mask(np.asarray(img.dataobj, np.float32) >= threshold)
    if mask.sum() == 0:
        raise PreprocessingError(f"{in_file}: brain mask empty after thresholding")
    return _save_like(mask, img, out_mask, np.uint8)


def apply_mask_file(in_file: Path, mask_file: Path, out_file: Path) -> Path:
    """Multiply an image by a binary mask (float32)."""
    img = nib.load(in_file)
    mask = np.asarray(nib.load(mask_file).dataobj) > 0
    data = np.asarray(img.dataobj, np.float32) * mask
    return _save_like(data, img, out_file, np.float32)


def make_priors_file(
    prior_files: list[Path],
    mask_file: Path,
    out_dir: Path,
    *,
    floor: float = 0.01,
    ext: str = ".nii.gz",
) -> str:
    """Write normalised Atropos priors ``prior_01..`` (in the given class order).

    Parameters
    ----------
    prior_files : list of Path
        Prior maps already warped onto the scan's grid, one per class (e.g. CSF, GM, WM).
    mask_file : Path
        The scan's brain mask.
    out_dir : Path
        Folder for ``prior_%02d<ext>``.
    floor : float
        See :func:`brainlens.preprocess.core.normalize_priors`.
    ext : str
        Image extension (``.nii.gz`` or ``.nii``).

    Returns
    -------
    str
        The Atropos pattern ``<out_dir>/prior_%02d<ext>``.
    """
    ref = nib.load(mask_file)
    mask = np.asarray(ref.dataobj) > 0
    stack = np.stack([np.asarray(nib.load(p).dataobj, np.float32) for p in prior_files])
    pri = core.normalize_priors(stack, mask, floor=floor)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(pri, start=1):
        _save_like(p, ref, out_dir / f"prior_{i:02d}{ext}", np.float32)
    return str(out_dir / f"prior_%02d{ext}")


def antialias_file(in_file: Path, out_file: Path, *, target_mm: float) -> Path:
    """Gaussian pre-filter before resampling onto a coarser grid.

    Parameters
    ----------
    in_file : Path
        Native image (e.g. brain T1w or a tissue posterior).
    out_file : Path
        Output (float32, same grid).
    target_mm : float
        Voxel size of the grid the image will be resampled to.

    Returns
    -------
    Path
        ``out_file``, smoothed per axis with FWHM ``sqrt(target^2 - voxel^2)`` mm where the
        native voxel is smaller than ``target_mm`` (unchanged copy otherwise). Smoothing
        preserves sums, so tissue volumes and modulation are unaffected.
    """
    img = nib.load(in_file)
    data = np.asarray(img.dataobj, np.float32)
    vox = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    fwhm = np.sqrt(np.clip(float(target_mm) ** 2 - vox**2, 0, None))
    if np.any(fwhm > 0.05 * vox):
        data = ndi.gaussian_filter(data, fwhm / 2.3548 / vox, mode="constant")
    return _save_like(data, img, out_file, np.float32)


def segmentation_grid_files(
    in_file: Path, mask_file: Path, out_file: Path, out_mask: Path, *, min_voxel_mm: float
) -> tuple[Path, Path]:
    """A native head and its brain mask on a grid no finer than ``min_voxel_mm``.

    Parameters
    ----------
    in_file : Path
        Native image (the N4-corrected head), RAS+.
    mask_file : Path
        Its brain mask (same grid).
    out_file, out_mask : Path
        Outputs when the grid changes.
    min_voxel_mm : float
        Smallest voxel wanted (the grid the MNI maps are made on).

    Returns
    -------
    tuple of Path
        ``(in_file, mask_file)`` unchanged when every voxel axis is already at least
        ``min_voxel_mm`` (see :func:`core.coarser_grid`); otherwise ``(out_file,
        out_mask)``: the image resampled linearly after a Gaussian anti-aliasing filter
        (float32), and the mask resampled the same way and kept where >= 0.5 (uint8).
    """
    from brainlens.templates import resample_to_grid

    img, mimg = nib.load(in_file), nib.load(mask_file)
    if img.shape[:3] != mimg.shape[:3] or not np.allclose(img.affine, mimg.affine, atol=1e-4):
        raise PreprocessingError(
            f"{mask_file}: mask grid {mimg.shape[:3]} does not match image {in_file} "
            f"grid {img.shape[:3]} (expected the same shape and affine)"
        )
    shape, affine = core.coarser_grid(img.shape[:3], img.affine, float(min_voxel_mm))
    if shape == img.shape[:3] and np.allclose(affine, img.affine):
        return Path(in_file), Path(mask_file)
    data = resample_to_grid(np.asarray(img.dataobj, np.float32), img.affine, shape, affine)
    mask = resample_to_grid(
        (np.asarray(mimg.dataobj) > 0).astype(np.float32), mimg.affine, shape, affine
    )
    ref = nib.Nifti1Image(data, affine, img.header)
    _save_like(data, ref, out_file, np.float32)
    _save_like(mask >= 0.5, ref, out_mask, np.uint8)
    return Path(out_file), Path(out_mask)


def resample_to_grid_file(in_file: Path, out_file: Path, *, resolution: float) -> Path:
    """Resample an image onto ``mni_grid(resolution)`` (linear, anti-aliased, float32)."""
    from brainlens.grid import mni_grid
    from brainlens.templates import resample_to_grid

    img = nib.load(in_file)
    shape, affine = mni_grid(resolution)
    data = resample_to_grid(np.asarray(img.dataobj, np.float32), img.affine, shape, affine)
    return save_nifti(data, affine, out_file, code="mni", dtype=np.float32)


def modulate_file(prob_file: Path, jacobian_file: Path, out_file: Path) -> Path:
    """Jacobian-modulate a template-space tissue map; see :func:`core.modulate`."""
    img = nib.load(prob_file)
    jac = np.asarray(nib.load(jacobian_file).dataobj, np.float32)
    prob = np.asarray(img.dataobj, np.float32)
    if jac.shape != prob.shape:
        raise PreprocessingError(
            f"{jacobian_file}: Jacobian shape {jac.shape} differs from tissue map "
            f"{prob_file} shape {prob.shape}"
        )
    return _save_like(core.modulate(np.clip(prob, 0, 1), jac), img, out_file, np.float32)


def tissue_volumes_ml(prob_files: dict[str, Path], mask_file: Path) -> dict[str, float]:
    """Native tissue volumes (ml) from posterior maps and the brain mask.

    Parameters
    ----------
    prob_files : dict of str to Path
        e.g. ``{"gm": ..., "wm": ..., "csf": ...}`` in native space; each on its own
        grid (the segmentation grid may be coarser than the mask's).
    mask_file : Path
        The native brain mask; its volume is the TIV.

    Returns
    -------
    dict of str to float
        ``"<key>_ml"`` for each tissue and ``"tiv_ml"``.
    """

    def voxel_ml(img: nib.Nifti1Image) -> float:
        return float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0

    ref = nib.load(mask_file)
    out = {"tiv_ml": float((np.asarray(ref.dataobj) > 0).sum() * voxel_ml(ref))}
    for k, p in prob_files.items():
        img = nib.load(p)  # may lie on the (coarser) segmentation grid
        out[f"{k}_ml"] = float(np.asarray(img.dataobj, np.float64).sum() * voxel_ml(img))
    return out
