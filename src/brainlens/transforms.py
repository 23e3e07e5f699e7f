"""3D -> 2D data transforms for the 2D models, and their inverse for attribution maps.

All transforms are pure numpy functions of one sample ``vol`` of shape (C, X, Y, Z) in RAS+
voxel order on the analysis grid (X: left->right, Y: posterior->anterior, Z: inferior->
superior), returning a float32 image (C', H, W). Axes are named by letter (``"x"``, ``"y"``,
``"z"``) to avoid confusing spatial axis numbers with array axes of (C, X, Y, Z).

Image orientation: the two remaining spatial axes keep their order and direction (no flips
or transposes): a coronal slice is (H, W) = (X, Z); a projection along ``z`` is (X, Y), along
``y`` (X, Z), along ``x`` (Y, Z). This is not display orientation; it keeps the inverse exact.

``size`` (optional) zero-pads or centre-crops the 2D image to (H, W) without interpolation,
so :func:`to_volume` can undo it voxel for voxel.

Transforms
----------
coronal_slices
    One or several coronal (Y) slices. Several slices become **channels** of one sample
    (slice-major: channel ``k * C + c`` is channel ``c`` of slice ``k``), so each subject stays
    one sample with one prediction and splits stay subject-level.
dynamic_image
    Approximate rank pooling (Bilen et al., used by Xing et al.) along an axis:
    ``sum_t a_t I_t`` with ``a_t = 2t - T - 1`` (t = 1..T), normalised so ``sum |a_t| = 1``.
    Intensities that increase along the axis give a positive image.
avg_pool, max_pool
    Mean or maximum along the axis (Xing et al.'s pooling baselines).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from brainlens.errors import ConfigError

Axis = Literal["x", "y", "z"]
_AXES = {"x": 0, "y": 1, "z": 2}
CORONAL_AXIS = 1  # Y, the spatial axis of coronal slices


# ----------------------------------------------------------------------------- helpers
def _check_volume(vol: np.ndarray) -> np.ndarray:
    vol = np.asarray(vol)
    if vol.ndim != 4 or min(vol.shape) < 1:
        raise ConfigError(
            f"transform input has shape {vol.shape}: expected one sample (C, X, Y, Z). Fix: "
            f"add a channel axis with vol[None] for a single 3D volume."
        )
    return vol


def _check_axis(axis: object) -> int:
    if axis not in _AXES:
        raise ConfigError(
            f"transform option axis={axis!r} is invalid: expected one of 'x', 'y', 'z'. Fix: "
            f"use a spatial axis letter (e.g. axis='z' pools along inferior->superior)."
        )
    return _AXES[axis]


def _check_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        return (int(pair[0]), int(pair[1]))
    raise ConfigError(
        f"transform option size={size!r} is invalid: expected None, a positive int or "
        f"(H, W). Fix: e.g. size=160."
    )


def _check_count(option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"transform option {option}={value!r} is invalid: expected a positive integer. "
            f"Fix: e.g. {option}=1."
        )
    return value


def _offsets(n: int, m: int) -> tuple[slice, slice]:
    """(source slice of length n, destination slice of length m) for centred pad/crop."""
    if m >= n:
        start = (m - n) // 2
        return slice(0, n), slice(start, start + n)
    start = (n - m) // 2
    return slice(start, start + m), slice(0, m)


def _fit(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Centre pad/crop the last two axes of ``img`` to ``size``."""
    if size is None:
        return img
    (sa, da), (sb, db) = _offsets(img.shape[-2], size[0]), _offsets(img.shape[-1], size[1])
    out = np.zeros((*img.shape[:-2], *size), dtype=img.dtype)
    out[..., da, db] = img[..., sa, sb]
    return out


def _unfit(img: np.ndarray, shape: tuple[int, int], size: tuple[int, int] | None) -> np.ndarray:
    """Inverse of :func:`_fit`: from ``size`` back to ``shape`` (cropped parts become 0)."""
    if size is None:
        return img
    (sa, da), (sb, db) = _offsets(shape[0], size[0]), _offsets(shape[1], size[1])
    out = np.zeros((*img.shape[:-2], *shape), dtype=img.dtype)
    out[..., sa, sb] = img[..., da, db]
    return out


def rank_pooling_weights(length: int) -> np.ndarray:
    """Approximate rank pooling coefficients ``a_t = 2t - T - 1``, normalised to sum |a| = 1.

    Parameters
    ----------
    length : int
        T, the number of slices along the pooled axis (>= 2).

    Returns
    -------
    numpy.ndarray
        (T,) float64, antisymmetric, increasing, ``sum(abs(a)) == 1``.
    """
    if length < 2:
        raise ConfigError(
            f"dynamic image along an axis of length {length}: expected >= 2 slices. Fix: "
            f"pool along a longer axis."
        )
    t = np.arange(1, length + 1, dtype=np.float64)
    alpha = 2 * t - length - 1
    return alpha / np.abs(alpha).sum()


def _slice_indices(
    n: int, indices: Sequence[int] | None, center: int | None, count: int, step: int
) -> list[int]:
    if indices is not None:
        if center is not None or count != 1 or step != 1:
            raise ConfigError(
                "coronal_slices: give either indices or center/count/step, not both. Fix: "
                "drop one of them."
            )
        if (
            not isinstance(indices, list | tuple)
            or not indices
            or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in indices)
        ):
            raise ConfigError(
                f"coronal_slices: indices={indices!r} is invalid: expected a non-empty list of "
                f"integer Y indices. Fix: e.g. indices=[50, 54]."
            )
        idx = [int(i) for i in indices]
    else:
        _check_count("count", count)
        _check_count("step", step)
        if center is not None and (
            isinstance(center, bool) or not isinstance(center, numbers.Integral)
        ):
            raise ConfigError(
                f"coronal_slices: center={center!r} is invalid: expected an integer Y index or "
                f"None (middle slice)."
            )
        c = n // 2 if center is None else int(center)
        idx = [c + step * (k - count // 2) for k in range(count)]
    if n >= 0 and any(not 0 <= i < n for i in idx):
        raise ConfigError(
            f"coronal_slices: slice indices {idx} fall outside the Y axis of length {n}: "
            f"expected 0 <= index < {n}. Fix: choose indices/center inside the grid."
        )
    if len(set(idx)) != len(idx):
        raise ConfigError(f"coronal_slices: slice indices {idx} repeat. Fix: list each once.")
    return idx


# -------------------------------------------------------------------------- transforms
def coronal_slices(
    vol: np.ndarray,
    *,
    indices: Sequence[int] | None = None,
    center: int | None = None,
    count: int = 1,
    step: int = 1,
    size: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """Coronal slices of one sample, stacked as channels.

    Parameters
    ----------
    vol : numpy.ndarray
        (C, X, Y, Z) volume in RAS+ voxel order.
    indices : sequence of int, optional
        Y indices of the slices. Exclusive with ``center``/``count``/``step``.
    center : int, optional
        Y index of the central slice; default the middle slice ``Y // 2``.
    count : int
        Number of slices: ``center + step * (k - count // 2)`` for k = 0..count-1.
    step : int
        Spacing between slices in voxels.
    size : int or (int, int), optional
        Zero-pad / centre-crop each slice to (H, W) (no interpolation).

    Returns
    -------
    numpy.ndarray
        (C * n_slices, H, W) float32 with (H, W) = (X, Z) unless ``size`` is given;
        channel ``k * C + c`` is channel ``c`` of slice ``k``.
    """
    vol = _check_volume(vol)
    idx = _slice_indices(vol.shape[2], indices, center, count, step)
    img = vol[:, :, idx, :]  # (C, X, K, Z)
    img = np.moveaxis(img, 2, 0).reshape(-1, vol.shape[1], vol.shape[3])
    return _fit(img.astype(np.float32, copy=False), _check_size(size))


def _project(vol: np.ndarray, axis: str, size: object, repeat_channels: int, op: str) -> np.ndarray:
    vol = _check_volume(vol)
    ax = _check_axis(axis)
    reps = _check_count("repeat_channels", repeat_channels)
    moved = np.moveaxis(vol.astype(np.float64, copy=False), 1 + ax, -1)  # (C, a, b, T)
    if op == "dynamic":
        t = np.arange(1, moved.shape[-1] + 1, dtype=np.float64)
        alpha = 2 * t - moved.shape[-1] - 1  # integers: a constant volume gives exactly 0
        rank_pooling_weights(moved.shape[-1])  # validates T >= 2
        img = (moved @ alpha) / np.abs(alpha).sum()
    elif op == "mean":
        img = moved.mean(axis=-1)
    else:
        img = moved.max(axis=-1)
    img = _fit(img.astype(np.float32), _check_size(size))
    return np.tile(img, (reps, 1, 1)) if reps > 1 else img


def dynamic_image(
    vol: np.ndarray,
    *,
    axis: Axis = "z",
    size: int | tuple[int, int] | None = None,
    repeat_channels: int = 1,
) -> np.ndarray:
    """Dynamic image by approximate rank pooling along ``axis``.

    Parameters
    ----------
    vol : numpy.ndarray
        (C, X, Y, Z) volume.
    axis : {'x', 'y', 'z'}
        Spatial axis treated as time (Xing et al.: z).
    size : int or (int, int), optional
        Zero-pad / centre-crop to (H, W).
    repeat_channels : int
        Tile the channels this many times (3 for ImageNet-pretrained backbones).

    Returns
    -------
    numpy.ndarray
        (C * repeat_channels, H, W) float32: ``sum_t a_t vol[..., t]`` with the weights of
        :func:`rank_pooling_weights`.
    """
    return _project(vol, axis, size, repeat_channels, "dynamic")


def avg_pool(
    vol: np.ndarray,
    *,
    axis: Axis = "z",
    size: int | tuple[int, int] | None = None,
    repeat_channels: int = 1,
) -> np.ndarray:
    """Mean along ``axis``: (C, X, Y, Z) -> (C * repeat_channels, H, W) float32."""
    return _project(vol, axis, size, repeat_channels, "mean")


def max_pool(
    vol: np.ndarray,
    *,
    axis: Axis = "z",
    size: int | tuple[int, int] | None = None,
    repeat_channels: int = 1,
) -> np.ndarray:
    """Maximum along ``axis``: (C, X, Y, Z) -> (C * repeat_channels, H, W) float32."""
    return _project(vol, axis, size, repeat_channels, "max")


TRANSFORMS: dict[str, Callable[..., np.ndarray]] = {
    "coronal_slices": coronal_slices,
    "dynamic_image": dynamic_image,
    "avg_pool": avg_pool,
    "max_pool": max_pool,
}


def _check_options(transform: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check the transform name, option names and the values that need no volume."""
    if transform not in TRANSFORMS:
        raise ConfigError(
            f"unknown transform {transform!r}: expected one of {sorted(TRANSFORMS)}. Fix: pick "
            f"a name from that list."
        )
    params = inspect.signature(TRANSFORMS[transform]).parameters
    allowed = sorted(k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"transform {transform!r}: unknown option(s) {unknown}: expected a subset of "
            f"{allowed}. Fix: remove or rename them."
        )
    full = {k: params[k].default for k in allowed} | dict(options)
    _check_size(full["size"])
    if transform == "coronal_slices":
        _slice_indices(-1, full["indices"], full["center"], full["count"], full["step"])
    else:
        _check_axis(full["axis"])
        _check_count("repeat_channels", full["repeat_channels"])
    return full


def make_transform(name: str, **options: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A picklable callable ``f(vol) -> image`` for a registry transform.

    Parameters
    ----------
    name : str
        Key of :data:`TRANSFORMS`.
    **options
        Keyword options of that transform (checked now, as far as possible without a volume).

    Returns
    -------
    callable
        ``functools.partial`` mapping (C, X, Y, Z) to (C', H, W).
    """
    _check_options(name, options)
    return functools.partial(TRANSFORMS[name], **options)


def output_shape(name: str, volume_shape: Sequence[int], **options: Any) -> tuple[int, int, int]:
    """Shape (C', H, W) that transform ``name`` gives for a (C, X, Y, Z) volume.

    Use it to get ``in_shape`` for :func:`brainlens.models.build_model`.
    """
    full = _check_options(name, options)
    if len(volume_shape) != 4:
        raise ConfigError(f"volume_shape={tuple(volume_shape)} is invalid: expected (C, X, Y, Z).")
    c, *spatial = (int(v) for v in volume_shape)
    size = _check_size(full["size"])
    if name == "coronal_slices":
        idx = _slice_indices(
            spatial[1], full["indices"], full["center"], full["count"], full["step"]
        )
        plane = (spatial[0], spatial[2])
        channels = c * len(idx)
    else:
        ax = _check_axis(full["axis"])
        plane = tuple(n for i, n in enumerate(spatial) if i != ax)
        channels = c * full["repeat_channels"]
    return (channels, *(size or plane))


def to_volume(
    map2d: np.ndarray,
    *,
    transform: str,
    options: dict[str, Any] | None,
    volume_shape: Sequence[int],
    spread: Literal["alpha", "uniform"] | None = None,
) -> np.ndarray:
    """Put a 2D relevance map back on the 3D grid the transform came from.

    Relevance is conserved: the result summed along the sliced/pooled axis equals the 2D map
    (summed over channels), after undoing ``size``'s padding/cropping (relevance on padding is
    dropped; cropped-away voxels get 0).

    Parameters
    ----------
    map2d : numpy.ndarray
        (H, W) map, or (C', H, W) per input channel (e.g. input gradients).
    transform : str
        The transform that produced the model input.
    options : dict or None
        The options it was called with.
    volume_shape : sequence of int
        (X, Y, Z) or (C, X, Y, Z) of the original volume.
    spread : {'alpha', 'uniform'}, optional
        Projections only: how a pixel is spread along the pooled axis. ``'alpha'`` (default
        for ``dynamic_image``) weights slice t by ``|a_t| / sum |a|``, its share in the dynamic
        image, so central slices (a_t ~ 0) get almost nothing; ``'uniform'`` (default and only
        choice for ``avg_pool``/``max_pool``) gives each slice 1/T.

    Returns
    -------
    numpy.ndarray
        (X, Y, Z) float32 relevance. For ``coronal_slices`` a (C', H, W) map puts channel
        ``k * C + c`` on slice k; an (H, W) map is shared equally by the slices.
    """
    options = dict(options or {})
    full = _check_options(transform, options)
    if len(volume_shape) not in (3, 4):
        raise ConfigError(
            f"volume_shape={tuple(volume_shape)} is invalid: expected (X, Y, Z) or (C, X, Y, Z)."
        )
    spatial = tuple(int(v) for v in volume_shape[-3:])
    m = np.asarray(map2d, dtype=np.float64)
    if m.ndim not in (2, 3):
        raise ConfigError(f"map2d has shape {m.shape}: expected (H, W) or (C', H, W).")
    size = _check_size(full["size"])
    out = np.zeros(spatial, dtype=np.float64)

    if transform == "coronal_slices":
        if spread is not None:
            raise ConfigError("to_volume: spread applies to projections, not coronal_slices.")
        idx = _slice_indices(
            spatial[1], full["indices"], full["center"], full["count"], full["step"]
        )
        plane = (spatial[0], spatial[2])
        if m.ndim == 3:
            if m.shape[0] % len(idx):
                raise ConfigError(
                    f"map2d has {m.shape[0]} channels: expected a multiple of the {len(idx)} "
                    f"slices. Fix: pass the map of this transform's output."
                )
            per_slice = m.reshape(len(idx), -1, *m.shape[1:]).sum(axis=1)
        else:
            per_slice = np.broadcast_to(m / len(idx), (len(idx), *m.shape))
        expected = size or plane
        if per_slice.shape[1:] != tuple(expected):
            raise ConfigError(
                f"map2d spatial shape {per_slice.shape[1:]} does not match the transform "
                f"output {tuple(expected)} for volume {spatial}."
            )
        for k, j in enumerate(idx):
            out[:, j, :] += _unfit(per_slice[k], plane, size)
        return out.astype(np.float32)

    ax = _check_axis(full["axis"])
    plane = tuple(n for i, n in enumerate(spatial) if i != ax)
    flat = m.sum(axis=0) if m.ndim == 3 else m
    if flat.shape != tuple(size or plane):
        raise ConfigError(
            f"map2d spatial shape {flat.shape} does not match the transform output "
            f"{tuple(size or plane)} for volume {spatial}."
        )
    spread = spread or ("alpha" if transform == "dynamic_image" else "uniform")
    length = spatial[ax]
    if spread == "alpha" and transform == "dynamic_image":
        weights = np.abs(rank_pooling_weights(length))
    elif spread == "uniform":
        weights = np.full(length, 1.0 / length)
    else:
        choices = "'uniform' or 'alpha'" if transform == "dynamic_image" else "'uniform'"
        raise ConfigError(
            f"to_volume: spread={spread!r} is invalid for {transform!r}: expected {choices}."
        )
    vol = _unfit(flat, plane, size)[..., None] * weights  # (a, b, T)
    return np.moveaxis(vol, -1, ax).astype(np.float32)
