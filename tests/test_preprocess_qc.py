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
    p = tmp_path / f"{scan}_desc-qc.json"
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
    p = write_dataset_description(tmp_path / "preprocess")
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
