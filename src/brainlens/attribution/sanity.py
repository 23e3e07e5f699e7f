"""Is a relevance map meaningful? Randomisation, deletion and ground-truth checks.

* :func:`randomization_check` / :func:`passes_randomization`: cascading model
  parameter randomisation (Adebayo et al. 2018). A map that barely changes when
  the trained weights are replaced by random ones does not explain the model.
* :func:`deletion_curve` / :func:`area_over_curve`: remove the most relevant
  voxels first; a faithful map makes the target probability drop fast.
* :func:`ground_truth_scores`: for synthetic data with a planted region, where
  the map puts that region among the atlas regions.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats
from torch import nn

from brainlens.attribution._common import (
    AttributionError,
    check_sample,
    check_target,
    model_device,
    to_model,
)
from brainlens.attribution.methods import attribute, get_method
from brainlens.errors import ConfigError, ModelError

#: Default threshold of :func:`passes_randomization` on |Spearman rho|.
RANDOMIZATION_THRESHOLD = 0.5


# --------------------------------------------------------------------------- similarity


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho; 1 for two identical constant maps, 0 if only one is constant."""
    a, b = a.ravel(), b.ravel()
    const_a, const_b = np.ptp(a) == 0, np.ptp(b) == 0
    if const_a or const_b:
        return 1.0 if (const_a and const_b and np.array_equal(a, b)) else 0.0
    return float(stats.spearmanr(a, b).statistic)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi == lo else (a - lo) / (hi - lo)


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
    x, y = _minmax(a.astype(np.float64)), _minmax(b.astype(np.float64))
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


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    target: int,
    seed: int,
    absolute: bool = True,
    cascade: bool = True,
    mask: np.ndarray | None = None,
    **method_options: object,
) -> pd.DataFrame:
    """Cascading parameter randomisation (Adebayo et al. 2018).

    On a deep copy of the trained model, layers that own parameters are
    re-initialised one at a time from the output towards the input (registration
    order of ``named_modules`` is taken as forward order); after each step the map
    is recomputed and compared with the trained model's map. Each layer is
    re-initialised with its own ``reset_parameters()`` under a seeded RNG (the
    global torch RNG state is restored afterwards).

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
        Seed of the re-initialisation.
    absolute : bool
        Compare |map| (default), so sign flips do not count as change.
    cascade : bool
        Recompute the map after every step (default). ``False`` re-initialises all
        layers the same way but computes the map only once, at the last step (all
        layers random): what :func:`passes_randomization` reads, at a fraction of the
        cost for expensive methods (occlusion, integrated gradients).
    mask : np.ndarray of bool, shape spatial, optional
        Compare the maps inside these voxels only (e.g. the brain mask). Outside the
        head most methods give (near) zero for any model, and those shared ties
        alone pull the rank correlation towards 1 whatever the map does in the brain.
    **method_options
        Passed to :func:`~brainlens.attribution.attribute`.

    Returns
    -------
    pandas.DataFrame
        One row per cascade step: ``step`` (1 = top layer only), ``layer`` (the
        layer re-initialised at that step; all layers above it are random too),
        ``spearman`` (rank correlation with the original map over all voxels, or
        the ``mask``'s; 1 for identical constant maps, 0 if only one map is constant)
        and ``ssim`` (whole map).
    """
    if get_method(method).returns_dict:
        raise ConfigError(f"randomization_check: method {method!r} returns several maps")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(x.shape[2:]):
            raise AttributionError(
                f"mask: expected the input's spatial shape {tuple(x.shape[2:])}, got {mask.shape}"
            )
        if not mask.any():
            raise AttributionError("mask: is empty; expected at least one voxel")
    layers = parameter_layers(model)
    if not layers:
        raise ModelError(f"model {type(model).__name__}: has no parameters to randomise")

    def rel(m: nn.Module) -> np.ndarray:
        r = np.asarray(attribute(m, x, method=method, target=target, **method_options))
        return np.abs(r) if absolute else r

    original = rel(model)
    randomized = copy.deepcopy(model)
    device = model_device(model)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(layers))
    rows = []
    for step, (name, layer_seed) in enumerate(zip(reversed(layers), seeds, strict=True), 1):
        module = randomized.get_submodule(name)
        reset = getattr(module, "reset_parameters", None)
        if not callable(reset):
            raise ModelError(
                f"layer {name!r} ({type(module).__name__}): has parameters but no "
                "reset_parameters(), so it cannot be re-initialised. Fix: implement "
                "reset_parameters() in that module"
            )
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(layer_seed))
            reset()
        if not cascade and step < len(layers):
            continue
        r = rel(randomized)
        rho = (
            _rank_correlation(original, r)
            if mask is None
            else _rank_correlation(original[..., mask], r[..., mask])
        )
        rows.append((step, name, rho, ssim(original, r)))
    return pd.DataFrame(rows, columns=["step", "layer", "spearman", "ssim"])


def passes_randomization(
    df: pd.DataFrame, threshold: float = RANDOMIZATION_THRESHOLD, *, require: str = "full"
) -> bool:
    """Did the map change when the model's weights were randomised?

    The statistic is |Spearman rho| between the trained model's map and the
    randomised model's map. With ``require="full"`` (default) it is taken at the
    last cascade step (all layers random); with ``require="every"`` every step
    must be below the threshold, i.e. the map must already react when only the
    classifier head is random (class-invariant maps such as ``cam_ng2018``, which
    never look at the head, fail this stricter form). The method passes if the
    statistic is below ``threshold`` (default 0.5: at most a quarter of the rank
    variance shared). Maps that only echo the input (edges, intensities) keep a
    high correlation and fail.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`randomization_check`.
    threshold : float
        In (0, 1].
    require : {"full", "every"}
        Which cascade steps must fall below the threshold.

    Returns
    -------
    bool
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"threshold: expected a value in (0, 1], got {threshold}")
    if require not in ("full", "every"):
        raise ConfigError(f"require: expected 'full' or 'every', got {require!r}")
    if df.empty or "spearman" not in df.columns:
        raise AttributionError(
            "passes_randomization: expected the non-empty table of randomization_check "
            f"with a 'spearman' column, got columns {list(df.columns)} and {len(df)} rows"
        )
    ordered = df.sort_values("step") if "step" in df.columns else df
    rho = np.abs(ordered["spearman"].to_numpy(dtype=float))
    if np.any(np.isnan(rho)):
        raise AttributionError("passes_randomization: the 'spearman' column contains NaN")
    return bool(rho[-1] < threshold) if require == "full" else bool(np.all(rho < threshold))


# --------------------------------------------------------------------------- deletion


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    relevance: np.ndarray,
    *,
    target: int,
    steps: int = 20,
    baseline: float = 0.0,
    mask: np.ndarray | None = None,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Target probability while the most relevant voxels are removed first.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (put in eval mode).
    x : torch.Tensor, shape (1, C, *spatial)
        One sample.
    relevance : np.ndarray, shape spatial
        Map to test; ties are broken by voxel order (stable sort).
    target : int
        Class index.
    steps : int
        Number of deletion steps; ``fractions`` has ``steps + 1`` points from 0 to 1.
    baseline : float
        Value written into deleted voxels (all channels).
    mask : np.ndarray of bool, shape spatial, optional
        Only these voxels are ranked and deleted (e.g. the brain mask);
        fractions are of the mask's voxels.
    batch_size : int
        Perturbed copies evaluated per forward pass.

    Returns
    -------
    fractions : np.ndarray, shape (steps + 1,)
        Fraction of (masked) voxels removed.
    scores : np.ndarray, shape (steps + 1,)
        Softmax probability of ``target`` at each fraction.
    """
    check_sample(x)
    spatial = tuple(x.shape[2:])
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.shape != spatial:
        raise AttributionError(
            f"relevance: expected shape {spatial} (the input's spatial shape), got {rel.shape}"
        )
    if not np.all(np.isfinite(rel)):
        raise AttributionError("relevance: contains NaN/inf. Fix: check the attribution method")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps: expected a positive int, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive int, got {batch_size!r}")
    if mask is None:
        candidates = np.arange(rel.size)
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != spatial:
            raise AttributionError(f"mask: expected shape {spatial}, got {m.shape}")
        candidates = np.flatnonzero(m)
        if candidates.size == 0:
            raise AttributionError("mask: is empty; expected at least one voxel")
    order = candidates[np.argsort(-rel.ravel()[candidates], kind="stable")]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * order.size).astype(int)

    model.eval()
    device = model_device(model)
    x = to_model(model, x)
    check_target(model, x, target)
    order_t = torch.as_tensor(order, device=device)
    scores = []
    with torch.no_grad():
        for start in range(0, len(counts), batch_size):
            chunk = counts[start : start + batch_size]
            batch = x.repeat(len(chunk), 1, *([1] * len(spatial)))
            flat = batch.view(len(chunk), x.shape[1], -1)
            for i, k in enumerate(chunk):
                flat[i, :, order_t[:k]] = baseline
            probs = torch.softmax(model(batch), dim=1)[:, target]
            scores.append(probs.cpu().numpy())
    return fractions, np.concatenate(scores).astype(np.float64)


def area_over_curve(fractions: np.ndarray, scores: np.ndarray) -> float:
    """Area between the starting score and the deletion curve.

    ``AOC = integral over f in [0, 1] of (scores[0] - score(f)) df`` (trapezoid
    rule). Higher = the target probability fell sooner = the map found the
    voxels the model needs. Can be negative when deletion raises the score.

    Parameters
    ----------
    fractions : np.ndarray, shape (K,)
        Increasing, from 0 to 1.
    scores : np.ndarray, shape (K,)

    Returns
    -------
    float
    """
    f = np.asarray(fractions, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if f.ndim != 1 or f.shape != s.shape or f.size < 2:
        raise AttributionError(
            f"area_over_curve: expected two 1D arrays of equal length >= 2, "
            f"got shapes {f.shape} and {s.shape}"
        )
    if np.any(np.diff(f) <= 0):
        raise AttributionError("area_over_curve: fractions must be strictly increasing")
    return float(np.trapezoid(s[0] - s, f))


# --------------------------------------------------------------------------- ground truth


def ground_truth_scores(
    relevance: np.ndarray,
    labels: np.ndarray,
    *,
    region_label: int,
    brain_mask: np.ndarray | None = None,
    background_label: int = 0,
    tolerance: float = 2.0,
) -> dict[str, float | int | bool]:
    """How well a map finds a planted region.

    Parameters
    ----------
    relevance : np.ndarray, shape (X, Y, Z)
        The map (higher = more relevant).
    labels : np.ndarray of int, shape (X, Y, Z)
        Atlas labels on the same grid.
    region_label : int
        Label of the planted region.
    brain_mask : np.ndarray of bool, shape (X, Y, Z), optional
        Voxels considered (default: all non-background voxels of ``labels``).
    background_label : int
        Label that is not a region.
    tolerance : float
        Pointing-game tolerance in voxels (Euclidean distance to the region).

    Returns
    -------
    dict
        ``rank`` (1 = highest mean relevance; ties share the worst rank, so a constant
        map ranks the region last),
        ``n_regions``, ``region_mean``, ``mass_share`` (share of the positive
        relevance inside the mask that lies in the region; NaN if there is none),
        ``pointing_hit`` (every voxel reaching the maximum relevance lies within
        ``tolerance`` voxels of the region, so a constant map never hits).
    """
    rel = np.asarray(relevance, dtype=np.float64)
    lab = np.asarray(labels)
    if rel.shape != lab.shape:
        raise AttributionError(
            f"ground_truth_scores: relevance has shape {rel.shape}, labels {lab.shape}; "
            "expected the same grid. Fix: resample the atlas to the analysis grid"
        )
    if not np.all(np.isfinite(rel)):
        raise AttributionError("relevance: contains NaN/inf")
    mask = lab != background_label
    if brain_mask is not None:
        bm = np.asarray(brain_mask, dtype=bool)
        if bm.shape != rel.shape:
            raise AttributionError(f"brain_mask: expected shape {rel.shape}, got {bm.shape}")
        mask &= bm
    region = (lab == region_label) & mask
    if not region.any():
        raise AttributionError(
            f"region_label {region_label}: has no voxels inside the mask; expected one of "
            f"{sorted(int(v) for v in np.unique(lab[mask]))}"
        )
    ids, inverse = np.unique(lab[mask], return_inverse=True)
    means = np.bincount(inverse, weights=rel[mask]) / np.bincount(inverse)
    r_mean = float(means[ids == region_label][0])
    # ties share the worst rank: a constant (e.g. all-zero) map must not "find" the region
    rank = int(np.sum(means >= r_mean))
    positive = np.clip(rel[mask], 0, None)
    total = float(positive.sum())
    share = float(np.clip(rel[region], 0, None).sum() / total) if total > 0 else float("nan")
    dist = ndimage.distance_transform_edt(~region)
    peak = mask & (rel == rel[mask].max())
    hit = bool(np.all(dist[peak] <= tolerance))
    return {
        "rank": rank,
        "n_regions": int(ids.size),
        "region_mean": r_mean,
        "mass_share": share,
        "pointing_hit": hit,
    }
