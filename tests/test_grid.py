"""The MNI analysis grid: shapes, affines and refused resolutions."""

from __future__ import annotations

import numpy as np
import pytest

from brainlens.errors import ConfigError
from brainlens.grid import BBOX_MAX, BBOX_MIN, RESOLUTIONS, mni_grid, res_label


@pytest.mark.parametrize(
    ("resolution", "shape", "label"),
    [
        (1.0, (181, 217, 181), "1"),
        (1.5, (121, 145, 121), "1p5"),
        (2.0, (91, 109, 91), "2"),
        (4.0, (46, 55, 46), "4"),
    ],
)
def test_grid_shape_affine_and_label(resolution: float, shape: tuple, label: str) -> None:
    got_shape, affine = mni_grid(resolution)
    assert got_shape == shape
    np.testing.assert_allclose(np.diag(affine)[:3], resolution)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [*BBOX_MIN, 1])
    # the last voxel's centre lies on the bounding box's upper corner (within one voxel)
    last = affine @ [*(n - 1 for n in shape), 1]
    assert np.all(last[:3] >= BBOX_MAX - 1e-6)
    assert np.all(last[:3] < BBOX_MAX + resolution)
    assert res_label(resolution) == label


def test_every_listed_resolution_is_tested() -> None:
    assert set(RESOLUTIONS) == {1.0, 1.5, 2.0, 4.0}


@pytest.mark.parametrize("resolution", [3.0, 0.5, 2.5])
def test_unsupported_resolution_names_the_key_and_the_choices(resolution: float) -> None:
    with pytest.raises(ConfigError, match=r"preprocess\.resolution.*\[1\.0, 1\.5, 2\.0, 4\.0\]"):
        mni_grid(resolution)
