"""Attribution methods and the :data:`METHODS` registry.

Every method takes one sample ``x`` of shape (1, C, *spatial), a target class and
plain keyword options, and returns a relevance map of the input's spatial shape
(``layer_maps`` returns a dict of such maps). **Higher = more relevant** for the
target class everywhere; each :class:`MethodSpec` states its sign convention.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import (
    FeatureAblation,
    GuidedBackprop,
    IntegratedGradients,
    Occlusion,
    Saliency,
)
from torch import nn

from brainlens.attribution._common import (
    AttributionError,
    check_sample,
    check_target,
    to_model,
    to_numpy_map,
)
from brainlens.attribution.baselines import captum_baseline
from brainlens.attribution.layers import cam_ng2018, gradcam, layer_grid, layer_maps
from brainlens.errors import ConfigError

_OUTPUTS = ("logit", "probability")


def _forward_func(model: nn.Module, output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if output not in _OUTPUTS:
        raise ConfigError(f"output: expected one of {list(_OUTPUTS)}, got {output!r}")
    if output == "logit":
        return model

    def prob(inp: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(inp), dim=1)

    return prob


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _window(name: str, value: int | tuple[int, ...], n_spatial: int) -> tuple[int, ...]:
    vals = (value,) * n_spatial if isinstance(value, int | np.integer) else tuple(value)
    if len(vals) != n_spatial:
        raise ConfigError(
            f"{name}: expected an int or {n_spatial} ints (one per spatial axis), got {value!r}"
        )
    return tuple(_positive_int(name, v) for v in vals)


# --------------------------------------------------------------------------- gradients


def _with_grad(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def gradients(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Saliency: absolute gradient of the target logit w.r.t. the input.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (N, n_classes).
    x : torch.Tensor, shape (1, C, *spatial)
        One sample.
    target : int
        Class index.

    Returns
    -------
    np.ndarray, shape spatial
        ``sum_c |d logit_target / d x_c|`` (>= 0).
    """
    attr = Saliency(model).attribute(_with_grad(x), target=target, abs=True)
    return to_numpy_map(attr[0].sum(0))


def guided_backprop(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Guided backpropagation (ReLU modules pass only positive gradients), absolute value.

    Returns
    -------
    np.ndarray, shape spatial
        ``sum_c |guided gradient_c|`` (>= 0).
    """
    with warnings.catch_warnings():
        # Captum announces that it hooks the ReLU modules (and removes the hooks after)
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attr = GuidedBackprop(model).attribute(_with_grad(x), target=target)
    return to_numpy_map(attr[0].abs().sum(0))


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    n_steps: int = 32,
    baseline: float | torch.Tensor = 0.0,
    internal_batch_size: int = 4,
) -> np.ndarray:
    """Integrated gradients of the target logit from a baseline, signed.

    Parameters
    ----------
    n_steps : int
        Points of the path integral (Gauss-Legendre).
    baseline : float or torch.Tensor, shape (1, C, *spatial)
        Constant intensity, or a baseline input (the workflow passes the fold's
        training mean, :mod:`brainlens.attribution.baselines`).
    internal_batch_size : int
        Path points evaluated per forward/backward pass (bounds memory on 3D volumes).

    Returns
    -------
    np.ndarray, shape spatial
        Sum over channels of the attributions; positive = evidence for ``target``.
        The map sums to ``logit(x) - logit(baseline)`` up to the integration error.
    """
    n_steps = _positive_int("n_steps", n_steps)
    internal_batch_size = _positive_int("internal_batch_size", internal_batch_size)
    attr = IntegratedGradients(model).attribute(
        x,
        baselines=captum_baseline(baseline, x),
        target=target,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
    )
    return to_numpy_map(attr[0].sum(0))


# --------------------------------------------------------------------------- occlusion


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    patch: int | tuple[int, ...] = 8,
    stride: int | tuple[int, ...] | None = None,
    baseline: float | torch.Tensor = 0.0,
    output: str = "logit",
    batch_size: int = 8,
) -> np.ndarray:
    """Sliding-patch occlusion: drop of the target score when a patch is set to ``baseline``.

    Parameters
    ----------
    patch : int or tuple of int
        Patch edge in voxels (all channels are occluded together).
    stride : int, tuple of int or None
        Step between patches; None = ``patch`` (non-overlapping). Overlapping
        patches are averaged per voxel.
    baseline : float or torch.Tensor, shape (1, C, *spatial)
        Value (or the baseline input's values) written into the occluded patch.
    output : {"logit", "probability"}
        Score whose drop is measured (softmax probability as in Rieke et al. 2018;
        logits do not saturate).
    batch_size : int
        Occluded copies evaluated per forward pass.

    Returns
    -------
    np.ndarray, shape spatial
        ``score(x) - score(x with patch occluded)``, signed: positive = the patch
        supported ``target``.
    """
    n_sp = x.ndim - 2
    patch_t = _window("patch", patch, n_sp)
    stride_t = patch_t if stride is None else _window("stride", stride, n_sp)
    c = x.shape[1]
    attr = Occlusion(_forward_func(model, output)).attribute(
        x,
        sliding_window_shapes=(c, *patch_t),
        strides=(c, *stride_t),
        baselines=captum_baseline(baseline, x),
        target=target,
        perturbations_per_eval=_positive_int("batch_size", batch_size),
    )
    return to_numpy_map(attr[0, 0])


def occlusion_grid(
    model: nn.Module,
    x: torch.Tensor,
    *,
    patch: int | tuple[int, ...] = 8,
    stride: int | tuple[int, ...] | None = None,
    **_options: object,
) -> tuple[int, ...]:
    """Patch positions per spatial axis of :func:`occlusion` on ``x`` (1, C, *spatial).

    Captum slides the window from the first voxel in steps of ``stride``, the last
    window cut by the edge: ``ceil((n - patch) / stride) + 1`` positions along an axis
    of ``n`` voxels (1 when the patch covers the axis).
    """
    n_sp = x.ndim - 2
    patch_t = _window("patch", patch, n_sp)
    stride_t = patch_t if stride is None else _window("stride", stride, n_sp)
    return tuple(
        max(1, -(-(n - p) // st) + 1)
        for n, p, st in zip(x.shape[2:], patch_t, stride_t, strict=True)
    )


def region_occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    atlas_labels: np.ndarray | None = None,
    background_label: int = 0,
    baseline: float | torch.Tensor = 0.0,
    output: str = "logit",
    batch_size: int = 8,
) -> np.ndarray:
    """Atlas-region occlusion: each region is occluded as a whole (Rieke et al. 2018's AAL areas).

    Parameters
    ----------
    atlas_labels : np.ndarray of int, shape spatial
        Atlas label volume on the input grid; every distinct label is one region.
    background_label : int
        Label whose voxels get relevance 0 (they are still occluded once, as one region).
    baseline, output, batch_size
        As in :func:`occlusion`.

    Returns
    -------
    np.ndarray, shape spatial
        Each region's score drop ``score(x) - score(x without region)`` painted on
        its voxels; signed, positive = the region supported ``target``.
    """
    spatial = tuple(x.shape[2:])
    if atlas_labels is None:
        raise ConfigError(
            "region_occlusion: option `atlas_labels` is required (an int label volume on the "
            "input grid). Fix: pass atlas_labels=<(X, Y, Z) int array>"
        )
    labels = np.asarray(atlas_labels)
    if labels.shape != spatial:
        raise AttributionError(
            f"atlas_labels: expected shape {spatial} (the input's spatial shape), got "
            f"{labels.shape}. Fix: resample the atlas to the analysis grid (nearest neighbour)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise AttributionError(
                f"atlas_labels: expected integer labels, got dtype {labels.dtype} with "
                "non-integer values. Fix: resample the atlas with nearest-neighbour interpolation"
            )
        labels = labels.astype(np.int64)
    _, inverse = np.unique(labels, return_inverse=True)
    mask = torch.as_tensor(inverse.reshape(spatial), device=x.device)[None, None]
    attr = FeatureAblation(_forward_func(model, output)).attribute(
        x,
        baselines=captum_baseline(baseline, x),
        target=target,
        feature_mask=mask,
        perturbations_per_eval=_positive_int("batch_size", batch_size),
    )
    out = to_numpy_map(attr[0, 0])
    out[labels == background_label] = 0.0
    return out


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MethodSpec:
    """One registered attribution method.

    Attributes
    ----------
    func : callable
        ``func(model, x, target, **options)``.
    sign : str
        ``"absolute"`` (>= 0, magnitude of a gradient), ``"signed"`` (positive =
        evidence for the target), ``"positive"`` (rectified, >= 0) or
        ``"normalised"`` (min-max to [0, 1]).
    returns_dict : bool
        True if the method returns ``{layer name: map}`` instead of one map.
    grid : callable or None
        ``grid(model, x, **options) -> tuple of int``: positions per spatial axis of the
        grid the map is computed on, for methods coarser than the input (layer grids,
        occlusion patches); None = one value per input voxel (or per atlas region).
    """

    func: Callable[..., np.ndarray | dict[str, np.ndarray]]
    sign: str
    returns_dict: bool = False
    grid: Callable[..., tuple[int, ...]] | None = None

    def options(self) -> list[str]:
        """Names of the keyword options the method accepts."""
        params = inspect.signature(self.func).parameters.values()
        return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


#: name -> :class:`MethodSpec`. Tests may add entries (e.g. with ``monkeypatch.setitem``).
METHODS: dict[str, MethodSpec] = {
    "gradients": MethodSpec(gradients, "absolute"),
    "guided_backprop": MethodSpec(guided_backprop, "absolute"),
    "integrated_gradients": MethodSpec(integrated_gradients, "signed"),
    "occlusion": MethodSpec(occlusion, "signed", grid=occlusion_grid),
    "region_occlusion": MethodSpec(region_occlusion, "signed"),
    "gradcam": MethodSpec(gradcam, "positive", grid=layer_grid),
    "cam_ng2018": MethodSpec(cam_ng2018, "normalised", grid=layer_grid),
    "layer_maps": MethodSpec(layer_maps, "positive", returns_dict=True),
}


#: ``<method>@<label>`` names a second configured instance of a method (e.g.
#: ``gradcam@block2: {layer: features.block2}`` for a per-layer map, or
#: ``occlusion@p8: {patch: 8}`` beside ``occlusion``); the label is free text.
_METHOD_KEY = re.compile(r"^([a-z0-9_]+)(@[A-Za-z0-9_-]+)?$")


def method_base(key: str) -> str:
    """The registered method of a configured method key (``"gradcam@b2"`` -> ``"gradcam"``).

    Raises :class:`~brainlens.errors.ConfigError` for malformed keys or unknown methods.
    """
    match = _METHOD_KEY.match(key) if isinstance(key, str) else None
    if match is None or match.group(1) not in METHODS:
        raise ConfigError(
            f"attribution method: expected one of {sorted(METHODS)}, optionally followed by "
            f"'@<label>' (letters, digits, '_', '-'), got {key!r}"
        )
    return match.group(1)


def get_method(method: str) -> MethodSpec:
    """Look up a method by name (or ``name@label`` key), with a clear error for unknown names."""
    return METHODS[method_base(method)]


def check_options(method: str, options: dict) -> None:
    """Raise :class:`~brainlens.errors.ConfigError` for options ``method`` does not take."""
    spec = get_method(method)
    params = inspect.signature(spec.func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    allowed = spec.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"attribution method {method!r}: unknown option(s) {unknown}; "
            f"expected a subset of {allowed}"
        )


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    target: int,
    **options: object,
) -> np.ndarray | dict[str, np.ndarray]:
    """Relevance map of one sample for one class.

    The model is put in eval mode; ``x`` is moved to the model's device and
    parameter dtype (e.g. a float64 volume for a float32 model).

    Parameters
    ----------
    model : nn.Module
        Classifier: (N, C, *spatial) -> logits (N, n_classes); CAM methods need
        ``model.cam_layer`` (or a ``layer`` option).
    x : torch.Tensor, shape (1, C, X, Y, Z) or (1, C, H, W)
        One sample.
    method : str
        A key of :data:`METHODS`.
    target : int
        Class index to explain.
    **options
        Keyword options of the method (see each method's docstring).

    Returns
    -------
    np.ndarray, float32, shape (X, Y, Z) or (H, W)
        Relevance, higher = more relevant; channels are reduced as each method
        documents. ``layer_maps`` returns ``{layer name: map}``.
    """
    spec = get_method(method)
    check_options(method, options)
    check_sample(x)
    model.eval()
    x = to_model(model, x)
    check_target(model, x, target)
    result = spec.func(model, x, int(target), **options)
    maps = result.values() if isinstance(result, dict) else [result]
    for m in maps:
        if m.shape != tuple(x.shape[2:]):
            raise AttributionError(
                f"method {method!r}: returned a map of shape {m.shape}, expected the input's "
                f"spatial shape {tuple(x.shape[2:])}"
            )
    return result


def map_grid(
    model: nn.Module, x: torch.Tensor, *, method: str, **options: object
) -> tuple[int, ...]:
    """Positions per spatial axis of the grid ``method``'s map of ``x`` is computed on.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor, shape (1, C, *spatial)
    method : str
        A configured method key.
    **options
        The method's options (the layer of Grad-CAM, the patch of occlusion, ...).

    Returns
    -------
    tuple of int
        The layer grid (Grad-CAM, CAM), the patch grid (occlusion) or the input's spatial
        shape (voxel-wise methods, region occlusion).
    """
    spec = get_method(method)
    if spec.grid is None:
        return tuple(int(n) for n in x.shape[2:])
    return tuple(int(n) for n in spec.grid(model, to_model(model, x), **options))
