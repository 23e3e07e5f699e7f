"""The one naming table: every derivative file of a scan and every template file.

One key vocabulary names both, so the same key means the same kind of image everywhere
(a scan's ``gm`` map and the ``gm`` prior, a scan's ``brain_mask`` and the template's):

=================  ==========================================================================
key                a scan's derivative (:data:`DERIVATIVES`, ``<S>`` = :data:`SPACE`)
=================  ==========================================================================
``t1w``            ``{scan}_space-<S>_desc-preproc_T1w.nii.gz``: skull-stripped, N4, in MNI
``gm`` ``wm``      ``{scan}_space-<S>_label-<GM|WM|CSF>_probseg.nii.gz``: tissue probability
``csf``
``gm_modulated``   ``{scan}_space-<S>_label-<GM|WM|CSF>_desc-modulated_probseg.nii.gz``
(``wm_``, ``csf_``)
``brain_mask``     ``{scan}_desc-brain_mask.nii.gz``: native-space brain mask
``xfm_to_std``     ``{scan}_from-T1w_to-<S>_mode-image_xfm.h5``: native -> MNI composite
``xfm_from_std``   ``{scan}_from-<S>_to-T1w_mode-image_xfm.h5``: its inverse
``qc_json``        ``{scan}_desc-qc.json``: QC metrics
``qc_png``         ``{scan}_desc-qc.png``: QC picture
=================  ==========================================================================

The tissue keys are the config's ``train.inputs`` names. Every ``.nii.gz`` derivative also
gets a ``.json`` sidecar of the same stem (:func:`sidecar_name`). A scan's files live in
``<root>/<sub-XX>[/<ses-YY>]/anat/`` (:func:`scan_dir`), ``<root>`` being the workflow's
``results/preprocess``. The templates (:data:`TEMPLATES`, ``{res}`` =
:func:`res_label`) use the keys ``t1w``, ``brain_mask``, ``gm``, ``wm``, ``csf``, ``head``,
``head_mask`` and ``provenance``.

Writers (:func:`brainlens.preprocess.run_t1w_preproc`,
:func:`brainlens.templates.build_templates`), the workflow's rules
(``workflow/rules/common.smk``) and readers all take the names from here;
``tests/test_derivatives.py`` checks them against the files a run writes.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import Final

from brainlens.bids import scan_subdir
from brainlens.errors import ConfigError, InputFileError

#: The name of the template space written into file names.
SPACE: Final = "MNI152NLin2009cSym"
#: Space of the head (with skull) template used for template-based skull stripping.
HEAD_SPACE: Final = "MNI152NLin6Asym"
#: Tissue labels in file names, in the order of their keys ``gm``, ``wm``, ``csf``.
TISSUE_LABELS: Final = ("GM", "WM", "CSF")

_S = f"space-{SPACE}"
#: Key -> file name of a scan's derivative; ``{scan}`` is the scan id (``sub-01_ses-02``).
DERIVATIVES: Final = MappingProxyType(
    {
        "t1w": f"{{scan}}_{_S}_desc-preproc_T1w.nii.gz",
        **{t.lower(): f"{{scan}}_{_S}_label-{t}_probseg.nii.gz" for t in TISSUE_LABELS},
        **{
            f"{t.lower()}_modulated": f"{{scan}}_{_S}_label-{t}_desc-modulated_probseg.nii.gz"
            for t in TISSUE_LABELS
        },
        "brain_mask": "{scan}_desc-brain_mask.nii.gz",
        "xfm_to_std": f"{{scan}}_from-T1w_to-{SPACE}_mode-image_xfm.h5",
        "xfm_from_std": f"{{scan}}_from-{SPACE}_to-T1w_mode-image_xfm.h5",
        "qc_json": "{scan}_desc-qc.json",
        "qc_png": "{scan}_desc-qc.png",
    }
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

#: A scan id (also the workflow's ``scan`` wildcard): ``sub-<label>[_<key>-<value>]...``.
SCAN_ID = re.compile(r"^sub-[A-Za-z0-9]+(_[a-z]+-[A-Za-z0-9]+)*$")


def res_label(resolution: float) -> str:
    """File-name-safe label of a resolution: 1.5 -> ``"1p5"``, 2.0 -> ``"2"``."""
    return f"{float(resolution):g}".replace(".", "p")


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
    """The folder of a scan's derivatives: ``<root>/sub-01[/ses-02]/anat``."""
    return Path(root) / scan_folder(scan_id) / "anat"


def derivative_name(scan_id: str, key: str) -> str:
    """File name (no folder) of derivative ``key`` of a scan (:data:`DERIVATIVES`)."""
    return _entry(DERIVATIVES, key, "derivative").format(scan=_check_scan(scan_id))


def derivative_names(scan_id: str) -> dict[str, str]:
    """Every derivative file name of a scan, :data:`DERIVATIVES` key -> name, table order."""
    return {key: derivative_name(scan_id, key) for key in DERIVATIVES}


def derivative_path(root: str | Path, scan_id: str, key: str) -> Path:
    """Path of derivative ``key`` of a scan: ``<root>/sub-01[/ses-02]/anat/<name>``.

    Parameters
    ----------
    root : str or Path
        The derivatives root (the workflow's ``results/preprocess``).
    scan_id : str
        E.g. ``"sub-01_ses-02"``.
    key : str
        A :data:`DERIVATIVES` key.

    Raises
    ------
    ConfigError
        An unknown key or a malformed scan id.
    """
    return scan_dir(root, scan_id) / derivative_name(scan_id, key)


def derivative_pattern(root: str, key: str) -> str:
    """Path pattern of derivative ``key`` with the wildcards ``{subdir}`` (the scan folder)
    and ``{scan}`` (the scan id), for a Snakemake rule's output."""
    return f"{root}/{{subdir}}/anat/{_entry(DERIVATIVES, key, 'derivative')}"


def sidecar_name(name: str) -> str:
    """The ``.json`` sidecar of a ``.nii.gz`` file name (same stem)."""
    if not name.endswith(".nii.gz"):
        raise ConfigError(f"{name!r}: only .nii.gz derivatives have a .json sidecar")
    return name[: -len(".nii.gz")] + ".json"


def scan_of(path: str | Path, key: str) -> str:
    """The scan id in the name of derivative ``key`` (``sub-01_desc-qc.json`` -> ``sub-01``).

    Raises
    ------
    InputFileError
        The file name is not a ``key`` derivative's name.
    """
    name = Path(path).name
    prefix, suffix = _entry(DERIVATIVES, key, "derivative").split("{scan}")
    scan = name[len(prefix) : len(name) - len(suffix)]
    if not (name.startswith(prefix) and name.endswith(suffix)) or not SCAN_ID.match(scan):
        raise InputFileError(
            path,
            f"not a {key!r} derivative name (expected {DERIVATIVES[key]!r})",
            "pass the files the preprocessing wrote",
        )
    return scan


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
