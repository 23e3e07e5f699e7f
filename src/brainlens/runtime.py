"""How workflow jobs find the brainlens package.

The Snakefile calls :func:`export_src` with its checkout's ``src/`` folder before any
rule runs. Jobs are child processes (or, on a cluster, new Snakemake processes that
read the same Snakefile), so they inherit ``PYTHONPATH`` and import brainlens from the
very checkout that launched them, also inside per-rule conda envs, which hold only
third-party packages. Snakemake removes ``PYTHONPATH`` inside conda envs unless
``conda-not-block-search-path-envvars`` is set, which the workflow profiles do.
"""

from __future__ import annotations

import os
from pathlib import Path


def export_src(src_dir: str | Path) -> str:
    """Put ``src_dir`` first on ``PYTHONPATH`` for this process's children.

    Parameters
    ----------
    src_dir : str or Path
        The checkout's ``src`` folder (must contain ``brainlens/``).

    Returns
    -------
    str
        The new ``PYTHONPATH``.
    """
    src = Path(src_dir).resolve()
    if not (src / "brainlens" / "__init__.py").exists():
        raise FileNotFoundError(f"{src}: no brainlens package here; expected <checkout>/src")
    parts = [str(src)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(src)
    ]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
    return os.environ["PYTHONPATH"]
