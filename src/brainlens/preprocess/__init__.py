"""T1w preprocessing: checks, ANTs/deepbet nipype workflow, QC.

Layers (nipreps style): :mod:`~brainlens.preprocess.core` (in-memory),
:mod:`~brainlens.preprocess.fileops` (file level), :mod:`~brainlens.preprocess.interfaces`
(nipype interfaces), the sub-workflows :mod:`~brainlens.preprocess.skullstrip`,
:mod:`~brainlens.preprocess.registration`, :mod:`~brainlens.preprocess.segmentation` and
:mod:`~brainlens.preprocess.modulation` composed by :mod:`~brainlens.preprocess.workflow`,
:mod:`~brainlens.preprocess.run` (the entry point of the Snakemake rule) and
:mod:`~brainlens.preprocess.outputs` (file names, staging, sidecars, publishing) and
:mod:`~brainlens.preprocess.description` (``dataset_description.json``, ``.bidsignore``).

Public names are imported lazily so that the ANTs console scripts
(:mod:`~brainlens.preprocess.ants_cli`) start without importing nipype. Importing this
package sets ``NIPYPE_NO_ET=1`` (unless set) so nipype never tries to reach its
version-check server (compute nodes have no network).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("NIPYPE_NO_ET", "1")

_LAZY = {
    "T1wReport": "brainlens.preprocess.checks",
    "check_t1w": "brainlens.preprocess.checks",
    "qc_table": "brainlens.preprocess.qc",
    "write_dataset_description": "brainlens.preprocess.description",
    "write_bidsignore": "brainlens.preprocess.description",
    "output_names": "brainlens.preprocess.outputs",
    "run_t1w_preproc": "brainlens.preprocess.run",
    "init_t1w_preproc_wf": "brainlens.preprocess.workflow",
    "write_failure_summary": "brainlens.preprocess.failures",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'brainlens.preprocess' has no attribute {name!r}")
