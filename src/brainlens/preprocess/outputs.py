"""The published files of the T1w preprocessing: names, staging, sidecars, publishing.

:func:`output_names` is the file-name contract of :func:`brainlens.preprocess.run_t1w_preproc`
(the names and keys of :data:`brainlens.derivatives.DERIVATIVES`).
The workflow's results are first written into a staging folder laid out like the scan's
folder (``anat/``, ``figures/``: :func:`staged_paths`, :func:`stage_images`,
:func:`write_sidecars`), then moved into the scan's folder together (:func:`publish`), so
a failed scan leaves no partial derivatives. Sidecars name their source with a BIDS URI
(``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``, :func:`source_of`) and describe the
``res-`` label (``Resolution``, :func:`brainlens.derivatives.resolution_description`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from brainlens._io import atomic_output, save_image, save_nifti, write_text_atomic
from brainlens.derivatives import (
    FOLDERS,
    GRID_KEYS,
    SPACE,
    derivative_names,
    resolution_description,
    sidecar_name,
    source_uri,
    tissue_key,
)
from brainlens.errors import PreprocessingError
from brainlens.grid import REGISTRATION_RESOLUTION
from brainlens.preprocess.registration import REGISTRATION
from brainlens.preprocess.segmentation import ATROPOS, TISSUES
from brainlens.preprocess.workflow import N4


def output_names(scan: str, *, resolution: float) -> dict[str, str]:
    """File names (no folder) that :func:`run_t1w_preproc` writes for ``scan``.

    Parameters
    ----------
    scan : str
        BIDS stem, e.g. ``sub-01`` or ``sub-01_ses-02``.
    resolution : float
        Analysis grid resolution (mm): the ``res-`` label of the grid outputs.

    Returns
    -------
    dict of str to str
        :data:`brainlens.derivatives.DERIVATIVES` keys (``t1w``, ``gm``, ``wm``, ``csf``,
        ``<tissue>_modulated``, ``brain_mask``, ``xfm_to_std``, ``xfm_from_std``,
        ``qc_json``, ``qc_png``) -> file names. Every ``.nii.gz`` also gets a ``.json``
        sidecar of the same stem (:func:`brainlens.derivatives.sidecar_name`). Each lies
        in its :data:`brainlens.derivatives.FOLDERS` folder of the scan's folder
        (:func:`staged_paths`).
    """
    return derivative_names(scan, resolution=resolution)


def staged_paths(folder: Path, names: dict[str, str]) -> dict[str, Path]:
    """:func:`output_names` keys -> ``folder/<anat|figures>/<name>`` (folders created)."""
    paths = {k: Path(folder) / FOLDERS[k] / name for k, name in names.items()}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    return paths


def source_of(t1w: Path, bids_dir: Path | None) -> str:
    """The ``Sources`` entry of a raw T1w: its BIDS URI in ``bids_dir`` (the workflow's
    case), else (a file outside any dataset, e.g. a test phantom) its ``file://`` URI."""
    return source_uri(t1w, bids_dir) if bids_dir is not None else Path(t1w).resolve().as_uri()


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
    save_image(nib.load(res["brain_mask"]), files["brain_mask"])
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
        "Resolution": resolution_description(resolution),
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


def write_sidecars(files: dict[str, Path], *, source: str, versions: dict, params: dict) -> None:
    """Write a ``.json`` sidecar beside every staged ``.nii.gz``.

    Parameters
    ----------
    files : dict of str to Path
        :func:`output_names` keys -> staged paths.
    source : str
        The raw T1w's URI (``Sources``, :func:`source_of`).
    versions : dict
        ``SoftwareVersions``.
    params : dict
        :func:`sidecar_params`; ``Resolution`` only for the grid outputs (the native
        brain mask has no ``res-``).
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
        side = {"Sources": [source], "SoftwareVersions": versions} | params
        if k not in GRID_KEYS:
            side.pop("Resolution", None)
        side |= extra.get(k, {})
        write_json(f.with_name(sidecar_name(f.name)), side)


def published_dir(out_dir: Path, folder: str) -> Path:
    """Where a :data:`~brainlens.derivatives.FOLDERS` folder's files are published:
    ``anat`` is ``out_dir`` itself (:func:`brainlens.derivatives.scan_dir`), any other
    (``figures``) its sibling."""
    return Path(out_dir) if folder == FOLDERS["t1w"] else Path(out_dir).parent / folder


def publish(stage: Path, out_dir: Path, scan: str) -> None:
    """Move every staged file into place (copy beside its destination, then same-folder
    renames): ``stage/<folder>/<name>`` -> :func:`published_dir` ``/<name>``.

    Parameters
    ----------
    stage : Path
        Staging folder (:func:`staged_paths`) holding every output of the scan; removed
        afterwards.
    out_dir : Path
        The scan's ``anat`` folder (created, and its sibling ``figures/``).
    scan : str
        BIDS stem; names the hidden incoming folders ``.{scan}.incoming``.
    """
    for sub in sorted(p for p in stage.iterdir() if p.is_dir()):
        dest = published_dir(out_dir, sub.name)
        dest.mkdir(parents=True, exist_ok=True)
        pub = dest / f".{scan}.incoming"
        if pub.exists():
            shutil.rmtree(pub)
        shutil.copytree(sub, pub)  # cross-device copy first, then renames inside dest
        for f in sorted(pub.iterdir()):
            os.replace(f, dest / f.name)
        pub.rmdir()
    shutil.rmtree(stage, ignore_errors=True)
