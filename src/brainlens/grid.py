"""The analysis grid: MNI152 space at 1, 1.5, 2 or 4 mm.

All preprocessed maps, attribution maps and resampled atlases share one grid,
defined by the bounding box SPM/CAT12 use (x -90..90, y -126..90, z -72..108 mm),
in RAS+ voxel order. At 1.5 mm this is the CAT12 grid of 121 x 145 x 121 voxels.
"""

from __future__ import annotations

import numpy as np

from brainlens.derivatives import (  # noqa: F401 (re-exported: names live in derivatives)
    HEAD_SPACE,
    SPACE,
    TEMPLATE_KEYS,
    res_label,
    template_paths,
)
from brainlens.errors import ConfigError

#: The lower corner of the bounding box (mm, RAS+), i.e. the centre of voxel (0, 0, 0).
BBOX_MIN = np.array([-90.0, -126.0, -72.0])
#: The upper corner of the bounding box (mm, RAS+).
BBOX_MAX = np.array([90.0, 90.0, 108.0])
#: Resolutions the workflow supports (mm, isotropic).
RESOLUTIONS = (1.0, 1.5, 2.0, 4.0)
#: Grid (mm) every scan is registered on: finer analysis grids register against the
#: template resampled to it (cost), coarser ones register and segment here and only
#: resample their outputs (a 4 mm registration carries half the demo's atrophy effect).
REGISTRATION_RESOLUTION = 2.0


def mni_grid(resolution: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the MNI analysis grid.

    Parameters
    ----------
    resolution : float
        Isotropic voxel size in mm, one of :data:`RESOLUTIONS`.

    Returns
    -------
    shape : tuple of int
        (X, Y, Z); (181, 217, 181) at 1 mm, (121, 145, 121) at 1.5 mm, (91, 109, 91) at 2 mm,
        (46, 55, 46) at 4 mm.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+ mm) affine.
    """
    res = float(resolution)
    if not any(np.isclose(res, r) for r in RESOLUTIONS):
        raise ConfigError(
            f"preprocess.resolution: expected one of {list(RESOLUTIONS)} mm, got {resolution!r}"
        )
    extent = BBOX_MAX - BBOX_MIN
    shape = tuple(int(round(e / res)) + 1 for e in extent)
    affine = np.eye(4)
    affine[:3, :3] *= res
    affine[:3, 3] = BBOX_MIN
    return shape, affine  # type: ignore[return-value]


def registration_grid(resolution: float) -> float | None:
    """The finer grid on which a scan is registered when ``resolution`` is coarser.

    Parameters
    ----------
    resolution : float
        Analysis grid resolution in mm.

    Returns
    -------
    float or None
        :data:`REGISTRATION_RESOLUTION` when the analysis grid is coarser than it (the
        preprocessing then also needs that grid's templates), else ``None`` (registration
        and outputs use the analysis grid's templates).
    """
    mni_grid(resolution)  # validates
    return REGISTRATION_RESOLUTION if float(resolution) > REGISTRATION_RESOLUTION + 1e-6 else None
