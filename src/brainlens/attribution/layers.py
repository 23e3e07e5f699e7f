"""Layer-resolution attribution methods: Grad-CAM, the CAM of Ng et al. 2018, per-layer maps.

Their maps are computed on a layer's grid and placed on the input grid by
receptive-field geometry (:mod:`brainlens.attribution.geometry`), so they can only
localise as finely as that grid: :func:`layer_grid` gives its shape, which the sanity
stage reads (a map with fewer than ``attribution.sanity.min_map_positions`` positions
along an axis cannot tell regions apart along it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from captum.attr import LayerGradCam
from torch import nn

from brainlens.attribution._common import AttributionError, minmax, resolve_layer, to_numpy_map
from brainlens.attribution.geometry import layer_geometry, place_layer_map
from brainlens.errors import ConfigError

__all__ = ["cam_ng2018", "gradcam", "layer_grid", "layer_maps"]


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    layer: str | None = None,
    relu: bool = True,
) -> np.ndarray:
    """Grad-CAM on ``model.cam_layer``, truly 3D.

    Channel weights are the target-logit gradients averaged over **all** spatial
    axes of the layer (Captum's ``LayerGradCam``), the weighted channel sum is
    optionally rectified and placed on the input grid by receptive-field geometry:
    each layer position sits at the centre of its receptive field
    (:func:`~brainlens.attribution.geometry.layer_geometry`), interpolated
    trilinearly (bilinearly in 2D) between positions, edge values held beyond.

    Parameters
    ----------
    layer : str or None
        Dotted module name to explain instead of ``model.cam_layer``.
    relu : bool
        Keep only the positive part (Selvaraju et al.): negative values are
        evidence for other classes.

    Returns
    -------
    np.ndarray, shape spatial
        >= 0 when ``relu``; otherwise signed (positive = evidence for ``target``).
    """
    module = resolve_layer(model, layer)
    cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=bool(relu))
    return to_numpy_map(place_layer_map(model, module, cam, x)[0, 0])


def _layer_output(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        store.append(out.detach())

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if not store or not isinstance(store[0], torch.Tensor):
        raise AttributionError(
            f"layer {type(module).__name__}: did not produce a tensor during the forward pass. "
            "Fix: choose a module that is called in forward()"
        )
    return store[0]


def cam_ng2018(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    layer: str | None = None,
) -> np.ndarray:
    """Class-invariant CAM of Ng et al. 2018: last-conv feature maps summed over channels.

    The channel sum is placed on the input grid by receptive-field geometry (as in
    :func:`gradcam`) and min-max normalised so
    that the most active voxel is 1 and the least active 0 (no inversion).
    ``target`` is checked but does not change the map (class-invariant).

    Parameters
    ----------
    layer : str or None
        Dotted module name to use instead of ``model.cam_layer``.

    Returns
    -------
    np.ndarray, shape spatial
        Values in [0, 1]; all zeros if the feature map is constant.
    """
    module = resolve_layer(model, layer)
    feats = _layer_output(model, module, x)
    summed = feats.sum(dim=1, keepdim=True)
    return minmax(to_numpy_map(place_layer_map(model, module, summed, x)[0, 0]))


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_maps(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    layers: list[str] | None = None,
    kind: str = "gradcam",
) -> dict[str, np.ndarray]:
    """Per-layer maps (for 2D slice models, works in 3D too).

    Parameters
    ----------
    layers : list of str or None
        Dotted module names; None = every ``nn.Conv*`` module in registration order.
    kind : {"gradcam", "activation"}
        ``"gradcam"``: rectified Grad-CAM of each layer (>= 0);
        ``"activation"``: the layer's channel-mean activation, min-max normalised to [0, 1].

    Returns
    -------
    dict of str to np.ndarray, each of shape spatial
        Layer name -> map placed on the input grid by receptive-field geometry
        (as in :func:`gradcam`).
    """
    if kind not in ("gradcam", "activation"):
        raise ConfigError(f"kind: expected 'gradcam' or 'activation', got {kind!r}")
    names = _layer_names(model, layers)
    out: dict[str, np.ndarray] = {}
    for name in names:
        module = resolve_layer(model, name)
        if kind == "gradcam":
            cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
            out[name] = to_numpy_map(place_layer_map(model, module, cam, x)[0, 0])
        else:
            act = _layer_output(model, module, x).mean(dim=1, keepdim=True)
            out[name] = minmax(to_numpy_map(place_layer_map(model, module, act, x)[0, 0]))
    return out


def layer_grid(
    model: nn.Module, x: torch.Tensor, *, layer: str | None = None, **_options: object
) -> tuple[int, ...]:
    """Spatial shape of the layer grid a Grad-CAM / CAM map of ``x`` is computed on.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor, shape (1, C, *spatial)
    layer : str or None
        As the methods' ``layer`` option (None = ``model.cam_layer``).

    Returns
    -------
    tuple of int
        Positions per spatial axis (e.g. ``(1, 2, 1)``: the map can only separate
        two halves of the input along the second axis).
    """
    module = resolve_layer(model, layer)
    return tuple(layer_geometry(model, module, tuple(x.shape[1:])).layer_shape)


def _layer_names(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    if layers is not None:
        return list(layers)
    names = [n for n, m in model.named_modules() if isinstance(m, _CONV)]
    if not names:
        raise ConfigError(
            f"layer_maps: model {type(model).__name__} has no nn.Conv* modules. "
            "Fix: pass layers=[<module names>]"
        )
    return names
