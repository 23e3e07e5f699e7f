"""The dataset-level files of the preprocessing derivatives (BIDS-Derivatives 1.9).

:func:`write_dataset_description` writes ``dataset_description.json`` with
``DatasetLinks`` (the raw dataset as ``raw``, the name the sidecars' ``Sources`` BIDS URIs
use: ``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``) and ``SourceDatasets``;
:func:`write_bidsignore` writes the ``.bidsignore`` listing what at the root is not BIDS
(:data:`brainlens.derivatives.BIDSIGNORE`: the workflow's tables, QC metrics, figures).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from brainlens._io import write_text_atomic
from brainlens.derivatives import (
    BIDSIGNORE,
    RAW_DATASET,
    SPACE,
    res_label,
    resolution_description,
)
from brainlens.errors import InputFileError

#: The BIDS version the derivatives follow (BIDS URIs and ``DatasetLinks``: >= 1.8).
BIDS_VERSION = "1.9.0"


def _raw_description(bids_dir: Path) -> dict:
    """The raw dataset's ``dataset_description.json`` ({} when it has none)."""
    path = bids_dir / "dataset_description.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputFileError(path, f"not valid JSON ({exc})", "fix or remove the file") from exc


def dataset_description(root: Path, *, bids_dir: Path, resolution: float) -> dict:
    """The content of the derivatives' ``dataset_description.json``.

    Parameters
    ----------
    root : Path
        Root of the derivatives (e.g. ``results/preprocess``).
    bids_dir : Path
        The raw BIDS dataset. ``DatasetLinks.raw`` is its path relative to ``root``
        (moving the project folder keeps it valid); ``SourceDatasets`` names it by the
        BIDS URI ``bids:raw:`` plus its ``DatasetDOI`` when it states one.
    resolution : float
        Analysis grid (mm), described for the ``res-`` label (the sidecars' ``Resolution``).
    """
    from brainlens.preprocess.versions import software_versions

    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputFileError(bids_dir, "BIDS dataset folder not found", "check bids_dir")
    raw = _raw_description(bids_dir)
    source = {"URL": f"bids:{RAW_DATASET}:"}
    if raw.get("DatasetDOI"):
        source["DOI"] = str(raw["DatasetDOI"])
    v = software_versions()
    return {
        "Name": "brainlens T1w preprocessing",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "brainlens",
                "Version": v.get("brainlens", "unknown"),
                "Description": "N4, skull strip (deepbet or template mask), ANTs rigid/affine/SyN "
                f"to {SPACE}, Atropos GM/WM/CSF, Jacobian-modulated tissue maps",
            }
        ],
        "SoftwareVersions": v,
        "DatasetLinks": {RAW_DATASET: os.path.relpath(bids_dir.resolve(), Path(root).resolve())},
        "SourceDatasets": [source],
        # what res-<label> means in this dataset's file names (also in each sidecar)
        "Resolution": {res_label(resolution): resolution_description(resolution)},
    }


def write_dataset_description(root: Path, *, bids_dir: Path, resolution: float) -> Path:
    """Write :func:`dataset_description` to ``root/dataset_description.json`` atomically.

    Returns
    -------
    Path
        The written file.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    desc = dataset_description(root, bids_dir=bids_dir, resolution=resolution)
    return write_text_atomic(root / "dataset_description.json", json.dumps(desc, indent=2) + "\n")


def write_bidsignore(root: Path) -> Path:
    """Write ``root/.bidsignore``: one :data:`brainlens.derivatives.BIDSIGNORE` pattern a
    line (gitignore syntax, as the BIDS validator reads it)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    head = "# brainlens: files of this derivatives folder that are not BIDS\n"
    return write_text_atomic(root / ".bidsignore", head + "\n".join(BIDSIGNORE) + "\n")
