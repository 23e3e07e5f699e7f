"""Console scripts that expose the ANTs programs compiled into antspyx.

Each ``main_<program>`` forwards ``sys.argv[1:]`` to ``ants.lib.<program>`` and returns
its exit code. They are registered under the ANTs program names in ``[project.scripts]``
so that nipype's ANTs interfaces run unchanged when no real ANTs is on ``PATH``.

Always run them as subprocesses (nipype does): a missing input file makes several ANTs
programs segfault, which would kill the calling Python process.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

#: console-script name -> attribute of ``ants.lib``.
PROGRAMS: dict[str, str] = {
    "antsRegistration": "antsRegistration",
    "antsApplyTransforms": "antsApplyTransforms",
    "antsApplyTransformsToPoints": "antsApplyTransformsToPoints",
    "antsAffineInitializer": "antsAffineInitializer",
    "antsJointFusion": "antsJointFusion",
    "N4BiasFieldCorrection": "N4BiasFieldCorrection",
    "N3BiasFieldCorrection": "N3BiasFieldCorrection",
    "Atropos": "Atropos",
    "CreateJacobianDeterminantImage": "CreateJacobianDeterminantImage",
    "DenoiseImage": "DenoiseImage",
    "ImageMath": "iMath",
    "ThresholdImage": "ThresholdImage",
    "ResampleImage": "ResampleImage",
    "KellyKapowski": "KellyKapowski",
    "LabelGeometryMeasures": "LabelGeometryMeasures",
    "LabelClustersUniquely": "LabelClustersUniquely",
    "AverageAffineTransform": "AverageAffineTransform",
    "AverageAffineTransformNoRigid": "AverageAffineTransformNoRigid",
    "TileImages": "TileImages",
}


def _ants_lib() -> ModuleType:
    """Load antspyx's compiled ``ants.lib`` without running ``ants/__init__.py``.

    Importing the ``ants`` package pulls in pandas, matplotlib and more (about 6 s on two
    cores); the extension module alone loads in about 0.1 s, which matters because the
    workflow starts one process per ANTs call.
    """
    spec = importlib.util.find_spec("ants")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("antspyx is not installed (no package 'ants')")
    libs = sorted(Path(spec.submodule_search_locations[0]).glob("lib.*.so"))
    if not libs:
        import ants  # fall back to the regular import (other platforms' suffixes)

        return ants.lib
    lib_spec = importlib.util.spec_from_file_location("ants.lib", libs[0])
    module = importlib.util.module_from_spec(lib_spec)  # type: ignore[arg-type]
    lib_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run_program(program: str, argv: list[str]) -> int:
    """Run one ANTs program from antspyx's compiled library.

    Parameters
    ----------
    program : str
        A key of :data:`PROGRAMS`.
    argv : list of str
        Command-line arguments (without the program name).

    Returns
    -------
    int
        The program's exit code.
    """
    func = getattr(_ants_lib(), PROGRAMS[program])
    rc = func([str(a) for a in argv])
    return int(rc) if rc is not None else 0


def _make(program: str) -> Callable[[], int]:
    def main() -> int:
        return run_program(program, sys.argv[1:])

    main.__name__ = f"main_{program}"
    main.__doc__ = f"Console entry point ``{program}`` (antspyx ``ants.lib.{PROGRAMS[program]}``)."
    return main


main_antsRegistration = _make("antsRegistration")
main_antsApplyTransforms = _make("antsApplyTransforms")
main_antsApplyTransformsToPoints = _make("antsApplyTransformsToPoints")
main_antsAffineInitializer = _make("antsAffineInitializer")
main_antsJointFusion = _make("antsJointFusion")
main_N4BiasFieldCorrection = _make("N4BiasFieldCorrection")
main_N3BiasFieldCorrection = _make("N3BiasFieldCorrection")
main_Atropos = _make("Atropos")
main_CreateJacobianDeterminantImage = _make("CreateJacobianDeterminantImage")
main_DenoiseImage = _make("DenoiseImage")
main_ImageMath = _make("ImageMath")
main_ThresholdImage = _make("ThresholdImage")
main_ResampleImage = _make("ResampleImage")
main_KellyKapowski = _make("KellyKapowski")
main_LabelGeometryMeasures = _make("LabelGeometryMeasures")
main_LabelClustersUniquely = _make("LabelClustersUniquely")
main_AverageAffineTransform = _make("AverageAffineTransform")
main_AverageAffineTransformNoRigid = _make("AverageAffineTransformNoRigid")
main_TileImages = _make("TileImages")
