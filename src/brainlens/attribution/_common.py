"""Shared helpers of the attribution subpackage: validation, reductions, counting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainlens.errors import BrainlensError, ConfigError, ModelError


class AttributionError(BrainlensError):
    """An attribution input (sample, relevance map, affine, atlas) is not what was expected."""


def check_sample(x: torch.Tensor) -> None:
    """Check that ``x`` is one sample of shape (1, C, *spatial) with 2 or 3 spatial axes.

    Parameters
    ----------
    x : torch.Tensor, shape (1, C, X, Y, Z) or (1, C, H, W)
        One input sample.
    """
    if not isinstance(x, torch.Tensor):
        raise AttributionError(
            f"sample x: expected a torch.Tensor of shape (1, C, *spatial), got {type(x).__name__}. "
            "Fix: convert with torch.from_numpy(volume[None]).float()"
        )
    if x.ndim not in (4, 5) or x.shape[0] != 1:
        raise AttributionError(
            f"sample x: expected shape (1, C, X, Y, Z) or (1, C, H, W), got {tuple(x.shape)}. "
            "Fix: pass one sample with a batch axis of 1 and a channel axis"
        )
    if not torch.is_floating_point(x):
        raise AttributionError(
            f"sample x: expected a floating-point tensor, got dtype {x.dtype}. Fix: call x.float()"
        )
    if not bool(torch.isfinite(x).all()):
        raise AttributionError(
            "sample x: contains NaN or infinite values. Fix: clean the input volume first"
        )


def check_target(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Run one forward pass, check the logits' shape and the target index.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits of shape (N, n_classes).
    x : torch.Tensor, shape (1, C, *spatial)
        One sample.
    target : int
        Class index to explain.

    Returns
    -------
    torch.Tensor, shape (1, n_classes)
        The logits of ``x`` (no gradient).
    """
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(
            f"model {type(model).__name__}: expected logits of shape (1, n_classes) for one "
            f"sample, got {shape}. Fix: the model's forward must return (N, n_classes) logits"
        )
    n_classes = logits.shape[1]
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise ConfigError(f"target: expected an int class index, got {target!r}")
    if not 0 <= int(target) < n_classes:
        raise ConfigError(
            f"target: expected a class index in [0, {n_classes - 1}] for a model with "
            f"{n_classes} outputs, got {target}"
        )
    return logits


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def to_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Detach ``x`` and move it to the device and floating dtype of the model's parameters."""
    for p in model.parameters():
        return x.detach().to(device=p.device, dtype=p.dtype)
    return x.detach()


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    """The layer to explain: ``layer`` (module or dotted name) or ``model.cam_layer``.

    Parameters
    ----------
    model : nn.Module
        The classifier.
    layer : str, nn.Module or None
        A submodule, its dotted name in ``model.named_modules()``, or None for
        ``model.cam_layer``.

    Returns
    -------
    nn.Module
    """
    if layer is None:
        cam = getattr(model, "cam_layer", None)
        if not isinstance(cam, nn.Module):
            raise ModelError(
                f"model {type(model).__name__}: has no `cam_layer` module (the last conv feature "
                "map). Fix: set model.cam_layer in the model class, or pass layer='<module name>'"
            )
        return cam
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise ConfigError(
            f"layer: model {type(model).__name__} has no submodule {layer!r}; "
            f"expected one of {names}"
        ) from None


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize layer maps to the input grid: trilinear (3D) or bilinear (2D), stretched.

    The layer grid is stretched over the whole input (``align_corners=False``), which
    misplaces maps of layers whose receptive-field centres do not tile the input
    (unpadded convolutions): CAM methods use
    :func:`brainlens.attribution.geometry.place_layer_map` instead.

    Parameters
    ----------
    maps : torch.Tensor, shape (N, K, *layer_spatial)
        Layer-resolution maps.
    size : tuple of int
        Target spatial shape (X, Y, Z) or (H, W).

    Returns
    -------
    torch.Tensor, shape (N, K, *size)
    """
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if maps.ndim != len(size) + 2:
        raise ModelError(
            f"layer map of shape {tuple(maps.shape)} has {maps.ndim - 2} spatial axes but the "
            f"input has {len(size)} ({tuple(size)}). Fix: choose a convolutional layer whose "
            "output keeps the input's spatial axes"
        )
    mode = {3: "trilinear", 2: "bilinear", 1: "linear"}[len(size)]
    return F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)


def minmax(a: np.ndarray) -> np.ndarray:
    """``a`` rescaled to [0, 1] (min -> 0, max -> 1); all zeros when ``a`` is constant."""
    lo, hi = float(a.min()), float(a.max())
    if hi == lo:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def to_numpy_map(t: torch.Tensor) -> np.ndarray:
    """Detach a (spatial) tensor to a float32 NumPy array."""
    return t.detach().to("cpu", torch.float32).numpy().copy()


@dataclass
class ForwardCounter:
    """Counts the samples that went through a model's forward (a batch of 8 counts 8)."""

    samples: int = 0
    calls: int = 0


@contextmanager
def count_forward_passes(model: nn.Module) -> Iterator[ForwardCounter]:
    """Count forward passes through ``model`` while the context is open.

    Parameters
    ----------
    model : nn.Module
        The model to watch (a forward pre-hook is attached and removed on exit).

    Yields
    ------
    ForwardCounter
        ``samples`` is the number of samples evaluated (sum of batch sizes),
        ``calls`` the number of forward calls.
    """
    counter = ForwardCounter()

    def hook(_module: nn.Module, args: tuple) -> None:
        counter.calls += 1
        first = args[0] if args else None
        counter.samples += int(first.shape[0]) if isinstance(first, torch.Tensor) else 1

    handle = model.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()
