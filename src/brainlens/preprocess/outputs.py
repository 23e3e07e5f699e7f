"""The published files of the T1w preprocessing: names, staging, sidecars, publishing.

:func:`output_names` is the file-name contract of :func:`brainlens.preprocess.run_t1w_preproc`
(the names and keys of :data:`brainlens.derivatives.DERIVATIVES`).
The workflow's results are first written into a staging folder (:func:`stage_images`,
:func:`write_sidecars`), then moved into the output folder together
(:func:`publish`), so a failed scan leaves no partial derivatives.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from brainlens._io import atomic_output, save_nifti, write_text_atomic
from brainlens.derivatives import SPACE, derivative_names, sidecar_name, tissue_key
from brainlens.errors import PreprocessingError
from brainlens.grid import REGISTRATION_RESOLUTION
from brainlens.preprocess.registration import REGISTRATION
from brainlens.preprocess.segmentation import ATROPOS, TISSUES
from brainlens.preprocess.workflow import N4


def output_names(scan: str) -> dict[str, str]:
    """File names (no folder) that :func:`run_t1w_preproc` writes for ``scan``.

    Parameters
    ----------
    scan : str
        BIDS stem, e.g. ``sub-01`` or ``sub-01_ses-02``.

    Returns
    -------
    dict of str to str
        :data:`brainlens.derivatives.DERIVATIVES` keys (``t1w``, ``gm``, ``wm``, ``csf``,
        ``<tissue>_modulated``, ``brain_mask``, ``xfm_to_std``, ``xfm_from_std``,
        ``qc_json``, ``qc_png``) -> file names. Every ``.nii.gz`` also gets a ``.json``
        sidecar of the same stem (:func:`brainlens.derivatives.sidecar_name`).
    """
    return derivative_names(scan)


def write_json(path: Path, content: dict) -> Path:
    """Write ``content`` as indented JSON (``default=str``) atomically."""
    return write_text_atomic(path, json.dumps(content, indent=2, default=str) + "\n")


def _save_grid(src: Path, dst: Path, shape: tuple, affine: np.ndarray) -> None:
    img = nib.load(src)
    data = np.asarray(img.dataobj, np.float32)
    if data.shape != tuple(shape) or not np.allclose(img.affine, affine, atol=1e-3):
        raise PreprocessingError(
            f"{src}: expected the MNI grid {tuple(shape)}, got {data.shape} / affine "
            f"{img.affine.round(3).tolist()}"
        )
    save_nifti(data, affine, dst, code="mni", dtype=np.float32)


def stage_images(res: dict, files: dict[str, Path], shape: tuple, affine: np.ndarray) -> None:
    """Write the workflow's images and transforms to their staged names.

    Parameters
    ----------
    res : dict
        ``outputnode`` values of :func:`brainlens.preprocess.workflow.init_t1w_preproc_wf`.
    files : dict of str to Path
        :func:`output_names` keys -> staged paths.
    shape : tuple of int
        MNI grid shape (X, Y, Z) every MNI output must have.
    affine : ndarray, shape (4, 4)
        MNI grid affine; written with code 4 (mni).

    Raises
    ------
    PreprocessingError
        An MNI output is not on the expected grid.
    """
    _save_grid(Path(res["std_t1w"]), files["t1w"], shape, affine)
    for i, t in enumerate(TISSUES):
        _save_grid(Path(res["std_probseg"][i]), files[tissue_key(t)], shape, affine)
        _save_grid(
            Path(res["std_mod_probseg"][i]), files[tissue_key(t, modulated=True)], shape, affine
        )
    # intermediates are uncompressed (interfaces.WORK_EXT): re-save (header kept), not copy
    with atomic_output(files["brain_mask"]) as tmp:
        nib.save(nib.load(res["brain_mask"]), tmp)
    for key, field in (("xfm_to_std", "anat2std_xfm"), ("xfm_from_std", "std2anat_xfm")):
        with atomic_output(files[key]) as tmp:
            shutil.copyfile(res[field], tmp)


def sidecar_params(
    *,
    resolution: float,
    reg_res: float | None,
    skullstrip: str,
    seed: int,
    registration: dict | None,
    segmentation_grid: str,
) -> dict:
    """Processing parameters shared by every NIfTI sidecar (BIDS-Derivatives style)."""
    return {
        "Space": SPACE,
        "Resolution": float(resolution),
        "RegistrationGridResolution": REGISTRATION_RESOLUTION,
        "OutputsResampledFromGridResolution": reg_res,
        "SkullStripMethod": skullstrip,
        "Seed": int(seed),
        "Registration": REGISTRATION | (registration or {}),
        "N4": N4,
        "Atropos": ATROPOS,
        "SegmentationGrid": segmentation_grid,
        # Atropos ran on the native grid, coarsened where finer than this (mm)
        **(
            {"SegmentationMinVoxelSize": float(reg_res or resolution)}
            if segmentation_grid == "analysis"
            else {}
        ),
        "Modulation": "modulated = probseg * det(D phi), phi: MNI -> native mm "
        "(CreateJacobianDeterminantImage of the composite anat2std displacement field); "
        "sum * voxel volume = native tissue volume",
    }


def write_sidecars(files: dict[str, Path], *, source: Path, versions: dict, params: dict) -> None:
    """Write a ``.json`` sidecar beside every staged ``.nii.gz``.

    Parameters
    ----------
    files : dict of str to Path
        :func:`output_names` keys -> staged paths.
    source : Path
        The raw T1w (``Sources``).
    versions : dict
        ``SoftwareVersions``.
    params : dict
        :func:`sidecar_params`.
    """
    extra = {
        "brain_mask": {"Type": "Brain", "Space": "T1w (native, RAS-reordered)"},
        "t1w": {"SkullStripped": True, "Intensity": "N4 bias-corrected, not rescaled"},
    } | {
        tissue_key(t, modulated=m): {"Tissue": t, "Modulated": m}
        for t in TISSUES
        for m in (False, True)
    }
    for k, f in files.items():
        if not f.name.endswith(".nii.gz"):
            continue
        side = {"Sources": [str(source)], "SoftwareVersions": versions} | params
        side |= extra.get(k, {})
        write_json(f.with_name(sidecar_name(f.name)), side)


def publish(stage: Path, out_dir: Path, scan: str) -> None:
    """Move every staged file into ``out_dir`` (copy beside it, then same-folder renames).

    Parameters
    ----------
    stage : Path
        Staging folder holding every output of the scan; removed afterwards.
    out_dir : Path
        The scan's derivatives folder (created).
    scan : str
        BIDS stem; names the hidden incoming folder ``out_dir/.{scan}.incoming``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pub = out_dir / f".{scan}.incoming"
    if pub.exists():
        shutil.rmtree(pub)
    shutil.copytree(stage, pub)  # cross-device copy first, then renames inside out_dir
    for f in sorted(pub.iterdir()):
        os.replace(f, out_dir / f.name)
    pub.rmdir()
    shutil.rmtree(stage, ignore_errors=True)
