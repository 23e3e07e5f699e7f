"""Signed relevance done right (issue 24): training-part baselines, one target, |.| ranks.

A toy model whose logits depend only on the mean of one of eight regions must rank
that region first for every method, in the ``all`` row and in every class row, when
run through the workflow's own functions (baseline job, attribution stage, region
tables). With today's zero baseline and signed ranking, integrated gradients and
occlusion ranked it last for the patients.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import brainlens.attribution.fold as explain_mod
from brainlens.attribution.baselines import (
    check_baseline_provenance,
    fold_baseline,
    read_baseline,
    write_fold_baseline,
)
from brainlens.attribution.fold import attribute_fold
from brainlens.errors import ConfigError, LeakageError
from brainlens.packing import pack_volumes
from brainlens.regions import write_region_tables

torch.set_num_threads(1)
SIDE, REGION = 16, 3
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -16
CLASSES = ["control", "patient"]
METHODS = {
    "gradients": {},
    "guided_backprop": {},
    "integrated_gradients": {"n_steps": 16},
    "occlusion": {"patch": 4, "stride": 4},
    "region_occlusion": {"atlas": "toy"},
}


def _octants() -> np.ndarray:
    """Eight 8^3 regions labelled 1..8."""
    i, j, k = np.indices((SIDE,) * 3) // (SIDE // 2)
    return (1 + i + 2 * j + 4 * k).astype(np.int16)


class RegionModel(nn.Module):
    """logits = [s, -s], s = w * (mean of region REGION - 0.4): only that region matters."""

    def __init__(self, atlas: np.ndarray) -> None:
        super().__init__()
        mask = torch.from_numpy((atlas == REGION).astype(np.float32))
        self.register_buffer("weights", mask / mask.sum())
        self.w = nn.Parameter(torch.tensor(8.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.w * ((x[:, 0] * self.weights).sum(dim=(1, 2, 3)) - 0.4)
        return torch.stack([s, -s], dim=1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """20 grey-matter-like scans (10 per class, patients lower in REGION), 2 folds."""
    root = tmp_path_factory.mktemp("signed")
    rng = np.random.default_rng(0)
    atlas = _octants()
    paths, ids, rows = [], [], []
    for i in range(20):
        label = CLASSES[i % 2]
        v = 0.5 + rng.normal(0, 0.03, (SIDE,) * 3) + rng.normal(0, 0.05, 8)[atlas - 1]
        if label == "patient":
            v[atlas == REGION] -= 0.25
        paths.append(root / f"sub-{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(v.astype(np.float32), AFFINE), str(paths[-1]))
        ids.append(f"sub-{i:02d}")
        for fold in (0, 1):
            first_half = i < 10
            role = "test" if first_half == (fold == 1) else ("val" if i % 10 >= 8 else "train")
            rows.append(
                {"participant_id": ids[-1], "session_id": "n/a", "fold": fold, "role": role}
                | {"label": label, "random_labels": False, "scan_id": ids[-1]}
            )
    pack_volumes(
        paths, scan_ids=ids, out_npy=root / "gm.npy", out_index=root / "gm.tsv", dtype="float32"
    )
    pd.DataFrame(rows).to_csv(root / "folds.tsv", sep="\t", index=False)
    nib.save(nib.Nifti1Image(atlas, AFFINE), str(root / "toy.nii.gz"))
    pd.DataFrame(
        {"index": range(1, 9), "name": [f"r{i}" for i in range(1, 9)], "n_voxels": 512}
    ).to_csv(root / "toy.tsv", sep="\t", index=False)
    return {"root": root, "atlas": atlas, "packs": [(root / "gm.npy", root / "gm.tsv")]}


def _region_table(
    toy: dict, tmp: Path, monkeypatch: pytest.MonkeyPatch, method: str, kind: str, rank_by: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The workflow's path: baseline job, attribute stage per fold, region tables."""
    root, model = toy["root"], RegionModel(toy["atlas"])
    meta = {"model": "toy", "class_names": CLASSES, "transform": None}
    monkeypatch.setattr(explain_mod, "load_trained_model", lambda _path: (model, meta))
    tables = []
    for fold in (0, 1):
        base = tmp / f"baseline-{fold}"
        write_fold_baseline(
            packs=toy["packs"],
            folds_tsv=root / "folds.tsv",
            fold=fold,
            kind=kind,
            control_class=None,
            out_npy=base.with_suffix(".npy"),
            out_json=base.with_suffix(".json"),
        )
        attribute_fold(
            model_path=tmp / "model.pt",
            packs=toy["packs"],
            folds_tsv=root / "folds.tsv",
            fold=fold,
            method=method,
            options=METHODS[method],
            atlas_nii=root / "toy.nii.gz",
            out_dir=tmp / f"maps-{fold}",
            out_table=tmp / f"fold-{fold}.tsv",
            seed=1,
            baseline_npy=base.with_suffix(".npy"),
            baseline_json=base.with_suffix(".json"),
        )
        tables.append(tmp / f"fold-{fold}.tsv")
    summary = write_region_tables(
        tables,
        atlas_nii=root / "toy.nii.gz",
        atlas_tsv=root / "toy.tsv",
        out_tsv=tmp / "regions.tsv",
        out_folds_tsv=tmp / "regions_folds.tsv",
        rank_by=rank_by,
    )
    return summary.set_index("label"), pd.read_csv(tmp / "regions_folds.tsv", sep="\t")


@pytest.mark.parametrize("rank_by", ["abs", "signed"])
@pytest.mark.parametrize("method", list(METHODS))
def test_the_only_relevant_region_ranks_first_in_every_class_row(
    toy: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, rank_by: str
) -> None:
    summary, folds = _region_table(toy, tmp_path, monkeypatch, method, "train_mean", rank_by)
    assert (summary["rank_by"] == rank_by).all()
    for col in ["rank", "rank_class-control", "rank_class-patient"]:
        assert summary.loc[REGION, col] == 1, (col, summary[col].to_dict())
    region_rows = folds[folds["label"] == REGION]
    assert set(region_rows["class"]) == {"all", *CLASSES}
    assert (region_rows["rank"] == 1).all(), region_rows[["fold", "class", "rank"]]
    # both columns are there, per class and for all scans; no class disagrees in sign
    assert {"mean", "mean_abs", "mean_class-patient", "mean_abs_class-patient"} <= set(summary)
    assert not summary["sign_conflict"].any()
    assert summary.loc[REGION, "mean_class-patient"] > 0  # evidence for the true class


def test_a_zero_baseline_makes_the_patients_region_negative(
    toy: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's failure, kept visible: zero baseline, signed ranking."""
    summary, _ = _region_table(toy, tmp_path, monkeypatch, "integrated_gradients", "zero", "signed")
    assert summary.loc[REGION, "mean_class-patient"] < 0 < summary.loc[REGION, "mean_class-control"]
    assert summary.loc[REGION, "rank_class-patient"] == 8
    assert bool(summary.loc[REGION, "sign_conflict"])


def test_integrated_gradients_reports_its_completeness(
    toy: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _region_table(toy, tmp_path, monkeypatch, "integrated_gradients", "train_mean", "abs")
    table = pd.read_csv(tmp_path / "fold-0.tsv", sep="\t")
    assert (table["baseline"] == "train_mean").all()
    assert (table["target_class"] == table["label"]).all()
    assert table["completeness_rel_error"].max() < 1e-3  # linear model: exact
    assert (table["logit_delta"].abs() > 0).all()


def test_the_baseline_never_reads_a_test_scan(toy: dict, tmp_path: Path) -> None:
    root = toy["root"]
    folds = pd.read_csv(root / "folds.tsv", sep="\t")
    train = sorted(folds[(folds["fold"] == 0) & (folds["role"] == "train")]["participant_id"])
    out = write_fold_baseline(
        packs=toy["packs"],
        folds_tsv=root / "folds.tsv",
        fold=0,
        kind="train_mean",
        control_class=None,
        out_npy=tmp_path / "b.npy",
        out_json=tmp_path / "b.json",
    )
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["scan_ids"] == train and meta["roles"] == ["train"] and meta["n_scans"] == 8
    check_baseline_provenance(tmp_path / "b.json", root / "folds.tsv", 0)
    # the array is the mean of the training scans only: changing a test scan changes nothing
    gm = np.load(root / "gm.npy")
    index = pd.read_csv(root / "gm.tsv", sep="\t")
    rows = index.set_index("scan_id").loc[train, "row"].to_numpy()
    expected = fold_baseline(gm[rows][:, None], ["x"] * len(rows), kind="train_mean")
    np.testing.assert_allclose(out.array, expected, rtol=1e-6)
    doctored = tmp_path / "doctored"
    doctored.mkdir()
    test_row = int(index.set_index("scan_id").loc["sub-15", "row"])  # a test scan of fold 0
    gm[test_row] += 100.0
    np.save(doctored / "gm.npy", gm)
    (doctored / "gm.tsv").write_text((root / "gm.tsv").read_text())
    (doctored / "gm.json").write_text((root / "gm.json").read_text())
    again = write_fold_baseline(
        packs=[(doctored / "gm.npy", doctored / "gm.tsv")],
        folds_tsv=root / "folds.tsv",
        fold=0,
        kind="train_mean",
        out_npy=tmp_path / "c.npy",
        out_json=tmp_path / "c.json",
    )
    np.testing.assert_array_equal(again.array, out.array)
    np.testing.assert_array_equal(
        read_baseline(tmp_path / "b.npy", tmp_path / "b.json").array, out.array
    )
    # a sidecar that lists a test (or validation) scan fails the leakage audit, naming the file
    for leaked in ("sub-15", "sub-08"):
        bad = dict(meta, scan_ids=[*meta["scan_ids"], leaked], n_scans=meta["n_scans"] + 1)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(LeakageError, match=rf"bad\.json.*{leaked}"):
            check_baseline_provenance(tmp_path / "bad.json", root / "folds.tsv", 0)
    with pytest.raises(LeakageError, match="fold 0 used for fold 1"):
        check_baseline_provenance(tmp_path / "b.json", root / "folds.tsv", 1)


def test_control_mean_and_blur_baselines(toy: dict, tmp_path: Path) -> None:
    root = toy["root"]
    kw = {"packs": toy["packs"], "folds_tsv": root / "folds.tsv", "fold": 0}
    ctrl = write_fold_baseline(
        **kw,
        kind="train_control_mean",
        control_class="control",
        out_npy=tmp_path / "c.npy",
        out_json=tmp_path / "c.json",
    )
    assert len(ctrl.scan_ids) == 4 and all(int(s[-2:]) % 2 == 0 for s in ctrl.scan_ids)
    with pytest.raises(ConfigError, match="control_class.*'CN'"):
        write_fold_baseline(
            **kw,
            kind="train_control_mean",
            control_class="CN",
            out_npy=tmp_path / "x.npy",
            out_json=tmp_path / "x.json",
        )
    blur = write_fold_baseline(
        **kw,
        kind="blur",
        blur_fwhm_mm=8.0,
        out_npy=tmp_path / "b.npy",
        out_json=tmp_path / "b.json",
    )
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["scan_ids"] == [] and meta["shape"] == [0]
    x = np.random.default_rng(1).random((1, SIDE, SIDE, SIDE)).astype(np.float32)
    b = read_baseline(tmp_path / "b.npy", tmp_path / "b.json").for_scan(x)
    assert b.shape == x.shape and b.std() < x.std() / 3
    assert blur.sigma_voxels == pytest.approx((8.0 / 2.3548 / 2.0,) * 3, rel=1e-3)


def test_unknown_target_class_is_a_config_error(
    toy: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = RegionModel(toy["atlas"])
    meta = {"model": "toy", "class_names": CLASSES, "transform": None}
    monkeypatch.setattr(explain_mod, "load_trained_model", lambda _path: (model, meta))
    kw = {
        "model_path": tmp_path / "model.pt",
        "packs": toy["packs"],
        "folds_tsv": toy["root"] / "folds.tsv",
        "fold": 0,
        "method": "gradients",
        "options": {},
        "atlas_nii": None,
        "out_dir": tmp_path / "maps",
        "out_table": tmp_path / "t.tsv",
        "seed": 0,
    }
    with pytest.raises(ConfigError, match="attribution.target.*'AD'"):
        attribute_fold(**kw, target="AD")
    table = attribute_fold(**kw, target="patient")
    assert (table["target_class"] == "patient").all() and (table["baseline"] == "none").all()
    table = attribute_fold(**kw, target="predicted")
    assert (table["target_class"] == table["predicted_class"]).all()


def test_report_states_target_baseline_ranking_and_flags_incomplete_ig(tmp_path: Path) -> None:
    from brainlens.report.attribution import _explained, _ranked, _region_table_html

    rows = {"scan_id": ["a", "b"], "label": CLASSES, "target_class": CLASSES}
    rows |= {"baseline": "train_mean", "completeness_rel_error": [0.01, 0.4]}
    pd.DataFrame(rows).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    text = _explained({0: tmp_path / "t.tsv"})
    assert "true class" in text and "train_mean" in text and "1 of 2 scans above 0.1" in text
    table = pd.DataFrame(
        {"region": ["r3", "r1"], "rank": [1, 2], "rank_by": "abs", "mean": [-0.2, 0.1]}
        | {"sd": 0.0, "mean_abs": [0.3, 0.1], "sd_abs": 0.01, "sign_conflict": [True, False]}
    )
    assert _ranked(table)["mean"].tolist() == [0.3, 0.1]  # the bars show what was ranked
    html = _region_table_html(table, {}, pd.Series(False, index=table.index))
    assert "mean |r|" in html and "mean (signed)" in html and "regions.rank_by: abs" in html
