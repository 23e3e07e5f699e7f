"""The attribution stage of the workflow, one fold at a time (sanity checks:
:mod:`brainlens.attribution.checks`).

These functions tie together a trained fold (:mod:`brainlens.training`), the packed
inputs (:mod:`brainlens.packing`), the folds table and the attribution methods
(:mod:`brainlens.attribution`). Maps are made for the **test** scans of the fold
only (the model never saw them), towards ``attribution.target`` (each scan's
**true** class by default, :mod:`brainlens.attribution.targets`), from the fold's
baseline (computed from its training part, :mod:`brainlens.attribution.baselines`),
and are written on the analysis grid with the pack's affine.

2D models (coronal slices, dynamic images) are explained on their 2D input, and the
2D map is put back on the 3D grid with :func:`brainlens.transforms.to_volume`: at the
slice positions for slice models, spread along the pooled axis (by each slice's
weight in the dynamic image) for projection models. Atlas-region occlusion needs a
3D input and is refused for 2D models.

A model trained on harmonised inputs (in-fold confound removal, ``confounds.method``
with ``scope: all``; ``model.pt`` records the fold's confound files and their SHA-256)
is explained on the same harmonised inputs: the test scans are harmonised with the
fold's parameters (after their leakage audit) before the model sees them, and the
baseline must be a mean of harmonised training inputs. Its maps are therefore
relevance **for the harmonised input** (what remains after the covariates' or the
site's fitted effect is removed), not for the raw grey-matter map; the tables say so
(``input_space`` column) and a ``input_space.json`` lies beside the maps.
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

from brainlens._io import write_text_atomic
from brainlens.attribution._common import count_forward_passes
from brainlens.attribution.baselines import (
    ZERO_BASELINE,
    Baseline,
    check_baseline_provenance,
    read_baseline,
)
from brainlens.attribution.methods import attribute, get_method, method_base
from brainlens.attribution.sidecars import MapWriter, grid_resolution
from brainlens.attribution.targets import (
    check_target_spec,
    completeness,
    logits_of,
    resolve_target,
)
from brainlens.derivatives import sanitised_labels
from brainlens.errors import ConfigError, InputFileError
from brainlens.folds import fold_part, read_folds
from brainlens.packing import open_pack
from brainlens.training import load_trained_model

log = logging.getLogger(__name__)


def _test_scans(folds_tsv: Path, fold: int) -> pd.DataFrame:
    test = fold_part(read_folds(folds_tsv), fold, "test")
    return test.sort_values("scan_id").reset_index(drop=True)


def load_volumes(
    packs: Sequence[tuple[Path, Path]], scan_ids: Sequence[str], harmonise: Any | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stack packed inputs as channels for some scans.

    Parameters
    ----------
    packs : sequence of (npy, index)
    scan_ids : sequence of str, length N
    harmonise : InputConfounds, optional
        The fold's audited confound removal
        (:func:`brainlens.confounds.inputs.open_input_confounds`), applied per scan.

    Returns
    -------
    volumes : ndarray, shape (N, C, X, Y, Z), float32
        Harmonised when ``harmonise`` is given.
    affine : ndarray, shape (4, 4)
    """
    opened = [open_pack(npy, idx) for npy, idx in packs]
    chans = [p.array[p.rows(scan_ids)].astype(np.float32) for p in opened]
    volumes = np.stack(chans, axis=1)
    if harmonise is not None:
        volumes = harmonise.apply_many(volumes, list(scan_ids))
    return volumes, opened[0].affine


def model_harmonisation(
    meta: Mapping[str, Any],
    confounds: Mapping[str, Any] | None,
    *,
    folds_tsv: Path | None,
    fold: int,
    model_path: Path,
):
    """The harmonisation a fold's model was trained with, audited, or None (raw inputs).

    Parameters
    ----------
    meta : mapping
        ``model.pt`` metadata (``confounds`` only for a harmonised model).
    confounds : mapping, optional
        ``{"npz", "json", "participants", "tiv"}`` given by the caller (the rule's
        inputs); default the files ``model.pt`` records.
    folds_tsv : Path
        For the leakage audit.
    fold : int
    model_path : Path
        For messages.

    Returns
    -------
    InputConfounds or None

    Raises
    ------
    InputFileError
        Files given for a model trained on raw inputs, or files whose parameters
        (SHA-256) are not the ones the model was trained with.
    LeakageError
        The parameters were fitted on scans outside the fold's training part.
    """
    from brainlens.confounds.inputs import open_model_confounds

    return open_model_confounds(
        meta,
        confounds,
        model_path=model_path,
        folds_tsv=folds_tsv,
        fold=fold,
        action="explain a model",
    )


def check_baseline_space(base: Baseline, harmonise: Any | None, path: Path | None) -> None:
    """A mean baseline was computed from the inputs the model sees (raw or harmonised)."""
    if base.kind not in ("train_mean", "train_control_mean"):
        return  # zeros, or the (harmonised) scan itself blurred
    from brainlens.confounds.inputs import check_harmonisation

    check_harmonisation(
        base.confounds,
        harmonise,
        str(path),
        "re-run attribution_baseline with the fold's confound files (confounds.method)",
    )


def input_space(harmonise: Any | None) -> dict[str, str]:
    """``{"input_space": "harmonised (<method>)"}`` for a harmonised model, else ``{}``."""
    return {} if harmonise is None else {"input_space": f"harmonised ({harmonise.method})"}


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


def _explainer_maps(model: torch.nn.Module, meta: Mapping[str, Any], method: str):
    """``f(x3d, target, options) -> (map (X, Y, Z), map of the model input)``.

    For 3D models both maps are the same array; for 2D models the second is the map
    of the 2D input (what integrated gradients' completeness is checked on).
    """
    spec = meta.get("transform")
    if not spec:

        def explain3d(x: torch.Tensor, target: int, opts: Mapping[str, Any]) -> tuple:
            rel = attribute(model, x, method=method, target=target, **opts)
            return rel, rel

        return explain3d
    from brainlens.transforms import to_volume

    if method_base(method) == "region_occlusion":
        raise ConfigError(
            f"attribution.methods.region_occlusion: needs a 3D model, but {meta['model']} takes "
            f"2D input ({spec['name']}). Fix: drop region_occlusion for 2D models"
        )
    options = {k: v for k, v in spec.items() if k != "name"}
    to_input = _model_input(meta)

    def explain(x: torch.Tensor, target: int, opts: Mapping[str, Any]) -> tuple:
        map2d = attribute(model, to_input(x), method=method, target=target, **opts)
        vol = to_volume(
            map2d, transform=spec["name"], options=options, volume_shape=tuple(x.shape[1:])
        )
        return vol, map2d

    return explain


def _explainer(model: torch.nn.Module, meta: Mapping[str, Any], method: str):
    """``f(x3d, target, options) -> (X, Y, Z)`` map for a 3D or a 2D (transformed) model."""
    explain = _explainer_maps(model, meta, method)
    return lambda x, target, opts: explain(x, target, opts)[0]


def _fold_baseline(
    npy: Path | None, json_path: Path | None, folds_tsv: Path, fold: int, shape: tuple
) -> Baseline:
    """The fold's baseline, after the leakage audit of its sidecar (zero without files)."""
    if npy is None or json_path is None:
        return ZERO_BASELINE
    check_baseline_provenance(Path(json_path), Path(folds_tsv), fold)
    base = read_baseline(Path(npy), Path(json_path))
    if base.array.size and base.array.shape != tuple(shape):
        raise InputFileError(
            npy,
            f"baseline of shape {base.array.shape}, the packed inputs are {tuple(shape)}",
            "re-run attribution_baseline on the same packed inputs",
        )
    return base


def _test_subset(folds_tsv: Path, fold: int, max_scans: int | None, seed: int) -> pd.DataFrame:
    """The fold's test scans, capped at ``max_scans`` (a seeded random subset)."""
    test = _test_scans(folds_tsv, fold)
    if max_scans is not None and len(test) > max_scans:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(test), max_scans, replace=False))
        test = test.iloc[pick].reset_index(drop=True)
    return test


def _explain_scans(
    model: torch.nn.Module,
    meta: Mapping[str, Any],
    test: pd.DataFrame,
    volumes: np.ndarray,
    *,
    method: str,
    opts: dict,
    target: str,
    base: Baseline | None,
    harmonise: Any | None,
    write: Any,
) -> tuple[list[dict], list[np.ndarray]]:
    """Explain each test scan; ``write(rel, rec, row) -> Path`` saves its map.

    ``base`` is None for a method without a baseline. Returns the table rows and maps.
    """
    explain, to_input = _explainer_maps(model, meta, method), _model_input(meta)
    classes = list(meta["class_names"])
    rows, maps = [], []
    for i, rec in enumerate(test.to_dict("records")):
        x = torch.from_numpy(volumes[i : i + 1])
        x_in = to_input(x)
        logits = logits_of(model, x_in)
        tgt = resolve_target(target, classes, rec["label"], logits)
        run_opts = dict(opts)
        if base is not None:
            run_opts["baseline"] = to_input(torch.from_numpy(base.for_scan(volumes[i])[None]))
        start = time.perf_counter()
        with count_forward_passes(model) as counter:
            rel, rel_in = explain(x, tgt, run_opts)
        seconds = time.perf_counter() - start
        row = {
            "fold": int(rec["fold"]),
            "scan_id": rec["scan_id"],
            "label": rec["label"],
            "target": tgt,
            "target_class": classes[tgt],
            "predicted_class": classes[int(torch.argmax(logits[0]))],
            "baseline": base.kind if base is not None else "none",
            "method": method,
        }
        row["path"] = str(write(rel, rec, row))
        row |= {"seconds": round(seconds, 3), "forward_passes": int(counter.samples)}
        row |= input_space(harmonise)
        if method_base(method) == "integrated_gradients":
            row.update(completeness(model, x_in, run_opts["baseline"], tgt, float(np.sum(rel_in))))
        rows.append(row)
        maps.append(rel)
        log.info(
            "%s %s: %.1f s, %d forward passes", method, rec["scan_id"], seconds, counter.samples
        )
    return rows, maps


def _check_request(
    meta: Mapping[str, Any], method: str, options: Mapping[str, Any], target: str, model: Path
) -> tuple[dict[str, str], bool]:
    """Refuse a bad target, class names that clash in file names and a baseline option.

    Returns the classes' file-name labels and whether the method takes a baseline.
    """
    classes = list(meta["class_names"])
    check_target_spec(target, classes)
    class_labels = sanitised_labels(classes, f"{model}: class names")
    uses_baseline = "baseline" in get_method(method).options()
    if uses_baseline and "baseline" in options:
        raise ConfigError(
            f"attribution.methods.{method}.baseline: set the baseline with "
            "attribution.baseline (computed from each fold's training part). Fix: remove it"
        )
    return class_labels, uses_baseline


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
    baseline_npy: Path | None = None,
    baseline_json: Path | None = None,
    target: str = "true_class",
    confounds: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Relevance maps of one method for the test scans of one fold.

    Writes into ``out_dir`` the maps of :data:`brainlens.derivatives.RELEVANCE` (per test
    scan, per true class, over all; ``space-``/``res-`` from the packs' grid, method and
    class sanitised) with their sidecars (:class:`~brainlens.attribution.sidecars.MapWriter`:
    method, model, fold, target class, baseline, sign convention, units), and
    ``out_table`` (``fold, scan_id, label, target, target_class, predicted_class,
    baseline, method, path, seconds, forward_passes``; integrated gradients adds
    ``logit_delta, attribution_sum, completeness_error, completeness_rel_error``, see
    :func:`brainlens.attribution.targets.completeness`; a harmonised model adds
    ``input_space`` and writes ``out_dir/input_space.json``: its maps are relevance
    for the harmonised input).

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
        The method's options from the config (``atlas`` is resolved to ``atlas_nii``;
        ``baseline`` is refused: it comes from ``attribution.baseline``).
    atlas_nii : Path or None
        Atlas label image on the grid (for ``region_occlusion``).
    out_dir, out_table : Path
    max_scans : int, optional
        Cap on test scans (a seeded random subset, stratified by nothing).
    seed : int
        Seeds torch (for methods with randomness) and the subset.
    baseline_npy, baseline_json : Path, optional
        The fold's baseline (:func:`brainlens.attribution.baselines.write_fold_baseline`),
        audited with :func:`~brainlens.attribution.baselines.check_baseline_provenance`
        before use, given to the methods that take one (integrated gradients,
        occlusion, region occlusion) on the model's input grid. Without: zeros.
    target : str
        ``"true_class"``, ``"predicted"`` or a class name (``attribution.target``).
    confounds : mapping, optional
        The fold's confound files (:func:`model_harmonisation`); default those that
        ``model.pt`` records. A harmonised model is explained on harmonised test scans
        from a baseline of harmonised training inputs.

    Raises
    ------
    ConfigError
        A baseline in the method's options; two class names that sanitise alike.
    InputFileError
        Packs not on an analysis grid; a baseline of another shape.
    """
    torch.manual_seed(seed)
    model, meta = load_trained_model(Path(model_path).parent)
    class_labels, uses_baseline = _check_request(meta, method, options, target, model_path)
    test = _test_subset(folds_tsv, fold, max_scans, seed).assign(fold=int(fold))
    harmonise = model_harmonisation(
        meta, confounds, folds_tsv=folds_tsv, fold=fold, model_path=Path(model_path)
    )
    volumes, affine = load_volumes(packs, list(test["scan_id"]), harmonise)
    resolution = grid_resolution(affine, packs[0][0])
    base = _fold_baseline(baseline_npy, baseline_json, folds_tsv, fold, volumes.shape[1:])
    if uses_baseline:
        check_baseline_space(base, harmonise, baseline_npy)
    atlas = np.asanyarray(nib.load(str(atlas_nii)).dataobj).astype(np.int64) if atlas_nii else None
    writer = MapWriter(
        Path(out_dir), affine, resolution=resolution, method=method, options=options,
        common={
            "Model": meta.get("model"), "Fold": int(fold), "Target": target,
            "Baseline": base.kind if uses_baseline else "none",
            "InputSpace": input_space(harmonise).get("input_space", "raw"),
        },
    )  # fmt: skip
    rows, maps = _explain_scans(
        model, meta, test, volumes, method=method,
        opts=_method_options(method, options, atlas), target=target,
        base=base if uses_baseline else None, harmonise=harmonise, write=writer.scan_map,
    )  # fmt: skip
    writer.mean_maps(maps, list(test["label"]), class_labels)
    return _finish(rows, Path(out_dir), Path(out_table), harmonise)


def _finish(rows: list[dict], out_dir: Path, out_table: Path, harmonise: Any | None):
    """Write ``input_space.json`` (a harmonised model) and the fold's table; return it."""
    if harmonise is not None:
        note = "relevance for the harmonised input (in-fold confound removal), not the raw map"
        record = harmonise.record() | {"note": note}
        write_text_atomic(out_dir / "input_space.json", json.dumps(record, indent=1))
    table = pd.DataFrame(rows)
    table.to_csv(out_table, sep="\t", index=False)
    return table
