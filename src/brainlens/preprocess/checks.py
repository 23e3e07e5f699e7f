"""Cheap validity checks of a T1w NIfTI before any preprocessing.

:func:`check_t1w` reads the header and the voxel data once (about 10-100 ms per scan)
and raises :class:`brainlens.errors.InputFileError` naming the file, the problem and the
fix. Oblique images are accepted: every later step works in world (mm) coordinates
(reorientation only permutes/flips axes and keeps the rotation in the affine; ANTs
registers in physical space), and the obliquity is reported.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brainlens.errors import InputFileError

#: Largest voxel edge accepted (mm).
MAX_VOXEL_MM = 4.0
#: Smallest voxel edge accepted (mm); smaller is an absurd header for a T1w.
MIN_VOXEL_MM = 0.1
#: Largest spatial dimension accepted (voxels).
MAX_DIM = 1024
#: Smallest spatial dimension accepted (voxels); fewer means a 2D image or a slab.
MIN_DIM = 16


@dataclass(frozen=True)
class T1wReport:
    """What :func:`check_t1w` found in a valid T1w image.

    Attributes
    ----------
    path : str
    shape : tuple of int
        Spatial shape (X, Y, Z) as stored.
    zooms : tuple of float
        Voxel size (mm).
    dtype : str
        On-disk data type.
    axcodes : tuple of str
        Voxel axis orientation, e.g. ('L', 'P', 'S').
    obliquity_deg : float
        Largest angle between a voxel axis and its closest world axis (0 = not oblique).
    oblique : bool
        ``obliquity_deg > 0.5``; accepted (see module docstring).
    sha1 : str
        SHA-1 of the voxel data in RAS order as float32 plus its shape: identical
        images stored with another orientation, dtype or file name have the same hash.
    min, max : float
        Intensity range.
    """

    path: str
    shape: tuple[int, int, int]
    zooms: tuple[float, float, float]
    dtype: str
    axcodes: tuple[str, str, str]
    obliquity_deg: float
    oblique: bool
    sha1: str
    min: float
    max: float

    def to_dict(self) -> dict:
        """Plain-JSON dict of the report."""
        return asdict(self)


def _err(path: Path, problem: str, fix: str) -> InputFileError:
    return InputFileError(path, problem, fix)


def _obliquity_deg(affine: np.ndarray) -> float:
    rzs = affine[:3, :3]
    cols = rzs / np.linalg.norm(rzs, axis=0, keepdims=True)
    cosines = np.abs(cols).max(axis=0).clip(-1, 1)
    return float(np.degrees(np.arccos(cosines)).max())


def content_sha1(img: nib.Nifti1Image) -> str:
    """SHA-1 of an image's voxel data in RAS order (float32 bytes + shape).

    Parameters
    ----------
    img : Nifti1Image
        3D image (a trailing singleton 4th dim is dropped).

    Returns
    -------
    str
        40 hex digits.
    """
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    can = nib.as_closest_canonical(img)
    data = np.ascontiguousarray(np.asarray(can.dataobj, dtype=np.float32))
    h = hashlib.sha1(str(data.shape).encode())
    h.update(data.tobytes())
    return h.hexdigest()


def _load_nifti(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """The NIfTI image at ``path`` (header only); raise if it is missing or not NIfTI."""
    if not path.exists():
        raise _err(path, "file does not exist", "check the path and the BIDS dataset root")
    if not path.is_file():
        raise _err(path, "is not a regular file", "point to a .nii or .nii.gz file")
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise _err(
            path,
            f"expected a NIfTI file (.nii or .nii.gz), got suffix {''.join(path.suffixes)!r}",
            "convert the scan to NIfTI (e.g. dcm2niix)",
        )
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises several types for corrupt headers
        raise _err(
            path,
            f"cannot be read as NIfTI ({type(exc).__name__}: {exc})",
            "re-export or re-download the file; check it with nib-ls",
        ) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise _err(path, f"expected NIfTI-1/2, got {type(img).__name__}", "convert to NIfTI")
    return img


def _check_shape(path: Path, img: nib.Nifti1Image | nib.Nifti2Image) -> tuple[int, ...]:
    """The image's 3D shape (a trailing single volume dropped); raise unless a 3D head."""
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 4:
        raise _err(
            path,
            f"expected a 3D image, got 4D with {shape[3]} volumes (shape {shape})",
            "select one volume (e.g. average repeats or keep the first) before input",
        )
    if len(shape) < 3 or min(shape[:3]) < MIN_DIM:
        raise _err(
            path,
            f"expected a 3D volume with >= {MIN_DIM} voxels per axis, got shape {shape} (2D or a slab)",
            "use the full 3D T1w acquisition",
        )
    if len(shape) > 4:
        raise _err(path, f"expected 3D, got {len(shape)}D shape {shape}", "use a 3D T1w image")
    if max(shape) > MAX_DIM:
        raise _err(
            path,
            f"absurd header: dimension {max(shape)} > {MAX_DIM} voxels (shape {shape})",
            "check the NIfTI header (dim field) or the conversion",
        )
    return shape


def _check_geometry(
    path: Path, img: nib.Nifti1Image | nib.Nifti2Image
) -> tuple[float, float, float]:
    """The voxel size in mm; raise on absurd or too large voxels or a bad affine."""
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if not all(np.isfinite(zooms)) or min(zooms) <= MIN_VOXEL_MM:
        raise _err(
            path,
            f"absurd header: voxel size {zooms} mm (expected > {MIN_VOXEL_MM} mm)",
            "fix pixdim in the NIfTI header or reconvert the scan",
        )
    if max(zooms) > MAX_VOXEL_MM:
        raise _err(
            path,
            f"voxels too large for a T1w analysis: {zooms} mm, expected <= {MAX_VOXEL_MM} mm",
            "use a higher-resolution T1w or exclude this scan",
        )
    affine = img.affine
    if (
        affine is None
        or not np.all(np.isfinite(affine))
        or abs(np.linalg.det(affine[:3, :3])) < 1e-6
    ):
        raise _err(
            path,
            "absurd header: the voxel-to-world affine is singular or not finite",
            "fix the qform/sform in the NIfTI header or reconvert the scan",
        )
    vox_from_affine = np.sqrt((affine[:3, :3] ** 2).sum(0))
    if not np.allclose(vox_from_affine, zooms, rtol=0.05, atol=0.05):
        raise _err(
            path,
            f"absurd header: affine voxel size {tuple(np.round(vox_from_affine, 3))} mm "
            f"disagrees with pixdim {zooms} mm",
            "make sform/qform and pixdim consistent (reconvert the scan)",
        )
    return zooms


def _read_voxels(
    path: Path, img: nib.Nifti1Image | nib.Nifti2Image, shape: tuple[int, ...]
) -> tuple[np.ndarray, float, float]:
    """The voxels (float32, ``shape``), their min and max; raise if unreadable,
    non-finite or constant."""
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise _err(
            path,
            f"voxel data unreadable ({type(exc).__name__}: {exc}); truncated or corrupt gzip",
            "re-export or re-download the file",
        ) from exc
    data = data.reshape(shape)
    if not np.all(np.isfinite(data)):
        n_bad = int((~np.isfinite(data)).sum())
        raise _err(
            path,
            f"{n_bad} NaN/inf voxels (expected finite intensities)",
            "replace non-finite voxels (e.g. with 0) or reconvert the scan",
        )
    lo, hi = float(data.min()), float(data.max())
    if hi == lo:
        raise _err(
            path,
            f"empty image: all voxels equal {lo} (expected a head)",
            "check the conversion; exclude the scan if the acquisition failed",
        )
    return data, lo, hi


def check_t1w(path: Path | str) -> T1wReport:
    """Validate one T1w NIfTI file.

    Parameters
    ----------
    path : Path or str
        ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    T1wReport

    Raises
    ------
    InputFileError
        Missing file, not NIfTI or corrupt (bad gzip, truncated), 4D with more than one
        volume, 2D or a thin slab (< 16 voxels along an axis), non-finite voxels, empty
        or constant image, voxels larger than 4 mm, or an absurd header (voxel size
        <= 0.1 mm or non-finite, singular or non-finite affine, > 1024 voxels per axis).
    """
    path = Path(path)
    img = _load_nifti(path)
    shape = _check_shape(path, img)
    zooms = _check_geometry(path, img)
    data, lo, hi = _read_voxels(path, img, shape)
    affine = img.affine
    axcodes = tuple(nib.aff2axcodes(affine))
    obl = _obliquity_deg(affine)
    img3 = nib.Nifti1Image(data, affine)
    return T1wReport(
        path=str(path),
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        zooms=zooms,  # type: ignore[arg-type]
        dtype=str(img.get_data_dtype()),
        axcodes=axcodes,  # type: ignore[arg-type]
        obliquity_deg=round(obl, 3),
        oblique=obl > 0.5,
        sha1=content_sha1(img3),
        min=lo,
        max=hi,
    )
