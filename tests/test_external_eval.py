"""External test sets (brainlens.external): evaluation, fold-ensemble, interval, report.

A tiny learnable toy task (tests/test_training.py's): a bright blob marks patients. One
fold's model is trained through the main path; an "external" set packs some of the same
scans again (other order, own pack), so its predictions must equal the main ones.
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

from brainlens.confounds.inputs import write_input_confounds
from brainlens.errors import ConfigError, DatasetError, InputFileError
from brainlens.external.evaluate import evaluate_external_fold
from brainlens.external.summary import (
    bootstrap_interval,
    ensemble_predictions,
    read_external_predictions,
    summarize_external,
)
from brainlens.folds import write_folds
from brainlens.packing import pack_volumes
from brainlens.summary import subject_predictions
from brainlens.training import train_fold

torch.set_num_threads(1)
SIDE = 8
N = 24


class Tiny(nn.Module):
    def __init__(self, *, in_shape, n_classes, width=4):
        super().__init__()
        self.conv = nn.Conv3d(in_shape[0], width, 3, padding=1)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


def tiny_factory(name, *, in_shape, n_classes, **options):
    assert name == "tiny"
    return Tiny(in_shape=in_shape, n_classes=n_classes, **options)


def _inputs_tsv(path: Path, ids: list[str], labels: dict[str, str], status=None) -> Path:
    """An inputs.tsv as check_inputs writes it (single-session scans)."""
    pd.DataFrame(
        {
            "scan": ids,
            "participant_id": ids,
            "session_id": "n/a",
            "label": [labels[s] for s in ids],
            "path": [f"/x/{s}.nii.gz" for s in ids],
            "status": status or ["ok"] * len(ids),
            "problem": "",
            "image_hash": "",
        }
    ).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """Volumes, a main pack, folds, a combat fit on fold 0 and two trained models."""
    root = tmp_path_factory.mktemp("external")
    rng = np.random.default_rng(0)
    ids = [f"sub-{i:02d}" for i in range(N)]
    labels = {s: ("patient" if i % 2 else "control") for i, s in enumerate(ids)}
    sites = {s: ("A" if (i // 2) % 2 else "B") for i, s in enumerate(ids)}
    paths = {}
    for sid in ids:
        v = rng.normal(0, 0.3, (SIDE,) * 3).astype(np.float32)
        v += 0.5 * (sites[sid] == "A")
        if labels[sid] == "patient":
            v[1:4, 1:4, 1:4] += 2.0
        paths[sid] = root / f"{sid}.nii.gz"
        nib.save(nib.Nifti1Image(v, np.eye(4)), str(paths[sid]))
    pack_volumes(
        [paths[s] for s in ids], scan_ids=ids, out_npy=root / "gm.npy", out_index=root / "gm.tsv"
    )
    table = pd.DataFrame(
        {
            "participant_id": ids,
            "diagnosis": [labels[s] for s in ids],
            "site": [sites[s] for s in ids],
        }
    )
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    scans = pd.DataFrame(
        {"participant_id": ids, "session_id": "n/a", "label": [labels[s] for s in ids]}
    )
    folds = root / "folds.tsv"
    write_folds(scans, folds, mode="kfold", n_folds=3, val_fraction=0.25, seed=1)
    spec = {
        "npz": root / "c.npz",
        "json": root / "c.json",
        "participants": root / "participants.tsv",
    }
    write_input_confounds(
        packs={"gm": (root / "gm.npy", root / "gm.tsv")},
        folds_tsv=folds,
        fold=0,
        out_npz=spec["npz"],
        out_json=spec["json"],
        participants_tsv=root / "participants.tsv",
        covariates=[],
        method="combat",
    )
    common = dict(
        packs={"gm": (root / "gm.npy", root / "gm.tsv")}, folds_tsv=folds, fold=0, model="tiny",
        model_options={"width": 4}, epochs=3, batch_size=4, lr=0.02, seed=5, progress=False,
        model_factory=tiny_factory, device="cpu",
    )  # fmt: skip
    train_fold(out_dir=root / "raw", **common)
    train_fold(out_dir=root / "combat", confounds=spec, **common)
    return {
        "root": root,
        "ids": ids,
        "labels": labels,
        "paths": paths,
        "folds": folds,
        "spec": spec,
    }


def _external(toy: dict, name: str, ids: list[str], affine=None, shape=SIDE) -> dict:
    """An external pack of ``ids`` (reversed order) and its inputs.tsv."""
    d = toy["root"] / name
    d.mkdir()
    vols = []
    for sid in reversed(ids):
        img = nib.load(str(toy["paths"][sid]))
        data = np.asarray(img.dataobj)[:shape, :shape, :shape]
        vols.append(d / f"{sid}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(vols[-1]))
    pack_volumes(vols, scan_ids=list(reversed(ids)), out_npy=d / "gm.npy", out_index=d / "gm.tsv")
    return {
        "packs": {"gm": (d / "gm.npy", d / "gm.tsv")},
        "inputs_tsv": _inputs_tsv(d / "inputs.tsv", ids, toy["labels"]),
        "dir": d,
    }


def _evaluate(toy: dict, ext: dict, model: str = "raw", **kw) -> dict:
    return evaluate_external_fold(
        model_path=toy["root"] / model / "model.pt",
        packs=ext["packs"],
        inputs_tsv=ext["inputs_tsv"],
        out_predictions=ext["dir"] / f"{model}_predictions.tsv",
        out_metrics=ext["dir"] / f"{model}_metrics.json",
        dataset="ext",
        batch_size=3,
        positive_class="patient",
        device="cpu",
        model_factory=tiny_factory,
        **kw,
    )


@pytest.mark.parametrize("model", ["raw", "combat"])
def test_external_predictions_equal_the_main_path(toy, model):
    main = read_external_predictions(toy["root"] / model / "predictions.tsv")
    ext = _external(toy, f"same_{model}", list(main["scan_id"]))
    kw = {}
    if model == "combat":
        people = ext["dir"] / "participants.tsv"  # the external set's own copy
        people.write_text(Path(toy["spec"]["participants"]).read_text())
        kw = dict(confounds=toy["spec"], folds_tsv=toy["folds"], participants_tsv=people)
    m = _evaluate(toy, ext, model, **kw)
    got = read_external_predictions(ext["dir"] / f"{model}_predictions.tsv")
    assert list(got.columns) == list(main.columns)
    main = main.sort_values("scan_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[list(main.columns[:5])], main[list(main.columns[:5])])
    np.testing.assert_allclose(got.filter(like="prob_"), main.filter(like="prob_"), atol=2e-6)
    saved = json.loads((ext["dir"] / f"{model}_metrics.json").read_text())
    assert saved["balanced_accuracy"] == m["balanced_accuracy"] and saved["level"] == "subject"
    assert saved["positive_class"] == "patient" and saved["n"] == len(main)
    assert saved["input_space"] == ("raw" if model == "raw" else "harmonised (combat)")


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("shape", InputFileError, "trained on grid [8, 8, 8]"),
        ("affine", InputFileError, "was trained on grid"),
        ("inputs", ConfigError, "the model reads inputs ['gm']"),
        ("label", InputFileError, "label(s) ['other']"),
        ("unpacked", InputFileError, "are not packed"),
    ],
)
def test_external_set_that_does_not_fit_the_model_is_refused(toy, case, error, message):
    ids = toy["ids"][:6]
    ext = _external(
        toy,
        f"bad_{case}",
        ids,
        affine=np.diag([2.0, 2.0, 2.0, 1.0]) if case == "affine" else None,
        shape=6 if case == "shape" else SIDE,
    )
    if case == "inputs":
        ext["packs"] = {"wm": ext["packs"]["gm"]}
    if case == "label":
        labels = dict(toy["labels"]) | {ids[0]: "other"}
        _inputs_tsv(ext["inputs_tsv"], ids, labels)
    if case == "unpacked":
        _inputs_tsv(ext["inputs_tsv"], [*ids, toy["ids"][10]], toy["labels"])
    with pytest.raises(error, match=__import__("re").escape(message)):
        _evaluate(toy, ext)


def test_excluded_scans_are_left_out(toy):
    ids = toy["ids"][:6]
    ext = _external(toy, "excluded", ids)
    _inputs_tsv(ext["inputs_tsv"], ids, toy["labels"], status=["ok"] * 5 + ["invalid"])
    m = _evaluate(toy, ext)
    assert m["n_scans"] == 5 and ids[5] not in set(
        read_external_predictions(ext["dir"] / "raw_predictions.tsv")["scan_id"]
    )


def test_combat_with_a_site_unseen_in_training_is_an_error(toy):
    ids = toy["ids"][:6]
    ext = _external(toy, "unseen_site", ids)
    people = pd.read_csv(toy["spec"]["participants"], sep="\t")
    people.loc[people["participant_id"] == ids[2], "site"] = "C"
    people.to_csv(ext["dir"] / "participants.tsv", sep="\t", index=False)
    kw = dict(confounds=toy["spec"], folds_tsv=toy["folds"])
    with pytest.raises(DatasetError, match=r"external dataset 'ext': site\(s\) \['C'\]"):
        _evaluate(toy, ext, "combat", participants_tsv=ext["dir"] / "participants.tsv", **kw)
    with pytest.raises(ConfigError, match="external participants' covariates"):
        _evaluate(toy, ext, "combat", **kw)
    with pytest.raises(
        InputFileError, match="made on raw inputs, but the inputs here are inputs harmonised"
    ):
        _evaluate(toy, ext, "raw", participants_tsv=ext["dir"] / "participants.tsv", **kw)
    wrong = dict(toy["spec"]) | {"participants": ext["dir"] / "participants.tsv"}
    with pytest.raises(ConfigError, match="must be the main dataset's"):
        _evaluate(
            toy, ext, "combat", confounds=wrong, folds_tsv=toy["folds"],
            participants_tsv=ext["dir"] / "participants.tsv",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="needs the folds table|need the folds table"):
        _evaluate(toy, ext, "combat", participants_tsv=ext["dir"] / "participants.tsv")


def _preds(scores: np.ndarray, labels: np.ndarray, sessions: int = 1) -> pd.DataFrame:
    """Hand-made predictions.tsv: ``scores`` = P(patient) per subject."""
    rows = []
    for i, (p, y) in enumerate(zip(scores, labels, strict=True)):
        for s in range(sessions):
            rows.append(
                {
                    "scan_id": f"sub-{i:03d}_ses-{s}",
                    "participant_id": f"sub-{i:03d}",
                    "session_id": f"ses-{s}",
                    "label": y,
                    "pred": "patient" if p > 0.5 else "control",
                    "prob_control": 1 - p,
                    "prob_patient": p,
                }
            )
    return pd.DataFrame(rows)


def test_ensemble_is_the_mean_probability_over_folds():
    labels = np.array(["control", "patient", "patient"])
    a = _preds(np.array([0.2, 0.4, 0.9]), labels, sessions=2)
    b = _preds(np.array([0.4, 0.8, 0.5]), labels, sessions=2)
    ens = ensemble_predictions({0: a, 1: b.iloc[::-1]})
    np.testing.assert_allclose(
        ens.groupby("participant_id")["prob_patient"].mean(), [0.3, 0.6, 0.7]
    )
    assert list(ens["pred"]) == ["control"] * 2 + ["patient"] * 4 and set(ens["n_models"]) == {2}
    assert list(ens.columns[:5]) == ["scan_id", "participant_id", "session_id", "label", "pred"]
    with pytest.raises(ConfigError, match="other scans"):
        ensemble_predictions({0: a, 1: b.iloc[1:]})


@pytest.mark.parametrize(
    "kind, lo_range, hi_range",
    [
        ("perfect", (1.0, 1.0), (1.0, 1.0)),
        ("random", (0.3, 0.5), (0.5, 0.7)),
    ],
)
def test_bootstrap_interval_over_subjects(kind, lo_range, hi_range):
    rng = np.random.default_rng(3)
    labels = np.array(["control", "patient"] * 60)
    scores = (labels == "patient") * 0.8 + 0.1 if kind == "perfect" else rng.uniform(0, 1, 120)
    subj = subject_predictions(_preds(scores, labels))
    low, high = bootstrap_interval(subj, "patient", n_resamples=150, seed=1)
    for metric in ("roc_auc", "balanced_accuracy"):
        assert lo_range[0] <= low[metric] <= lo_range[1], (metric, low[metric])
        assert hi_range[0] <= high[metric] <= hi_range[1], (metric, high[metric])
        assert low[metric] <= high[metric]
    again = bootstrap_interval(subj, "patient", n_resamples=150, seed=1)
    assert again == (low, high)  # seeded
    if kind == "random":
        assert bootstrap_interval(subj, "patient", n_resamples=150, seed=2)[0] != low


def test_summary_has_folds_spread_ensemble_and_says_what_the_interval_means(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array(["control", "patient"] * 20)
    truth = (labels == "patient").astype(float)
    metrics, preds = [], []
    for fold in range(3):
        p = np.clip(truth * 0.3 + 0.35 + rng.normal(0, 0.2, 40), 0.01, 0.99)
        preds.append(tmp_path / f"p{fold}.tsv")
        _preds(p, labels).to_csv(preds[-1], sep="\t", index=False)
        metrics.append(tmp_path / f"m{fold}.json")
        metrics[-1].write_text(json.dumps({"fold": 2 - fold, "dataset": "ext", "model": "m"}))
    out = tmp_path / "s" / "metrics_summary.tsv"
    table = summarize_external(
        metrics=metrics,
        predictions=preds,
        out=out,
        n_resamples=200,
        seed=4,
        positive_class="patient",
    )
    read = pd.read_csv(out, sep="\t", index_col="fold")
    assert list(read.index) == [
        "0",
        "1",
        "2",
        "mean",
        "sd",
        "min",
        "max",
        "ensemble",
        "ensemble_ci95_low",
        "ensemble_ci95_high",
    ]
    folds = table.loc[["0", "1", "2"], "balanced_accuracy"].astype(float)
    assert table.loc["mean", "balanced_accuracy"] == pytest.approx(folds.mean())
    assert table.loc["min", "balanced_accuracy"] == folds.min()
    ens = table.loc["ensemble", "roc_auc"]
    assert (
        table.loc["ensemble_ci95_low", "roc_auc"]
        <= ens
        <= table.loc["ensemble_ci95_high", "roc_auc"]
    )
    assert ens > folds.mean() - 0.05 and table.loc["ensemble", "n"] == 40
    text = read.loc["ensemble_ci95_low", "description"]
    assert (
        "bootstrap" in text and "40 external subjects" in text and "no interval over folds" in text
    )
    with pytest.raises(ConfigError, match="several"):
        other = tmp_path / "o.json"
        other.write_text(json.dumps({"fold": 9, "dataset": "ext2", "model": "m"}))
        summarize_external(
            metrics=[*metrics, other],
            predictions=[*preds, preds[0]],
            out=out,
            n_resamples=10,
            seed=1,
        )


def _report(tmp_path: Path, **external) -> str:
    from brainlens.report.build import build_report

    empty: dict = {}
    out = build_report(
        out_html=tmp_path / "r" / "index.html", figures_dir=tmp_path / "r" / "figures", title="t",
        config={"positive_class": "patient"}, inputs_tsv=None, qc_tsv=None, folds_tsv=None,
        summaries=empty, fold_metrics=empty, predictions=empty, histories=empty,
        attribution_tables=empty, region_tables=empty, region_fold_tables=empty,
        agreement_tables=empty, sanity_tables=empty, deletion_tables=empty,
        ground_truth=None, template_t1w=None, **external,
    )  # fmt: skip
    return out.read_text()


def test_report_section_per_external_set_only_with_records(tmp_path):
    labels = np.array(["control", "patient"] * 10)
    rng = np.random.default_rng(7)
    metrics, preds = {}, {}
    for fold in range(2):
        p = np.clip(np.where(labels == "patient", 0.6, 0.4) + rng.normal(0, 0.2, 20), 0, 1)
        preds[("ext", "m", fold)] = tmp_path / f"p{fold}.tsv"
        _preds(p, labels).to_csv(preds[("ext", "m", fold)], sep="\t", index=False)
        metrics[("ext", "m", fold)] = tmp_path / f"m{fold}.json"
        metrics[("ext", "m", fold)].write_text(
            json.dumps({"fold": fold, "dataset": "ext", "model": "m", "input_space": "raw"})
        )
    summary = tmp_path / "summary.tsv"
    table = summarize_external(
        metrics=list(metrics.values()),
        predictions=list(preds.values()),
        out=summary,
        n_resamples=50,
        seed=1,
        positive_class="patient",
    )
    text = _report(
        tmp_path / "with",
        external_metrics=metrics,
        external_predictions=preds,
        external_summaries={("ext", "m"): summary},
    )
    assert "External test set: ext" in text and "bootstrap over subjects" in text
    assert (
        "external_roc_ext_m.png" in text
        and (tmp_path / "with/r/figures/external_roc_ext_m.png").is_file()
    )
    section = text.split('id="external-ext"')[1]
    from brainlens.report.io import fmt

    auc = table.loc["ensemble", "roc_auc"]
    lo, hi = table.loc["ensemble_ci95_low", "roc_auc"], table.loc["ensemble_ci95_high", "roc_auc"]
    assert f"<td>{fmt(auc)}</td><td>{fmt(lo, 2)} – {fmt(hi, 2)}</td>" in section.replace(
        '<td class="">', "<td>"
    )
    # its own section after the cross-validation ones, its figure only there
    assert text.index('id="performance"') < text.index('id="external-ext"')
    assert "external_roc" not in text.split('id="external-ext"')[0]
    without_summary = _report(
        tmp_path / "nosum", external_metrics=metrics, external_predictions=preds
    )
    assert "No interval: the external summary table was not found" in without_summary
    assert "External test set" not in _report(tmp_path / "without")
