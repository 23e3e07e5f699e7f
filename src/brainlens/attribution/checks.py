"""The sanity-check stage of the workflow: is each method's map meaningful?

Per model and method, :func:`run_sanity_checks` draws ``scans_per_class`` explained
test scans of every class from the attribution tables of **all** folds (seeded,
round-robin over folds; each scan is explained by its own fold's model) and runs the
metrics of :mod:`brainlens.attribution.sanity` on each:

* **model-parameter randomisation** (Adebayo et al. 2018), cascading from the top
  layer group down and independently one group at a time
  (:func:`~brainlens.attribution.sanity.randomization_curves`); Spearman rank
  correlation of |map| and of the signed map with the trained model's map, inside
  the brain mask and the model's field of view (3D maps; 2D models: the pixels whose
  projected column holds brain, again inside the field of view);
* **deletion and insertion** curves inside the same voxels, replacing voxels by the
  fold's baseline (:mod:`brainlens.attribution.baselines`; zeros without one),
  against a seeded random order; per scan the area between the two curves;
* with a ground truth (synthetic data), the planted region's scores on the saved map.

Across scans, :func:`summarize_sanity` gives means with seeded bootstrap intervals
and the verdicts. **Pass rule** (randomisation): the upper end of the interval of
the mean Spearman at full randomisation (last cascade step) is below ``threshold``,
for |map| *and* for the signed map (for non-negative maps the two are the same
statistic; for signed maps a map that only flips its sign fails on |map|).
**Faithful**: the lower end of the interval of the mean area is above 0, for
deletion *and* insertion ("does not beat random order" = not faithful).
**Localises**: the grid the map is computed on (a Grad-CAM / CAM layer, occlusion
patches; :func:`~brainlens.attribution.methods.map_grid`) has at least
``min_map_positions`` (3) positions along every axis. On a coarser grid the map holds
a handful of values: a 1x2x1 layer paints one half of the head against the other, so
its rank correlation with any other map is about +1 or -1 per scan, the randomisation
test has nothing to measure (its verdict is "not testable") and the map cannot rank
regions. The rule reads the architecture and the input grid only, never the data.

The maps compared and perturbed are recomputed here with the configured options and,
for methods that take one (integrated gradients, occlusion), the fold's baseline, as
the attribution stage does; so the reference and the randomised maps come from one
code path. The ground-truth scores read the saved maps. A model trained on harmonised
inputs (``confounds.method``, ``scope: all``) is checked on the same harmonised scans
and harmonised baseline as the attribute stage uses
(:func:`~brainlens.attribution.fold.model_harmonisation`); the table then has an
``input_space`` column.

Cost: one map per randomisation step (``1 + groups`` cascading, ``groups - 1`` more
independent; ``cascade: false`` maps step 0 and the fully random model only) plus
``4 (deletion_steps + 1)`` forward passes per scan.
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

from brainlens.attribution.check_inputs import (
    OVERRIDE_KEYS,
    fold_baseline,
    load_brain_mask,
    method_settings,
    random_label_model,
    select_scans,
)
from brainlens.attribution.fold import (
    _method_options,
    _model_input,
    check_baseline_space,
    input_space,
    load_volumes,
    model_harmonisation,
)
from brainlens.attribution.methods import attribute, get_method, map_grid
from brainlens.attribution.sanity import (
    area_under_curve,
    curve_gap,
    deletion_curve,
    ground_truth_scores,
    insertion_curve,
    layer_groups,
    map_similarity,
    random_order,
    randomization_curves,
    summarize_sanity,
)
from brainlens.errors import ConfigError, InputFileError, ModelError
from brainlens.models import field_of_view_mask
from brainlens.training import load_trained_model

log = logging.getLogger(__name__)

__all__ = [
    "OVERRIDE_KEYS",
    "check_scan",
    "load_brain_mask",
    "method_settings",
    "run_sanity_checks",
    "select_scans",
]


def _domain(
    model: torch.nn.Module, x: torch.Tensor, brain: np.ndarray | None, to_input, path: Path
) -> tuple[np.ndarray | None, float]:
    """Brain mask ∩ field of view on the model-input grid, and the share of it seen."""
    if brain is None:
        return None, float("nan")
    if x.ndim == 5:
        if brain.shape != tuple(x.shape[2:]):
            raise InputFileError(
                path,
                f"model input grid {tuple(x.shape[2:])} differs from the brain mask's "
                f"{brain.shape}",
                "train and explain on the same preprocess.resolution",
            )
        inside = brain
    else:  # 2D model: pixels whose projected column / slice holds brain
        projected = to_input(torch.from_numpy(brain[None, None].astype(np.float32)))
        inside = np.abs(projected[0].numpy()).max(axis=0) > 1e-6
    seen = field_of_view_mask(model, tuple(x.shape[1:]))
    domain = inside & seen
    if not domain.any():
        raise ModelError(
            f"{path}: the model sees no voxel of the brain mask; "
            "expected its field of view to cover the brain"
        )
    return domain, float(domain.sum() / inside.sum())


def _curves(model, x, reference, *, target, baseline, domain, steps, seed) -> dict:
    """Deletion and insertion curves in relevance and in random order."""
    noise = random_order(tuple(reference.shape), seed)
    out = {}
    for kind, func in (("deletion", deletion_curve), ("insertion", insertion_curve)):
        for order, rel in (("relevance", reference), ("random", noise)):
            out[(kind, order)] = func(
                model, x, rel, target=target, steps=steps, baseline=baseline, mask=domain
            )
    return out


def check_scan(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    target: int,
    options: Mapping[str, Any],
    baseline: np.ndarray,
    domain: np.ndarray | None,
    settings: Mapping[str, Any],
    seed: int,
    random_label_model: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """All checks of one scan on the model input ``x`` (1, C, *spatial).

    With ``random_label_model`` (the same fold trained on shuffled labels), also the data
    randomisation test: Spearman of its map with the trained model's map.

    Returns
    -------
    row : dict
        Per-scan statistics (Spearman at full randomisation, areas, AUCs).
    cascade : pandas.DataFrame
        Output of :func:`~brainlens.attribution.sanity.randomization_curves`.
    curves : pandas.DataFrame
        ``curve, order, fraction, score``.
    """
    reference = np.asarray(attribute(model, x, method=method, target=target, **options))
    modes = ["cascade", "independent"] if settings.get("independent", True) else ["cascade"]
    cascade = randomization_curves(
        model,
        x,
        method=method,
        target=target,
        seed=seed,
        groups=layer_groups(model, settings.get("layers", "blocks")),
        modes=modes,
        every_step=bool(settings.get("cascade", True)),
        mask=domain,
        original=reference,
        **options,
    )
    full = cascade[cascade["mode"] == "cascade"].iloc[-1]
    threshold = float(settings.get("threshold", 0.5))
    curves = _curves(
        model,
        x,
        reference,
        target=target,
        baseline=baseline,
        domain=domain,
        steps=int(settings.get("deletion_steps", 10)),
        seed=seed + 1,
    )
    row: dict[str, Any] = {
        "spearman_abs_random": float(full["spearman_abs"]),
        "spearman_signed_random": float(full["spearman_signed"]),
        "spearman_random": float(full["spearman_abs"]),
        "ssim_random": float(full["ssim"]),
        "passes_randomization": bool(
            abs(full["spearman_abs"]) < threshold and full["spearman_signed"] < threshold
        ),
    }
    if random_label_model is not None:
        other = attribute(random_label_model, x, method=method, target=target, **options)
        r_abs, r_signed, _ = map_similarity(reference, np.asarray(other), domain)
        row |= {"spearman_abs_random_labels": r_abs, "spearman_signed_random_labels": r_signed}
    rows = []
    for kind in ("deletion", "insertion"):
        fr, rel_scores = curves[(kind, "relevance")]
        _, rnd_scores = curves[(kind, "random")]
        row[f"{kind}_auc"] = area_under_curve(fr, rel_scores)
        row[f"{kind}_auc_random"] = area_under_curve(fr, rnd_scores)
        row[f"{kind}_area"] = curve_gap(fr, rel_scores, rnd_scores, kind=kind)
        for order in ("relevance", "random"):
            f, s = curves[(kind, order)]
            rows.extend(
                {"curve": kind, "order": order, "fraction": a, "score": b}
                for a, b in zip(f, s, strict=True)
            )
    return row, cascade, pd.DataFrame(rows)


def _scan_gt(rec: Mapping[str, Any], gt: Mapping | None, atlas: np.ndarray | None) -> dict:
    if gt is None or atlas is None:
        return {"gt_rank": np.nan, "gt_mass_share": np.nan, "gt_pointing_hit": np.nan}
    saved = np.asanyarray(nib.load(rec["path"]).dataobj).astype(np.float32)
    scores = ground_truth_scores(saved, atlas, region_label=int(gt["label"]))
    return {
        "gt_rank": scores["rank"],
        "gt_mass_share": scores["mass_share"],
        "gt_pointing_hit": scores["pointing_hit"],
    }


def _check_fold(
    path: Path,
    group: pd.DataFrame,
    baseline_files: tuple[Path, Path] | None,
    *,
    packs: Sequence[tuple[Path, Path]],
    method: str,
    opts: Mapping[str, Any],
    folds_tsv: Path | None,
    brain: np.ndarray | None,
    cfg: Mapping[str, Any],
    seed: int,
    gt: Mapping | None,
    atlas: np.ndarray | None,
    random_label_path: Path | None = None,
    confounds: Mapping[str, Any] | None = None,
) -> tuple[list[dict], list[pd.DataFrame], list[pd.DataFrame]]:
    """:func:`check_scan` on the chosen scans of one fold, with that fold's model."""
    model, meta = load_trained_model(path.parent)
    rl_model = random_label_model(random_label_path, meta)
    to_input = _model_input(meta)
    fold = int(group["fold"].iloc[0])
    harmonise = model_harmonisation(
        meta, confounds, folds_tsv=folds_tsv, fold=fold, model_path=path
    )
    base = fold_baseline(baseline_files, folds_tsv, fold)
    check_baseline_space(base, harmonise, None if baseline_files is None else baseline_files[0])
    domain = share = None
    uses_baseline = "baseline" in get_method(method).options()
    rows, cascades, curves = [], [], []
    for rec in group.to_dict("records"):
        start = time.perf_counter()
        volume, _ = load_volumes(packs, [rec["scan_id"]], harmonise)
        x = to_input(torch.from_numpy(volume))
        b = to_input(torch.from_numpy(base.for_scan(volume[0])[None]))
        if domain is None:
            domain, share = _domain(model, x, brain, to_input, path)
            grid = map_grid(model, x, method=method, **opts)
        run_opts = dict(opts)
        if uses_baseline:  # as the attribute stage does: the fold's baseline, not zeros
            run_opts["baseline"] = b
        row, cascade, curve = check_scan(
            model,
            x,
            method=method,
            target=int(rec["target"]),
            options=run_opts,
            baseline=b[0].numpy(),
            domain=domain,
            settings=cfg,
            seed=seed,
            random_label_model=rl_model,
        )
        key = {"fold": int(rec["fold"]), "scan_id": rec["scan_id"], "label": rec["label"]}
        where = "all_voxels" if domain is None else "brain_mask_in_view"
        rows.append(
            {**key, "target": int(rec["target"]), "method": method}
            | {"randomization_domain": where, "field_of_view_brain_share": share}
            | {"map_grid": "x".join(map(str, grid)), "map_positions_min": min(grid)}
            | row
            | {"baseline_kind": base.kind}
            | input_space(harmonise)
            | _scan_gt(rec, gt, atlas)
        )
        cascades.append(cascade.assign(**key))
        curves.append(curve.assign(fold=key["fold"], scan_id=key["scan_id"]))
        log.info("%s %s: %.1f s", method, rec["scan_id"], time.perf_counter() - start)
    return rows, cascades, curves


def _check_one_per_fold(
    n_folds: int,
    *,
    confounds: Sequence[Mapping[str, Any]] | None,
    baselines: Sequence[tuple[Path, Path]] | None,
) -> None:
    """Raise unless ``confounds`` and ``baselines`` (when given) have one entry per fold."""
    if confounds is not None and len(confounds) != n_folds:
        raise ConfigError(
            f"sanity_checks: {len(confounds)} confound specs for {n_folds} folds; "
            "expected one per fold"
        )
    if baselines is not None and len(baselines) != n_folds:
        raise ConfigError(
            f"sanity_checks: {len(baselines)} baselines for {n_folds} folds; "
            "expected one (npy, json) pair per fold"
        )


def _chosen_scans(
    attribution_tables: Sequence[Path], *, per_class: int, seed: int, method: str
) -> pd.DataFrame:
    """Up to ``per_class`` explained scans per class over the folds' attribution tables
    (:func:`~brainlens.attribution.check_inputs.select_scans`); raise if there are none."""
    tables = [pd.read_csv(p, sep="\t", dtype={"label": str}) for p in attribution_tables]
    chosen, counts = select_scans(tables, per_class=per_class, seed=seed)
    log.info("%s: %s scans per class (asked for %d)", method, counts, per_class)
    if chosen.empty:
        raise InputFileError(
            Path(attribution_tables[0]) if attribution_tables else Path("."),
            "no explained scans in the attribution tables",
            "run the attribute rule with attribution.max_scans_per_fold >= 1",
        )
    return chosen


def _check_folds(
    chosen: pd.DataFrame,
    model_paths: Sequence[Path],
    baselines: Sequence[tuple[Path, Path]] | None,
    random_label_models: Sequence[Path] | None,
    confounds: Sequence[Mapping[str, Any]] | None,
    ctx: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`_check_fold` on each fold's chosen scans (``source`` = fold position in
    ``model_paths``); the per-scan, cascade and curve tables over all folds."""
    rows, cascades, curves = [], [], []
    for source, group in chosen.groupby("source", sort=True):
        files = None if baselines is None else baselines[int(source)]
        rl = None if not random_label_models else Path(random_label_models[int(source)])
        spec = None if confounds is None else confounds[int(source)]
        r, c, k = _check_fold(
            Path(model_paths[int(source)]),
            group,
            files,
            random_label_path=rl,
            confounds=spec,
            **ctx,
        )
        rows, cascades, curves = rows + r, cascades + c, curves + k
    out = pd.DataFrame(rows)
    cascade_all = pd.concat(cascades, ignore_index=True)
    front = ["fold", "scan_id", "label"]
    cascade_all = cascade_all[front + [c for c in cascade_all.columns if c not in front]]
    curves_all = pd.concat(curves, ignore_index=True)
    curves_all = curves_all[["fold", "scan_id", "curve", "order", "fraction", "score"]]
    return out, cascade_all, curves_all


def run_sanity_checks(
    *,
    model_paths: Sequence[Path],
    attribution_tables: Sequence[Path],
    packs: Sequence[tuple[Path, Path]],
    method: str,
    options: Mapping[str, Any],
    atlas_nii: Path | None,
    ground_truth: Path | None,
    out_table: Path,
    out_cascade: Path,
    out_deletion: Path,
    out_summary: Path,
    seed: int,
    settings: Mapping[str, Any] | None = None,
    baselines: Sequence[tuple[Path, Path]] | None = None,
    folds_tsv: Path | None = None,
    templates_dir: Path | None = None,
    resolution: float | None = None,
    random_label_models: Sequence[Path] | None = None,
    confounds: Sequence[Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Randomisation, deletion/insertion and ground-truth checks of one model and method.

    Parameters
    ----------
    model_paths, attribution_tables : sequence of Path
        ``model.pt`` and attribution table per fold, in the same order.
    packs : sequence of (npy, index)
        Packed inputs in the model's channel order.
    method, options : str, mapping
        Configured method key (``name`` or ``name@label``) and its options.
    atlas_nii, ground_truth : Path or None
        Atlas on the grid (region occlusion, ground truth) and ``ground_truth.json``.
    out_table, out_cascade, out_deletion, out_summary : Path
        Per-scan table (``fold, scan_id, label, target, method, randomization_domain,
        field_of_view_brain_share, map_grid, map_positions_min, spearman_abs_random, spearman_signed_random,
        spearman_random`` (= abs), ``ssim_random, passes_randomization, deletion_auc,
        deletion_auc_random, deletion_area, insertion_auc, insertion_auc_random,
        insertion_area, baseline_kind, gt_rank, gt_mass_share, gt_pointing_hit``),
        cascade table (``fold, scan_id, label, mode, step, layer, spearman_abs,
        spearman_signed, ssim``), curves (``fold, scan_id, curve, order, fraction,
        score``) and :func:`~brainlens.attribution.sanity.summarize_sanity`'s table.
    seed : int
        Seeds the scan draw, the re-initialisation, the random orders and the bootstrap.
    settings : mapping, optional
        ``attribution.sanity`` (see the config schema), overrides included.
    baselines : sequence of (npy, json), optional
        Fold baselines, same order as ``model_paths`` (zeros without them); their
        provenance is checked against ``folds_tsv`` when given.
    templates_dir, resolution : optional
        Brain mask source; without it maps are compared and perturbed everywhere.
    random_label_models : sequence of Path, optional
        ``model.pt`` per fold (same order) of a random-label run of the same config: adds
        the data randomisation test (``spearman_*_random_labels`` columns).
    confounds : sequence of mapping, optional
        Per fold (same order as ``model_paths``) its confound files ``{"npz", "json",
        "participants", "tiv"}``; default those each ``model.pt`` records (a harmonised
        model is checked on harmonised inputs, see
        :func:`~brainlens.attribution.fold.model_harmonisation`).

    Returns
    -------
    pandas.DataFrame
        The per-scan table.
    """
    cfg = method_settings(settings or {}, method)
    gt = json.loads(Path(ground_truth).read_text()) if ground_truth else None
    atlas = np.asanyarray(nib.load(str(atlas_nii)).dataobj).astype(np.int64) if atlas_nii else None
    opts = _method_options(method, options, atlas)
    brain = load_brain_mask(templates_dir, resolution, atlas, atlas_nii)
    _check_one_per_fold(len(model_paths), confounds=confounds, baselines=baselines)
    per_class = int(cfg.get("scans_per_class", 10))
    chosen = _chosen_scans(attribution_tables, per_class=per_class, seed=seed, method=method)
    ctx = dict(
        packs=packs, method=method, opts=opts, folds_tsv=folds_tsv, brain=brain, cfg=cfg,
        seed=seed, gt=gt, atlas=atlas,
    )  # fmt: skip
    out, cascade_all, curves_all = _check_folds(
        chosen, model_paths, baselines, random_label_models, confounds, ctx
    )
    summary = summarize_sanity(
        out,
        cascade_all,
        method=method,
        threshold=float(cfg.get("threshold", 0.5)),
        n_resamples=int(cfg.get("bootstrap", 1000)),
        seed=seed,
        requested_per_class=per_class,
        min_map_positions=int(cfg.get("min_map_positions", 3)),
    )
    out.to_csv(out_table, sep="\t", index=False)
    cascade_all.to_csv(out_cascade, sep="\t", index=False)
    curves_all.to_csv(out_deletion, sep="\t", index=False)
    summary.to_csv(out_summary, sep="\t", index=False)
    return out
