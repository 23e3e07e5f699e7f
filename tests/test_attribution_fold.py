"""The attribution and sanity-check stages on tiny trained 3D and 2D registry models."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainlens.attribution.fold import attribute_fold
from brainlens.derivatives import relevance_name
from brainlens.errors import ConfigError
from brainlens.folds import write_folds
from brainlens.packing import pack_volumes
from brainlens.templates import template_paths
from brainlens.training import train_fold

torch.set_num_threads(1)
SIDE = 16
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -16


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    rows, paths, ids = [], [], []
    for i in range(12):
        label = "patient" if i % 2 else "control"
        v = rng.normal(0, 0.2, (SIDE,) * 3).astype(np.float32)
        if label == "patient":
            v[3:7, 6:10, 4:8] += 2.0
        p = root / f"sub-{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(v, AFFINE), str(p))
        rows.append({"participant_id": f"sub-{i:02d}", "session_id": "n/a", "label": label})
        paths.append(p)
        ids.append(f"sub-{i:02d}")
    pack_volumes(paths, scan_ids=ids, out_npy=root / "gm.npy", out_index=root / "gm.tsv")
    write_folds(
        pd.DataFrame(rows), root / "folds.tsv", mode="kfold", n_folds=3, val_fraction=0.25, seed=1
    )
    atlas = np.zeros((SIDE,) * 3, np.int16)
    atlas[:8, :8] = 1
    atlas[8:, :8] = 2
    atlas[:, 8:] = 3
    nib.save(nib.Nifti1Image(atlas, AFFINE), str(root / "atlas.nii.gz"))
    (root / "gt.json").write_text(
        json.dumps({"atlas": "toy", "region": "one", "label": 1, "positive_class": "patient"})
    )
    models = {}
    for name, transform in [
        ("eitel_baseline_3d", None),
        ("rao_2d", {"name": "avg_pool", "axis": "z"}),
    ]:
        out = root / name
        train_fold(
            packs={"gm": (root / "gm.npy", root / "gm.tsv")},
            folds_tsv=root / "folds.tsv",
            fold=0,
            out_dir=out,
            model=name,
            epochs=1,
            batch_size=4,
            lr=1e-3,
            seed=2,
            transform=transform,
            progress=False,
            device="cpu",
        )
        models[name] = out / "model.pt"
    return {"root": root, "models": models, "packs": [(root / "gm.npy", root / "gm.tsv")]}


@pytest.mark.parametrize(
    ("model", "method"),
    [
        ("eitel_baseline_3d", "gradients"),
        ("eitel_baseline_3d", "region_occlusion"),
        ("rao_2d", "gradients"),
    ],
)
def test_attribute_fold_writes_maps_on_the_grid(
    stage: dict, tmp_path: Path, model: str, method: str
) -> None:
    root = stage["root"]
    table = attribute_fold(
        model_path=stage["models"][model],
        packs=stage["packs"],
        folds_tsv=root / "folds.tsv",
        fold=0,
        method=method,
        options={"atlas": "toy"} if method == "region_occlusion" else {},
        atlas_nii=root / "atlas.nii.gz",
        out_dir=tmp_path / "maps",
        out_table=tmp_path / "maps.tsv",
        seed=3,
    )
    folds = pd.read_csv(root / "folds.tsv", sep="\t", dtype=str)
    test_ids = set(folds[(folds["fold"] == "0") & (folds["role"] == "test")]["participant_id"])
    assert set(table["scan_id"]) == test_ids
    assert (table["forward_passes"] >= 1).all()
    for path in table["path"]:
        img = nib.load(path)
        assert img.shape == (SIDE,) * 3
        np.testing.assert_allclose(img.affine, AFFINE)
        assert np.abs(np.asanyarray(img.dataobj)).sum() > 0
    for cls in set(table["label"]):
        name = relevance_name("class_mean", resolution=2.0, method=method, label=cls)
        assert (tmp_path / "maps" / name).exists()
    if model == "rao_2d":  # avg_pool along z: relevance spread uniformly along z
        m = np.asanyarray(nib.load(table["path"].iloc[0]).dataobj)
        np.testing.assert_allclose(m[:, :, 0], m[:, :, -1], rtol=1e-5, atol=1e-8)


def test_region_occlusion_is_refused_for_2d_models(stage: dict, tmp_path: Path) -> None:
    root = stage["root"]
    with pytest.raises(ConfigError, match="region_occlusion"):
        attribute_fold(
            model_path=stage["models"]["rao_2d"],
            packs=stage["packs"],
            folds_tsv=root / "folds.tsv",
            fold=0,
            method="region_occlusion",
            options={},
            atlas_nii=root / "atlas.nii.gz",
            out_dir=tmp_path / "maps",
            out_table=tmp_path / "maps.tsv",
            seed=3,
        )


def _gradient_maps_and_brain(stage: dict, tmp_path: Path, model: str) -> tuple[Path, np.ndarray]:
    """Fold 0's gradient maps into tmp_path/maps.tsv and a toy brain mask as the templates
    rule would write it; returns the templates folder and the mask."""
    attribute_fold(
        model_path=stage["models"][model],
        packs=stage["packs"],
        folds_tsv=stage["root"] / "folds.tsv",
        fold=0,
        method="gradients",
        options={},
        atlas_nii=None,
        out_dir=tmp_path / "maps",
        out_table=tmp_path / "maps.tsv",
        seed=3,
    )
    brain = np.zeros((SIDE,) * 3, np.uint8)
    brain[2:14, 2:14, 2:14] = 1
    templates = tmp_path / "templates"
    templates.mkdir()
    nib.save(nib.Nifti1Image(brain, AFFINE), str(template_paths(templates, 2.0)["brain_mask"]))
    return templates, brain


@pytest.mark.parametrize("model", ["eitel_baseline_3d", "rao_2d"])
def test_sanity_stage_on_3d_and_2d_models(stage: dict, tmp_path: Path, model: str) -> None:
    """brainlens.attribution.checks on a fold's maps: 3D maps are compared inside the
    brain mask; 2D models' maps inside the pixels whose projected column holds brain."""
    from brainlens.attribution.checks import run_sanity_checks

    root = stage["root"]
    templates, _ = _gradient_maps_and_brain(stage, tmp_path, model)
    out = run_sanity_checks(
        model_paths=[stage["models"][model]],
        attribution_tables=[tmp_path / "maps.tsv"],
        packs=stage["packs"],
        method="gradients",
        options={},
        atlas_nii=root / "atlas.nii.gz",
        ground_truth=root / "gt.json",
        out_table=tmp_path / "sanity.tsv",
        out_cascade=tmp_path / "cascade.tsv",
        out_deletion=tmp_path / "deletion.tsv",
        out_summary=tmp_path / "summary.tsv",
        seed=4,
        settings={"scans_per_class": 1, "bootstrap": 50, "deletion_steps": 4},
        templates_dir=templates,
        resolution=2.0,
    )
    assert sorted(out["label"]) == ["control", "patient"]
    assert out["spearman_abs_random"].between(-1, 1).all()
    assert (out["randomization_domain"] == "brain_mask_in_view").all()
    assert (out["field_of_view_brain_share"] == 1.0).all()
    assert out["gt_rank"].between(1, 3).all()
    assert (out["baseline_kind"] == "zero").all()  # no baseline files given
    curves = pd.read_csv(tmp_path / "deletion.tsv", sep="\t")
    assert len(curves) == 2 * 4 * 5


@pytest.mark.parametrize(
    ("model", "method"),
    [("rao_2d", "integrated_gradients"), ("eitel_baseline_3d", "occlusion")],
)
def test_attribute_fold_uses_the_training_baseline_and_audits_it(
    stage: dict, tmp_path: Path, model: str, method: str
) -> None:
    """The fold's train_mean baseline reaches 2D (transformed) and 3D models; a sidecar
    listing a test scan stops the stage before any map is made."""
    from brainlens.attribution.baselines import write_fold_baseline
    from brainlens.errors import LeakageError

    root = stage["root"]
    write_fold_baseline(
        packs=stage["packs"],
        folds_tsv=root / "folds.tsv",
        fold=0,
        kind="train_mean",
        out_npy=tmp_path / "b.npy",
        out_json=tmp_path / "b.json",
    )
    kw = {
        "model_path": stage["models"][model],
        "packs": stage["packs"],
        "folds_tsv": root / "folds.tsv",
        "fold": 0,
        "method": method,
        "options": {"n_steps": 64} if method == "integrated_gradients" else {"patch": 8},
        "atlas_nii": None,
        "out_dir": tmp_path / "maps",
        "out_table": tmp_path / "maps.tsv",
        "seed": 3,
        "baseline_npy": tmp_path / "b.npy",
        "baseline_json": tmp_path / "b.json",
    }
    table = attribute_fold(**kw)
    assert (table["baseline"] == "train_mean").all()
    assert (table["target_class"] == table["label"]).all()
    if method == "integrated_gradients":
        assert np.isfinite(table["completeness_error"]).all()
        assert (table["completeness_rel_error"] < 0.1).all(), table["completeness_rel_error"]
    meta = json.loads((tmp_path / "b.json").read_text())
    meta["scan_ids"].append(table["scan_id"].iloc[0])  # a test scan of fold 0
    meta["n_scans"] += 1
    (tmp_path / "b.json").write_text(json.dumps(meta))
    with pytest.raises(LeakageError, match=table["scan_id"].iloc[0]):
        attribute_fold(**kw)
