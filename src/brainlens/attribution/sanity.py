"""Is a relevance map meaningful? Randomisation, faithfulness and ground-truth metrics.

Pure metrics on one model and sample (the workflow stage that applies them to test
scans of all folds is :mod:`brainlens.attribution.checks`):

* :func:`randomization_curves` (from :mod:`brainlens.attribution.randomization`):
  model-parameter randomisation (Adebayo et al. 2018), cascading (top layer group
  down) and independent (one group at a time), Spearman rank correlation of |map|
  and of the signed map with the trained model's map; :func:`layer_groups` sets the
  granularity.
* :func:`bootstrap_mean`: seeded percentile bootstrap interval of a mean over scans.
* :func:`deletion_curve`, :func:`insertion_curve`, :func:`curve_gap` (from
  :mod:`brainlens.attribution.faithfulness`): perturbation curves against a random
  order, with a baseline instead of zeros, inside a mask.
* :func:`ground_truth_scores`: for synthetic data with a planted region, where
  the map puts that region among the atlas regions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from brainlens.attribution._common import AttributionError
from brainlens.attribution.faithfulness import (
    area_over_curve,
    area_under_curve,
    curve_gap,
    deletion_curve,
    insertion_curve,
    random_order,
)
from brainlens.attribution.randomization import (
    layer_groups,
    map_similarity,
    parameter_layers,
    randomization_curves,
    ssim,
)
from brainlens.errors import ConfigError

__all__ = [
    "area_over_curve",
    "area_under_curve",
    "bootstrap_mean",
    "curve_gap",
    "deletion_curve",
    "ground_truth_scores",
    "insertion_curve",
    "layer_groups",
    "map_similarity",
    "parameter_layers",
    "random_order",
    "randomization_curves",
    "ssim",
    "summarize_sanity",
]


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: Sequence[object] | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Mean and seeded percentile-bootstrap interval of the mean (NaNs dropped).

    Parameters
    ----------
    values : array-like, shape (N,)
        One value per scan.
    n_resamples : int
        Bootstrap resamples.
    seed : int
    level : float
        Coverage of the interval, in (0, 1).
    groups : array-like, shape (N,), optional
        Cluster of each value (the fold whose model explained the scan). Given, the
        bootstrap is two-stage: draw as many clusters as there are, with replacement,
        then within each drawn cluster as many of its values, with replacement. Scans
        explained by one model are not independent; this interval carries the spread
        between the folds' models too (it does not undo the overlap of their training
        sets). Without groups (or with one cluster), values are resampled as independent.

    Returns
    -------
    mean, low, high : float
        NaN for no values; ``low == high == mean`` for one value.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError(
            f"attribution.sanity.bootstrap: expected a positive int, got {n_resamples!r}"
        )
    if not 0 < level < 1:
        raise ConfigError(f"level: expected a value in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64).ravel()
    g = None if groups is None else np.asarray(groups).ravel()
    if g is not None and g.shape != v.shape:
        raise AttributionError(f"groups: expected {v.shape[0]} labels, got {g.shape[0]}")
    keep = np.isfinite(v)
    v = v[keep]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if g is None or np.unique(g[keep]).size < 2:
        idx = rng.integers(0, v.size, size=(n_resamples, v.size))
        means = v[idx].mean(axis=1)
    else:
        clusters = [v[g[keep] == c] for c in np.unique(g[keep])]
        means = np.empty(n_resamples)
        for r in range(n_resamples):
            drawn = rng.integers(0, len(clusters), size=len(clusters))
            parts = [
                clusters[c][rng.integers(0, clusters[c].size, clusters[c].size)] for c in drawn
            ]
            means[r] = np.concatenate(parts).mean()
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(v.mean()), float(min(lo, v.mean())), float(max(hi, v.mean()))


def summarize_sanity(
    per_scan: pd.DataFrame,
    cascade: pd.DataFrame,
    *,
    method: str,
    threshold: float = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
    requested_per_class: int | None = None,
    min_map_positions: int = 3,
) -> pd.DataFrame:
    """Means over scans with seeded bootstrap intervals, and the verdicts.

    Parameters
    ----------
    per_scan : pandas.DataFrame
        One row per scan (``deletion_area``, ``insertion_area``, ``label``; with a
        ``fold`` column the intervals are two-stage bootstraps over folds, then scans:
        :func:`bootstrap_mean` with ``groups``).
    cascade : pandas.DataFrame
        ``mode, step, layer, scan_id, spearman_abs, spearman_signed`` (and ``fold``) rows
        of all scans.
    method : str
    threshold : float
        Pass threshold on the upper interval end at full randomisation.
    n_resamples, seed : int
        Bootstrap resamples and seed.
    requested_per_class : int, optional
        ``scans_per_class`` asked for (recorded for the report).
    min_map_positions : int
        With a ``map_positions_min`` column in ``per_scan`` (positions per axis of the
        grid the map is computed on, smallest axis), a ``map_positions`` row: ``mean`` =
        the smallest over scans, ``layer`` = the grid (``map_grid``), ``passes`` = at
        least this many positions along every axis (the map can localise).

    Returns
    -------
    pandas.DataFrame
        ``method, statistic, mode, step, layer, n_scans, mean, ci_low, ci_high,
        threshold, passes, requested_per_class, min_map_positions``; ``statistic`` is ``spearman_abs`` or
        ``spearman_signed`` (one row per mode and step; ``passes`` only at the last
        cascade step: ``ci_high < threshold``) or ``deletion_area`` / ``insertion_area``
        (``passes``: ``ci_low > 0``) or, with a random-label run, ``spearman_abs_random_labels``
        / ``spearman_signed_random_labels`` (data randomisation; ``passes``: ``ci_high <
        threshold``) or ``map_positions`` (see ``min_map_positions``). ``passes`` is empty
        where no verdict applies.
    """
    rows = []

    def add(statistic, values, mode="", step=np.nan, layer="", verdict=None, folds=None) -> None:
        mean, lo, hi = bootstrap_mean(values, n_resamples=n_resamples, seed=seed, groups=folds)
        passes = None if verdict is None else bool(verdict(lo, hi))
        n = int(np.isfinite(values).sum())
        rows.append((statistic, mode, step, layer, n, mean, lo, hi, passes))

    if cascade.empty:
        cascade = pd.DataFrame(columns=["mode", "step", "layer", "spearman_abs", "spearman_signed"])
    last = cascade[cascade["mode"] == "cascade"]["step"].max() if len(cascade) else None
    for (mode, step), g in cascade.groupby(["mode", "step"], sort=True):
        for stat in ("spearman_abs", "spearman_signed"):
            rule = (lambda lo, hi: hi < threshold) if (mode, step) == ("cascade", last) else None
            folds = g["fold"].to_numpy() if "fold" in g else None
            layer = str(g["layer"].iloc[0])
            add(stat, g[stat].to_numpy(float), mode, int(step), layer, rule, folds)
    scan_folds = per_scan["fold"].to_numpy() if "fold" in per_scan else None
    for stat in ("deletion_area", "insertion_area"):
        if stat in per_scan:
            values = per_scan[stat].to_numpy(float)
            add(stat, values, verdict=lambda lo, hi: lo > 0, folds=scan_folds)
    if "map_positions_min" in per_scan and per_scan["map_positions_min"].notna().any():
        smallest = float(per_scan["map_positions_min"].min())
        grid = str(per_scan.loc[per_scan["map_positions_min"].idxmin(), "map_grid"])
        n = int(per_scan["map_positions_min"].notna().sum())
        rows.append(
            (
                "map_positions",
                "",
                np.nan,
                grid,
                n,
                smallest,
                smallest,
                smallest,
                bool(smallest >= min_map_positions),
            )
        )
    for stat in ("spearman_abs_random_labels", "spearman_signed_random_labels"):
        if stat in per_scan and per_scan[stat].notna().any():
            values = per_scan[stat].to_numpy(float)
            add(stat, values, verdict=lambda lo, hi: hi < threshold, folds=scan_folds)
    columns = ["statistic", "mode", "step", "layer", "n_scans", "mean", "ci_low", "ci_high"]
    out = pd.DataFrame(rows, columns=[*columns, "passes"])
    out.insert(0, "method", method)
    out["threshold"] = float(threshold)
    out["requested_per_class"] = requested_per_class
    out["min_map_positions"] = int(min_map_positions)
    return out


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
