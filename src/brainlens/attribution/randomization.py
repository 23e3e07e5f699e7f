"""Model-parameter randomisation (Adebayo et al. 2018) and map similarity.

A map that barely changes when the trained weights are replaced by random ones does
not explain the model. :func:`randomization_curves` randomises layer groups
(:func:`layer_groups`) cascading from the output down and independently, and compares
|map| and the signed map with the trained model's by Spearman rank correlation.
Re-exported by :mod:`brainlens.attribution.sanity`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats
from torch import nn

from brainlens.attribution._common import AttributionError, minmax, model_device
from brainlens.attribution.methods import attribute, get_method
from brainlens.errors import ConfigError, ModelError

# --------------------------------------------------------------------------- similarity


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho; 1 for two identical constant maps, 0 if only one is constant."""
    a, b = a.ravel(), b.ravel()
    const_a, const_b = np.ptp(a) == 0, np.ptp(b) == 0
    if const_a or const_b:
        return 1.0 if (const_a and const_b and np.array_equal(a, b)) else 0.0
    return float(stats.spearmanr(a, b).statistic)


def ssim(a: np.ndarray, b: np.ndarray, *, window: int = 7) -> float:
    """Mean structural similarity of two maps after min-max scaling each to [0, 1].

    Parameters
    ----------
    a, b : np.ndarray, same shape (2D or 3D)
        Maps to compare.
    window : int
        Edge of the uniform local window (clipped to the smallest axis).

    Returns
    -------
    float
        Mean SSIM (1 = identical structure), constants C1 = 0.01^2, C2 = 0.03^2.
    """
    if a.shape != b.shape:
        raise AttributionError(f"ssim: maps have shapes {a.shape} and {b.shape}; expected equal")
    x, y = minmax(a.astype(np.float64)), minmax(b.astype(np.float64))
    size = max(1, min(window, *x.shape))
    mx, my = ndimage.uniform_filter(x, size), ndimage.uniform_filter(y, size)
    vx = ndimage.uniform_filter(x * x, size) - mx * mx
    vy = ndimage.uniform_filter(y * y, size) - my * my
    cxy = ndimage.uniform_filter(x * y, size) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


# --------------------------------------------------------------------------- randomisation


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of modules that own parameters, in registration order (input -> output).

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    list of str
        Dotted names; the cascade randomises them in reverse order.
    """
    return [
        name
        for name, m in model.named_modules()
        if name and any(True for _ in m.parameters(recurse=False))
    ]


def _reset(model: nn.Module, name: str, seed: int, device: torch.device) -> None:
    """Re-initialise submodule ``name`` in place with its ``reset_parameters()``, seeded.

    The global torch RNG state is restored afterwards.
    """
    module = model.get_submodule(name)
    reset = getattr(module, "reset_parameters", None)
    if not callable(reset):
        raise ModelError(
            f"layer {name!r} ({type(module).__name__}): has parameters but no "
            "reset_parameters(), so it cannot be re-initialised. Fix: implement "
            "reset_parameters() in that module"
        )
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        reset()


def _check_mask(mask: np.ndarray | None, x: torch.Tensor) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(x.shape[2:]):
        raise AttributionError(
            f"mask: expected the input's spatial shape {tuple(x.shape[2:])}, got {mask.shape}"
        )
    if not mask.any():
        raise AttributionError("mask: is empty; expected at least one voxel")
    return mask


#: Normalisation layers that :func:`layer_groups` merges into the layer before them.
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def layer_groups(model: nn.Module, granularity: str = "blocks") -> list[list[str]]:
    """Parameterised modules grouped into randomisation steps, input -> output.

    Parameters
    ----------
    model : nn.Module
    granularity : {"blocks", "modules"}
        ``"modules"``: one group per module that owns parameters
        (:func:`parameter_layers`). ``"blocks"``: a normalisation layer (batch, instance,
        group or layer norm) joins the parameterised module before it, so a conv and
        its batch norm are randomised together (``rieke2018_3d``: 4 conv blocks and 3
        dense layers = 7 steps instead of 11).

    Returns
    -------
    list of list of str
        Dotted module names per group; the cascade randomises the groups in reverse.
    """
    if granularity not in ("blocks", "modules"):
        raise ConfigError(
            f"attribution.sanity.layers: expected 'blocks' or 'modules', got {granularity!r}"
        )
    names = parameter_layers(model)
    if not names:
        raise ModelError(f"model {type(model).__name__}: has no parameters to randomise")
    groups: list[list[str]] = []
    for name in names:
        norm = isinstance(model.get_submodule(name), _NORMS)
        if granularity == "blocks" and norm and groups:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def map_similarity(
    original: np.ndarray, other: np.ndarray, mask: np.ndarray | None
) -> tuple[float, float, float]:
    """Spearman of |maps|, Spearman of the signed maps (inside ``mask``), SSIM of |maps|.

    Parameters
    ----------
    original, other : np.ndarray, same shape (spatial)
    mask : np.ndarray of bool, shape spatial, or None (all voxels)

    Returns
    -------
    tuple of float
    """
    a, b = (original, other) if mask is None else (original[..., mask], other[..., mask])
    return (
        _rank_correlation(np.abs(a), np.abs(b)),
        _rank_correlation(a, b),
        ssim(np.abs(original), np.abs(other)),
    )


def randomization_curves(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    target: int,
    seed: int,
    groups: Sequence[Sequence[str]] | None = None,
    modes: Sequence[str] = ("cascade", "independent"),
    every_step: bool = True,
    mask: np.ndarray | None = None,
    original: np.ndarray | None = None,
    **method_options: object,
) -> pd.DataFrame:
    """Cascading and independent parameter randomisation (Adebayo et al. 2018).

    On deep copies of the trained model, layer groups are re-initialised with their
    modules' ``reset_parameters()``, group ``k`` (counted from the output) always
    with the same seed, so the two modes share their first step:

    * ``cascade``: step ``k`` randomises the top ``k`` groups (step ``len(groups)``:
      the whole model is random);
    * ``independent``: step ``k`` randomises group ``k`` only.

    Parameters
    ----------
    model : nn.Module
        The trained model (not modified).
    x : torch.Tensor, shape (1, C, *spatial)
        One sample.
    method : str
        A key of :data:`~brainlens.attribution.METHODS` (single-map methods only).
    target : int
        Class index.
    seed : int
        Seed of the re-initialisation (the global torch RNG state is left alone).
    groups : sequence of sequence of str, optional
        Output of :func:`layer_groups` (default ``layer_groups(model, "blocks")``).
    modes : sequence of {"cascade", "independent"}
    every_step : bool
        Compute every step (default). False computes step 0 and the last cascade step
        only (independent mode is then skipped): what the pass rule reads, at a
        fraction of the cost for expensive methods.
    mask : np.ndarray of bool, shape spatial, optional
        Compare the maps inside these voxels only (brain mask and field of view).
    original : np.ndarray, shape spatial, optional
        The trained model's map, if already computed (signed, as the method returns it).
    **method_options
        Passed to :func:`~brainlens.attribution.attribute`.

    Returns
    -------
    pandas.DataFrame
        ``mode, step, layer, spearman_abs, spearman_signed, ssim``; step 0 (nothing
        random, ``layer`` empty) has correlation 1 by definition; ``layer`` names the
        group randomised at that step (``+``-joined module names).
    """
    if get_method(method).returns_dict:
        raise ConfigError(f"randomization_curves: method {method!r} returns several maps")
    unknown = sorted(set(modes) - {"cascade", "independent"})
    if unknown or not modes:
        raise ConfigError(f"modes: expected 'cascade' and/or 'independent', got {list(modes)}")
    mask = _check_mask(mask, x)
    top_down = [list(g) for g in reversed(groups or layer_groups(model))]
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(top_down))
    device = model_device(model)

    def rel(m: nn.Module) -> np.ndarray:
        return np.asarray(attribute(m, x, method=method, target=target, **method_options))

    ref = rel(model) if original is None else np.asarray(original)
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def randomised_map(which: tuple[int, ...]) -> np.ndarray:
        if which not in cache:
            m = copy.deepcopy(model)
            for g in which:
                for name in top_down[g]:
                    _reset(m, name, int(seeds[g]), device)
            cache[which] = rel(m)
        return cache[which]

    n = len(top_down)
    rows = []
    for mode in modes:
        if mode == "independent" and not every_step:
            continue
        rows.append((mode, 0, "", 1.0, 1.0, 1.0))
        for k in range(1, n + 1) if every_step else [n]:
            which = tuple(range(k)) if mode == "cascade" else (k - 1,)
            r_abs, r_signed, s = map_similarity(ref, randomised_map(which), mask)
            rows.append((mode, k, "+".join(top_down[k - 1]), r_abs, r_signed, s))
    columns = ["mode", "step", "layer", "spearman_abs", "spearman_signed", "ssim"]
    return pd.DataFrame(rows, columns=columns)
