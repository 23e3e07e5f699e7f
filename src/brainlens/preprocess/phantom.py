"""Synthetic T1w heads for tests and benchmarks of the preprocessing.

A phantom is the vendored MNI152NLin6Asym head template (with skull) pushed through a
random affine, a smooth random deformation and a multiplicative bias field, plus
Rician-like noise, sampled on a native grid of the requested voxel size and stored in
LPS-like (non-RAS) voxel order so that reorientation is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from brainlens._io import save_nifti

_DATA = Path(__file__).resolve().parents[1] / "data" / "templates"
HEAD = _DATA / "tpl-MNI152NLin6Asym_res-02_T1w.nii.gz"
HEAD_MASK = _DATA / "tpl-MNI152NLin6Asym_res-02_desc-brain_mask.nii.gz"


@dataclass(frozen=True)
class Phantom:
    """Paths of a written phantom and its ground truth.

    Attributes
    ----------
    t1w : Path
        The synthetic head (int16).
    brain_mask : Path
        Its true brain mask on the same grid (uint8).
    scale : float
        Isotropic scale of the random affine (native mm per template mm); the true
        brain volume is about ``scale**3`` times the template brain volume.
    """

    t1w: Path
    brain_mask: Path
    scale: float


def make_phantom(
    out_dir: Path,
    *,
    seed: int,
    voxel_size: float = 2.0,
    name: str = "sub-phantom_T1w",
    rotation_deg: float = 8.0,
    scale_range: tuple[float, float] = (0.92, 1.08),
    warp_mm: float = 3.0,
    bias: float = 0.25,
    noise: float = 0.03,
) -> Phantom:
    """Write one synthetic head and its true brain mask.

    Parameters
    ----------
    out_dir : Path
        Output folder (created).
    seed : int
        Seed of the random affine, deformation, bias and noise.
    voxel_size : float
        Native isotropic voxel size in mm.
    name : str
        File stem; writes ``<name>.nii.gz`` and ``<name>_mask.nii.gz``.
    rotation_deg : float
        Maximum absolute rotation per axis (degrees).
    scale_range : tuple of float
        Range of the isotropic scale.
    warp_mm : float
        Approximate peak displacement of the smooth deformation (mm).
    bias : float
        Peak relative amplitude of the multiplicative bias field.
    noise : float
        Noise standard deviation relative to the 99th intensity percentile.

    Returns
    -------
    Phantom
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head = nib.load(HEAD)
    hdata = np.asarray(head.dataobj, np.float32)
    hmask = np.asarray(nib.load(HEAD_MASK).dataobj, np.float32)

    scale = float(rng.uniform(*scale_range))
    rot = Rotation.from_euler("xyz", rng.uniform(-rotation_deg, rotation_deg, 3), degrees=True)
    lin = rot.as_matrix() * scale  # template mm -> native mm
    shift = rng.uniform(-8, 8, 3)

    # native grid: LPS-ordered voxels covering the transformed head box
    shape = tuple(int(np.ceil(s * 1.1 / voxel_size)) for s in (190, 220, 190))
    flip = np.diag([-voxel_size, -voxel_size, voxel_size])
    affine = np.eye(4)
    affine[:3, :3] = flip
    centre = np.array([0.0, -18.0, 18.0]) * scale + shift
    affine[:3, 3] = centre - flip @ (np.array(shape) - 1) / 2

    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    tpl_mm = np.linalg.inv(lin) @ (world - shift[:, None])
    # smooth deformation, coarse random field upsampled
    coarse = rng.normal(size=(3, 6, 7, 6)).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse.shape[1:], strict=True)]
    disp = np.stack(
        [ndi.zoom(c, zoom, order=3)[: shape[0], : shape[1], : shape[2]] for c in coarse]
    )
    disp *= warp_mm / max(np.abs(disp).max(), 1e-6)
    tpl_mm = tpl_mm + disp.reshape(3, -1)
    vox = np.linalg.inv(head.affine) @ np.vstack([tpl_mm, np.ones((1, tpl_mm.shape[1]))])
    data = ndi.map_coordinates(hdata, vox[:3], order=1, cval=0.0).reshape(shape)
    mask = ndi.map_coordinates(hmask, vox[:3], order=1, cval=0.0).reshape(shape) >= 0.5

    # bias field: smooth exp of a low-order random polynomial in normalized coordinates
    g = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    x, y, z = np.meshgrid(*g, indexing="ij")
    c = rng.uniform(-1, 1, 6)
    field = c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * y * z + c[5] * z**2
    field = np.exp(bias * field / max(np.abs(field).max(), 1e-6))
    data = data * field
    p99 = np.percentile(data[data > 0], 99)
    n1, n2 = rng.normal(0, noise * p99, (2, *shape)).astype(np.float32)
    data = np.sqrt((data + n1) ** 2 + n2**2)
    data = np.clip(data / p99 * 1000, 0, 32000).astype(np.int16)

    t1_path, mask_path = out_dir / f"{name}.nii.gz", out_dir / f"{name}_mask.nii.gz"
    for arr, path in ((data, t1_path), (mask.astype(np.uint8), mask_path)):
        save_nifti(arr, affine, path, code="scanner", dtype=None)
    return Phantom(t1w=t1_path, brain_mask=mask_path, scale=scale)
