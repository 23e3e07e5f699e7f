"""Inputs of the sanity-check stage (:mod:`brainlens.attribution.checks`): which scans,
which settings, the brain mask, the fold baselines and a random-label run's models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from brainlens.errors import ConfigError, InputFileError
from brainlens.training import load_trained_model

#: Keys of ``attribution.sanity.overrides.<method>``.
OVERRIDE_KEYS = ("scans_per_class", "cascade", "independent")


def select_scans(
    tables: Sequence[pd.DataFrame], *, per_class: int, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Up to ``per_class`` explained scans of each class, drawn from all folds' tables.

    Per class, each fold's scans are shuffled (seeded) and taken round-robin over the
    folds in a seeded order, so the scans spread over the folds; a scan that appears
    in several tables (repeated splits) is taken once.

    Parameters
    ----------
    tables : sequence of pandas.DataFrame
        Attribution tables (``fold, scan_id, label, target, path, ...``), one per fold.
    per_class : int
    seed : int

    Returns
    -------
    chosen : pandas.DataFrame
        The chosen rows plus ``source`` (index of their table), sorted by source and
        scan.
    counts : dict class -> int
        Scans chosen per class (fewer than ``per_class`` when fewer were explained).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(
            f"attribution.sanity.scans_per_class: expected a positive int, got {per_class!r}"
        )
    rng = np.random.default_rng(seed)
    pooled = pd.concat(
        [t.assign(source=i) for i, t in enumerate(tables)], ignore_index=True
    ).astype({"label": str})
    chosen, counts = [], {}
    for label in sorted(pooled["label"].unique()):
        queues = [
            g.iloc[rng.permutation(len(g))].to_dict("records")
            for _, g in pooled[pooled["label"] == label].groupby("source", sort=True)
        ]
        queues = [queues[i] for i in rng.permutation(len(queues))]
        taken: dict[str, dict] = {}
        while len(taken) < per_class and any(queues):
            for q in queues:
                while q and q[0]["scan_id"] in taken:
                    q.pop(0)
                if q and len(taken) < per_class:
                    rec = q.pop(0)
                    taken[rec["scan_id"]] = rec
        chosen.extend(taken.values())
        counts[label] = len(taken)
    out = pd.DataFrame(chosen, columns=[*pooled.columns])
    return out.sort_values(["source", "scan_id"]).reset_index(drop=True), counts


def method_settings(settings: Mapping[str, Any], method: str) -> dict[str, Any]:
    """``attribution.sanity`` with the method's ``overrides`` applied (key, then base name).

    Returns
    -------
    dict
        The settings without ``overrides``.
    """
    from brainlens.attribution.methods import method_base

    out = {k: v for k, v in settings.items() if k != "overrides"}
    overrides = settings.get("overrides") or {}
    for key in (method_base(method), method):
        extra = dict(overrides.get(key) or {})
        unknown = sorted(set(extra) - set(OVERRIDE_KEYS))
        if unknown:
            raise ConfigError(
                f"attribution.sanity.overrides.{key}: unknown key(s) {unknown}; expected a "
                f"subset of {list(OVERRIDE_KEYS)}"
            )
        out.update(extra)
    return out


def load_brain_mask(
    templates_dir: Path | None, resolution: float | None, atlas: np.ndarray | None, atlas_nii: Any
) -> np.ndarray | None:
    """The template brain mask on the analysis grid (bool, (X, Y, Z)), or None."""
    if templates_dir is None:
        return None
    from brainlens.grid import template_paths

    if resolution is None:
        raise ConfigError("sanity_checks: templates_dir given without its resolution")
    path = template_paths(Path(templates_dir), resolution)["brain_mask"]
    if not path.exists():
        raise InputFileError(
            path,
            f"not found (the template brain mask for resolution {resolution} mm)",
            f"build the templates into {templates_dir} (the workflow's templates rule)",
        )
    brain = np.asanyarray(nib.load(str(path)).dataobj) > 0
    if atlas is not None and brain.shape != atlas.shape:
        raise InputFileError(
            path,
            f"shape {brain.shape}, expected the atlas grid {atlas.shape} of {atlas_nii}",
            "build both for the same preprocess.resolution",
        )
    return brain


def fold_baseline(files: tuple[Path, Path] | None, folds_tsv: Path | None, fold: int):
    """The fold's :class:`~brainlens.attribution.baselines.Baseline` (zeros without files).

    With ``folds_tsv`` the sidecar's provenance is audited first (a baseline computed from
    validation or test scans is a :class:`~brainlens.errors.LeakageError`).
    """
    from brainlens.attribution.baselines import (
        ZERO_BASELINE,
        check_baseline_provenance,
        read_baseline,
    )

    if files is None:
        return ZERO_BASELINE
    npy, sidecar = (Path(f) for f in files)
    if folds_tsv is not None:
        check_baseline_provenance(sidecar, Path(folds_tsv), fold)
    return read_baseline(npy, sidecar)


def random_label_model(path: Path | None, meta: Mapping[str, Any]) -> torch.nn.Module | None:
    """The fold's model of a random-label run, checked to be one and to match ``meta``."""
    if path is None:
        return None
    model, rl_meta = load_trained_model(Path(path).parent)
    if not rl_meta.get("random_labels"):
        raise InputFileError(
            path,
            "was not trained with random labels (folds.random_labels: false)",
            "point attribution.sanity.random_label_run at the results of a run with "
            "folds.random_labels: true",
        )
    for key in ("model", "fold", "grid_shape"):
        if rl_meta.get(key) != meta.get(key):
            raise InputFileError(
                path,
                f"{key} {rl_meta.get(key)!r}, expected {meta.get(key)!r} (this run's)",
                "use a random-label run of the same config (only folds.random_labels differs)",
            )
    return model


__all__ = [
    "OVERRIDE_KEYS",
    "fold_baseline",
    "load_brain_mask",
    "method_settings",
    "random_label_model",
    "select_scans",
]
