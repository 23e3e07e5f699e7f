"""Is a map faithful to the model? Deletion and insertion curves against random order.

* :func:`deletion_curve`: replace the most relevant voxels first by a baseline; a
  faithful map makes the target probability drop sooner than a random order does.
* :func:`insertion_curve`: start from the baseline and put the scan's voxels back,
  most relevant first; a faithful map makes the probability rise sooner.
* :func:`area_under_curve`, :func:`area_over_curve`, :func:`curve_gap`: areas and the
  area between a relevance-ordered and a random-ordered curve (positive = faithful).

Voxels are perturbed inside a ``mask`` only (the brain mask and the model's field of
view): outside it the input is never touched. Replacing voxels by 0 would itself be
an "atrophy" of grey-matter maps, so the replacement is a ``baseline`` volume (e.g.
the mean training scan of the fold, :mod:`brainlens.attribution.baselines`).
Ordering is by the map value as given, highest first: for signed maps, evidence for
the target comes first and evidence against it last; for |.| maps, sensitivity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from brainlens.attribution._common import (
    AttributionError,
    check_sample,
    check_target,
    model_device,
    to_model,
)
from brainlens.errors import ConfigError

__all__ = [
    "area_over_curve",
    "area_under_curve",
    "curve_gap",
    "deletion_curve",
    "insertion_curve",
    "random_order",
]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected a positive int, got {value!r}")
    return value


def _baseline_array(x: torch.Tensor, baseline: float | np.ndarray) -> torch.Tensor:
    """The baseline as a tensor of the sample's shape (1, C, *spatial)."""
    if np.isscalar(baseline):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(np.asarray(baseline), dtype=x.dtype, device=x.device)
    if tuple(b.shape) == tuple(x.shape[1:]):
        b = b[None]
    if tuple(b.shape) != tuple(x.shape):
        raise AttributionError(
            f"baseline: expected shape {tuple(x.shape[1:])} (C, *spatial, the sample's), "
            f"got {tuple(np.shape(baseline))}. Fix: use the fold's baseline on the model input grid"
        )
    if not bool(torch.isfinite(b).all()):
        raise AttributionError("baseline: contains NaN/inf. Fix: rebuild the fold's baseline")
    return b


def _order(relevance: np.ndarray, spatial: tuple[int, ...], mask: np.ndarray | None) -> np.ndarray:
    """Flat voxel indices of ``mask`` (all voxels without one), most relevant first."""
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.shape != spatial:
        raise AttributionError(
            f"relevance: expected shape {spatial} (the input's spatial shape), got {rel.shape}"
        )
    if not np.all(np.isfinite(rel)):
        raise AttributionError("relevance: contains NaN/inf. Fix: check the attribution method")
    if mask is None:
        candidates = np.arange(rel.size)
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != spatial:
            raise AttributionError(f"mask: expected shape {spatial}, got {m.shape}")
        candidates = np.flatnonzero(m)
        if candidates.size == 0:
            raise AttributionError("mask: is empty; expected at least one voxel")
    return candidates[np.argsort(-rel.ravel()[candidates], kind="stable")]


def _curve(
    model: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    order: np.ndarray,
    *,
    target: int,
    steps: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """P(target) while the voxels ``order[:k]`` of ``start`` take the values of ``end``."""
    fractions = np.linspace(0.0, 1.0, _positive_int("steps", steps) + 1)
    counts = np.round(fractions * order.size).astype(int)
    batch_size = _positive_int("batch_size", batch_size)
    n_sp = start.ndim - 2
    order_t = torch.as_tensor(order, device=start.device)
    end_flat = end.reshape(end.shape[1], -1)
    scores = []
    with torch.no_grad():
        for first in range(0, len(counts), batch_size):
            chunk = counts[first : first + batch_size]
            batch = start.repeat(len(chunk), 1, *([1] * n_sp))
            flat = batch.view(len(chunk), start.shape[1], -1)
            for i, k in enumerate(chunk):
                idx = order_t[:k]
                flat[i, :, idx] = end_flat[:, idx]
            probs = torch.softmax(model(batch), dim=1)[:, target]
            scores.append(probs.cpu().numpy())
    return fractions, np.concatenate(scores).astype(np.float64)


def _prepare(
    model: nn.Module, x: torch.Tensor, target: int, baseline: float | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    check_sample(x)
    model.eval()
    x = to_model(model, x)
    check_target(model, x, target)
    return x, _baseline_array(x, baseline).to(model_device(model))


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    relevance: np.ndarray,
    *,
    target: int,
    steps: int = 20,
    baseline: float | np.ndarray = 0.0,
    mask: np.ndarray | None = None,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Target probability while the most relevant voxels are replaced by the baseline.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (put in eval mode).
    x : torch.Tensor, shape (1, C, *spatial)
        One sample.
    relevance : np.ndarray, shape spatial
        Map to test, highest = deleted first; ties are broken by voxel order (stable sort).
    target : int
        Class index.
    steps : int
        Number of steps; ``fractions`` has ``steps + 1`` points from 0 to 1.
    baseline : float or np.ndarray, shape (C, *spatial) or (1, C, *spatial)
        Values written into deleted voxels (a float: the same in every voxel and channel).
    mask : np.ndarray of bool, shape spatial, optional
        Only these voxels are ranked and deleted (e.g. brain mask and field of view);
        fractions are of the mask's voxels. Voxels outside it keep the scan's values.
    batch_size : int
        Perturbed copies evaluated per forward pass.

    Returns
    -------
    fractions : np.ndarray, shape (steps + 1,)
        Fraction of (masked) voxels deleted.
    scores : np.ndarray, shape (steps + 1,)
        Softmax probability of ``target`` at each fraction.
    """
    x, base = _prepare(model, x, target, baseline)
    order = _order(relevance, tuple(x.shape[2:]), mask)
    return _curve(model, x, base, order, target=target, steps=steps, batch_size=batch_size)


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    relevance: np.ndarray,
    *,
    target: int,
    steps: int = 20,
    baseline: float | np.ndarray = 0.0,
    mask: np.ndarray | None = None,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Target probability while the scan's voxels are inserted into the baseline.

    The start image is the scan with every ``mask`` voxel (all voxels without a mask)
    set to the baseline; the most relevant voxels get their scan values back first.
    At fraction 1 the image is the scan itself. Parameters and returns as
    :func:`deletion_curve` (``fractions`` = share of masked voxels inserted).
    """
    x, base = _prepare(model, x, target, baseline)
    order = _order(relevance, tuple(x.shape[2:]), mask)
    start = x.clone()
    flat = start.view(x.shape[1], -1)
    idx = torch.as_tensor(order, device=x.device)
    flat[:, idx] = base.reshape(x.shape[1], -1)[:, idx]
    return _curve(model, start, x, order, target=target, steps=steps, batch_size=batch_size)


def random_order(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A seeded random "map" (uniform in [0, 1)) that defines a random voxel order.

    Returns
    -------
    np.ndarray, float32, shape ``shape``
    """
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _check_curve(fractions: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(fractions, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if f.ndim != 1 or f.shape != s.shape or f.size < 2:
        raise AttributionError(
            f"curve: expected two 1D arrays of equal length >= 2, "
            f"got shapes {f.shape} and {s.shape}"
        )
    if np.any(np.diff(f) <= 0):
        raise AttributionError("curve: fractions must be strictly increasing")
    return f, s


def area_under_curve(fractions: np.ndarray, scores: np.ndarray) -> float:
    """Trapezoid area under a deletion or insertion curve, ``integral of score df``.

    Parameters
    ----------
    fractions : np.ndarray, shape (K,)
        Strictly increasing.
    scores : np.ndarray, shape (K,)

    Returns
    -------
    float
    """
    f, s = _check_curve(fractions, scores)
    return float(np.trapezoid(s, f))


def area_over_curve(fractions: np.ndarray, scores: np.ndarray) -> float:
    """Area between the starting score and the deletion curve.

    ``AOC = integral over f of (scores[0] - score(f)) df`` (trapezoid rule). Higher =
    the target probability fell sooner. Can be negative when deletion raises the score.

    Parameters
    ----------
    fractions : np.ndarray, shape (K,)
        Strictly increasing, from 0 to 1.
    scores : np.ndarray, shape (K,)

    Returns
    -------
    float
    """
    f, s = _check_curve(fractions, scores)
    return float(np.trapezoid(s[0] - s, f))


def curve_gap(
    fractions: np.ndarray, relevance_scores: np.ndarray, random_scores: np.ndarray, *, kind: str
) -> float:
    """Area between the relevance-ordered and the random-ordered curve; > 0 = faithful.

    Parameters
    ----------
    fractions : np.ndarray, shape (K,)
    relevance_scores, random_scores : np.ndarray, shape (K,)
        The curves in relevance order and in random order (same fractions).
    kind : {"deletion", "insertion"}
        Deletion: ``AUC(random) - AUC(relevance)`` (the probability should fall sooner);
        insertion: ``AUC(relevance) - AUC(random)`` (it should rise sooner).

    Returns
    -------
    float
        In [-1, 1].
    """
    if kind not in ("deletion", "insertion"):
        raise ConfigError(f"kind: expected 'deletion' or 'insertion', got {kind!r}")
    gap = area_under_curve(fractions, relevance_scores) - area_under_curve(fractions, random_scores)
    return -gap if kind == "deletion" else gap
