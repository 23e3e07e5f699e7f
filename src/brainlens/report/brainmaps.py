"""Class-mean relevance maps averaged over folds, drawn as glass brains and slices.

The attribution step writes, per model, method and fold, a table
``results/attribution/<model>/<method>/fold-<k>.tsv`` (one row per scan: ``scan_id``,
``target``, ``label``, ``path`` of its map) and, beside it in ``fold-<k>/``, the fold's
mean maps per class and over all (:data:`brainlens.derivatives.RELEVANCE`, found with
:func:`brainlens.derivatives.relevance_glob`). Missing mean maps are computed here from
the per-scan maps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from brainlens.derivatives import relevance_glob, template_glob
from brainlens.errors import InputFileError
from brainlens.report.io import exists, read_tsv, sorted_keys

log = logging.getLogger(__name__)

#: Glass brains and slices show voxels above this percentile of |relevance| (in-brain).
THRESHOLD_PERCENTILE = 95.0
#: Colour scale maximum: this percentile of |relevance| (robust to single hot voxels).
VMAX_PERCENTILE = 99.9


@dataclass
class ClassMaps:
    """Mean maps of one model and method, averaged over folds.

    Attributes
    ----------
    maps : dict
        ``"all"`` and each class -> mean map image.
    n_folds : dict
        Number of folds averaged per key.
    computed : int
        How many fold means had to be computed from per-scan maps.
    notes : list of str
        Problems met (missing maps), plain text.
    """

    maps: dict[str, nib.Nifti1Image] = field(default_factory=dict)
    n_folds: dict[str, int] = field(default_factory=dict)
    computed: int = 0
    notes: list[str] = field(default_factory=list)


def _resolve(path: str, table: Path) -> Path | None:
    """A per-scan map path as written in a table: absolute, cwd- or table-relative."""
    p = Path(str(path))
    candidates = [p] if p.is_absolute() else [p, table.parent / p, table.parent.parent / p]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float64), img.affine


def _mean_file(mean_dir: Path, key: str) -> Path | None:
    """The fold's mean map of class ``key`` (``"all"``: of every scan), or None."""
    if key == "all":
        found = sorted(mean_dir.glob(relevance_glob("mean")))
    else:
        found = sorted(mean_dir.glob(relevance_glob("class_mean", label=key)))
    if len(found) > 1:
        raise InputFileError(
            mean_dir,
            f"{len(found)} mean maps for {key!r} ({[f.name for f in found]})",
            "re-run the attribution step into an empty folder",
        )
    return found[0] if found else None


def fold_class_means(
    table_path: Path,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int, list[str]]:
    """Mean map per class (and ``"all"``) of one fold's attribution table.

    Parameters
    ----------
    table_path : Path
        ``.../fold-<k>.tsv``; its mean maps are looked up in ``.../fold-<k>/``.

    Returns
    -------
    means : dict
        class -> (data, affine).
    computed : int
        Number of means computed from per-scan maps (the file was missing).
    notes : list of str
    """
    table_path = Path(table_path)
    df = read_tsv(table_path)
    notes: list[str] = []
    if df is None:
        return {}, 0, [f"{table_path} not found"]
    group_col = "label" if "label" in df.columns else ("target" if "target" in df.columns else None)
    classes = sorted({str(c) for c in df[group_col].dropna()}) if group_col else []
    mean_dir = table_path.with_suffix("")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    missing = []
    for key in ["all", *classes]:
        f = _mean_file(mean_dir, key)
        if f is not None:
            out[key] = _load(f)
        else:
            missing.append(key)
    if not missing:
        return out, 0, notes
    if "path" not in df.columns:
        notes.append(f"{table_path}: no mean maps and no 'path' column to compute them")
        return out, 0, notes
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    affine = None
    lost = 0
    for rec in df.to_dict("records"):
        p = _resolve(rec["path"], table_path) if isinstance(rec["path"], str) else None
        if p is None:
            lost += 1
            continue
        data, aff = _load(p)
        if affine is None:
            affine = aff
        elif data.shape != next(iter(sums.values())).shape:
            raise InputFileError(
                p,
                f"map shape {data.shape} differs from the fold's other maps",
                "re-run the attribution step",
            )
        keys = ["all"] + ([str(rec[group_col])] if group_col else [])
        for k in keys:
            if k in missing:
                sums[k] = sums[k] + data if k in sums else data.copy()
                counts[k] = counts.get(k, 0) + 1
    if lost:
        notes.append(f"{table_path}: {lost} per-scan map(s) not found")
    for k in missing:
        if k in sums:
            out[k] = (sums[k] / counts[k], affine)
    return out, sum(1 for k in missing if k in sums), notes


def class_maps_over_folds(tables: Mapping[object, Path]) -> ClassMaps:
    """Average each class's fold-mean map over folds.

    Parameters
    ----------
    tables : dict fold -> Path
        The attribution tables of one model and method.

    Returns
    -------
    ClassMaps
    """
    result = ClassMaps()
    sums: dict[str, np.ndarray] = {}
    affine = None
    for fold in sorted_keys(tables):
        path = tables[fold]
        if not exists(path):
            result.notes.append(f"fold {fold}: attribution table {path} not found")
            continue
        means, computed, notes = fold_class_means(Path(path))
        result.computed += computed
        result.notes.extend(notes)
        for k, (data, aff) in means.items():
            if affine is None:
                affine = aff
            if k in sums and sums[k].shape != data.shape:
                result.notes.append(f"fold {fold}: class {k} map has another shape; skipped")
                continue
            sums[k] = sums[k] + data if k in sums else data.copy()
            result.n_folds[k] = result.n_folds.get(k, 0) + 1
    for k, s in sums.items():
        result.maps[k] = nib.Nifti1Image((s / result.n_folds[k]).astype(np.float32), affine)
    return result


def find_template(template_t1w: Path | None) -> Path | None:
    """The template T1w file: the path itself, or the T1w inside a template folder.

    In a folder written by :func:`brainlens.templates.build_templates` the brain template
    of the analysis space (:func:`brainlens.derivatives.template_glob`) is preferred over the head
    template.
    """
    if template_t1w is None:
        return None
    p = Path(template_t1w)
    if p.is_file():
        return p
    if p.is_dir():
        hits = (
            sorted(p.glob(template_glob("t1w")))
            or sorted(p.glob("*_T1w.nii*"))
            or sorted(p.glob("*.nii*"))
        )
        return hits[0] if hits else None
    return None


def _scale(maps: Mapping[str, nib.Nifti1Image]) -> tuple[float, float, bool]:
    """Shared (threshold, vmax, signed) of a set of maps."""
    vals = [np.asarray(img.dataobj, dtype=np.float64).ravel() for img in maps.values()]
    v = np.concatenate(vals) if vals else np.zeros(1)
    v = v[np.isfinite(v)]
    signed = bool(v.size and v.min() < -1e-12 * max(1.0, abs(v).max()))
    a = np.abs(v[v != 0])
    if a.size == 0:
        return 0.0, 1.0, signed
    vmax = float(np.percentile(a, VMAX_PERCENTILE)) or float(a.max())
    thr = float(np.percentile(a, THRESHOLD_PERCENTILE))
    return min(thr, 0.999 * vmax), vmax, signed


def cut_coords(maps: Mapping[str, nib.Nifti1Image], threshold: float) -> tuple[float, float, float]:
    """Slice position (mm): centre of the largest supra-threshold cluster of the class maps.

    The classes' |maps| are summed (``"all"`` only when there is no class map), so that
    opposite-signed class maps do not cancel; :func:`nilearn.plotting.find_xyz_cut_coords`
    then picks the centre of the largest cluster above ``threshold``.
    """
    from nilearn.plotting import find_xyz_cut_coords

    keys = [k for k in maps if k != "all"] or list(maps)
    ref = maps[keys[0]]
    total = sum(np.abs(np.asarray(maps[k].dataobj, dtype=np.float64)) for k in keys)
    img = nib.Nifti1Image(np.asarray(total, dtype=np.float32), ref.affine)
    try:
        xyz = find_xyz_cut_coords(img, activation_threshold=threshold * len(keys))
    except ValueError:  # nothing above the threshold
        xyz = find_xyz_cut_coords(img)
    return float(xyz[0]), float(xyz[1]), float(xyz[2])


def brain_figures(
    maps: Mapping[str, nib.Nifti1Image], template: Path | None, title: str
) -> tuple[object, object, dict[str, object]]:
    """Glass brains and slice overlays of class-mean maps, one row per map.

    Parameters
    ----------
    maps : dict
        Row label -> image, in display order.
    template : Path or None
        Background of the slices (nilearn's MNI template when None).
    title : str
        Figure title prefix.

    Returns
    -------
    glass, slices : matplotlib Figure
    info : dict
        ``threshold``, ``vmax``, ``signed``, ``cut_coords`` used.
    """
    import matplotlib.pyplot as plt
    from nilearn import plotting

    thr, vmax, signed = _scale(maps)
    cmap = "RdBu_r" if signed else "viridis"
    keys = list(maps)
    cut = cut_coords(maps, thr)
    n = len(keys)
    glass = plt.figure(figsize=(8.5, 2.5 * n), facecolor="white")
    slices = plt.figure(figsize=(8.5, 2.7 * n), facecolor="white")
    bg = str(template) if template is not None else plotting.img_plotting.MNI152TEMPLATE
    for i, k in enumerate(keys):
        rect = [0.0, 1.0 - (i + 1) / n, 1.0, 1.0 / n]
        label = "all test scans" if k == "all" else f"class {k}"
        plotting.plot_glass_brain(
            maps[k],
            figure=glass,
            axes=glass.add_axes(rect),
            threshold=thr,
            vmax=vmax,
            vmin=-vmax if signed else 0,
            cmap=cmap,
            plot_abs=False,
            symmetric_cbar=signed,
            colorbar=True,
            black_bg=False,
            title=f"{title}: {label}",
            annotate=True,
        )
        plotting.plot_stat_map(
            maps[k],
            bg_img=bg,
            figure=slices,
            axes=slices.add_axes(rect),
            display_mode="ortho",
            cut_coords=cut,
            threshold=thr,
            vmax=vmax,
            vmin=-vmax if signed else 0,
            cmap=cmap,
            symmetric_cbar=signed,
            colorbar=True,
            black_bg=False,
            dim=-0.3,
            title=f"{title}: {label}",
            annotate=True,
            draw_cross=False,
        )
    return glass, slices, {"threshold": thr, "vmax": vmax, "signed": signed, "cut_coords": cut}


def class_order(maps: Mapping[str, object]) -> list[str]:
    """``"all"`` first, then the classes in sorted order."""
    return (["all"] if "all" in maps else []) + sorted(k for k in maps if k != "all")


__all__ = [
    "ClassMaps",
    "brain_figures",
    "class_maps_over_folds",
    "find_template",
    "fold_class_means",
]
