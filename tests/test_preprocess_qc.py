"""QC table, dataset description, in-memory helpers and the ANTs console scripts."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlens.preprocess import core, qc_table, write_dataset_description
from brainlens.preprocess.ants_cli import PROGRAMS
from brainlens.preprocess.versions import ensure_ants_on_path


def _qc(tmp_path, scan, **over):
    d = {"scan": scan, "tiv_ml": 1500.0, "gm_ml": 700.0, "wm_ml": 500.0, "csf_ml": 300.0,
         "corr_template": 0.95, "dice_template_mask": 0.97, "jac_min": 0.3, "jac_max": 3.0,
         "jac_frac_nonpos": 0.0, "seconds": 50.0}  # fmt: skip
    d.update(over)
    p = tmp_path / f"{scan}_desc-qc_T1w.json"
    p.write_text(json.dumps(d))
    return p


def test_qc_table_flags_the_outlier_only(tmp_path):
    rng = np.random.default_rng(0)
    files = [
        _qc(tmp_path, f"sub-{i:02d}", gm_ml=700 + rng.normal(0, 10), corr_template=0.95 + rng.normal(0, 0.005))
        for i in range(12)
    ]  # fmt: skip
    files.append(_qc(tmp_path, "sub-99_ses-2", corr_template=0.6))
    df = qc_table(files, tmp_path / "qc.tsv")
    back = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert len(back) == 13
    assert list(back.columns[:3]) == ["scan", "participant_id", "session_id"]
    row = df.set_index("scan").loc["sub-99_ses-2"]
    assert row["participant_id"] == "sub-99" and row["session_id"] == "ses-2"
    assert row["corr_template_outlier"] and row["any_outlier"]
    assert df["any_outlier"].sum() == 1
    assert not df["gm_ml_outlier"].any()
    # constant metric (MAD 0) is never flagged
    assert not df["jac_frac_nonpos_outlier"].any()


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2, 3, 4, 100], [-1.349, -0.674, 0.0, 0.674, 65.426]), ([5, 5, 5], [0, 0, 0])],
)
def test_robust_z(values, expected):
    np.testing.assert_allclose(core.robust_z(np.array(values, float)), expected, atol=1e-2)


def test_dataset_description(tmp_path):
    (tmp_path / "bids").mkdir()
    p = write_dataset_description(tmp_path / "preprocess", bids_dir=tmp_path / "bids", resolution=2)
    d = json.loads(p.read_text())
    assert d["DatasetType"] == "derivative"
    assert d["GeneratedBy"][0]["Name"] == "brainlens"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([1, 1, 0, 0], [1, 1, 0, 0], 1.0), ([1, 1, 0, 0], [1, 0, 0, 0], 2 / 3), ([0, 0], [0, 0], 1.0)],
)
def test_dice(a, b, expected):
    assert core.dice(np.array(a), np.array(b)) == pytest.approx(expected)


def test_normalize_priors_sums_to_one_inside_mask():
    pri = np.zeros((3, 4, 4, 4), np.float32)
    pri[1, :2] = 1.0  # only GM in half, nothing elsewhere
    mask = np.ones((4, 4, 4), bool)
    mask[3] = False
    out = core.normalize_priors(pri, mask)
    np.testing.assert_allclose(out.sum(0)[mask], 1.0, atol=1e-6)
    assert out[:, 3].sum() == 0
    assert out[1, 0, 0, 0] > 0.95


def test_clean_mask_keeps_largest_component_and_fills_holes():
    m = np.zeros((12, 12, 12), bool)
    m[2:9, 2:9, 2:9] = True
    m[5, 5, 5] = False  # hole
    m[11, 11, 11] = True  # speck
    out = core.clean_mask(m)
    assert out[5, 5, 5] and not out[11, 11, 11]


def test_reorient_ras_keeps_world_coordinates():
    aff = np.array([[-2.0, 0, 0, 30], [0, 0, 2.0, -40], [0, -2.0, 0, 50], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    out = core.reorient_ras(nib.Nifti1Image(data, aff))
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    ijk = np.array([1, 2, 3, 1])
    world = aff @ ijk
    ijk2 = np.round(np.linalg.inv(out.affine) @ world).astype(int)[:3]
    assert out.get_fdata()[tuple(ijk2)] == data[1, 2, 3]


@pytest.mark.parametrize(
    "program", ["antsRegistration", "Atropos", "N4BiasFieldCorrection", "ImageMath"]
)
def test_ants_console_scripts_run_as_subprocesses(program):
    ensure_ants_on_path()
    assert program in PROGRAMS
    ok = subprocess.run([program, "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 or ok.stdout or ok.stderr


@pytest.mark.parametrize("program", ["antsApplyTransforms", "N4BiasFieldCorrection"])
def test_missing_input_fails_in_the_child_not_here(tmp_path, program):
    ensure_ants_on_path()
    args = {
        "antsApplyTransforms": ["-d", "3", "-i", str(tmp_path / "nope.nii.gz"), "-r",
                                str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "o.nii.gz")],
        "N4BiasFieldCorrection": ["-d", "3", "-i", str(tmp_path / "nope.nii.gz"), "-o",
                                  str(tmp_path / "o.nii.gz")],
    }[program]  # fmt: skip
    res = subprocess.run([program, *args], capture_output=True, timeout=120)
    assert res.returncode != 0
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize(
    ("vox", "target", "smoothed"), [(1.0, 2.0, True), (2.0, 1.5, False), (1.5, 1.5, False)]
)
def test_antialias_preserves_sum_and_only_smooths_when_needed(tmp_path, vox, target, smoothed):
    from brainlens.preprocess.fileops import antialias_file

    data = np.zeros((30, 30, 30), np.float32)
    data[10:20, 10:20, 10:20] = 1.0
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([vox, vox, vox, 1.0])), src)
    out = np.asarray(
        nib.load(antialias_file(src, tmp_path / "out.nii.gz", target_mm=target)).dataobj
    )
    assert out.sum() == pytest.approx(data.sum(), rel=1e-4)
    assert bool(np.abs(out - data).max() > 0.01) == smoothed


def _rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    ("vox", "target", "shape", "expected_shape", "expected_vox"),
    [
        ((1.0, 1.0, 1.0), 1.5, (181, 217, 181), (121, 145, 121), (1.5, 1.5, 1.5)),
        ((1.0, 1.0, 1.2), 2.0, (10, 10, 10), (5, 5, 6), (2.0, 2.0, 2.0)),
        ((0.9, 2.0, 1.0), 1.5, (30, 12, 30), (18, 12, 20), (1.5, 2.0, 1.5)),
        ((1.5, 1.5, 1.5), 1.5, (8, 9, 10), (8, 9, 10), (1.5, 1.5, 1.5)),
        ((1.496, 1.5, 1.5), 1.5, (8, 9, 10), (8, 9, 10), (1.496, 1.5, 1.5)),
        ((2.0, 2.0, 2.0), 1.5, (8, 9, 10), (8, 9, 10), (2.0, 2.0, 2.0)),
    ],
)
@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_coarser_grid_keeps_axes_and_field_of_view(
    vox, target, shape, expected_shape, expected_vox, angle
):
    affine = np.eye(4)
    affine[:3, :3] = _rot_z(angle) @ np.diag(vox)
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    new_shape, new_affine = core.coarser_grid(shape, affine, target)
    assert new_shape == expected_shape
    new_vox = np.sqrt((new_affine[:3, :3] ** 2).sum(0))
    np.testing.assert_allclose(new_vox, expected_vox, atol=1e-9)
    # same axis directions
    np.testing.assert_allclose(
        new_affine[:3, :3] / new_vox, affine[:3, :3] / np.asarray(vox), atol=1e-9
    )
    # the outer corner of voxel 0 is the same point in the world
    corner = affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    new_corner = new_affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    np.testing.assert_allclose(new_corner, corner, atol=1e-9)
    # the new grid covers the old field of view (and by less than one new voxel more)
    extent, new_extent = np.asarray(shape) * vox, np.asarray(new_shape) * new_vox
    assert np.all(new_extent >= extent - 1e-6)
    assert np.all(new_extent - extent < new_vox)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_coarser_grid_refuses_a_non_positive_voxel(bad):
    with pytest.raises(ValueError, match="min_voxel_mm"):
        core.coarser_grid((4, 4, 4), np.eye(4), bad)


@pytest.mark.parametrize(("vox", "target", "changed"), [(1.0, 1.5, True), (1.5, 1.5, False)])
def test_segmentation_grid_files_resample_head_and_mask_together(tmp_path, vox, target, changed):
    from brainlens.preprocess.fileops import segmentation_grid_files

    n = 60
    ijk = np.indices((n, n, n)).astype(np.float32) - (n - 1) / 2
    radius = np.sqrt((ijk**2).sum(0)) * vox  # mm from the centre
    head = np.where(radius < 20, 100.0, 10.0).astype(np.float32)
    mask = (radius < 20).astype(np.uint8)
    affine = np.diag([vox, vox, vox, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * vox
    src, src_mask = tmp_path / "head.nii", tmp_path / "mask.nii"
    nib.save(nib.Nifti1Image(head, affine), src)
    nib.save(nib.Nifti1Image(mask, affine), src_mask)
    out, out_mask = segmentation_grid_files(
        src, src_mask, tmp_path / "seg.nii", tmp_path / "seg_mask.nii", min_voxel_mm=target
    )
    assert (out, out_mask) == (
        (tmp_path / "seg.nii", tmp_path / "seg_mask.nii") if changed else (src, src_mask)
    )
    img, mimg = nib.load(out), nib.load(out_mask)
    assert img.shape == mimg.shape
    np.testing.assert_allclose(img.affine, mimg.affine)
    np.testing.assert_allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), max(vox, target))
    # the sphere keeps its volume (mask) and its intensity inside (image)
    m = np.asarray(mimg.dataobj) > 0
    ml = m.sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000
    assert ml == pytest.approx(4 / 3 * np.pi * 20**3 / 1000, rel=0.05)
    centre = np.asarray(img.dataobj)[tuple(s // 2 for s in img.shape)]
    assert centre == pytest.approx(100.0, rel=1e-3)


def test_segmentation_grid_files_refuse_a_mask_of_another_grid(tmp_path):
    from brainlens.errors import PreprocessingError
    from brainlens.preprocess.fileops import segmentation_grid_files

    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / "h.nii")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 9), np.uint8), np.eye(4)), tmp_path / "m.nii")
    with pytest.raises(PreprocessingError, match=r"m\.nii: mask grid \(8, 8, 9\)"):
        segmentation_grid_files(
            tmp_path / "h.nii", tmp_path / "m.nii", tmp_path / "o.nii", tmp_path / "om.nii",
            min_voxel_mm=1.5,
        )  # fmt: skip


def test_tissue_volumes_use_each_map_own_voxel_volume(tmp_path):
    from brainlens.preprocess.fileops import tissue_volumes_ml

    mask = np.zeros((20, 20, 20), np.uint8)
    mask[:10] = 1  # 4000 voxels of 1 mm^3 = 4 ml
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii")
    gm = np.full((10, 10, 10), 0.5, np.float32)  # 1000 voxels of 8 mm^3 at 0.5 = 4 ml
    nib.save(nib.Nifti1Image(gm, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "gm.nii")
    vols = tissue_volumes_ml({"gm": tmp_path / "gm.nii"}, tmp_path / "mask.nii")
    assert vols == pytest.approx({"tiv_ml": 4.0, "gm_ml": 4.0})
