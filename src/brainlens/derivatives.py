"""The one naming table: every derivative file of a scan, every template file, every
attribution map, and the BIDS-Derivatives vocabulary around them.

One key vocabulary names both scans' derivatives and templates, so the same key means the
same kind of image everywhere (a scan's ``gm`` map and the ``gm`` prior, a scan's
``brain_mask`` and the template's):

=================  ==========================================================================
key                a scan's derivative (:data:`DERIVATIVES`, ``<S>`` = :data:`SPACE`,
                   ``<r>`` = :func:`res_label` of ``preprocess.resolution``)
=================  ==========================================================================
``t1w``            ``{scan}_space-<S>_res-<r>_desc-preproc_T1w.nii.gz``: skull-stripped, N4
``gm`` ``wm``      ``{scan}_space-<S>_res-<r>_label-<GM|WM|CSF>_probseg.nii.gz``: tissue
``csf``            probability
``gm_modulated``   ``{scan}_space-<S>_res-<r>_label-<GM|WM|CSF>_desc-modulated_probseg.nii.gz``
(``wm_``, ``csf_``)
``brain_mask``     ``{scan}_desc-brain_mask.nii.gz``: native-space brain mask
``xfm_to_std``     ``{scan}_from-T1w_to-<S>_mode-image_xfm.h5``: native -> MNI composite
``xfm_from_std``   ``{scan}_from-<S>_to-T1w_mode-image_xfm.h5``: its inverse
``qc_json``        ``{scan}_desc-qc_T1w.json``: QC metrics
``qc_png``         ``{scan}_desc-qc_T1w.png``: QC picture, in ``figures/`` (:data:`FOLDERS`)
=================  ==========================================================================

The names on the analysis grid carry ``res-<r>`` (:data:`GRID_KEYS`), so they are built
with the grid's resolution (``resolution=``, the config's ``preprocess.resolution``); the
sidecars describe the label (:func:`resolution_description`, BIDS ``Resolution``). The
tissue keys are the config's ``train.inputs`` names. Every ``.nii.gz`` derivative also
gets a ``.json`` sidecar of the same stem (:func:`sidecar_name`). A scan's files live in
``<root>/<sub-XX>[/<ses-YY>]/<folder>/`` (:func:`derivative_path`; ``anat``, or
``figures`` for the QC picture, as fMRIPrep does), ``<root>`` being the workflow's
``results/preprocess``. The tables at the root that are not BIDS are listed in its
``.bidsignore`` (:data:`BIDSIGNORE`); ``Sources`` hold BIDS URIs (:func:`bids_uri`,
dataset :data:`RAW_DATASET`). The templates (:data:`TEMPLATES`, ``{res}`` =
:func:`res_label`) use the keys ``t1w``, ``brain_mask``, ``gm``, ``wm``, ``csf``, ``head``,
``head_mask`` and ``provenance``. Attribution maps (:data:`RELEVANCE`) carry the same
``space-``/``res-`` entities; label values in file names (methods, classes) are
sanitised to letters and digits (:func:`sanitise_label`, :func:`sanitised_labels`).

Writers (:func:`brainlens.preprocess.run_t1w_preproc`,
:func:`brainlens.templates.build_templates`,
:func:`brainlens.attribution.fold.attribute_fold`), the workflow's rules
(``workflow/rules/common.smk``) and readers all take the names from here;
``tests/test_derivatives.py`` checks them against the files a run writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Final

from brainlens.bids import scan_subdir
from brainlens.errors import ConfigError, InputFileError

#: The template space written into file names: nilearn's MNI ICBM152 2009a nonlinear
#: symmetric template (``mni_icbm152_*_tal_nlin_sym_09a``, :mod:`brainlens.templates`).
SPACE: Final = "MNI152NLin2009aSym"
#: Space of the head (with skull) template used for template-based skull stripping.
HEAD_SPACE: Final = "MNI152NLin6Asym"
#: Tissue labels in file names, in the order of their keys ``gm``, ``wm``, ``csf``.
TISSUE_LABELS: Final = ("GM", "WM", "CSF")
#: The dataset name of the raw BIDS dataset in BIDS URIs (``bids:raw:sub-01/anat/...``)
#: and in ``dataset_description.json``'s ``DatasetLinks``.
RAW_DATASET: Final = "raw"

_S = f"space-{SPACE}"
_G = f"{_S}_res-{{res}}"  # on the analysis grid
#: Key -> file name of a scan's derivative; ``{scan}`` is the scan id (``sub-01_ses-02``),
#: ``{res}`` the :func:`res_label` of the analysis grid.
DERIVATIVES: Final = MappingProxyType(
    {
        "t1w": f"{{scan}}_{_G}_desc-preproc_T1w.nii.gz",
        **{t.lower(): f"{{scan}}_{_G}_label-{t}_probseg.nii.gz" for t in TISSUE_LABELS},
        **{
            f"{t.lower()}_modulated": f"{{scan}}_{_G}_label-{t}_desc-modulated_probseg.nii.gz"
            for t in TISSUE_LABELS
        },
        "brain_mask": "{scan}_desc-brain_mask.nii.gz",
        "xfm_to_std": f"{{scan}}_from-T1w_to-{SPACE}_mode-image_xfm.h5",
        "xfm_from_std": f"{{scan}}_from-{SPACE}_to-T1w_mode-image_xfm.h5",
        "qc_json": "{scan}_desc-qc_T1w.json",
        "qc_png": "{scan}_desc-qc_T1w.png",
    }
)
#: Key -> folder inside the scan's folder: ``anat``, the QC picture ``figures`` (fMRIPrep's).
FOLDERS: Final = MappingProxyType(
    {key: "figures" if key == "qc_png" else "anat" for key in DERIVATIVES}
)
#: The derivatives on the analysis grid (their names carry ``res-``).
GRID_KEYS: Final = tuple(k for k, v in DERIVATIVES.items() if "{res}" in v)
#: What the ``.bidsignore`` of the derivatives root lists: the workflow's tables at the
#: root (not BIDS files), the QC metrics (a ``_T1w.json`` without an image) and figures.
BIDSIGNORE: Final = (
    "inputs.tsv",
    "qc.tsv",
    "tiv.tsv",
    "failed_scans.tsv",
    "*_desc-qc_T1w.json",
    "figures/",
)

#: Key -> file name of a template; ``{res}`` is :func:`res_label` of the grid resolution.
TEMPLATES: Final = MappingProxyType(
    {
        "t1w": f"tpl-{SPACE}_res-{{res}}_T1w.nii.gz",
        "brain_mask": f"tpl-{SPACE}_res-{{res}}_desc-brain_mask.nii.gz",
        **{t.lower(): f"tpl-{SPACE}_res-{{res}}_label-{t}_probseg.nii.gz" for t in TISSUE_LABELS},
        "head": f"tpl-{HEAD_SPACE}_res-{{res}}_T1w.nii.gz",
        "head_mask": f"tpl-{HEAD_SPACE}_res-{{res}}_desc-brain_mask.nii.gz",
        "provenance": "provenance.json",
    }
)
#: The template images (every :data:`TEMPLATES` key but ``provenance``), in build order.
TEMPLATE_KEYS: Final = tuple(k for k in TEMPLATES if k != "provenance")

#: Kind -> file name of an attribution map in ``results/attribution/<model>/<method>/
#: fold-<k>/``: one per test scan, the mean per true class and over all test scans.
#: ``{method}`` and ``{label}`` are :func:`sanitise_label`-ed.
RELEVANCE: Final = MappingProxyType(
    {
        "scan": f"{{scan}}_{_G}_desc-{{method}}_relevance.nii.gz",
        "class_mean": f"class-{{label}}_{_G}_stat-mean_desc-{{method}}_relevance.nii.gz",
        "mean": f"{_G}_stat-mean_desc-{{method}}_relevance.nii.gz",
    }
)

#: A scan id (also the workflow's ``scan`` wildcard): ``sub-<label>[_<key>-<value>]...``.
SCAN_ID = re.compile(r"^sub-[A-Za-z0-9]+(_[a-z]+-[A-Za-z0-9]+)*$")
_RES = r"[0-9]+(?:p[0-9]+)?"


def res_label(resolution: float) -> str:
    """File-name-safe label of a resolution: 1.5 -> ``"1p5"``, 2.0 -> ``"2"``."""
    return f"{float(resolution):g}".replace(".", "p")


def resolution_description(resolution: float) -> str:
    """What the ``res-`` label of a grid means (the BIDS ``Resolution`` field).

    E.g. ``"4 mm isotropic: nilearn's MNI152NLin2009aSym template (1 mm) resampled onto
    brainlens' 4 mm MNI grid (brainlens.grid.mni_grid: x -90..90, y -126..90, z -72..108
    mm, RAS+)"``.
    """
    r = f"{float(resolution):g}"
    return (
        f"{r} mm isotropic: nilearn's {SPACE} template (1 mm) resampled onto brainlens' "
        f"{r} mm MNI grid (brainlens.grid.mni_grid: x -90..90, y -126..90, z -72..108 mm, "
        "RAS+); label res-" + res_label(resolution)
    )


def sanitise_label(value: object) -> str:
    """A label value for a file name: only its letters and digits (``"MCI-early"`` ->
    ``"MCIearly"``, ``"integrated_gradients@fine"`` -> ``"integratedgradientsfine"``).

    Raises
    ------
    ConfigError
        Nothing is left (e.g. ``"n/a"`` -> ``"na"`` is fine, ``"--"`` is not).
    """
    clean = re.sub(r"[^A-Za-z0-9]", "", str(value))
    if not clean:
        raise ConfigError(
            f"label {value!r}: has no letter or digit, so it cannot name a file. "
            "Fix: rename it in the dataset or the config"
        )
    return clean


def sanitised_labels(values: Iterable[object], what: str) -> dict[str, str]:
    """Value -> :func:`sanitise_label` of each distinct value; two values that sanitise
    to the same label are an error (their files would overwrite each other).

    Parameters
    ----------
    values : iterable
        Label values (class names, method keys).
    what : str
        What they are, for the message (e.g. ``"class labels of participants.tsv"``).

    Raises
    ------
    ConfigError
        A clash, naming both values and the shared label.
    """
    out: dict[str, str] = {}
    by_label: dict[str, str] = {}
    for value in values:
        key = str(value)
        if key in out:
            continue
        clean = sanitise_label(key)
        if clean in by_label:
            raise ConfigError(
                f"{what}: {by_label[clean]!r} and {key!r} both become {clean!r} in file "
                "names (only letters and digits are kept). Fix: rename one of them"
            )
        out[key], by_label[clean] = clean, key
    return out


def bids_uri(relpath: str | PurePosixPath, dataset: str = RAW_DATASET) -> str:
    """A BIDS URI ``bids:<dataset>:<relpath>`` (``dataset_description.json``'s
    ``DatasetLinks`` maps ``<dataset>`` to a location).

    Raises
    ------
    ConfigError
        ``relpath`` is absolute or leaves the dataset (``..``).
    """
    rel = PurePosixPath(str(relpath).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or str(rel) in ("", "."):
        raise ConfigError(
            f"BIDS URI path {str(relpath)!r}: expected a path inside the dataset "
            "(e.g. 'sub-01/anat/sub-01_T1w.nii.gz')"
        )
    return f"bids:{dataset}:{rel}"


def source_uri(path: str | Path, bids_dir: str | Path) -> str:
    """The BIDS URI (:data:`RAW_DATASET`) of a file of the raw dataset ``bids_dir``.

    Raises
    ------
    InputFileError
        ``path`` is not inside ``bids_dir``.
    """
    path, root = Path(path).resolve(), Path(bids_dir).resolve()
    if not path.is_relative_to(root):
        raise InputFileError(
            path,
            f"not inside the BIDS dataset {root}, so it has no BIDS URI",
            "pass the dataset the scan belongs to (bids_dir)",
        )
    return bids_uri(path.relative_to(root).as_posix())


def tissue_key(tissue: str, *, modulated: bool = False) -> str:
    """The key of a tissue map: ``("GM")`` -> ``"gm"``, ``("GM", modulated=True)`` ->
    ``"gm_modulated"``."""
    if tissue not in TISSUE_LABELS:
        raise ConfigError(f"tissue: expected one of {list(TISSUE_LABELS)}, got {tissue!r}")
    return f"{tissue.lower()}_modulated" if modulated else tissue.lower()


def _entry(table: MappingProxyType, key: str, what: str) -> str:
    if key not in table:
        raise ConfigError(f"{what} {key!r}: not in the naming table; expected one of {list(table)}")
    return table[key]


def _check_scan(scan_id: str) -> str:
    if not isinstance(scan_id, str) or SCAN_ID.match(scan_id) is None:
        raise ConfigError(
            f"scan id {scan_id!r}: expected sub-<label>[_ses-<label>][_<key>-<value>] "
            "(letters and digits), e.g. 'sub-01_ses-02'"
        )
    return scan_id


def _grid_entry(key: str, resolution: float | None) -> str:
    """The table entry of ``key`` with ``{res}`` filled (``{scan}`` kept)."""
    entry = _entry(DERIVATIVES, key, "derivative")
    if "{res}" not in entry:
        return entry
    if resolution is None:
        raise ConfigError(
            f"derivative {key!r}: it lies on the analysis grid, so its name carries "
            "res-<label>. Fix: pass resolution= (the config's preprocess.resolution, mm)"
        )
    return entry.replace("{res}", res_label(resolution))


def scan_folder(scan_id: str) -> str:
    """``sub-01`` or ``sub-01/ses-02``: the folder of a scan, from its id.

    Parameters
    ----------
    scan_id : str
        E.g. ``"sub-01"``, ``"sub-01_ses-02"``, ``"sub-01_ses-02_run-2"``.

    Returns
    -------
    str
        :func:`brainlens.bids.scan_subdir` of the id's participant and the rest.
    """
    participant, _, rest = _check_scan(scan_id).partition("_")
    return scan_subdir(participant, rest or None)


def scan_dir(root: str | Path, scan_id: str) -> Path:
    """The ``anat`` folder of a scan's derivatives: ``<root>/sub-01[/ses-02]/anat``."""
    return Path(root) / scan_folder(scan_id) / "anat"


def derivative_name(scan_id: str, key: str, *, resolution: float | None = None) -> str:
    """File name (no folder) of derivative ``key`` of a scan (:data:`DERIVATIVES`).

    ``resolution`` (mm) is required for the :data:`GRID_KEYS` and ignored otherwise.
    """
    scan = _check_scan(scan_id)
    return _grid_entry(key, resolution).format(scan=scan)


def derivative_names(scan_id: str, *, resolution: float) -> dict[str, str]:
    """Every derivative file name of a scan, :data:`DERIVATIVES` key -> name, table order."""
    return {key: derivative_name(scan_id, key, resolution=resolution) for key in DERIVATIVES}


def derivative_relpath(scan_id: str, key: str, *, resolution: float | None = None) -> str:
    """``<folder>/<name>`` of derivative ``key`` inside the scan's folder
    (``anat/…`` or ``figures/…``, :data:`FOLDERS`)."""
    return f"{FOLDERS[key]}/{derivative_name(scan_id, key, resolution=resolution)}"


def derivative_path(
    root: str | Path, scan_id: str, key: str, *, resolution: float | None = None
) -> Path:
    """Path of derivative ``key`` of a scan: ``<root>/sub-01[/ses-02]/<folder>/<name>``.

    Parameters
    ----------
    root : str or Path
        The derivatives root (the workflow's ``results/preprocess``).
    scan_id : str
        E.g. ``"sub-01_ses-02"``.
    key : str
        A :data:`DERIVATIVES` key.
    resolution : float, optional
        Analysis grid resolution (mm); required for the :data:`GRID_KEYS`.

    Raises
    ------
    ConfigError
        An unknown key, a malformed scan id, or no resolution for a grid key.
    """
    rel = derivative_relpath(scan_id, key, resolution=resolution)
    return Path(root) / scan_folder(scan_id) / rel


def derivative_pattern(root: str, key: str, *, resolution: float | None = None) -> str:
    """Path pattern of derivative ``key`` with the wildcards ``{subdir}`` (the scan folder)
    and ``{scan}`` (the scan id), for a Snakemake rule's output; ``resolution`` as in
    :func:`derivative_path`."""
    return f"{root}/{{subdir}}/{FOLDERS[key]}/{_grid_entry(key, resolution)}"


def sidecar_name(name: str) -> str:
    """The ``.json`` sidecar of a ``.nii.gz`` file name (same stem)."""
    if not name.endswith(".nii.gz"):
        raise ConfigError(f"{name!r}: only .nii.gz derivatives have a .json sidecar")
    return name[: -len(".nii.gz")] + ".json"


def scan_of(path: str | Path, key: str) -> str:
    """The scan id in the name of derivative ``key`` (``sub-01_desc-qc_T1w.json`` ->
    ``sub-01``), at any resolution.

    Raises
    ------
    InputFileError
        The file name is not a ``key`` derivative's name.
    """
    name = Path(path).name
    entry = _entry(DERIVATIVES, key, "derivative")
    # the entry as a regex: the scan id captured, any res- label
    prefix, suffix = (re.escape(p).replace(re.escape("{res}"), _RES) for p in entry.split("{scan}"))
    match = re.fullmatch(f"{prefix}(?P<scan>.+){suffix}", name)
    if match is None or not SCAN_ID.match(match["scan"]):
        raise InputFileError(
            path,
            f"not a {key!r} derivative name (expected {entry!r})",
            "pass the files the preprocessing wrote",
        )
    return match["scan"]


def relevance_name(
    kind: str,
    *,
    resolution: float,
    method: str,
    scan: str | None = None,
    label: str | None = None,
) -> str:
    """File name of an attribution map (:data:`RELEVANCE`).

    Parameters
    ----------
    kind : {"scan", "class_mean", "mean"}
    resolution : float
        Grid resolution (mm) of the map.
    method : str
        The method key (``gradcam@block2``); sanitised.
    scan : str, optional
        The scan id (``kind="scan"``).
    label : str, optional
        The class (``kind="class_mean"``); sanitised (check a set of classes for clashes
        with :func:`sanitised_labels` first).
    """
    entry = _entry(RELEVANCE, kind, "attribution map")
    fields = {"res": res_label(resolution), "method": sanitise_label(method)}
    if kind == "scan":
        fields["scan"] = _check_scan(scan)  # type: ignore[arg-type]
    if kind == "class_mean":
        fields["label"] = sanitise_label(label)
    return entry.format(**fields)


def relevance_glob(kind: str, *, label: str | None = None) -> str:
    """A glob of attribution maps of ``kind`` at any resolution and method (a class mean:
    of class ``label``), e.g. for a reader that knows neither."""
    entry = _entry(RELEVANCE, kind, "attribution map")
    fields = {"res": "*", "method": "*", "scan": "sub-*"}
    if kind == "class_mean":
        fields["label"] = sanitise_label(label)
    return entry.format(**fields)


def template_name(key: str, resolution: float) -> str:
    """File name (no folder) of template ``key`` at a grid resolution in mm (:data:`TEMPLATES`)."""
    return _entry(TEMPLATES, key, "template").format(res=res_label(resolution))


def template_path(templates_dir: str | Path, key: str, resolution: float) -> Path:
    """Path of template ``key`` at ``resolution`` (mm) in a folder of
    :func:`brainlens.templates.build_templates`."""
    return Path(templates_dir) / template_name(key, resolution)


def template_paths(out_dir: str | Path, resolution: float) -> dict[str, Path]:
    """Every template path at ``resolution`` (mm) in ``out_dir``, :data:`TEMPLATES` key -> path.

    Parameters
    ----------
    out_dir : str or Path
        Folder of the templates.
    resolution : float
        Grid resolution in mm (1, 1.5, 2 or 4).

    Returns
    -------
    dict of str to Path
        Keys :data:`TEMPLATE_KEYS` plus ``"provenance"``, without building anything.
    """
    return {key: template_path(out_dir, key, resolution) for key in TEMPLATES}


def template_glob(key: str) -> str:
    """A glob of template ``key`` at any resolution (``tpl-<S>_res-*_T1w.nii.gz``)."""
    return _entry(TEMPLATES, key, "template").format(res="*")
