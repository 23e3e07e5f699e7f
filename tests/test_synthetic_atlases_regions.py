"""Synthetic demo data, atlases on the grid, region tables and seeds."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlens.atlases import atlas_on_grid, available_atlases, region_label, write_atlas
from brainlens.errors import ConfigError
from brainlens.grid import mni_grid
from brainlens.regions import fold_region_table, method_agreement, region_stats, summarize_regions
from brainlens.seeding import derive_seed
from brainlens.synthetic import (
    DemoSpec,
    min_jacobian,
    plan_dataset,
    region_mask_on_grid,
    write_demo_dataset,
    write_demo_subject,
)


def test_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(1, "train", "m", 0) == derive_seed(1, "train", "m", 0)
    seeds = {derive_seed(1, "train", "m", k) for k in range(50)} | {derive_seed(2, "train", "m", 0)}
    assert len(seeds) == 51
    assert all(0 < s < 2**31 for s in seeds)


def test_plan_is_balanced_and_seeded() -> None:
    spec = DemoSpec(n_subjects=10, n_second_session=3)
    a, b = plan_dataset(spec, seed=1), plan_dataset(spec, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not plan_dataset(spec, seed=2).equals(a)
    subjects = a.drop_duplicates("participant_id")
    assert (subjects["diagnosis"] == "patient").sum() == 5
    assert len(a) == 13 and (a["session_id"] != "n/a").all()


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_subjects", 2), ("effect", 1.5), ("voxel_size", 9.0), ("n_second_session", 99)],
)
def test_bad_demo_spec_names_the_key(field: str, value) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=f"demo.{field}"):
        DemoSpec(**{field: value}).validate()


def _linear_field(matrix: np.ndarray, shape=(12, 10, 8)) -> list[np.ndarray]:
    """Displacement d(x) = M (x - centre) in voxels: the map's Jacobian is I + M."""
    idx = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    rel = idx - centre[:, None, None, None]
    return [np.tensordot(matrix[a], rel, axes=1) for a in range(3)]


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (np.zeros((3, 3)), 1.0),
        (np.diag([0.5, 0.5, 0.5]), 1.5**3),  # expansion
        (np.diag([-0.5, 0.0, 0.0]), 0.5),  # contraction along x only
        (np.array([[0.0, 0.3, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), 1.0),  # shear
        (np.diag([-2.0, 0.0, 0.0]), -1.0),  # folding: x passes through itself
    ],
)
def test_min_jacobian_of_linear_maps(matrix: np.ndarray, expected: float) -> None:
    assert min_jacobian(_linear_field(matrix)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_demo_refuses_a_shrinkage_that_folds_the_anatomy(tmp_path: Path) -> None:
    # a long gyrus contracted by 0.8 towards its centroid: some tissue moves > 2 cm
    spec = DemoSpec(n_subjects=4, n_second_session=0, region="Temporal_Inf_L", shrink=0.8)
    plan = plan_dataset(spec, seed=3)
    patient = plan.loc[plan["diagnosis"] == "patient", "participant_id"].iloc[0]
    with pytest.raises(ConfigError, match=r"demo\.shrink=0\.8.*Temporal_Inf_L"):
        write_demo_subject(tmp_path, spec, seed=3, participant_id=patient)
    assert not any(tmp_path.rglob("*.nii*"))


@pytest.mark.slow
def test_demo_dataset_plants_the_effect_in_its_region(tmp_path: Path) -> None:
    spec = DemoSpec(
        n_subjects=4,
        n_second_session=0,
        voxel_size=2.0,
        region="Hippocampus_L",
        effect=0.8,
        deformation_mm=0.0,
        noise=0.0,
        bias=0.0,
        rotation_deg=0.0,
        translation_mm=0.0,
        scale=0.0,
    )
    plan = write_demo_dataset(tmp_path / "bids", spec, seed=3)
    root = tmp_path / "bids"
    gt = json.loads((root / "ground_truth.json").read_text())
    assert gt["atlas"] == "aal" and gt["region"] == "Hippocampus_L" and gt["label"] == 4101
    assert (root / "participants.tsv").exists() and (root / "dataset_description.json").exists()
    # With no motion, every scan shares one grid; compare patients and controls in the region.
    region = None
    means = {"patient": [], "control": []}
    for rec in plan.to_dict("records"):
        img = nib.as_closest_canonical(nib.load(str(root / rec["path"])))
        data = img.get_fdata()
        if region is None:
            # region mask in this native grid via world coordinates
            labels_img, table = __import__("brainlens.atlases", fromlist=["load_atlas"]).load_atlas(
                "aal"
            )
            vox2vox = np.linalg.inv(labels_img.affine) @ img.affine
            ijk = np.indices(data.shape).reshape(3, -1)
            src = np.rint(vox2vox[:3, :3] @ ijk + vox2vox[:3, 3:4]).astype(int)
            lab = np.asanyarray(labels_img.dataobj)
            ok = np.all((src >= 0) & (src < np.array(lab.shape)[:, None]), axis=0)
            region = np.zeros(data.size, bool)
            region[ok] = lab[src[0, ok], src[1, ok], src[2, ok]] == 4101
            region = region.reshape(data.shape)
        means[rec["diagnosis"]].append(data[region].mean())
    assert max(means["patient"]) < 0.9 * min(means["control"]), means


def test_no_partial_dataset_on_failure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        write_demo_dataset(tmp_path / "bids", DemoSpec(n_subjects=4, region="Nowhere_L"), seed=1)
    assert not (tmp_path / "bids").exists()
    assert not any(p.name.startswith(".demo-") for p in tmp_path.iterdir())


def test_atlas_on_grid_and_region_lookup(tmp_path: Path) -> None:
    assert {"aal", "harvard_oxford"} <= set(available_atlases())
    labels, table = atlas_on_grid("aal", 2.0)
    assert labels.shape == mni_grid(2.0)[0]
    assert set(np.unique(labels)) - {0} == set(table["index"])
    assert region_label(table, "Hippocampus_L", atlas="aal") == 4101
    with pytest.raises(ConfigError, match="Hippocampus_L"):
        region_label(table, "hippocampus_l", atlas="aal")
    write_atlas(
        "aal", resolution=2.0, out_nii=tmp_path / "aal.nii.gz", out_tsv=tmp_path / "aal.tsv"
    )
    img = nib.load(str(tmp_path / "aal.nii.gz"))
    np.testing.assert_allclose(img.affine, mni_grid(2.0)[1])
    mask = region_mask_on_grid("aal", "Hippocampus_L", 2.0)
    assert mask.sum() == table.loc[table["name"] == "Hippocampus_L", "n_voxels"].iloc[0]
    # left hippocampus: negative x (RAS grid), temporal lobe
    centre = np.array(np.nonzero(mask)).mean(axis=1)
    world = mni_grid(2.0)[1] @ np.append(centre, 1)
    assert -35 < world[0] < -15 and -35 < world[1] < -5 and -25 < world[2] < 0


def test_unknown_atlas_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="aal"):
        atlas_on_grid("no_such_atlas", 2.0)


def _toy_atlas() -> tuple[np.ndarray, pd.DataFrame]:
    labels = np.zeros((6, 6, 6), int)
    labels[:3, :3] = 1
    labels[3:, :3] = 2
    labels[:, 3:] = 3
    return labels, pd.DataFrame(
        {"index": [1, 2, 3], "name": ["a", "b", "c"], "n_voxels": [54, 54, 108]}
    )


def test_region_stats_known_values() -> None:
    labels, table = _toy_atlas()
    rel = np.zeros(labels.shape)
    rel[labels == 2] = 1.0
    rel[labels == 3] = 0.25
    stats = region_stats(rel, labels, table["index"].to_numpy())
    total = 54 * 1.0 + 108 * 0.25
    assert stats.loc[2, "mean"] == pytest.approx(1.0 / total)
    assert stats.loc[3, "sum"] == pytest.approx(27 / total)
    assert stats["density"].sum() == pytest.approx(1.0)
    assert stats.loc[1, "mean"] == 0


def test_fold_tables_rank_and_summarise_per_class() -> None:
    labels, table = _toy_atlas()
    hot = {1: np.where(labels == 1, 1.0, 0.1), 2: np.where(labels == 2, 1.0, 0.1)}
    folds = []
    for fold in range(3):
        maps = [hot[1], hot[1], hot[2]]
        folds.append(
            fold_region_table(maps, ["AD", "AD", "CN"], labels=labels, label_table=table, fold=fold)
        )
    long = pd.concat(folds)
    assert set(long["class"]) == {"all", "AD", "CN"}
    summary = summarize_regions(long, table)
    assert summary.iloc[0]["region"] == "a" and summary.iloc[0]["rank"] == 1
    assert summary.set_index("region").loc["b", "rank_class-CN"] == 1
    assert summary.set_index("region").loc["a", "top10_share"] == 1.0
    assert summary["sd"].max() == pytest.approx(0.0)


def test_method_agreement_is_a_rank_correlation(tmp_path: Path) -> None:
    base = pd.DataFrame({"label": [1, 2, 3, 4], "mean": [4.0, 3.0, 2.0, 1.0]})
    base.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    base.assign(mean=[40.0, 30.0, 20.0, 10.0]).to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    base.assign(mean=[1.0, 2.0, 3.0, 4.0]).to_csv(tmp_path / "c.tsv", sep="\t", index=False)
    corr = method_agreement({m: tmp_path / f"{m}.tsv" for m in "abc"})
    assert corr.loc["a", "b"] == pytest.approx(1.0)
    assert corr.loc["a", "c"] == pytest.approx(-1.0)


@pytest.mark.slow
def test_the_shipped_demo_config_generates_every_subject_without_folding() -> None:
    """The README's demo command must not stop in demo generation (it did with shrink 0.3)."""
    import yaml

    from brainlens.seeding import derive_seed
    from brainlens.synthetic import DemoSpec, plan_dataset

    # the demo's settings live in config/demo.yaml (read when no bids_dir is given)
    cfg = yaml.safe_load((Path(__file__).parents[1] / "config" / "demo.yaml").read_text())
    spec = DemoSpec(**cfg["demo"])
    seed = derive_seed(cfg["seed"], "demo")  # as workflow/rules/common.smk
    plan = plan_dataset(spec, seed=seed).drop_duplicates("participant_id")
    # two processes: each subject is single-threaded work of several seconds
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(
                _make_anatomy,
                spec,
                seed,
                int(row["index"]),
                row[spec.label_column] == "patient",
            )
            for row in plan.to_dict("records")
        ]
        for future in futures:
            future.result()  # re-raises a subject's error (folding) here


def _make_anatomy(spec: object, seed: int, index: int, is_patient: bool) -> None:
    from brainlens.synthetic import subject_anatomy

    subject_anatomy(spec, seed=seed, index=index, is_patient=is_patient)
