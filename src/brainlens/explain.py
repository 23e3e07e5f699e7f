"""File-level attribution and sanity-check stages of the workflow.

These functions tie together a trained fold (:mod:`brainlens.training`), the packed
inputs (:mod:`brainlens.packing`), the folds table and the attribution methods
(:mod:`brainlens.attribution`). Maps are made for the **test** scans of the fold
only (the model never saw them), explaining each scan's **true** class, and are
written on the analysis grid with the pack's affine.

2D models (coronal slices, dynamic images) are explained on their 2D input, and the
2D map is put back on the 3D grid with :func:`brainlens.transforms.to_volume`: at the
slice positions for slice models, spread along the pooled axis (by each slice's
weight in the dynamic image) for projection models. Atlas-region occlusion needs a
3D input and is refused for 2D models.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from brainlens.attribution import attribute, mean_maps, method_base, save_map
from brainlens.attribution._common import count_forward_passes
from brainlens.errors import ConfigError, InputFileError, ModelError
from brainlens.folds import read_folds, scan_id
from brainlens.models import field_of_view_mask
from brainlens.packing import open_pack
from brainlens.training import load_trained_model

log = logging.getLogger(__name__)


def _test_scans(folds_tsv: Path, fold: int) -> pd.DataFrame:
    folds = read_folds(folds_tsv)
    test = folds[(folds["fold"] == int(fold)) & (folds["role"] == "test")].copy()
    test["scan_id"] = [
        scan_id(p, s) for p, s in zip(test["participant_id"], test["session_id"], strict=True)
    ]
    return test.sort_values("scan_id").reset_index(drop=True)


def load_volumes(
    packs: Sequence[tuple[Path, Path]], scan_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Stack packed inputs as channels for some scans.

    Returns
    -------
    volumes : ndarray, shape (N, C, X, Y, Z), float32
    affine : ndarray, shape (4, 4)
    """
    opened = [open_pack(npy, idx) for npy, idx in packs]
    chans = [p.array[p.rows(scan_ids)].astype(np.float32) for p in opened]
    return np.stack(chans, axis=1), opened[0].affine


def _method_options(
    method: str, options: Mapping[str, Any], atlas_labels: np.ndarray | None
) -> dict:
    opts = {k: v for k, v in options.items() if k != "atlas"}
    if method_base(method) == "region_occlusion":
        if atlas_labels is None:
            raise ConfigError("attribution.methods.region_occlusion needs an atlas")
        opts["atlas_labels"] = atlas_labels
    return opts


def _model_input(meta: Mapping[str, Any]):
    """``f(x3d) -> model input``: identity for 3D models, the 3D->2D transform otherwise."""
    spec = meta.get("transform")
    if not spec:
        return lambda x: x
    from brainlens.transforms import make_transform

    transform = make_transform(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    return lambda x: torch.from_numpy(
        np.ascontiguousarray(transform(x[0].numpy()), dtype=np.float32)
    )[None]


def _explainer(model: torch.nn.Module, meta: Mapping[str, Any], method: str):
    """``f(x3d, target, options) -> (X, Y, Z)`` map for a 3D or a 2D (transformed) model."""
    spec = meta.get("transform")
    if not spec:
        return lambda x, target, opts: attribute(model, x, method=method, target=target, **opts)
    from brainlens.transforms import to_volume

    if method_base(method) == "region_occlusion":
        raise ConfigError(
            f"attribution.methods.region_occlusion: needs a 3D model, but {meta['model']} takes "
            f"2D input ({spec['name']}). Fix: drop region_occlusion for 2D models"
        )
    options = {k: v for k, v in spec.items() if k != "name"}
    to_input = _model_input(meta)

    def explain(x: torch.Tensor, target: int, opts: Mapping[str, Any]) -> np.ndarray:
        map2d = attribute(model, to_input(x), method=method, target=target, **opts)
        return to_volume(
            map2d, transform=spec["name"], options=options, volume_shape=tuple(x.shape[1:])
        )

    return explain


def attribute_fold(
    *,
    model_path: Path,
    packs: Sequence[tuple[Path, Path]],
    folds_tsv: Path,
    fold: int,
    method: str,
    options: Mapping[str, Any],
    atlas_nii: Path | None,
    out_dir: Path,
    out_table: Path,
    max_scans: int | None = None,
    seed: int,
) -> pd.DataFrame:
    """Relevance maps of one method for the test scans of one fold.

    Writes ``out_dir/<scan_id>_relevance.nii.gz`` per test scan,
    ``out_dir/mean_class-<class>.nii.gz`` per true class and ``out_dir/mean_all.nii.gz``,
    and ``out_table`` (``fold, scan_id, label, target, method, path, seconds,
    forward_passes``).

    Parameters
    ----------
    model_path : Path
        ``model.pt`` of the fold.
    packs : sequence of (npy, index)
        Packed inputs in the model's channel order.
    folds_tsv : Path
    fold : int
    method : str
        A name from :data:`brainlens.attribution.METHODS`, or ``name@label`` for a
        second configured instance (written as is into the table's ``method`` column).
    options : mapping
        The method's options from the config (``atlas`` is resolved to ``atlas_nii``).
    atlas_nii : Path or None
        Atlas label image on the grid (for ``region_occlusion``).
    out_dir, out_table : Path
    max_scans : int, optional
        Cap on test scans (a seeded random subset, stratified by nothing).
    seed : int
        Seeds torch (for methods with randomness) and the subset.
    """
    torch.manual_seed(seed)
    model, meta = load_trained_model(Path(model_path).parent)
    explain = _explainer(model, meta, method)
    classes = list(meta["class_names"])
    test = _test_scans(folds_tsv, fold)
    if max_scans is not None and len(test) > max_scans:
        rng = np.random.default_rng(seed)
        test = test.iloc[np.sort(rng.choice(len(test), max_scans, replace=False))].reset_index(
            drop=True
        )
    volumes, affine = load_volumes(packs, list(test["scan_id"]))
    atlas = np.asanyarray(nib.load(str(atlas_nii)).dataobj).astype(np.int64) if atlas_nii else None
    opts = _method_options(method, options, atlas)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, maps = [], []
    for i, rec in enumerate(test.to_dict("records")):
        target = classes.index(rec["label"])
        x = torch.from_numpy(volumes[i : i + 1])
        start = time.perf_counter()
        with count_forward_passes(model) as counter:
            rel = explain(x, target, opts)
        seconds = time.perf_counter() - start
        path = out_dir / f"{rec['scan_id']}_relevance.nii.gz"
        save_map(rel, affine, path)
        maps.append(rel)
        rows.append(
            {
                "fold": int(fold),
                "scan_id": rec["scan_id"],
                "label": rec["label"],
                "target": target,
                "method": method,
                "path": str(path),
                "seconds": round(seconds, 3),
                "forward_passes": int(counter.samples),
            }
        )
        log.info(
            "%s %s: %.1f s, %d forward passes", method, rec["scan_id"], seconds, counter.samples
        )
    for cls, mean in mean_maps(maps, list(test["label"])).items():
        save_map(mean, affine, out_dir / f"mean_class-{cls}.nii.gz")
    save_map(np.mean(maps, axis=0), affine, out_dir / "mean_all.nii.gz")
    table = pd.DataFrame(rows)
    table.to_csv(out_table, sep="\t", index=False)
    return table


def sanity_checks(
    *,
    model_paths: Sequence[Path],
    attribution_tables: Sequence[Path],
    packs: Sequence[tuple[Path, Path]],
    method: str,
    options: Mapping[str, Any],
    atlas_nii: Path | None,
    ground_truth: Path | None,
    out_table: Path,
    out_deletion: Path,
    seed: int,
    scans_per_fold: int = 1,
    max_folds: int | None = None,
    deletion_steps: int = 10,
    cascade: bool = False,
    templates_dir: Path | None = None,
    resolution: float | None = None,
) -> pd.DataFrame:
    """Randomisation check, deletion curves and ground-truth scores of one method.

    Per fold (the first ``max_folds`` folds, all by default), ``scans_per_fold`` test
    scans (preferring the positive class named in the ground truth) are checked:

    * model-parameter randomisation (cascading, top-down; the statistic is the
      Spearman correlation between the trained and the fully randomised model's map,
      see :func:`brainlens.attribution.sanity.passes_randomization`; ``cascade=True``
      also computes every intermediate step, which costs one map per layer); with
      ``templates_dir`` and ``resolution`` (the ``templates`` rule's output) the
      correlation of 3D maps is taken with the template's brain mask,
      inside the brain only, where the explanation matters (shared zeros outside the
      head would otherwise count as agreement), and inside the model's field of view
      (:func:`brainlens.models.field_of_view`: voxels a model cannot see get zero
      relevance from any weights, another source of agreement that says nothing about
      the weights); 2D models' maps are compared whole;
    * deletion curve of the saved map against a random map of the same scan;
    * with ``ground_truth`` (``{"atlas", "region", "label", ...}``), the planted
      region's rank, the share of relevance mass inside it and a pointing-game hit,
      computed on the saved map with the atlas given by ``atlas_nii`` (which must be
      the ground truth's atlas).

    Writes ``out_table`` (one row per checked scan: ``fold, scan_id, method,
    spearman_random, randomization_domain, field_of_view_brain_share, ssim_random,
    passes_randomization, deletion_aoc, deletion_aoc_random, gt_rank, gt_mass_share,
    gt_pointing_hit``; ``field_of_view_brain_share`` is the share of the brain mask the
    model can see, NaN without a brain mask) and
    ``out_deletion`` (``fold, scan_id, curve, fraction, score``).
    """
    from brainlens.attribution.sanity import (
        area_over_curve,
        deletion_curve,
        ground_truth_scores,
        passes_randomization,
        randomization_check,
    )

    gt = json.loads(Path(ground_truth).read_text()) if ground_truth else None
    atlas = np.asanyarray(nib.load(str(atlas_nii)).dataobj).astype(np.int64) if atlas_nii else None
    opts = _method_options(method, options, atlas)
    brain = None
    if templates_dir is not None:
        from brainlens.grid import template_paths

        if resolution is None:
            raise ConfigError("sanity_checks: templates_dir given without its resolution")
        brain_mask = template_paths(Path(templates_dir), resolution)["brain_mask"]
        if not brain_mask.exists():
            raise InputFileError(
                brain_mask,
                f"not found (the template brain mask for resolution {resolution} mm)",
                f"build the templates into {templates_dir} (the workflow's templates rule)",
            )
        brain = np.asanyarray(nib.load(str(brain_mask)).dataobj) > 0
        if atlas is not None and brain.shape != atlas.shape:
            raise InputFileError(
                brain_mask,
                f"shape {brain.shape}, expected the atlas grid {atlas.shape} of {atlas_nii}",
                "build both for the same preprocess.resolution",
            )
    rows, curves = [], []
    rng = np.random.default_rng(seed)
    pairs = list(zip(model_paths, attribution_tables, strict=True))
    for model_path, table_path in pairs[:max_folds]:
        model, meta = load_trained_model(Path(model_path).parent)
        to_input = _model_input(meta)
        seen: np.ndarray | None = None  # the model's field of view (3D models, computed once)
        table = pd.read_csv(table_path, sep="\t", dtype={"label": str})
        positive = gt.get("positive_class") if gt else None
        preferred = table[table["label"] == positive] if positive else table.iloc[0:0]
        chosen = pd.concat([preferred, table.drop(preferred.index)]).head(scans_per_fold)
        for rec in chosen.to_dict("records"):
            volumes, _ = load_volumes(packs, [rec["scan_id"]])
            x = to_input(torch.from_numpy(volumes))
            relevance = np.asanyarray(nib.load(rec["path"]).dataobj).astype(np.float32)
            # deletion works on the model's input: for 2D models, the map of the 2D input
            rel_in = (
                relevance
                if x.ndim == 5
                else attribute(model, x, method=method, target=int(rec["target"]), **opts)
            )
            in_brain, seen_share = None, float("nan")
            if brain is not None and x.ndim == 5:
                if seen is None:
                    seen = field_of_view_mask(model, tuple(x.shape[1:]))
                    if seen.shape != brain.shape:
                        raise InputFileError(
                            Path(model_path),
                            f"model input grid {seen.shape} differs from the brain mask's "
                            f"{brain.shape}",
                            "train and explain on the same preprocess.resolution",
                        )
                in_brain = brain & seen
                seen_share = float(in_brain.sum() / brain.sum())
                if not in_brain.any():
                    raise ModelError(
                        f"{model_path}: the model sees no voxel of the brain mask; "
                        "expected its field of view to cover the brain"
                    )
            rand = randomization_check(
                model,
                x,
                method=method,
                target=int(rec["target"]),
                seed=seed,
                cascade=cascade,
                mask=in_brain,
                **opts,
            )
            last = rand.iloc[-1]
            fr, sc = deletion_curve(
                model, x, rel_in, target=int(rec["target"]), steps=deletion_steps
            )
            noise = rng.random(rel_in.shape).astype(np.float32)
            fr_r, sc_r = deletion_curve(
                model, x, noise, target=int(rec["target"]), steps=deletion_steps
            )
            row = {
                "fold": int(rec["fold"]),
                "scan_id": rec["scan_id"],
                "label": rec["label"],
                "method": method,
                "spearman_random": float(last["spearman"]),
                "randomization_domain": "all_voxels" if in_brain is None else "brain_mask_in_view",
                "field_of_view_brain_share": seen_share,
                "ssim_random": float(last["ssim"]),
                "passes_randomization": bool(passes_randomization(rand)),
                "deletion_aoc": area_over_curve(fr, sc),
                "deletion_aoc_random": area_over_curve(fr_r, sc_r),
                "gt_rank": np.nan,
                "gt_mass_share": np.nan,
                "gt_pointing_hit": np.nan,
            }
            if gt is not None and atlas is not None:
                scores = ground_truth_scores(relevance, atlas, region_label=int(gt["label"]))
                row.update(
                    gt_rank=scores["rank"],
                    gt_mass_share=scores["mass_share"],
                    gt_pointing_hit=scores["pointing_hit"],
                )
            rows.append(row)
            for name, (f, s) in {"relevance": (fr, sc), "random": (fr_r, sc_r)}.items():
                curves.extend(
                    {
                        "fold": row["fold"],
                        "scan_id": row["scan_id"],
                        "curve": name,
                        "fraction": a,
                        "score": b,
                    }
                    for a, b in zip(f, s, strict=True)
                )
    out = pd.DataFrame(rows)
    out.to_csv(out_table, sep="\t", index=False)
    pd.DataFrame(curves).to_csv(out_deletion, sep="\t", index=False)
    return out
