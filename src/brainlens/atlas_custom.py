"""A user's own parcellation as an atlas: ``regions.atlases: [{name, image, labels}]``.

An entry of ``regions.atlases`` is either a built-in atlas name
(:func:`brainlens.atlases.available_atlases`) or a mapping

.. code-block:: yaml

    regions:
      atlases:
        - aal
        - {name: mylab, image: atlases/mylab.nii.gz, labels: atlases/mylab.tsv}

``image`` is a 3D integer label image (0 = background) in the template space
(MNI152NLin2009aSym, or an MNI152 flavour close to it) at any voxel size; like the
built-in atlases it is resampled to the analysis grid with nearest neighbour.
``labels`` is a tab-separated table of ``index`` and ``name``: the BIDS ``dseg.tsv``
layout (a header with ``index`` and ``name`` columns; other columns are ignored) or
two columns without a header. Relative paths are relative to the working directory
(the project directory, as for ``bids_dir``).

:func:`load_custom_atlas` checks, at parse time (``brainlens.config.check_config``) and
again in the ``atlas`` job: the files exist and are readable, the labels are
non-negative integers (at most 32767, the grid file's int16), the table covers every
nonzero label of the image with unique names, and the image lies in the template
space: an axis-aligned affine (a rotated one is a scanner/native-space image) and
labelled voxels that mostly (:data:`MIN_BRAIN_OVERLAP`) fall inside the template's
brain mask. A failure is a :class:`~brainlens.errors.ConfigError` naming the entry,
the file, the problem and the fix.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens.errors import ConfigError

#: Atlas names are file names and a workflow wildcard (``[a-z0-9_]+``).
NAME_PATTERN = re.compile(r"[a-z0-9_]+")
#: Minimum fraction of labelled voxels inside the (slightly dilated) template brain mask.
MIN_BRAIN_OVERLAP = 0.8
#: Largest deviation (degrees) of an image axis from a template axis (obliquity).
MAX_OBLIQUITY_DEG = 1.0
#: Largest label value: the resampled atlas is stored as int16.
MAX_LABEL = 32767
_FIX_SPACE = (
    "register the parcellation to the MNI152NLin2009aSym template and resample it with "
    "nearest-neighbour interpolation (e.g. antsApplyTransforms -n NearestNeighbor, or "
    "nilearn.image.resample_to_img(..., interpolation='nearest')), then point image at it"
)


@dataclass(frozen=True)
class CustomAtlas:
    """One ``{name, image, labels}`` entry of ``regions.atlases``."""

    name: str
    image: Path
    labels: Path
    where: str  # the config key, for messages


def atlas_names(config: dict[str, Any]) -> list[str]:
    """The names of ``regions.atlases``, built-in and custom, in config order."""
    return [e if isinstance(e, str) else str(e["name"]) for e in config["regions"]["atlases"]]


def custom_atlases(config: dict[str, Any]) -> dict[str, CustomAtlas]:
    """The custom entries of ``regions.atlases`` by name (no file is read).

    Raises
    ------
    ConfigError
        A name that is not ``[a-z0-9_]+``, that is a built-in atlas's name, or that
        appears twice in ``regions.atlases``.
    """
    from brainlens.atlases import BUILTIN_NAMES

    seen: set[str] = set()
    out: dict[str, CustomAtlas] = {}
    for i, entry in enumerate(config["regions"]["atlases"]):
        where = f"regions.atlases[{i}]"
        name = entry if isinstance(entry, str) else str(entry["name"])
        if name in seen:
            raise ConfigError(f"{where}: atlas {name!r} is listed twice. Fix: list each atlas once")
        seen.add(name)
        if isinstance(entry, str):
            continue
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"{where}.name: {name!r} is not a valid atlas name (it names files and a "
                "wildcard). Fix: use lower-case letters, digits and _ only, e.g. 'mylab'"
            )
        if name in BUILTIN_NAMES:
            raise ConfigError(
                f"{where}.name: {name!r} is the name of a built-in atlas. Fix: give your "
                f"atlas another name (built-in names: {sorted(BUILTIN_NAMES)})"
            )
        out[name] = CustomAtlas(name, Path(entry["image"]), Path(entry["labels"]), where)
    return out


def read_custom_labels(path: Path, *, where: str = "labels") -> pd.DataFrame:
    """A custom atlas's label table: ``index`` (int) and ``name``, background dropped.

    Accepts the BIDS ``dseg.tsv`` layout (a header with ``index`` and ``name``) or two
    tab-separated columns ``index<TAB>name`` without a header.

    Raises
    ------
    ConfigError
        Missing or unreadable file, no index/name columns, non-integer or repeated
        indices, empty or repeated names.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where}: {path}: file not found. Fix: give the path of the TSV")
    try:
        first = path.read_text().splitlines()[:1]
        header = bool(first) and {"index", "name"} <= set(first[0].rstrip("\r").split("\t"))
        table = pd.read_csv(
            path, sep="\t", header=0 if header else None, dtype=str, keep_default_na=False
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ConfigError(
            f"{where}: {path}: not a readable TSV ({err}). Fix: write it as tab-separated text "
            "with columns index and name"
        ) from None
    if not header:
        if table.shape[1] != 2:
            raise ConfigError(
                f"{where}: {path}: expected a header with columns 'index' and 'name' (BIDS "
                f"dseg.tsv) or two columns index<TAB>name, got {table.shape[1]} column(s) and "
                "no such header. Fix: add the header line 'index<TAB>name'"
            )
        table.columns = ["index", "name"]
    table = table[["index", "name"]].copy()
    bad = [v for v in table["index"] if not re.fullmatch(r"\s*\d+\s*", v)]
    if bad:
        raise ConfigError(
            f"{where}: {path}: column index must hold non-negative integers, got {bad[:5]}. "
            "Fix: give every region its integer label value"
        )
    table["index"] = table["index"].astype(int)
    table["name"] = table["name"].str.strip()
    table = table[table["index"] > 0].reset_index(drop=True)
    for col, what in (("index", "label value"), ("name", "name")):
        dup = sorted(set(table.loc[table[col].duplicated(), col]))
        if dup:
            raise ConfigError(
                f"{where}: {path}: {what}(s) {dup[:5]} appear more than once. Fix: give each "
                "region one row with a unique index and name"
            )
    if (table["name"] == "").any():
        empty = table.loc[table["name"] == "", "index"].tolist()
        raise ConfigError(f"{where}: {path}: regions {empty[:5]} have no name. Fix: name them")
    return table


def _label_data(atlas: CustomAtlas) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The image and its integer label array, checked for readability and values."""
    path = atlas.image
    if not path.is_file():
        raise ConfigError(
            f"{atlas.where}.image: {path}: file not found. Fix: give the path of the NIfTI "
            "label image (relative paths are relative to the working directory)"
        )
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for bad files
        raise ConfigError(
            f"{atlas.where}.image: {path}: not a readable NIfTI image ({type(err).__name__}: "
            f"{err}). Fix: give a .nii or .nii.gz label image"
        ) from None
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim != 3:
        raise ConfigError(
            f"{atlas.where}.image: {path}: expected a 3D label image, got shape {data.shape} "
            "(a 4D probabilistic atlas is not a label image). Fix: give one 3D volume of "
            "integer labels (e.g. the maximum-probability labels)"
        )
    if not np.issubdtype(data.dtype, np.integer):
        finite = np.isfinite(data).all()
        if not finite or not np.array_equal(data, np.round(data)):
            raise ConfigError(
                f"{atlas.where}.image: {path}: expected integer labels, got non-integer "
                f"values (dtype {data.dtype}). Fix: give a label image (resampled with "
                "nearest neighbour), not a probability or intensity map"
            )
    if data.min() < 0 or data.max() > MAX_LABEL:
        raise ConfigError(
            f"{atlas.where}.image: {path}: label values must be in 0..{MAX_LABEL}, got "
            f"{data.min():g}..{data.max():g}. Fix: renumber the regions (0 = background)"
        )
    labels = data.astype(np.int32)
    if not labels.any():
        raise ConfigError(f"{atlas.where}.image: {path}: no labelled voxel. Fix: check the file")
    return img, labels


@functools.lru_cache(maxsize=1)
def _template_brain() -> tuple[np.ndarray, np.ndarray]:
    """The analysis template's brain mask at 2 mm, dilated by 4 mm, and its affine."""
    from scipy import ndimage as ndi

    from brainlens.templates import _NILEARN_FILES, _nilearn_data_dir

    img = nib.load(str(_nilearn_data_dir() / _NILEARN_FILES["t1w"]))
    t1 = np.asanyarray(img.dataobj)[::2, ::2, ::2].astype(np.float32)
    affine = img.affine.copy()
    affine[:3, :3] *= 2.0
    mask = ndi.binary_fill_holes(t1 > 0.2 * t1.max())
    return ndi.binary_dilation(mask, iterations=2), affine


def _check_space(atlas: CustomAtlas, img: nib.Nifti1Image, labels: np.ndarray) -> None:
    """Axis-aligned affine; labelled voxels mostly inside the template brain mask."""
    lin = img.affine[:3, :3]
    cosines = np.abs(lin) / np.linalg.norm(lin, axis=0)
    tilt = float(np.degrees(np.arccos(np.clip(cosines.max(axis=0), 0.0, 1.0))).max())
    if tilt > MAX_OBLIQUITY_DEG:
        raise ConfigError(
            f"{atlas.where}.image: {atlas.image}: its voxel axes are rotated {tilt:.1f} degrees "
            "against the template's axes, as in a scanner (native) space image; a "
            f"parcellation in the template space has an axis-aligned affine. Fix: {_FIX_SPACE}"
        )
    ijk = np.argwhere(labels > 0)
    ijk = ijk[:: max(1, len(ijk) // 200_000)]
    xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    mask, m_aff = _template_brain()
    vox = np.rint((xyz - m_aff[:3, 3]) @ np.linalg.inv(m_aff[:3, :3]).T).astype(int)
    ok = np.all((vox >= 0) & (vox < mask.shape), axis=1)
    inside = np.zeros(len(vox), dtype=bool)
    inside[ok] = mask[tuple(vox[ok].T)]
    frac = float(inside.mean())
    if frac < MIN_BRAIN_OVERLAP:
        bm = np.argwhere(mask) @ m_aff[:3, :3].T + m_aff[:3, 3]
        box = np.round([xyz.min(0), xyz.max(0)]).astype(int).tolist()
        brain = np.round([bm.min(0), bm.max(0)]).astype(int).tolist()
        raise ConfigError(
            f"{atlas.where}.image: {atlas.image}: only {frac:.0%} of its labelled voxels lie "
            f"inside the template brain (at least {MIN_BRAIN_OVERLAP:.0%} expected): labels "
            f"span {box[0]}..{box[1]} mm, the template brain {brain[0]}..{brain[1]} mm, so "
            f"the image is in another space or field of view. Fix: {_FIX_SPACE}"
        )


def load_custom_atlas(atlas: CustomAtlas) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Load and check a custom atlas: its label image and table (``index``, ``name``).

    Returns
    -------
    img : nibabel.Nifti1Image
        3D int32 label image with the file's affine (0 = background).
    table : pandas.DataFrame
        ``index`` and ``name`` of every region in the table (background excluded).

    Raises
    ------
    ConfigError
        Any failed check of the module docstring, naming the entry and the file.
    """
    from brainlens._io import nifti_image

    img, labels = _label_data(atlas)
    table = read_custom_labels(atlas.labels, where=f"{atlas.where}.labels")
    missing = sorted(set(np.unique(labels[labels > 0]).tolist()) - set(table["index"]))
    if missing:
        raise ConfigError(
            f"{atlas.where}.labels: {atlas.labels}: label value(s) {missing[:10]} of "
            f"{atlas.image} have no row ({len(missing)} missing). Fix: add a row "
            "index<TAB>name for each, or set those voxels to 0 in the image"
        )
    _check_space(atlas, img, labels)
    return nifti_image(labels, img.affine, code="mni", dtype=np.int32), table


def check_atlases(config: dict[str, Any]) -> set[str]:
    """Check every entry of ``regions.atlases``; return the atlas names usable here.

    Built-in names must be available on this machine; custom entries are loaded and
    checked with :func:`load_custom_atlas`.

    Returns
    -------
    set of str
        The available built-in atlases and the configured custom ones (the names that
        ``baselines.atlas`` and a ``region_occlusion`` ``atlas`` option may use).
    """
    from brainlens.atlases import available_atlases

    builtin = set(available_atlases())
    custom = custom_atlases(config)
    for name in atlas_names(config):
        if name not in builtin and name not in custom:
            raise ConfigError(
                f"regions.atlases: unknown atlas {name!r}; allowed here: {sorted(builtin)} "
                "or your own as {name, image, labels}"
            )
    for atlas in custom.values():
        load_custom_atlas(atlas)
    return builtin | set(custom)
