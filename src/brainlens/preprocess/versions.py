"""Software versions recorded in sidecars, and the ANTs programs on PATH."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from brainlens.errors import PreprocessingError


def ensure_ants_on_path() -> str:
    """Make sure the ANTs programs are callable as subprocesses; return their folder.

    A real ANTs on ``PATH`` wins. Otherwise the folder of the running interpreter (where
    ``pip install -e .`` put the antspyx console scripts) is prepended to ``PATH``.

    Raises
    ------
    PreprocessingError
        Neither a real ANTs nor the console scripts are found.
    """
    found = shutil.which("antsRegistration")
    if found:
        return str(Path(found).parent)
    bindir = str(Path(sys.executable).parent)
    if shutil.which("antsRegistration", path=bindir):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        return bindir
    raise PreprocessingError(
        "antsRegistration not found on PATH nor next to the Python interpreter "
        f"({bindir}); install ANTs or run `pip install -e .` in the brainlens environment "
        "so the antspyx console scripts are created"
    )


@functools.cache
def ants_version() -> str:
    """Version string reported by ``antsRegistration --version`` (first line)."""
    ensure_ants_on_path()
    try:
        out = subprocess.run(
            ["antsRegistration", "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PreprocessingError(f"antsRegistration --version failed: {exc}") from exc
    return out.strip().splitlines()[0].replace("ANTs Version:", "").strip() if out else "unknown"


@functools.cache
def software_versions() -> dict[str, str]:
    """Versions of brainlens, antspyx, ANTs, nipype, deepbet, torch, nibabel, numpy."""
    out = {}
    for pkg in ("brainlens", "antspyx", "nipype", "deepbet", "torch", "nibabel", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        out["ANTs"] = ants_version()
    except PreprocessingError:
        out["ANTs"] = "not found"
    return out
