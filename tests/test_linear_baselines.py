"""Classical baselines (brainlens.linear): same folds, same files, C chosen on val only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlens.errors import ConfigError
from brainlens.folds import make_folds
from brainlens.linear import check_covariates, haufe_pattern, train_linear_fold, write_pattern
from brainlens.regions import write_region_tables
from brainlens.summary import write_metrics_summary

GRID = (8, 8, 8)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
#: The CNN's metrics.json keys besides the metrics (brainlens.training.fold.train_fold).
CNN_FACTS = {
    "fold",
    "model",
    "best_epoch",
    "restart",
    "restarts",
    "epochs_run",
    "stopped_early",
    "monitor",
    "best_val",
    "n_train",
    "n_val",
    "n_test",
    "random_labels",
    "device",
}
PRED_COLUMNS = ["scan_id", "participant_id", "session_id", "label", "pred"]


def _atlas() -> np.ndarray:
    """Three slabs along x inside the 6x6x6 brain: labels 1 (effect), 2, 3."""
    labels = np.zeros(GRID, dtype=np.int16)
    for lab, (lo, hi) in enumerate([(1, 3), (3, 5), (5, 7)], start=1):
        labels[lo:hi, 1:7, 1:7] = lab
    return labels


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """36 subjects (18 per class); patients lose grey matter in atlas region 1."""
    root = tmp_path_factory.mktemp("linear")
    rng = np.random.default_rng(0)
    n = 36
    ids = [f"sub-{i:02d}" for i in range(n)]
    diag = np.array(["control", "patient"] * (n // 2))
    labels = _atlas()
    maps = np.zeros((n, *GRID), dtype=np.float32)
    for i in range(n):
        m = 0.5 + 0.1 * rng.standard_normal(GRID) + 0.05 * rng.standard_normal()
        m[labels == 1] -= 0.08 * (diag[i] == "patient")
        maps[i] = np.where(labels > 0, m, 0.0)
    np.save(root / "gm.npy", maps.astype(np.float16))
    pd.DataFrame({"row": range(n), "scan_id": ids, "path": ids}).to_csv(
        root / "gm.tsv", sep="\t", index=False
    )
    (root / "gm.json").write_text(json.dumps({"shape": [n, *GRID], "affine": AFFINE.tolist()}))
    nib.save(nib.Nifti1Image((labels > 0).astype(np.uint8), AFFINE), str(root / "mask.nii.gz"))
    nib.save(nib.Nifti1Image(labels, AFFINE), str(root / "atlas.nii.gz"))
    pd.DataFrame({"index": [1, 2, 3], "name": ["effect", "other_a", "other_b"]}).to_csv(
        root / "atlas.tsv", sep="\t", index=False
    )
    scans = pd.DataFrame({"participant_id": ids, "session_id": "n/a", "diagnosis": diag})
    for name, mode in (("folds", "kfold"), ("holdout", "holdout")):
        make_folds(
            scans,
            label_column="diagnosis",
            mode=mode,
            n_folds=3,
            val_fraction=0.25,
            test_fraction=0.25,
            seed=3,
        ).to_csv(root / f"{name}.tsv", sep="\t", index=False)
    return {"root": root, "pack": (root / "gm.npy", root / "gm.tsv")}


def _run(data, model: str, fold: int, out: Path, folds: str = "folds.tsv", **kw) -> dict:
    root = data["root"]
    return train_linear_fold(
        model=model,
        folds_tsv=root / folds,
        fold=fold,
        out_dir=out,
        pack=data["pack"],
        mask_nii=root / "mask.nii.gz",
        atlas_nii=root / "atlas.nii.gz",
        atlas_tsv=root / "atlas.tsv",
        seed=1,
        **kw,
    )


@pytest.fixture(scope="module")
def voxel_runs(data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """linear_svm_voxels on the three folds, with each fold's Haufe pattern."""
    root = tmp_path_factory.mktemp("voxels")
    for k in range(3):
        out = root / f"fold-{k}"
        _run(data, "linear_svm_voxels", k, out)
        write_pattern(
            model_npz=out / "model.npz",
            pack=data["pack"],
            folds_tsv=data["root"] / "folds.tsv",
            fold=k,
            out_nii=out / "pattern.nii.gz",
            out_tsv=out / "pattern.tsv",
        )
    return root


def _pattern_regions(data, voxel_runs: Path, out: Path) -> pd.DataFrame:
    return write_region_tables(
        [voxel_runs / f"fold-{k}" / "pattern.tsv" for k in range(3)],
        atlas_nii=data["root"] / "atlas.nii.gz",
        atlas_tsv=data["root"] / "atlas.tsv",
        out_tsv=out / "toy.tsv",
        out_folds_tsv=out / "toy_folds.tsv",
    )


@pytest.mark.parametrize("model", ["linear_svm_voxels", "linear_svm_regions"])
def test_image_models_beat_chance_with_the_cnn_files(data, tmp_path: Path, model: str) -> None:
    outs = [tmp_path / f"fold-{k}" for k in range(3)]
    scores = [_run(data, model, k, out)["balanced_accuracy"] for k, out in enumerate(outs)]
    assert np.mean(scores) > 0.8, scores
    m = json.loads((outs[0] / "metrics.json").read_text())
    assert CNN_FACTS <= set(m) and m["monitor"] == "val_loss" and m["C"] > 0, m
    pred = pd.read_csv(outs[0] / "predictions.tsv", sep="\t")
    assert list(pred.columns) == PRED_COLUMNS + ["prob_control", "prob_patient"]
    hist = pd.read_csv(outs[0] / "history.tsv", sep="\t")
    assert hist["selected"].sum() == 1 and "epoch" not in hist  # no learning curve drawn
    assert hist.loc[hist["selected"], "val_loss"].item() == pytest.approx(m["best_val"], rel=1e-4)
    summary = write_metrics_summary(
        [o / "metrics.json" for o in outs],
        tmp_path / "summary.tsv",
        predictions_tsvs=[o / "predictions.tsv" for o in outs],
        folds_tsv=data["root"] / "folds.tsv",
    )
    assert {"val_loss", "balanced_accuracy", "scan_roc_auc"} <= set(summary.columns)


def test_c_is_chosen_on_validation_only(data, tmp_path: Path) -> None:
    """Flipping every test label changes the test score, not C or the validation value."""
    root = data["root"]
    first = _run(data, "linear_svm_voxels", 0, tmp_path / "a", folds="holdout.tsv")
    folds = pd.read_csv(root / "holdout.tsv", sep="\t", dtype=str, keep_default_na=False)
    test = folds["role"] == "test"
    swap = {"control": "patient", "patient": "control"}
    folds.loc[test, "label"] = folds.loc[test, "label"].map(swap)
    folds.to_csv(tmp_path / "flipped.tsv", sep="\t", index=False)
    flipped = train_linear_fold(
        model="linear_svm_voxels",
        folds_tsv=tmp_path / "flipped.tsv",
        fold=0,
        out_dir=tmp_path / "b",
        pack=data["pack"],
        mask_nii=root / "mask.nii.gz",
        seed=1,
    )
    assert flipped["C"] == first["C"] and flipped["best_val"] == first["best_val"]
    h1, h2 = (pd.read_csv(tmp_path / d / "history.tsv", sep="\t") for d in "ab")
    pd.testing.assert_frame_equal(h1, h2)
    assert flipped["balanced_accuracy"] == pytest.approx(1 - first["balanced_accuracy"])
    assert len(h1) > 1 and h1["val_loss"].nunique() > 1  # the grid really was searched


def test_haufe_pattern_ranks_the_effect_region_first(data, voxel_runs, tmp_path: Path) -> None:
    img = nib.load(str(voxel_runs / "fold-0" / "pattern.nii.gz"))
    assert img.shape == GRID and np.allclose(img.affine, AFFINE)
    vol = np.asarray(img.dataobj)
    labels = _atlas()
    assert vol[labels == 1].mean() < 0  # less grey matter in the positive class (patient)
    assert np.all(vol[labels == 0] == 0)
    summary = _pattern_regions(data, voxel_runs, tmp_path)
    assert summary["region"].iloc[0] == "effect", summary
    assert (summary.loc[summary["region"] == "effect", "rank_mean"] == 1).all()


def test_haufe_pattern_differs_from_weights_under_a_suppressor() -> None:
    """x2 = noise only; x1 = signal + noise: w loads on both, the pattern on x1 only."""
    rng = np.random.default_rng(1)
    noise, signal = rng.standard_normal(2000), rng.standard_normal(2000)
    x = np.column_stack([signal + noise, noise])
    a = haufe_pattern(x, np.array([1.0, -1.0]))
    assert abs(a[1]) < 0.1 and a[0] == pytest.approx(1.0, abs=0.1)


def _participants(tmp_path: Path, n: int = 210) -> tuple[Path, Path]:
    rng = np.random.default_rng(2)
    ids = [f"sub-{i:03d}" for i in range(n)]
    diag = np.array(["control", "patient"] * (n // 2))
    table = pd.DataFrame(
        {
            "participant_id": ids,
            "diagnosis": diag,
            "age": np.round(60 + 8 * (diag == "patient") + 5 * rng.standard_normal(n), 1),
            "noise": np.round(rng.standard_normal(n), 3),
            "site": rng.choice(["A", "B", "C"], n),
        }
    )
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    scans = table.assign(session_id="n/a")[["participant_id", "session_id", "diagnosis"]]
    folds = make_folds(scans, label_column="diagnosis", mode="kfold", n_folds=3, seed=4)
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    return tmp_path / "participants.tsv", tmp_path / "folds.tsv"


@pytest.mark.parametrize(
    ("covariates", "low", "high"), [(["age"], 0.7, 1.0), (["noise", "site"], 0.35, 0.65)]
)
def test_confounds_only_follows_its_covariates(tmp_path: Path, covariates, low, high) -> None:
    participants, folds = _participants(tmp_path)
    check_covariates(participants, covariates, "diagnosis")
    scores = [
        train_linear_fold(
            model="confounds_only",
            folds_tsv=folds,
            fold=k,
            out_dir=tmp_path / f"f{k}",
            participants_tsv=participants,
            covariates=covariates,
        )["balanced_accuracy"]
        for k in range(3)
    ]
    assert low <= np.mean(scores) <= high, scores


def test_missing_or_label_covariates_are_refused(tmp_path: Path) -> None:
    participants, _ = _participants(tmp_path, n=10)
    with pytest.raises(ConfigError, match=r"'bmi'.*participants.tsv"):
        check_covariates(participants, ["age", "bmi"], "diagnosis")
    check_covariates(participants, ["age", "tiv"], "diagnosis")  # tiv: computed, not a column
    table = pd.read_csv(participants, sep="\t", dtype=str)
    table.loc[3, "age"] = "n/a"  # no silent imputation: an error listing the participant
    table.to_csv(participants, sep="\t", index=False)
    with pytest.raises(ConfigError, match=r"'age' is n/a for participant\(s\) \['sub-003'\]"):
        check_covariates(participants, ["age"], "diagnosis")
    with pytest.raises(ConfigError, match="label column"):
        check_covariates(participants, ["diagnosis"], "diagnosis")


def test_linear_package_does_not_import_torch() -> None:
    code = "import sys, brainlens.linear; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.workflow
def test_dry_run_plans_baselines_per_fold_and_no_attribution(tmp_path: Path) -> None:
    import yaml
    from conftest import SMALL_CONFIG, planned_jobs, snakemake

    small = yaml.safe_load(SMALL_CONFIG.read_text())
    n_folds, n_methods = small["folds"]["n_folds"], len(small["attribution"]["methods"])
    out = snakemake(tmp_path, "-n", "--cores", "1").stdout
    jobs = planned_jobs(out)
    assert jobs["train_linear"] == 3 * n_folds, jobs
    assert jobs["linear_pattern"] == n_folds, jobs
    assert jobs["linear_pattern_regions"] == len(small["regions"]["atlases"]), jobs
    assert jobs["train_model"] == n_folds and jobs["attribute"] == n_methods * n_folds, jobs
    assert jobs["metrics_summary"] == 4, jobs
    for model in ("linear_svm_voxels", "linear_svm_regions", "confounds_only"):
        assert f"results/train/{model}/fold-0/metrics.json" in out
        assert f"results/attribution/{model}/" not in out and f"results/sanity/{model}/" not in out
    assert "results/regions/linear_svm_voxels/pattern/aal.tsv" in out


def test_report_compares_baselines_and_shows_the_pattern_regions(
    data, voxel_runs, tmp_path: Path
) -> None:
    """A report of models without attribution methods: comparison, pairs, pattern table."""
    from brainlens.report import build_report

    root, kw = data["root"], {"fold_metrics": {}, "predictions": {}, "histories": {}}
    pd.DataFrame(
        {"participant_id": [f"sub-{i:02d}" for i in range(36)], "noise": range(36)}
    ).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    for k in range(3):  # a covariate unrelated to the label
        train_linear_fold(
            model="confounds_only",
            folds_tsv=root / "folds.tsv",
            fold=k,
            out_dir=tmp_path / f"fold-{k}",
            participants_tsv=tmp_path / "participants.tsv",
            covariates=["noise"],
        )
    names = {"fold_metrics": "metrics.json", "predictions": "predictions.tsv"}
    for key, name in (names | {"histories": "history.tsv"}).items():
        for k in range(3):
            kw[key][("linear_svm_voxels", k)] = voxel_runs / f"fold-{k}" / name
            kw[key][("confounds_only", k)] = tmp_path / f"fold-{k}" / name
    _pattern_regions(data, voxel_runs, tmp_path)
    (tmp_path / "gt.json").write_text(json.dumps({"atlas": "toy", "region": "effect"}))
    html = build_report(
        out_html=tmp_path / "r" / "index.html",
        figures_dir=tmp_path / "r" / "figures",
        title="t",
        config={"regions": {"atlases": ["toy"]}},
        inputs_tsv=None,
        qc_tsv=None,
        folds_tsv=root / "folds.tsv",
        summaries={},
        attribution_tables={},
        region_tables={("linear_svm_voxels", "pattern", "toy"): tmp_path / "toy.tsv"},
        region_fold_tables={("linear_svm_voxels", "pattern", "toy"): tmp_path / "toy_folds.tsv"},
        agreement_tables={},
        sanity_tables={},
        deletion_tables={},
        ground_truth=tmp_path / "gt.json",
        template_t1w=None,
        **kw,
    ).read_text()
    assert "Paired differences" in html and "Model confounds_only" in html
    assert "chosen C" in html
    assert "The planted region effect (vermilion) is ranked 1 of 3" in html
    assert "activation pattern (Haufe et al. 2014)" in html
    # the voxel model is named best on validation loss, not the covariate one
    best = html.split('class="good"')[1][:400]
    assert "linear_svm_voxels" in best, best
