"""File plumbing shared by every stage: atomic writes and NIfTI saves with explicit codes.

Every writer in the package goes through these helpers, so a job that dies half-way
never leaves a half-written output behind (Snakemake would take it as done), and every
NIfTI carries the same header conventions.

- :func:`atomic_output` -- context manager yielding a temporary path next to the target;
  the target appears (``os.replace``) only when the block finishes without an error, and
  the temporary file is removed when it raises.
- :func:`write_text_atomic` -- text through :func:`atomic_output`.
- :func:`save_nifti` -- float/int volume with qform and sform set to one affine and code,
  units mm, written atomically (:func:`nifti_image` builds that image in memory).
- :func:`save_nifti_like` -- a volume on a reference image's grid, with the reference's
  qform/sform codes (0 -> 1, scanner), written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["atomic_output", "nifti_image", "save_nifti", "save_nifti_like", "write_text_atomic"]

#: NIfTI xform codes by name (NIfTI-1 standard): scanner = 1, aligned = 2, mni = 4.
XFORM_CODES = {"scanner": 1, "aligned": 2, "talairach": 3, "mni": 4}


def _tmp_name(path: Path) -> Path:
    # same folder (os.replace must not cross file systems), same suffixes (nibabel and
    # numpy pick the format from the suffix), hidden and unique per process
    return path.with_name(f".tmp{os.getpid()}.{path.name}")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or Path
        The final output. Its folder is created.

    Yields
    ------
    Path
        A temporary file in the same folder with the same suffixes; write to it.

    Notes
    -----
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    *,
    code: str = "mni",
    dtype: type | None = np.float32,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Save a volume with qform = sform = ``affine`` and the given code, atomically.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z) or (X, Y, Z, T)
        The volume.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine in mm.
    path : str or Path
        ``.nii`` or ``.nii.gz`` output.
    code : {"scanner", "aligned", "talairach", "mni"}
        NIfTI xform code written to both qform and sform.
    dtype : numpy dtype or None
        Cast and on-disk data type; ``None`` keeps ``data``'s type.
    header : Nifti1Header, optional
        Header to start from (e.g. a source scan's), before the codes are set.

    Returns
    -------
    Path
        ``path``.
    """
    return save_image(nifti_image(data, affine, code=code, dtype=dtype, header=header), path)


def save_image(img: nib.Nifti1Image, path: str | Path) -> Path:
    """Save an image as it is (header, codes and data type kept), atomically.

    The one call of ``nibabel.save`` in the package: :func:`save_nifti` builds the
    image with explicit codes; this re-saves a loaded or reoriented one (e.g. an
    uncompressed intermediate as ``.nii.gz``).
    """
    with atomic_output(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def _code(code: str | int) -> int:
    if isinstance(code, str) and code in XFORM_CODES:
        return XFORM_CODES[code]
    if not isinstance(code, str) and int(code) in XFORM_CODES.values():
        return int(code)
    raise ValueError(
        f"code={code!r}: expected one of {sorted(XFORM_CODES)} or their numbers "
        f"{sorted(XFORM_CODES.values())}"
    )


def nifti_image(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    code: str | int = "mni",
    sform_code: str | int | None = None,
    dtype: type | None = np.float32,
    header: nib.Nifti1Header | None = None,
) -> nib.Nifti1Image:
    """An in-memory NIfTI with qform/sform = ``affine``, explicit codes, units mm.

    The one place header conventions are set; :func:`save_nifti` writes its result.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z) or (X, Y, Z, T)
        The volume.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine in mm.
    code : {"scanner", "aligned", "talairach", "mni"} or int
        NIfTI xform code of the qform (and of the sform unless ``sform_code`` is given).
    sform_code : str or int, optional
        A different sform code (e.g. copied from a reference image's header).
    dtype : numpy dtype or None
        Cast and on-disk data type; ``None`` keeps ``data``'s type.
    header : Nifti1Header, optional
        Header to start from, before the codes are set.

    Returns
    -------
    Nifti1Image
    """
    qcode = _code(code)
    scode = qcode if sform_code is None else _code(sform_code)
    arr = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=float), header=header)
    img.header.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    return img


def save_nifti_like(
    data: np.ndarray, ref: nib.Nifti1Image, path: str | Path, *, dtype: type = np.float32
) -> Path:
    """Save ``data`` on ``ref``'s grid with ``ref``'s qform/sform codes, atomically.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z)
        The volume, on ``ref``'s grid.
    ref : Nifti1Image
        Reference image: its affine and its qform and sform codes (a code 0, unknown,
        becomes 1, scanner) are written.
    path : str or Path
        ``.nii`` or ``.nii.gz`` output.
    dtype : numpy dtype
        Cast and on-disk data type.

    Returns
    -------
    Path
        ``path``.
    """
    img = nifti_image(
        data,
        ref.affine,
        code=int(ref.header["qform_code"]) or XFORM_CODES["scanner"],
        sform_code=int(ref.header["sform_code"]) or XFORM_CODES["scanner"],
        dtype=dtype,
    )
    return save_image(img, path)
