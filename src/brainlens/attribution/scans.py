"""File-level attribution: many scans x many methods -> NIfTI maps + a table."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from brainlens.attribution._common import AttributionError, count_forward_passes
from brainlens.attribution.maps import save_map
from brainlens.attribution.methods import attribute, check_options, get_method, method_base
from brainlens.errors import ConfigError

#: Columns of the table :func:`attribute_scans` returns.
COLUMNS = ["scan_id", "method", "target", "path", "seconds", "forward_passes"]


def relevance_path(out_dir: str | Path, method: str, scan_id: str) -> Path:
    """``out_dir/<method>/<scan_id>_relevance.nii.gz``."""
    return Path(out_dir) / method / f"{scan_id}_relevance.nii.gz"


def attribute_scans(
    model: nn.Module,
    volumes: np.ndarray,
    *,
    scan_ids: Sequence[str],
    targets: Sequence[int],
    methods: Mapping[str, Mapping[str, object]],
    affine: np.ndarray,
    out_dir: str | Path,
    atlas_labels: np.ndarray | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Compute and write relevance maps for every scan and method.

    Parameters
    ----------
    model : nn.Module
        Trained 3D classifier (put in eval mode).
    volumes : np.ndarray, shape (N, C, X, Y, Z)
        Preprocessed scans on the analysis grid (a memmap is fine; one scan is
        converted to float32 at a time).
    scan_ids : sequence of str, length N
        Unique IDs, used in file names.
    targets : sequence of int, length N
        Class to explain per scan (e.g. the true or the predicted label).
    methods : mapping of str to mapping
        Method name -> its options (plain kwargs, e.g. from the config).
    affine : np.ndarray, shape (4, 4)
        Grid affine written into every map.
    out_dir : str or Path
        Maps go to ``out_dir/<method>/<scan_id>_relevance.nii.gz``.
    atlas_labels : np.ndarray of int, shape (X, Y, Z), optional
        Passed to ``region_occlusion`` unless its options already hold ``atlas_labels``.
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    pandas.DataFrame
        One row per (scan, method): ``scan_id, method, target, path, seconds,
        forward_passes`` (samples evaluated by the model, including the one
        validation forward pass per call).
    """
    vols = np.asarray(volumes) if not isinstance(volumes, np.ndarray) else volumes
    if vols.ndim != 5:
        raise AttributionError(
            f"volumes: expected shape (N, C, X, Y, Z), got {vols.shape}. "
            "Fix: add a channel axis, e.g. volumes[:, None]"
        )
    n = vols.shape[0]
    ids = [str(s) for s in scan_ids]
    if len(ids) != n or len(targets) != n:
        raise AttributionError(
            f"attribute_scans: {n} volumes but {len(ids)} scan_ids and {len(targets)} targets; "
            "expected one of each per volume"
        )
    dupes = sorted({s for s in ids if ids.count(s) > 1})
    if dupes:
        raise AttributionError(f"scan_ids: must be unique, duplicated: {dupes}")
    if not methods:
        raise ConfigError("attribution methods: expected at least one method, got none")
    plan: dict[str, dict[str, object]] = {}
    for name, opts in methods.items():
        spec = get_method(name)
        if spec.returns_dict:
            raise ConfigError(
                f"attribution method {name!r} returns one map per layer and cannot be written "
                "by attribute_scans. Fix: call attribute(..., method='layer_maps') directly"
            )
        options = dict(opts or {})
        if method_base(name) == "region_occlusion" and "atlas_labels" not in options:
            if atlas_labels is None:
                raise ConfigError(
                    "region_occlusion needs an atlas. Fix: pass atlas_labels=<(X, Y, Z) int array>"
                )
            options["atlas_labels"] = atlas_labels
        check_options(name, options)
        plan[name] = options

    rows = []
    bar = tqdm(
        total=n * len(plan), file=sys.stderr, disable=not progress, desc="attribution", unit="map"
    )
    try:
        for i, scan_id in enumerate(ids):
            x = torch.from_numpy(np.ascontiguousarray(vols[i : i + 1], dtype=np.float32))
            for name, options in plan.items():
                bar.set_postfix_str(f"{scan_id} {name}")
                with count_forward_passes(model) as counter:
                    t0 = time.perf_counter()
                    rel = attribute(model, x, method=name, target=int(targets[i]), **options)
                    seconds = time.perf_counter() - t0
                path = save_map(rel, affine, relevance_path(out_dir, name, scan_id))
                rows.append((scan_id, name, int(targets[i]), str(path), seconds, counter.samples))
                bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame(rows, columns=COLUMNS)
