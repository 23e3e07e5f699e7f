"""The nipype work folder of a preprocessing job, e.g. on node-local scratch.

``preprocess.work_dir`` (workflow config) may name environment variables that exist
only on the node a job runs on (``$TMPDIR`` of a SLURM job, ``/scratch/$USER``); the
workflow passes the folder unexpanded and the job expands it with :func:`expand_work_dir`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from brainlens.errors import ConfigError

_UNSET = re.compile(r"\$(\w+|\{[^}]*\})")
#: The work folders' parent when ``preprocess.work_dir`` is null (in the project directory).
DEFAULT_WORK_ROOT = "work/preprocess"


def scan_work_dir(work_root: str | None, scan: str) -> str:
    """The work folder the workflow passes to a scan's job, still unexpanded.

    Parameters
    ----------
    work_root : str or None
        ``preprocess.work_dir``; None = :data:`DEFAULT_WORK_ROOT`.
    scan : str
        The scan's BIDS stem.

    Returns
    -------
    str
        ``<work_root>/<scan>`` with ``$VARS`` and ``~`` left for the job to expand.
    """
    return f"{(work_root or DEFAULT_WORK_ROOT).rstrip('/')}/{scan}"


def expand_work_dir(work_dir: str | Path) -> Path:
    """Expand ``~`` and ``$VAR``/``${VAR}`` in a work folder on this node; absolute path.

    Parameters
    ----------
    work_dir : str or Path
        The job's work folder as the workflow passed it, e.g. ``$TMPDIR/brainlens/sub-01``
        or the default ``work/preprocess/sub-01`` (relative: to the working directory).

    Returns
    -------
    Path
        The expanded, absolute folder.

    Raises
    ------
    ConfigError
        A variable that is not set in the job's environment (instead of a folder named
        ``$TMPDIR`` in the project directory).
    """
    expanded = os.path.expandvars(os.path.expanduser(str(work_dir)))
    unset = _UNSET.findall(expanded)
    if unset:
        raise ConfigError(
            f"preprocess.work_dir: {work_dir}: environment variable(s) {unset} are not set "
            "in this job's environment (on its node). Fix: set them for the job, use a "
            "variable the scheduler sets (e.g. $TMPDIR on SLURM), or give a plain path"
        )
    return Path(expanded).resolve()
