"""End-to-end: the real workflow on the small demo, and its output contract."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, planned_jobs, snakemake

from brainlens.derivatives import derivative_path, tissue_key
from brainlens.grid import SPACE, mni_grid, res_label

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def _config(workdir: Path) -> dict:
    import yaml

    return yaml.safe_load((REPO / "tests" / "data" / "config_small.yaml").read_text())


def test_preprocessing_outputs_follow_the_contract(small_run: Path) -> None:
    inputs = pd.read_csv(small_run / "results/preprocess/inputs.tsv", sep="\t", dtype=str)
    assert (inputs["status"] == "ok").all()
    res = _config(small_run)["preprocess"]["resolution"]
    shape, affine = mni_grid(res)
    for rec in inputs.to_dict("records"):
        pid, ses, scan = rec["participant_id"], rec["session_id"], rec["scan"]
        anat = small_run / "results/preprocess" / pid / ("" if ses == "n/a" else ses) / "anat"
        t1w = anat / f"{scan}_space-{SPACE}_res-{res_label(res)}_desc-preproc_T1w.nii.gz"
        img = nib.load(str(t1w))
        assert img.shape == shape
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
        root = small_run / "results/preprocess"
        for tissue in ("GM", "WM", "CSF"):
            key = tissue_key(tissue, modulated=True)
            assert derivative_path(root, scan, key, resolution=res).exists()
        assert (anat.parent / "figures" / f"{scan}_desc-qc_T1w.png").exists()
    qc = pd.read_csv(small_run / "results/preprocess/qc.tsv", sep="\t")
    assert {"tiv_ml", "gm_ml", "wm_ml", "csf_ml"} <= set(qc.columns)
    assert len(qc) == len(inputs)
    assert (qc["gm_ml"] > 300).all() and (qc["tiv_ml"] > qc["gm_ml"]).all()


def test_folds_keep_subjects_on_one_side(small_run: Path) -> None:
    folds = pd.read_csv(small_run / "results/folds/folds.tsv", sep="\t", dtype=str)
    assert list(folds.columns[:5]) == ["participant_id", "session_id", "fold", "role", "label"]
    sides = folds.groupby(["fold", "participant_id"])["role"].nunique()
    assert (sides == 1).all()
    assert set(folds["role"]) == {"train", "val", "test"}


def test_training_outputs_and_summary(small_run: Path) -> None:
    cfg = _config(small_run)
    model = cfg["train"]["model"]
    for k in range(cfg["folds"]["n_folds"]):
        fold_dir = small_run / f"results/train/{model}/fold-{k}"
        for name in (
            "model.pt",
            "metrics.json",
            "history.tsv",
            "predictions.tsv",
            "learning_curve.png",
        ):
            assert (fold_dir / name).exists(), name
        history = pd.read_csv(fold_dir / "history.tsv", sep="\t")
        metrics = json.loads((fold_dir / "metrics.json").read_text())
        assert history["epoch"].tolist() == list(range(1, len(history) + 1))
        assert len(history) == metrics["epochs_run"]
        if not metrics["stopped_early"]:
            assert len(history) == cfg["train"]["epochs"]
        # the selected epoch is the best monitored validation value (val only, never test)
        # among the epochs from early_stopping.start_epoch on
        monitor = cfg["train"]["early_stopping"]["monitor"]
        start = cfg["train"]["early_stopping"].get("start_epoch", 1)
        values = history.loc[history["epoch"] >= start, monitor]
        best = values.idxmin() if monitor.endswith("loss") else values.idxmax()
        assert metrics["best_epoch"] == history.loc[best, "epoch"]
    summary = pd.read_csv(
        small_run / f"results/train/{model}/metrics_summary.tsv", sep="\t", index_col="fold"
    )
    assert "balanced_accuracy" in summary.columns
    assert {"mean", "sd"} <= {str(i) for i in summary.index}
    per_fold = summary.drop(index=[i for i in summary.index if not str(i).isdigit()])
    assert len(per_fold) == cfg["folds"]["n_folds"]
    assert summary.loc["mean", "balanced_accuracy"] == pytest.approx(
        per_fold["balanced_accuracy"].mean()
    )


def test_attribution_maps_carry_the_grid_affine(small_run: Path) -> None:
    cfg = _config(small_run)
    shape, affine = mni_grid(cfg["preprocess"]["resolution"])
    model = cfg["train"]["model"]
    maps = sorted((small_run / f"results/attribution/{model}").rglob("*_relevance.nii.gz"))
    methods = {p.parts[-3] for p in maps}
    assert methods == set(cfg["attribution"]["methods"])
    for path in maps:
        img = nib.load(str(path))
        assert img.shape == shape
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
        assert np.isfinite(np.asanyarray(img.dataobj)).all()


def test_region_tables_rank_regions(small_run: Path) -> None:
    cfg = _config(small_run)
    model = cfg["train"]["model"]
    for method in cfg["attribution"]["methods"]:
        for atlas in cfg["regions"]["atlases"]:
            table = pd.read_csv(
                small_run / f"results/regions/{model}/{method}/{atlas}.tsv", sep="\t"
            )
            assert {"region", "rank", "rank_by", "mean", "mean_abs", "sd"} <= set(table.columns)
            # the ranking statistic is regions.rank_by (default abs: mean |relevance|)
            assert set(table["rank_by"]) == {cfg.get("regions", {}).get("rank_by", "abs")}
            stat = "mean_abs" if table["rank_by"].iloc[0] == "abs" else "mean"
            # rank 1 = most relevant; ties share the worst rank (a constant map ranks all last)
            assert table["rank"].iloc[0] == (table[stat] == table[stat].iloc[0]).sum()
            assert table["rank"].between(1, len(table)).all()
            assert table[stat].is_monotonic_decreasing
            assert (table["mean_abs"] >= table["mean"].abs() - 1e-12).all()


def test_report_exists_and_links_resolve(small_run: Path) -> None:
    html = small_run / "results/report/index.html"
    text = html.read_text()
    assert "balanced" in text.lower()
    import re

    for src in re.findall(r'<img[^>]+src="([^"]+)"', text):
        if not src.startswith("data:"):
            assert (html.parent / src).exists(), src


def test_ground_truth_is_written(small_run: Path) -> None:
    gt = json.loads((small_run / "results/demo_bids/ground_truth.json").read_text())
    assert gt["atlas"] == "aal" and gt["region"] == "Hippocampus_L"


def test_nothing_to_do_after_a_full_run(small_run: Path) -> None:
    out = snakemake(small_run, "-n", "--cores", "1").stdout
    assert planned_jobs(out) == {}, out[-3000:]


def test_changing_epochs_reruns_training_not_preprocessing(small_run: Path, tmp_path: Path) -> None:
    import yaml

    cfg = _config(small_run)
    cfg["train"]["epochs"] = cfg["train"]["epochs"] + 1
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(small_run, "-n", "--cores", "1", configfile=changed).stdout)
    assert jobs.get("train_model") == cfg["folds"]["n_folds"]
    assert "report" in jobs
    for rule in (
        "demo_scan",
        "demo_metadata",
        "check_inputs",
        "preprocess_t1w",
        "qc_table",
        "folds",
        "pack",
    ):
        assert rule not in jobs, jobs
