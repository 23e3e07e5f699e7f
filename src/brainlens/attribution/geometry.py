"""Where does a layer position sit on the input grid? (receptive-field geometry of CAM maps)

A Grad-CAM or CAM map lives on a layer's grid. Stretching that grid over the whole
input (``F.interpolate(..., align_corners=False)``) is only right when the layer
positions' receptive fields tile the input edge to edge. With unpadded (valid)
convolutions the field of position 0 starts at voxel 0, so its centre is half a field
in from the edge; with same padding it sits on voxel 0; pooling and strides multiply
the step. :func:`layer_geometry` measures, per spatial axis, the centre of the
receptive field of every layer position as ``start + i * step`` input voxels, and
:func:`resample_layer_map` places the layer map on the input grid with it.

The geometry is measured, not parsed from the layer stack, so residual branches,
ceil-mode pooling, padding, strides and dilation need no special cases. It uses NaN
propagation (as :func:`brainlens.models.field_of_view`): a NaN slab in the input
turns exactly those layer positions NaN whose field reads it, whatever the weights.
Per axis, bisection over slabs ``[0, t]`` gives the first voxel ``lo_i`` of the last
two positions' fields, over slabs ``[t, n)`` the last voxel ``hi_i`` of the first two
(these are the fields least likely to be cut by the input edge); the differences give
the step ``s``, and ``start = (lo_i - s i + hi_j - s j) / 2``. A cut only raises
``lo_i`` (to 0 at the edge) or lowers ``hi_i`` (to ``n - 1``), so the estimate takes
the smaller ``lo_i - s i`` and the larger ``hi_j - s j``. When the fields are cut
anyway (fields larger than the input), the axis is measured again on an input
extended at its far end, 2, 4 or 8 times as long (positions keep their fields there,
which is checked); a model that only takes its own input shape gets the stretched
grid instead, flagged by ``LayerGeometry.exact``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from brainlens.attribution._common import AttributionError
from brainlens.errors import ModelError


@dataclass(frozen=True)
class LayerGeometry:
    """Receptive-field centres of a layer's positions, per spatial axis.

    Attributes
    ----------
    start : tuple of float
        Per spatial axis, the input voxel coordinate of the field centre of layer
        position 0 (may be fractional or negative).
    step : tuple of float
        Per spatial axis, input voxels between the field centres of neighbouring
        positions (the product of the strides).
    layer_shape : tuple of int
        The layer's spatial output shape for this input shape.
    in_spatial : tuple of int
        The input's spatial shape.
    exact : tuple of bool
        Per axis, True if ``start``/``step`` are the uncut receptive-field centres.
        False where every field is cut by the input edge and the model does not take a
        longer input (e.g. ``pif_3d``): there the layer grid is stretched over the
        input as ``F.interpolate(align_corners=False)`` does, or, for an axis of one
        position (along which a map is constant), ``start`` is the centre of its cut
        field.
    """

    start: tuple[float, ...]
    step: tuple[float, ...]
    layer_shape: tuple[int, ...]
    in_spatial: tuple[int, ...]
    exact: tuple[bool, ...]

    @property
    def axes(self) -> tuple[tuple[float, float], ...]:
        """Per spatial axis ``(start, step)``."""
        return tuple(zip(self.start, self.step, strict=True))

    def centres(self, axis: int) -> np.ndarray:
        """Input coordinates of the field centres along ``axis``, shape (layer_shape[axis],)."""
        return self.start[axis] + self.step[axis] * np.arange(self.layer_shape[axis])


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """Raised by the forward hook once the layer output is captured."""


def _layer_nan(model: nn.Module, layer: nn.Module, probes: torch.Tensor) -> torch.Tensor:
    """NaN mask of the layer output for a batch of probes: (B, C, *sp) -> (B, *layer_sp)."""
    store: list[object] = []

    def hook(_m: nn.Module, _inp: tuple, out: object) -> None:
        store.append(out)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(probes)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not store or not isinstance(store[0], torch.Tensor):
        raise AttributionError(
            f"layer {type(layer).__name__}: did not produce a tensor during the forward pass. "
            "Fix: choose a module that is called in forward() and returns a tensor"
        )
    out = store[0]
    if out.ndim != probes.ndim:
        raise ModelError(
            f"layer map of shape {tuple(out.shape)} has {out.ndim - 2} spatial axes but the "
            f"input has {probes.ndim - 2} ({tuple(probes.shape[2:])}). Fix: choose a "
            "convolutional layer whose output keeps the input's spatial axes"
        )
    return torch.isnan(out).any(dim=1)


class _SortedSearch:
    """Find nondecreasing ints ``v_i`` in [0, n - 1] from counts ``#{i : v_i <= t}``.

    Only the positions in ``wanted`` are resolved; the others stay -1.
    """

    def __init__(self, m: int, n: int, wanted: Sequence[int]) -> None:
        self.values = np.full(m, -1, dtype=np.int64)
        self.wanted = np.zeros(m + 1, dtype=np.int64)
        self.wanted[1:] = np.cumsum(np.isin(np.arange(m), list(wanted)))
        self.tasks = [(0, m, 0, n - 1)]
        self.pending: tuple[int, int, int, int, int] | None = None

    def query(self) -> int | None:
        """The next threshold ``t`` to ask about, or None when the wanted values are known."""
        while self.tasks:
            p, q, a, b = self.tasks.pop()
            if p >= q or self.wanted[q] == self.wanted[p]:
                continue
            if a >= b:
                self.values[p:q] = a
                continue
            mid = (a + b) // 2
            self.pending = (p, q, a, b, mid)
            return mid
        return None

    def answer(self, count: int) -> None:
        """Record ``#{i : v_i <= t}`` for the pending threshold."""
        assert self.pending is not None
        p, q, a, b, mid = self.pending
        c = min(max(int(count), p), q)
        self.tasks += [(p, c, a, mid), (c, q, mid + 1, b)]
        self.pending = None


def _counts(mask: torch.Tensor, axis: int) -> int:
    """Number of layer positions along ``axis`` that are NaN anywhere (mask: *layer_sp)."""
    other = tuple(d for d in range(mask.ndim) if d != axis)
    proj = mask.any(dim=other) if other else mask
    return int(proj.sum())


def _measure_support(
    model: nn.Module, layer: nn.Module, in_shape: tuple[int, ...], axes: Sequence[int]
) -> tuple[tuple[int, ...], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """First voxel of the last two positions' fields, last voxel of the first two's.

    Returns
    -------
    layer_shape : tuple of int
    support : dict of axis -> (lo, hi), int arrays of shape (layer_shape[axis],)
        ``lo[i]`` / ``hi[i]``: first / last input voxel of position ``i``'s field
        along the axis; -1 where not measured.
    """
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and torch.is_floating_point(p) else torch.float32
    spatial = in_shape[1:]
    full = torch.full((1, *in_shape), float("nan"), device=device, dtype=dtype)
    reach = _layer_nan(model, layer, full)[0]
    layer_shape = tuple(int(n) for n in reach.shape)
    if not bool(reach.all()):
        raise AttributionError(
            f"layer {type(layer).__name__}: an all-NaN input leaves some of its positions "
            "finite, so their receptive fields cannot be measured (the model replaces NaNs "
            "or the layer does not depend on the input). Fix: explain another layer"
        )
    ends = {a: (layer_shape[a] - 2, layer_shape[a] - 1) for a in axes}
    lo = {a: _SortedSearch(layer_shape[a], spatial[a], ends[a]) for a in axes}
    hi = {a: _SortedSearch(layer_shape[a], spatial[a], (0, 1)) for a in axes}
    while True:
        # lo: slab [0, t] NaN -> positions with lo_i <= t; hi: slab [t + 1, n) NaN ->
        # positions with hi_i > t, so #{hi_i <= t} = m - that count
        asks = [
            (kind, a, s.query()) for kind, ss in (("lo", lo), ("hi", hi)) for a, s in ss.items()
        ]
        asks = [(kind, a, t) for kind, a, t in asks if t is not None]
        if not asks:
            break
        for kind in ("lo", "hi"):
            mine = {a: t for k, a, t in asks if k == kind}
            if mine:
                _answer(
                    model, layer, in_shape, kind, mine, lo if kind == "lo" else hi, device, dtype
                )
    return layer_shape, {a: (lo[a].values, hi[a].values) for a in axes}


def _slab(kind: str, t: int) -> slice:
    return slice(0, t + 1) if kind == "lo" else slice(t + 1, None)


def _answer(
    model: nn.Module,
    layer: nn.Module,
    in_shape: tuple[int, ...],
    kind: str,
    asks: dict[int, int],
    searches: dict[int, _SortedSearch],
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Answer one threshold per axis with one box-shaped probe (per-axis slabs if it fails)."""
    n_sp = len(in_shape) - 1
    probe = torch.zeros((1, *in_shape), device=device, dtype=dtype)
    box = [slice(None)] * n_sp
    for a, t in asks.items():
        box[a] = _slab(kind, t)
    probe[(0, slice(None), *box)] = float("nan")
    mask = _layer_nan(model, layer, probe)[0]
    if not bool(mask.any()) and len(asks) > 1:
        # the box reached no position: ask each axis alone (other axes fully NaN)
        probes = torch.zeros((len(asks), *in_shape), device=device, dtype=dtype)
        for b, (a, t) in enumerate(asks.items()):
            index = [slice(None)] * n_sp
            index[a] = _slab(kind, t)
            probes[(b, slice(None), *index)] = float("nan")
        masks = _layer_nan(model, layer, probes)
        for b, a in enumerate(asks):
            m = masks.shape[1 + a]
            c = _counts(masks[b], a)
            searches[a].answer(c if kind == "lo" else m - c)
        return
    for a in asks:
        m = mask.shape[a]
        c = _counts(mask, a)
        searches[a].answer(c if kind == "lo" else m - c)


def _fit_axis(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[float, float] | None:
    """Uncut ``(start, step)`` from the measured field ends, or None if undetermined.

    A cut field has a raised ``lo`` (0 at the input edge) or a lowered ``hi``
    (``n - 1``); ``lo > 0`` and ``hi < n - 1`` are uncut by the input edge.
    """
    m = len(lo)
    if m == 1:
        return ((lo[0] + hi[0]) / 2, 1.0) if lo[0] > 0 and hi[0] < n - 1 else None
    steps = set()
    if lo[m - 2] > 0:
        steps.add(int(lo[m - 1] - lo[m - 2]))
    if hi[1] < n - 1:
        steps.add(int(hi[1] - hi[0]))
    steps = {s for s in steps if s > 0}
    if len(steps) != 1 or lo[m - 1] <= 0 or hi[0] >= n - 1:
        return None
    step = steps.pop()
    alpha = min(lo[m - 1] - step * (m - 1), lo[m - 2] - step * (m - 2))
    beta = max(hi[0], hi[1] - step)
    return (float(alpha + beta) / 2, float(step))


def _fit_grown(
    model: nn.Module,
    layer: nn.Module,
    in_shape: tuple[int, ...],
    axis: int,
    layer_shape: tuple[int, ...],
    hi0: np.ndarray,
) -> tuple[float, float] | None:
    """Fit ``axis`` on inputs extended at its far end (2, 4, 8 times as long)."""
    n = in_shape[1 + axis]
    for factor in (2, 4, 8):
        grown = list(in_shape)
        grown[1 + axis] = n * factor
        try:
            big_shape, big = _measure_support(model, layer, tuple(grown), [axis])
        except Exception:  # noqa: BLE001 - a model that only takes its own input shape
            return None
        others = [a for a in range(len(layer_shape)) if a != axis]
        if any(big_shape[a] != layer_shape[a] for a in others):
            return None
        lo, hi = big[axis]
        # positions 0 and 1 keep their fields; only a last voxel cut at the edge may grow
        if not np.all((hi[:2] == hi0[:2]) | (hi0[:2] == n - 1)):
            return None
        fit = _fit_axis(lo, hi, n * factor)
        if fit is not None:
            return fit
    return None


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, LayerGeometry]] = (
    weakref.WeakKeyDictionary()
)


def layer_geometry(model: nn.Module, layer: nn.Module, in_shape: Sequence[int]) -> LayerGeometry:
    """Receptive-field centre of every position of ``layer``'s output, per spatial axis.

    Layer position ``i`` along axis ``a`` has its (uncut) receptive-field centre at
    input voxel coordinate ``start[a] + i * step[a]``. Measured by NaN propagation
    (see the module docstring): about ``2 log2(n) + 6`` forward passes of one sample
    up to the layer, all axes at once, for ``n`` voxels on the longest axis (26 for
    ``rieke2018_3d`` on 91x109x91), more for fields larger than the input. The result depends only on the architecture (not the weights) and is cached
    per (model, layer, in_shape) for the model's lifetime; the model is evaluated in
    ``eval`` mode (its mode is restored).

    Parameters
    ----------
    model : nn.Module
        Maps (N, *in_shape) to outputs; ``layer`` must be called in its forward.
    layer : nn.Module
        Submodule whose output (N, K, *layer_spatial) keeps the input's spatial axes.
    in_shape : sequence of int
        One sample, (C, X, Y, Z) or (C, H, W).

    Returns
    -------
    LayerGeometry
    """
    in_shape = tuple(int(n) for n in in_shape)
    if len(in_shape) < 2 or any(n < 1 for n in in_shape):
        raise AttributionError(f"layer_geometry: in_shape {in_shape}: expected (C, *spatial) > 0")
    per_model = _CACHE.setdefault(model, {})
    key = (id(layer), in_shape)
    if key not in per_model:
        was_training = model.training
        model.eval()
        try:
            per_model[key] = _measure(model, layer, in_shape)
        finally:
            model.train(was_training)
    return per_model[key]


def _measure(model: nn.Module, layer: nn.Module, in_shape: tuple[int, ...]) -> LayerGeometry:
    spatial = in_shape[1:]
    n_sp = len(spatial)
    layer_shape, support = _measure_support(model, layer, in_shape, range(n_sp))
    start, step, exact = [], [], []
    for a in range(n_sp):
        lo, hi = support[a]
        m = layer_shape[a]
        fit = _fit_axis(lo, hi, spatial[a])
        if fit is None and m > 1:
            fit = _fit_grown(model, layer, in_shape, a, layer_shape, hi)
        exact.append(fit is not None)
        if fit is None:
            # one position: centre of its (cut) field; else the stretch of the layer grid
            # over the input (F.interpolate with align_corners=False)
            n = spatial[a]
            fit = ((lo[0] + hi[0]) / 2, 1.0) if m == 1 else ((n / m - 1) / 2, n / m)
        start.append(float(fit[0]))
        step.append(float(fit[1]))
    return LayerGeometry(
        start=tuple(start),
        step=tuple(step),
        layer_shape=layer_shape,
        in_spatial=tuple(spatial),
        exact=tuple(exact),
    )


def _check_axes(shape: tuple[int, ...], size: tuple[int, ...]) -> None:
    if len(shape) != len(size) + 2:
        raise ModelError(
            f"layer map of shape {shape} has {len(shape) - 2} spatial axes but the input has "
            f"{len(size)} ({size}). Fix: choose a convolutional layer whose output keeps the "
            "input's spatial axes"
        )


def resample_layer_map(
    maps: torch.Tensor, geometry: LayerGeometry, size: Sequence[int]
) -> torch.Tensor:
    """Place layer maps on the input grid by their receptive-field centres.

    Separable linear interpolation (trilinear in 3D, bilinear in 2D) between the
    layer positions, each sitting at its field centre ``start + i * step``. Input
    voxels outside the first/last centre take the edge position's value (nearest):
    they are covered by the edge fields, and extrapolating a gradient past the last
    measured position would invent values. An axis of one layer position is constant.

    Parameters
    ----------
    maps : torch.Tensor, shape (N, K, *layer_spatial)
        Layer-resolution maps.
    geometry : LayerGeometry
        From :func:`layer_geometry` for this layer and input shape.
    size : sequence of int
        Target spatial shape (X, Y, Z) or (H, W).

    Returns
    -------
    torch.Tensor, shape (N, K, *size)
    """
    size = tuple(int(n) for n in size)
    _check_axes(tuple(maps.shape), size)
    if tuple(maps.shape[2:]) != geometry.layer_shape or len(geometry.start) != len(size):
        raise AttributionError(
            f"layer map of spatial shape {tuple(maps.shape[2:])}: the geometry was measured "
            f"for a layer of shape {geometry.layer_shape} on a {len(geometry.start)}D input. "
            "Fix: compute layer_geometry for this layer and input shape"
        )
    out = maps
    for axis, n in enumerate(size):
        dim = axis + 2
        m = out.shape[dim]
        if m == 1:
            out = out.expand(*out.shape[:dim], n, *out.shape[dim + 1 :])
            continue
        voxel = torch.arange(n, device=maps.device, dtype=torch.float64)
        t = ((voxel - geometry.start[axis]) / geometry.step[axis]).clamp(0, m - 1)
        i0 = t.floor().long().clamp(max=m - 2)
        w = (t - i0).to(maps.dtype).view(*([1] * dim), n, *([1] * (maps.ndim - dim - 1)))
        out = out.index_select(dim, i0) * (1 - w) + out.index_select(dim, i0 + 1) * w
    return out.contiguous()


def place_layer_map(
    model: nn.Module, layer: nn.Module, maps: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """Resample ``layer``'s maps onto the grid of ``x`` by receptive-field geometry.

    Parameters
    ----------
    model, layer : nn.Module
        The classifier and the explained submodule.
    maps : torch.Tensor, shape (N, K, *layer_spatial)
        Maps on the layer grid.
    x : torch.Tensor, shape (1, C, *spatial)
        The explained sample (only its shape is used).

    Returns
    -------
    torch.Tensor, shape (N, K, *spatial)
    """
    size = tuple(x.shape[2:])
    _check_axes(tuple(maps.shape), size)
    geometry = layer_geometry(model, layer, tuple(x.shape[1:]))
    return resample_layer_map(maps, geometry, size)
