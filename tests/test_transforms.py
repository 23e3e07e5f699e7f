"""Tests of the 3D -> 2D transforms and their inverse mapping."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from brainlens.errors import ConfigError
from brainlens.transforms import (
    TRANSFORMS,
    coronal_slices,
    dynamic_image,
    make_transform,
    output_shape,
    rank_pooling_weights,
    to_volume,
)

AXIS_INDEX = {"x": 1, "y": 2, "z": 3}  # array axis of (C, X, Y, Z)


def ramp(shape: tuple[int, ...], axis: str, slope: float = 1.0) -> np.ndarray:
    """A (C, X, Y, Z) volume whose intensity changes linearly along ``axis``."""
    n = shape[AXIS_INDEX[axis]]
    line = slope * np.arange(n, dtype=np.float64)
    view = [1, 1, 1, 1]
    view[AXIS_INDEX[axis]] = n
    return np.broadcast_to(line.reshape(view), shape).copy() + 10.0


@pytest.mark.parametrize(
    ("length", "expected"),
    [(2, [-0.5, 0.5]), (3, [-0.5, 0.0, 0.5]), (4, [-3 / 8, -1 / 8, 1 / 8, 3 / 8])],
)
def test_rank_pooling_weights(length: int, expected: list[float]) -> None:
    np.testing.assert_allclose(rank_pooling_weights(length), expected)


@pytest.mark.parametrize(
    ("axis", "slope", "sign"),
    [("z", 1.0, 1), ("z", -1.0, -1), ("x", 2.0, 1), ("y", -0.5, -1), ("y", 0.0, 0)],
)
def test_dynamic_image_sign_follows_brightening(axis: str, slope: float, sign: int) -> None:
    shape = (1, 4, 5, 6)
    img = dynamic_image(ramp(shape, axis, slope), axis=axis)
    n = shape[AXIS_INDEX[axis]]
    plane = tuple(s for i, s in enumerate(shape[1:], start=1) if i != AXIS_INDEX[axis])
    assert img.shape == (1, *plane) and img.dtype == np.float32
    # sum_t a_t * slope * t with sum |a_t| = 1
    expected = slope * float(rank_pooling_weights(n) @ np.arange(n))
    np.testing.assert_allclose(img, expected, rtol=1e-6, atol=1e-6)
    assert np.all(np.sign(img) == sign)  # a constant volume gives exactly 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [("avg_pool", 10.0 + 2.5), ("max_pool", 10.0 + 5.0)],
)
def test_pooling_baselines(name: str, expected: float) -> None:
    img = make_transform(name, axis="z")(ramp((2, 3, 4, 6), "z"))
    assert img.shape == (2, 3, 4)
    np.testing.assert_allclose(img, expected)


def test_coronal_slices_are_y_slices_stacked_as_channels() -> None:
    rng = np.random.default_rng()
    vol = rng.normal(size=(2, 5, 9, 7))
    out = coronal_slices(vol, indices=[1, 6])
    assert out.shape == (4, 5, 7)
    for k, j in enumerate([1, 6]):
        for c in range(2):
            np.testing.assert_allclose(out[k * 2 + c], vol[c, :, j, :], rtol=1e-6)
    centred = coronal_slices(vol, center=4, count=3, step=2)
    np.testing.assert_allclose(centred[::2], vol[0][:, [2, 4, 6], :].transpose(1, 0, 2), 1e-6)
    np.testing.assert_allclose(coronal_slices(vol)[0], vol[0, :, 4, :], rtol=1e-6)


@pytest.mark.parametrize(
    ("size", "pixel", "expected"),
    [
        (None, (2, 3), (2, 3)),
        (9, (4, 4), (2, 3)),  # padded: (5, 7) sits at offset (2, 1)
        ((3, 5), (1, 2), (2, 3)),  # cropped: starts at (1, 1)
    ],
)
def test_to_volume_puts_slice_map_back_at_its_position(size, pixel, expected) -> None:
    vol_shape = (1, 5, 9, 7)
    options = {"indices": [6], "size": size}
    out_shape = output_shape("coronal_slices", vol_shape, **options)
    assert out_shape == make_transform("coronal_slices", **options)(np.zeros(vol_shape)).shape
    map2d = np.zeros(out_shape[1:])
    map2d[pixel] = 1.0
    back = to_volume(map2d, transform="coronal_slices", options=options, volume_shape=vol_shape)
    assert back.shape == vol_shape[1:]
    assert back.sum() == 1.0 and back[expected[0], 6, expected[1]] == 1.0


def test_to_volume_multichannel_slices_go_to_their_slices() -> None:
    options = {"indices": [2, 5]}
    map2d = np.stack([np.full((4, 3), 1.0), np.full((4, 3), 2.0)])
    back = to_volume(map2d, transform="coronal_slices", options=options, volume_shape=(4, 8, 3))
    assert np.all(back[:, 2, :] == 1.0) and np.all(back[:, 5, :] == 2.0)
    assert back.sum() == map2d.sum()
    shared = to_volume(
        map2d[0], transform="coronal_slices", options=options, volume_shape=(4, 8, 3)
    )
    assert np.all(shared[:, [2, 5], :] == 0.5) and shared.sum() == 12.0


@pytest.mark.parametrize(
    ("name", "axis", "spread"),
    [
        ("dynamic_image", "z", None),
        ("dynamic_image", "x", "uniform"),
        ("avg_pool", "y", None),
        ("max_pool", "z", None),
    ],
)
def test_to_volume_projection_conserves_relevance(name: str, axis: str, spread) -> None:
    vol_shape = (1, 4, 5, 7)
    options = {"axis": axis, "size": (8, 9)}  # pads every plane of (4, 5, 7)
    shape = output_shape(name, vol_shape, **options)
    map2d = np.random.default_rng().random(shape[1:])
    back = to_volume(map2d, transform=name, options=options, volume_shape=vol_shape, spread=spread)
    assert back.shape == vol_shape[1:]
    ax = AXIS_INDEX[axis] - 1
    summed = back.sum(axis=ax)
    plane = tuple(n for i, n in enumerate(vol_shape[1:]) if i != ax)
    (a, b) = plane
    pa, pb = (8 - a) // 2, (9 - b) // 2
    np.testing.assert_allclose(summed, map2d[pa : pa + a, pb : pb + b], rtol=1e-5)
    profile = np.moveaxis(back, ax, -1)[0, 0]
    if name == "dynamic_image" and spread is None:
        weights = np.abs(rank_pooling_weights(vol_shape[AXIS_INDEX[axis]]))
        np.testing.assert_allclose(profile / profile.sum(), weights, rtol=1e-5)
        assert profile[3] == 0.0  # the middle of 7 slices has a_t = 0
    else:
        np.testing.assert_allclose(profile, profile[0])


@pytest.mark.parametrize(
    ("name", "options", "vol_shape", "expected"),
    [
        ("coronal_slices", {}, (1, 5, 9, 7), (1, 5, 7)),
        ("coronal_slices", {"count": 3, "size": 160}, (2, 5, 9, 7), (6, 160, 160)),
        ("dynamic_image", {"axis": "z", "repeat_channels": 3}, (1, 5, 9, 7), (3, 5, 9)),
        ("avg_pool", {"axis": "y"}, (1, 5, 9, 7), (1, 5, 7)),
        ("max_pool", {"axis": "x", "size": (4, 10)}, (1, 5, 9, 7), (1, 4, 10)),
    ],
)
def test_output_shape_matches_transform(name, options, vol_shape, expected) -> None:
    assert output_shape(name, vol_shape, **options) == expected
    fn = pickle.loads(pickle.dumps(make_transform(name, **options)))
    assert fn(np.ones(vol_shape)).shape == expected


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: make_transform("sagittal"), r"unknown transform 'sagittal'.*coronal_slices"),
        (lambda: make_transform("dynamic_image", axes="z"), r"unknown option.*'axes'.*'axis'"),
        (lambda: make_transform("dynamic_image", axis=2), r"axis=2.*'x', 'y', 'z'"),
        (lambda: make_transform("avg_pool", size=0), r"size=0"),
        (lambda: make_transform("coronal_slices", indices=[3], count=2), r"either indices"),
        (lambda: coronal_slices(np.zeros((1, 4, 5, 6)), indices=[5]), r"outside the Y axis"),
        (lambda: coronal_slices(np.zeros((4, 5, 6)), indices=[1]), r"expected one sample"),
        (lambda: dynamic_image(np.zeros((1, 4, 5, 1)), axis="z"), r"expected >= 2 slices"),
        (
            lambda: to_volume(
                np.zeros((4, 5)),
                transform="avg_pool",
                options={},
                volume_shape=(4, 5, 6),
                spread="alpha",
            ),
            r"spread='alpha'.*expected 'uniform'",
        ),
        (
            lambda: to_volume(
                np.zeros((3, 3)), transform="dynamic_image", options={}, volume_shape=(4, 5, 6)
            ),
            r"does not match the transform output \(4, 5\)",
        ),
    ],
)
def test_bad_input_raises_config_error(call, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        call()


def test_registry_names() -> None:
    assert set(TRANSFORMS) == {"coronal_slices", "dynamic_image", "avg_pool", "max_pool"}
