"""Template and tissue-prior images on the MNI analysis grid, built from offline package data.

:func:`build_templates` writes, on :func:`brainlens.grid.mni_grid` at the requested
resolution (RAS+, float32 unless noted), the files named by
:data:`brainlens.derivatives.TEMPLATES` (e.g. ``tpl-MNI152NLin2009aSym_res-2_T1w.nii.gz``):

==================  ==========================================================================
key                 source
==================  ==========================================================================
``"t1w"``           nilearn ``mni_icbm152_t1_tal_nlin_sym_09a``
``"brain_mask"``    T1 > 0.2 max, holes filled (uint8)
``"gm"``/``"wm"``   nilearn GM / WM maps / 255
``"csf"``           clip(soft brain mask - GM - WM, 0, 1)
``"head"``          vendored FSL MNI152NLin6Asym 2 mm head (``tpl-MNI152NLin6Asym``)
``"head_mask"``     its brain mask (uint8)
``"provenance"``    ``provenance.json``: sources, versions, licences, sha256
==================  ==========================================================================

The nilearn T1 is brain-only (skull stripped) and the head template is in a slightly
different MNI flavour (NLin6Asym); the head pair is used only to carry a brain mask back
to a scan (``ants_template`` skull stripping), never as the analysis space.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from brainlens._io import save_nifti, write_text_atomic
from brainlens.derivatives import (  # noqa: F401 (template_paths, TEMPLATE_KEYS re-exported)
    SPACE,
    TEMPLATE_KEYS,
    template_paths,
)
from brainlens.errors import InputFileError
from brainlens.grid import mni_grid

_NILEARN_FILES = {
    "t1w": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_HEAD_FILES = {
    "head": "tpl-MNI152NLin6Asym_res-02_T1w.nii.gz",
    "head_mask": "tpl-MNI152NLin6Asym_res-02_desc-brain_mask.nii.gz",
}
_MNI_LICENCE = (
    "MNI ICBM152 licence (Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
    "Centre, MNI, McGill University; permission to use, copy, modify and distribute with "
    "the copyright notice)"
)


def _nilearn_data_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputFileError("nilearn", "package not installed", "pip install nilearn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def _vendored_dir() -> Path:
    return Path(__file__).parent / "data" / "templates"


def resample_to_grid(
    data: np.ndarray,
    src_affine: np.ndarray,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    *,
    order: int = 1,
) -> np.ndarray:
    """Resample a volume onto another grid in world coordinates, anti-aliased.

    Parameters
    ----------
    data : ndarray, shape (I, J, K)
        Source volume.
    src_affine : ndarray, shape (4, 4)
        Source voxel-to-world affine.
    shape : tuple of int
        Target shape (X, Y, Z).
    affine : ndarray, shape (4, 4)
        Target voxel-to-world affine.
    order : int
        Spline order (0 nearest, 1 linear).

    Returns
    -------
    ndarray, shape ``shape``, float32
        Resampled volume; 0 outside the source field of view. When the target voxel is
        larger than the source voxel the source is first smoothed with a Gaussian of FWHM
        ``sqrt(target^2 - source^2)`` (per axis) to avoid aliasing.
    """
    data = np.asarray(data, dtype=np.float32)
    src_vox = np.sqrt((src_affine[:3, :3] ** 2).sum(0))
    dst_vox = np.sqrt((affine[:3, :3] ** 2).sum(0))
    if order > 0 and np.any(dst_vox.mean() > src_vox * 1.01):
        fwhm = np.sqrt(np.clip(dst_vox.mean() ** 2 - src_vox**2, 0, None))
        data = ndi.gaussian_filter(data, fwhm / 2.3548 / src_vox)
    vox2vox = np.linalg.inv(src_affine) @ affine
    out = ndi.affine_transform(
        data, vox2vox[:3, :3], vox2vox[:3, 3], output_shape=shape, order=order, cval=0.0
    )
    return out.astype(np.float32)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _save(arr: np.ndarray, affine: np.ndarray, path: Path, dtype: type = np.float32) -> None:
    save_nifti(arr, affine, path, code="mni", dtype=dtype)


def _template_sources() -> dict[str, Path]:
    """Source file per template key (nilearn's MNI 2009a copy, the vendored head);
    raise if one is missing from the installed packages."""
    ndir, vdir = _nilearn_data_dir(), _vendored_dir()
    src = {k: ndir / f for k, f in _NILEARN_FILES.items()} | {
        k: vdir / f for k, f in _HEAD_FILES.items()
    }
    for key, p in src.items():
        if not p.is_file():
            raise InputFileError(
                p, f"template source for {key!r} not found", "reinstall nilearn / brainlens"
            )
    return src


def _provenance(
    src: dict[str, Path],
    paths: dict[str, Path],
    *,
    resolution: float,
    shape: tuple[int, ...],
    affine: np.ndarray,
) -> dict[str, object]:
    """``provenance.json``'s content: the grid, and per written template its sources
    (with sha256), package, original, licence, derivation and own sha256."""
    nilearn_v = importlib.metadata.version("nilearn")
    prov: dict[str, object] = {
        "space": SPACE,
        "resolution_mm": float(resolution),
        "grid_shape": list(shape),
        "grid_affine": affine.tolist(),
        "files": {},
    }
    derivation = {
        "t1w": "scaled to [0, 1] by its maximum; resampled (linear, anti-aliased)",
        "brain_mask": "fill_holes(T1/max > 0.2 or GM+WM > 0.5) at 1 mm, resampled, >= 0.5",
        "gm": "uint8/255, resampled",
        "wm": "uint8/255, resampled",
        "csf": "clip(max(smooth(brain mask, sigma 1 mm), GM+WM) - GM - WM, 0, 1), resampled",
        "head": "scaled by its 99.9th percentile, resampled",
        "head_mask": "resampled, >= 0.5",
    }
    src_of = {"brain_mask": ["t1w", "gm", "wm"], "csf": ["t1w", "gm", "wm"]}
    for k in TEMPLATE_KEYS:
        sources = [src[s] for s in src_of.get(k, [k])]
        is_head = k.startswith("head")
        prov["files"][paths[k].name] = {  # type: ignore[index]
            "key": k,
            "sources": [
                {"file": str(s), "sha256": _sha256(s), "bytes": s.stat().st_size} for s in sources
            ],
            "package": "brainlens (vendored from nimare 0.22.1)"
            if is_head
            else f"nilearn {nilearn_v}",
            "original": "TemplateFlow tpl-MNI152NLin6Asym res-02 (FSL MNI152 6th gen.)"
            if is_head
            else "MNI ICBM152 2009a nonlinear symmetric (nilearn's converted copy)",
            "licence": _MNI_LICENCE,
            "derivation": derivation[k],
            "sha256": _sha256(paths[k]),
        }
    return prov


def build_templates(out_dir: Path, *, resolution: float) -> dict[str, Path]:
    """Write the brain template, priors and head template on the MNI analysis grid.

    Parameters
    ----------
    out_dir : Path
        Output folder (created).
    resolution : float
        Grid resolution in mm (1, 1.5, 2 or 4); see :func:`brainlens.grid.mni_grid`.

    Returns
    -------
    dict of str to Path
        Keys ``"t1w"`` (brain T1, intensities scaled to [0, 1]), ``"brain_mask"``,
        ``"gm"``, ``"wm"``, ``"csf"`` (prior probabilities in [0, 1], GM + WM + CSF = soft
        brain mask <= 1), ``"head"`` (head T1 with skull, [0, 1]), ``"head_mask"`` and
        ``"provenance"`` (``provenance.json``: source file, package, version, licence and
        sha256 per output). All images have shape ``mni_grid(resolution)[0]``.

    Raises
    ------
    InputFileError
        A source file is missing from the installed packages.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape, affine = mni_grid(resolution)
    paths = template_paths(out_dir, resolution)
    src = _template_sources()
    imgs = {k: nib.as_closest_canonical(nib.load(p)) for k, p in src.items()}
    arrs = {k: np.asarray(img.dataobj, dtype=np.float32) for k, img in imgs.items()}

    t1 = arrs["t1w"] / arrs["t1w"].max()
    gm, wm = arrs["gm"] / 255.0, arrs["wm"] / 255.0
    mask1 = ndi.binary_fill_holes((t1 > 0.2) | (gm + wm > 0.5))
    # soft brain mask: smooth edge so that CSF prior has partial volume at the surface
    soft = np.clip(ndi.gaussian_filter(mask1.astype(np.float32), 1.0), 0, 1)
    soft = np.maximum(soft, np.clip(gm + wm, 0, 1))
    csf = np.clip(soft - gm - wm, 0, 1)
    a_src = imgs["t1w"].affine

    out = {
        "t1w": resample_to_grid(t1, a_src, shape, affine),
        "gm": resample_to_grid(gm, a_src, shape, affine),
        "wm": resample_to_grid(wm, a_src, shape, affine),
        "csf": resample_to_grid(csf, a_src, shape, affine),
    }
    mask = resample_to_grid(mask1.astype(np.float32), a_src, shape, affine) >= 0.5
    head = arrs["head"] / np.percentile(arrs["head"][arrs["head"] > 0], 99.9)
    out["head"] = np.clip(resample_to_grid(head, imgs["head"].affine, shape, affine), 0, None)
    hmask = resample_to_grid(arrs["head_mask"], imgs["head_mask"].affine, shape, affine) >= 0.5
    for k in ("gm", "wm", "csf"):
        out[k] = np.clip(out[k], 0, 1)

    for k, arr in out.items():
        _save(arr, affine, paths[k])
    _save(mask, affine, paths["brain_mask"], np.uint8)
    _save(hmask, affine, paths["head_mask"], np.uint8)

    prov = _provenance(src, paths, resolution=resolution, shape=shape, affine=affine)
    write_text_atomic(paths["provenance"], json.dumps(prov, indent=2) + "\n")
    return paths
