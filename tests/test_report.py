"""Tests of brainlens.report: a tiny fake results tree in, one HTML page out."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg
from scipy import ndimage

from brainlens.derivatives import relevance_name
from brainlens.grid import BBOX_MIN
from brainlens.metrics import classification_metrics, to_jsonable
from brainlens.report import build_report
from brainlens.summary import write_metrics_summary

CLASSES = ["control", "patient"]
MODEL = "tiny3d"
METHODS = ["integrated_gradients", "gradients"]  # gradients is made to fail randomisation
ATLAS = "aal"
REGIONS = ["Hippocampus_L", "Amygdala_L", "Precuneus_R", "Insula_R", "Cuneus_L", "Caudate_R"]
EXCLUDED = "sub-10"
FLAGGED = "sub-03"
# A coarse grid (8 mm) spanning the MNI analysis bounding box: small and correctly placed.
SHAPE = (23, 28, 23)
AFFINE = np.diag([8.0, 8.0, 8.0, 1.0])
AFFINE[:3, 3] = BBOX_MIN
CENTRE = (8, 14, 9)  # voxel of the planted blob (left medial temporal lobe)
BLOB_SIGMA = 1.5  # voxels


def _tsv(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep="\t", index=False)
    return path


def _nii(data: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), path)
    return path


def _brain_r2() -> np.ndarray:
    """Squared normalised distance to the centre of an ellipsoidal "brain" (< 1 inside)."""
    c = np.array(SHAPE) * np.array([0.5, 0.57, 0.45])
    r = np.array(SHAPE) * np.array([0.38, 0.4, 0.36])
    ii, jj, kk = np.indices(SHAPE)
    return ((ii - c[0]) / r[0]) ** 2 + ((jj - c[1]) / r[1]) ** 2 + ((kk - c[2]) / r[2]) ** 2


def _blob(centre: tuple[int, int, int], rng: np.random.Generator, sign: float = 1.0) -> np.ndarray:
    """A relevance map: a Gaussian blob at ``centre`` plus smooth noise inside the brain."""
    ii, jj, kk = np.indices(SHAPE)
    d2 = (ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 + (kk - centre[2]) ** 2
    noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.0) * (_brain_r2() < 1)
    return sign * np.exp(-d2 / (2 * BLOB_SIGMA**2)) + 0.3 * noise


def make_results(root: Path, *, folds: tuple[int, ...] = (0, 1), ground_truth: bool = True) -> dict:
    """Write a small results tree in the workflow's formats; return build_report kwargs."""
    rng = np.random.default_rng(0)
    subs = [f"sub-{i:02d}" for i in range(1, 11)]
    labels = {s: CLASSES[i % 2] for i, s in enumerate(subs)}
    inputs = pd.DataFrame(
        {
            "scan": [f"{s}_T1w" for s in subs],
            "participant_id": subs,
            "session_id": "n/a",
            "label": [labels[s] for s in subs],
            "path": [f"bids/{s}/anat/{s}_T1w.nii.gz" for s in subs],
            "status": ["invalid" if s == EXCLUDED else "ok" for s in subs],
            "problem": [
                f"bids/{s}/anat/{s}_T1w.nii.gz: expected a 3D image, got 4D. Fix: split it"
                if s == EXCLUDED
                else ""
                for s in subs
            ],
            "image_hash": "abc",
        }
    )
    ok = [s for s in subs if s != EXCLUDED]
    kw: dict = {"inputs_tsv": _tsv(inputs, root / "preprocess" / "inputs.tsv")}
    qc = pd.DataFrame({"scan": [f"{s}_T1w" for s in ok], "participant_id": ok, "session_id": ""})
    qc["tiv_ml"] = [2900.0 if s == FLAGGED else 1450.0 + 10 * i for i, s in enumerate(ok)]
    qc["corr_template"] = np.linspace(0.9, 0.95, len(ok))
    for m in ("tiv_ml", "corr_template"):
        qc[f"{m}_outlier"] = (qc["scan"] == f"{FLAGGED}_T1w") & (m == "tiv_ml")
    qc["any_outlier"] = qc[["tiv_ml_outlier", "corr_template_outlier"]].any(axis=1)
    kw["qc_tsv"] = _tsv(qc, root / "preprocess" / "qc.tsv")
    kw["qc_figures"] = {}
    for i, scan in enumerate(qc["scan"]):  # a distinct picture per scan (its own grey level)
        path = root / "preprocess" / scan.split("_")[0] / "figures" / f"{scan}_desc-qc_T1w.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        mpimg.imsave(path, np.full((4, 6), i / len(qc)), cmap="gray", vmin=0, vmax=1)
        kw["qc_figures"][scan] = path

    rows = []
    for k in folds:
        # pairs of participants alternate between the folds, so both classes are tested
        test = [s for i, s in enumerate(ok) if (i // 2) % 2 == k] if len(folds) > 1 else ok[:4]
        val = [s for s in ok if s not in test][:2]
        for s in ok:
            role = "test" if s in test else "val" if s in val else "train"
            rows.append((s, "n/a", k, role, labels[s], False))
    folds_df = pd.DataFrame(
        rows, columns=["participant_id", "session_id", "fold", "role", "label", "random_labels"]
    )
    kw["folds_tsv"] = _tsv(folds_df, root / "folds" / "folds.tsv")

    kw |= {k: {} for k in ("fold_metrics", "predictions", "histories", "attribution_tables")}
    train = root / "train" / MODEL
    for k in folds:
        test = folds_df[(folds_df.fold == k) & (folds_df.role == "test")]
        y = np.array([CLASSES.index(v) for v in test["label"]])
        p = np.clip(0.7 * y + 0.15 + 0.25 * rng.standard_normal(len(y)), 0.01, 0.99)
        p[0] = 1 - p[0]  # one mistake
        proba = np.column_stack([1 - p, p])
        pred = pd.DataFrame(
            {
                "scan_id": test["participant_id"].to_numpy(),
                "participant_id": test["participant_id"].to_numpy(),
                "session_id": "n/a",
                "label": test["label"].to_numpy(),
                "pred": [CLASSES[i] for i in proba.argmax(1)],
                "prob_control": proba[:, 0],
                "prob_patient": proba[:, 1],
            }
        )
        kw["predictions"][(MODEL, k)] = _tsv(pred, train / f"fold-{k}" / "predictions.tsv")
        m = classification_metrics(y, proba, CLASSES)
        m.update(fold=k, model=MODEL, best_epoch=3, n_test=len(y))
        m.update(monitor="val_loss", best_val=0.3 + 0.05 * k)
        if ground_truth:  # the demo-like results were trained with 3 restarts per fold
            m.update(restart=k + 1, restarts=3)
        path = train / f"fold-{k}" / "metrics.json"
        path.write_text(json.dumps(to_jsonable(m)))
        kw["fold_metrics"][(MODEL, k)] = path
        ep = np.arange(1, 6)
        hist = pd.DataFrame(
            {
                "epoch": ep,
                "train_loss": 0.7 / ep,
                "val_loss": 0.7 / ep + 0.02 * ep,
                "val_balanced_accuracy": 0.5 + 0.08 * ep,
            }
        )
        kw["histories"][(MODEL, k)] = _tsv(hist, train / f"fold-{k}" / "history.tsv")
    summary = train / "metrics_summary.tsv"
    write_metrics_summary(
        [kw["fold_metrics"][(MODEL, k)] for k in folds],
        summary,
        predictions_tsvs=[kw["predictions"][(MODEL, k)] for k in folds],
        folds_tsv=kw["folds_tsv"],
    )
    kw["summaries"] = {MODEL: summary}

    att = root / "attribution" / MODEL
    for method in METHODS:
        for k in folds:
            test = folds_df[(folds_df.fold == k) & (folds_df.role == "test")]
            recs = []
            for s, lab in zip(test["participant_id"], test["label"], strict=True):
                sign = -1.0 if method == "integrated_gradients" and lab == "control" else 1.0
                data = _blob(CENTRE, rng, sign)
                name = relevance_name("scan", resolution=8.0, method=method, scan=s)
                path = _nii(data, att / method / f"fold-{k}" / name)
                recs.append(
                    {"scan_id": s, "method": method, "target": lab, "label": lab, "path": str(path)}
                )
            table = _tsv(pd.DataFrame(recs), att / method / f"fold-{k}.tsv")
            kw["attribution_tables"][(MODEL, method, k)] = table
            if k == folds[0]:  # the first fold has its mean maps, later ones are computed
                d = pd.DataFrame(recs)
                for key, grp in [("all", d), *d.groupby("label")]:
                    mean = np.mean([nib.load(p).get_fdata() for p in grp["path"]], axis=0)
                    kind, label = ("mean", None) if key == "all" else ("class_mean", key)
                    name = relevance_name(kind, resolution=8.0, method=method, label=label)
                    _nii(mean, att / method / f"fold-{k}" / name)

    kw |= {
        k: {} for k in ("region_tables", "region_fold_tables", "sanity_tables", "deletion_tables")
    }
    reg = root / "regions" / MODEL
    for j, method in enumerate(METHODS):
        order = REGIONS if j == 0 else REGIONS[1:] + REGIONS[:1]
        n = len(order)
        means = np.linspace(1.0, 0.1, n)
        rt = pd.DataFrame(
            {
                "region": order,
                "label": [REGIONS.index(r) + 1 for r in order],
                "n_voxels": 50,
                "rank": np.arange(1, n + 1),
                "mean": means,
                "sd": 0.1 * means,
                "sum": 50 * means,
                "density": means,
                "rank_mean": np.arange(1, n + 1) + 0.3,
                "rank_sd": 0.5,
                "top10_share": 1.0,
                "mean_class-control": means * 0.9,
                "mean_class-patient": means * 1.1,
                "rank_class-control": np.arange(1, n + 1),
                "rank_class-patient": np.arange(1, n + 1),
            }
        )
        kw["region_tables"][(MODEL, method, ATLAS)] = _tsv(rt, reg / method / f"{ATLAS}.tsv")
        long = [
            {
                "fold": k,
                "class": c,
                "region": r,
                "label": REGIONS.index(r) + 1,
                "mean": mv,
                "sum": 50 * mv,
                "density": mv,
                "rank": i + 1,
            }
            for k in folds
            for c in ["all", *CLASSES]
            for i, (r, mv) in enumerate(zip(order, means, strict=True))
        ]
        kw["region_fold_tables"][(MODEL, method, ATLAS)] = _tsv(
            pd.DataFrame(long), reg / method / f"{ATLAS}_folds.tsv"
        )
        fails = method == "gradients"
        san = []
        dele = []
        for k in folds:
            for s in ok[:3]:
                san.append(
                    {
                        "fold": k,
                        "scan_id": s,
                        "method": method,
                        "spearman_random": 0.9 if fails else 0.1,
                        "ssim_random": 0.8 if fails else 0.2,
                        # with ground truth, a model blind to a fifth of the brain
                        "field_of_view_brain_share": 0.8 if ground_truth else 1.0,
                        "passes_randomization": not fails,
                        "deletion_aoc": 0.3,
                        "deletion_aoc_random": 0.1,
                        "gt_rank": (1 if j == 0 else n) if ground_truth else np.nan,
                        "gt_mass_share": 0.4 if ground_truth else np.nan,
                        "gt_pointing_hit": True if ground_truth else np.nan,
                    }
                )
                for curve, slope in (("relevance", 2.0), ("random", 0.5)):
                    for f in np.linspace(0, 1, 6):
                        dele.append(
                            {
                                "fold": k,
                                "scan_id": s,
                                "curve": curve,
                                "fraction": f,
                                "score": 0.9 * np.exp(-slope * f),
                            }
                        )
        sanity = root / "sanity" / MODEL
        kw["sanity_tables"][(MODEL, method)] = _tsv(pd.DataFrame(san), sanity / f"{method}.tsv")
        kw["deletion_tables"][(MODEL, method)] = _tsv(
            pd.DataFrame(dele), sanity / f"{method}_deletion.tsv"
        )
    agree = pd.DataFrame([[1.0, 0.4], [0.4, 1.0]], index=METHODS, columns=METHODS)
    agree.index.name = "method"
    path = reg / f"agreement_{ATLAS}.tsv"
    agree.to_csv(path, sep="\t")
    kw["agreement_tables"] = {(MODEL, ATLAS): path}

    if ground_truth:
        gt = {
            "atlas": ATLAS,
            "region": "Hippocampus_L",
            "label": 1,
            "effect": 0.6,
            "kind": "regional atrophy",
            "positive_class": "patient",
        }
        kw["ground_truth"] = root / "ground_truth.json"
        kw["ground_truth"].write_text(json.dumps(gt))
    else:
        kw["ground_truth"] = None
    r2 = _brain_r2()
    head = np.where(r2 < 1, 100 - 60 * r2, 0.0)
    kw["template_t1w"] = _nii(head, root / "templates" / "tpl_T1w.nii.gz")
    kw["config"] = {
        "seed": 1,
        "folds": {
            "mode": "kfold",
            "n_folds": len(folds),
            "val_fraction": 0.2,
            "random_labels": False,
        },
        "train": {"model": MODEL},
        "attribution": {"methods": {m: {} for m in METHODS}},
        "regions": {"atlases": [ATLAS]},
    }
    kw["title"] = "Test report"
    return kw


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if "id" in a:
            self.ids.add(a["id"])


def _build(root: Path, *, maps: bool = True, **options) -> tuple[dict, Path, str]:
    kw = make_results(root / "results", **options)
    if not maps:  # skip the slow brain figures
        kw["attribution_tables"] = {}
    out = build_report(
        out_html=root / "report" / "index.html", figures_dir=root / "report" / "figures", **kw
    )
    return kw, out, out.read_text()


@pytest.fixture(scope="module")
def with_gt(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("gt"), ground_truth=True)


@pytest.fixture(scope="module")
def without_gt(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("nogt"), ground_truth=False, maps=False)


def test_page_written_and_every_link_resolves(with_gt):
    _, out, text = with_gt
    assert out.name == "index.html" and text.startswith("<!DOCTYPE html>")
    parser = _Links()
    parser.feed(text)
    assert len(parser.srcs) >= 8  # ROC, confusion, learning, maps, regions, checks
    for src in parser.srcs + parser.hrefs:
        if src.startswith("#"):
            assert src[1:] in parser.ids, f"dangling anchor {src}"
        else:
            assert not re.match(r"^[a-z]+:", src), f"non-local link {src}"
            assert src.startswith("figures/") and (out.parent / src).is_file(), src
    for section in ("dataset", "folds", "performance", "maps", "regions", "meaningful"):
        assert section in parser.ids


def test_headline_balanced_accuracy_from_summary(with_gt):
    kw, _, text = with_gt
    summary = pd.read_csv(kw["summaries"][MODEL], sep="\t", index_col="fold")
    header = text.split('<header class="page"')[1].split("</header>")[0]
    mean = summary.loc["mean", "balanced_accuracy"]
    low, high = (
        summary.loc["ci95_low", "balanced_accuracy"],
        summary.loc["ci95_high", "balanced_accuracy"],
    )
    assert f"{mean:.2f}" in header
    assert f"{max(low, 0):.2f}–{min(high, 1):.2f}" in header  # shown clipped to [0, 1]


def test_kept_restart_shown_only_with_restarts(with_gt, without_gt):
    _, _, text = with_gt
    assert "kept restart" in text and "2 of 3" in text and "3 initialisations" in text
    _, _, plain = without_gt
    assert "kept restart" not in plain


def test_excluded_and_flagged_scans_listed(with_gt):
    _, _, text = with_gt
    dataset = text.split('id="dataset"')[1].split('id="folds"')[0]
    assert f"{EXCLUDED}_T1w" in dataset and "expected a 3D image, got 4D" in dataset
    flagged = dataset.split("Flagged scans")[1]
    assert f"{FLAGGED}_T1w" in flagged and "tiv_ml = 2,900" in flagged
    assert "sub-04_T1w" not in flagged


def test_method_failing_randomisation_is_flagged(with_gt):
    _, _, text = with_gt
    checks = text.split('id="meaningful"')[1]
    rows = re.findall(r'<tr class="([^"]*)"><td class="text">([a-z_]+)</td>', checks)
    assert ("flag", "gradients") in rows
    assert ("", "integrated_gradients") in rows
    assert "FAILS" in checks
    maps = text.split('id="maps"')[1].split('id="regions"')[0]
    gradients_part = maps.split('id="maps-tiny3d-gradients"')[1]
    assert "fails randomisation check" in gradients_part


def test_partial_field_of_view_is_flagged(with_gt, without_gt):
    for (_, _, text), blind in ((with_gt, True), (without_gt, False)):
        checks = text.split('id="meaningful"')[1]
        assert ("sees only 80% of the brain mask" in checks) is blind
        assert "sees only" not in text.split('id="meaningful"')[0]


def test_ground_truth_only_with_ground_truth(with_gt, without_gt):
    _, _, text = with_gt
    assert 'id="ground-truth"' in text
    assert "planted region in top 3" in text
    assert "Hippocampus_L</b> (aal) <b>was found</b>" in text
    _, _, text = without_gt
    assert 'id="ground-truth"' not in text
    assert "planted region in top 3" not in text
    assert "No ground truth was given" in text


def test_one_fold_and_missing_inputs_degrade_gracefully(tmp_path):
    kw = make_results(tmp_path / "results", folds=(0,), ground_truth=False)
    kw["qc_tsv"] = tmp_path / "missing" / "qc.tsv"
    kw["attribution_tables"] = {}
    kw["deletion_tables"] = {}
    kw["config"]["folds"]["random_labels"] = True
    out = build_report(
        out_html=tmp_path / "r" / "index.html", figures_dir=tmp_path / "r" / "figures", **kw
    )
    text = out.read_text()
    assert "Only one split" in text
    assert "no confidence interval: one fold" in text
    assert "QC table" in text and "is missing" in text
    assert "No attribution tables" in text
    assert "Random-label run" in text.split('<header class="page"')[1].split("</header>")[0]


def test_multiclass_roc_and_confusion_figures(tmp_path):
    from brainlens.report import plots

    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"]
    preds = {}
    for fold in ("0", "1"):
        y = np.repeat(classes, 4)
        p = rng.dirichlet(np.ones(3), size=len(y))
        preds[fold] = pd.DataFrame(
            {"label": y, **{f"prob_{c}": p[:, i] for i, c in enumerate(classes)}}
        )
    fig = plots.roc_figure(preds)
    assert fig is not None and len(fig.axes) == 3  # one-vs-rest panel per class
    writer = plots.FigureWriter(tmp_path / "figures", tmp_path)
    assert writer.save(fig, "roc multi/class") == "figures/roc_multi_class.png"
    assert (tmp_path / "figures" / "roc_multi_class.png").stat().st_size > 0
    one_class = {"0": preds["0"].assign(label="a")}
    assert plots.roc_figure(one_class) is None  # nothing to draw without both classes


def _add_model(kw: dict, root: Path, name: str, best_val: float) -> None:
    """A second model whose test predictions are perfect but whose validation loss is
    ``best_val`` in every fold."""
    train = root / "results" / "train" / name
    folds = sorted({k[1] for k in kw["fold_metrics"]})
    for k in folds:
        pred = pd.read_csv(kw["predictions"][(MODEL, k)], sep="\t")
        y = np.array([CLASSES.index(v) for v in pred["label"]])
        proba = np.column_stack([1 - (0.1 + 0.8 * y), 0.1 + 0.8 * y])
        pred = pred.assign(
            pred=[CLASSES[i] for i in y], prob_control=proba[:, 0], prob_patient=proba[:, 1]
        )
        kw["predictions"][(name, k)] = _tsv(pred, train / f"fold-{k}" / "predictions.tsv")
        m = classification_metrics(y, proba, CLASSES)
        m.update(fold=k, model=name, best_epoch=2, n_test=len(y))
        m.update(monitor="val_loss", best_val=best_val)
        path = train / f"fold-{k}" / "metrics.json"
        path.write_text(json.dumps(to_jsonable(m)))
        kw["fold_metrics"][(name, k)] = path
        kw["histories"][(name, k)] = kw["histories"][(MODEL, k)]
    kw["summaries"][name] = train / "metrics_summary.tsv"
    write_metrics_summary(
        [kw["fold_metrics"][(name, k)] for k in folds],
        kw["summaries"][name],
        predictions_tsvs=[kw["predictions"][(name, k)] for k in folds],
        folds_tsv=kw["folds_tsv"],
    )


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    kw = make_results(root / "results", ground_truth=False)
    _add_model(kw, root, "wide3d", best_val=0.9)  # better on test, worse on validation
    kw["config"]["train"]["model"] = [MODEL, "wide3d"]
    for key in ("attribution_tables", "region_tables", "region_fold_tables"):
        kw[key] = {}
    out = build_report(
        out_html=root / "report" / "index.html", figures_dir=root / "report" / "figures", **kw
    )
    return kw, out.read_text()


def test_best_model_is_chosen_on_validation_not_test(two_models):
    kw, text = two_models
    test_ba = {
        m: pd.read_csv(p, sep="\t", index_col="fold").loc["mean", "balanced_accuracy"]
        for m, p in kw["summaries"].items()
    }
    assert test_ba["wide3d"] > test_ba[MODEL]  # wide3d is better on test ...
    header = text.split('<header class="page"')[1].split("</header>")[0]
    # ... but tiny3d has the lower mean validation loss, so it is the one named
    assert "<b>wide3d</b>" not in header
    assert f"balanced accuracy (subjects), {MODEL}" in header
    assert "by mean validation loss over folds" in header and f"<b>{MODEL}</b>" in header
    perf = text.split('id="performance"')[1].split('id="maps"')[0]
    rows = re.findall(r'<tr class="([^"]*)"><td class="text">([a-z0-9]+)</td>', perf)
    assert ("good", MODEL) in rows and ("", "wide3d") in rows


def test_models_compared_by_paired_differences(two_models):
    kw, text = two_models
    assert "Paired differences" in text and "mean difference A − B" in text
    perf = text.split('id="performance"')[1].split('id="maps"')[0]
    assert "overlap" not in perf.lower()  # no "overlapping intervals mean no difference"
    s = {
        m: pd.read_csv(p, sep="\t", index_col="fold").drop(
            index=["mean", "sd", "ci95_low", "ci95_high"]
        )
        for m, p in kw["summaries"].items()
    }
    d = s[MODEL]["balanced_accuracy"] - s["wide3d"]["balanced_accuracy"]
    assert f'<td class="">{d.mean():.3f}</td>' in text  # tiny3d − wide3d, per fold, averaged


def test_single_model_has_nothing_to_choose(without_gt):
    _, _, text = without_gt
    header = text.split('<header class="page"')[1].split("</header>")[0]
    assert "nothing to choose" in header and "subject-level balanced accuracy" in header
    perf = text.split('id="performance"')[1]
    assert "overlap" not in perf.lower() and "Paired differences" not in text
    assert "test subjects" in perf and "balanced accuracy (scans)" in perf
    assert "validation loss" in perf and "Nadeau and Bengio" in perf


def _score(model: str, val: float, test: list[float], metric: str = "val_loss"):
    from brainlens.report.performance import ModelScore

    folds = pd.DataFrame(
        {"balanced_accuracy": test, "n_subjects_trainval": 40, "n_subjects_test": 10},
        index=[str(i) for i in range(len(test))],
    )
    return ModelScore(
        model, balanced_accuracy=float(np.mean(test)), val_metric=metric, val_mean=val, folds=folds
    )


@pytest.mark.parametrize(
    "scores, expected",
    [
        # lower loss wins even with a lower test score
        ([_score("a", 0.4, [0.6, 0.7]), _score("b", 0.5, [0.9, 0.9])], "a"),
        # accuracy-like monitors: higher is better
        (
            [
                _score("a", 0.7, [0.9, 0.9], "val_balanced_accuracy"),
                _score("b", 0.8, [0.6, 0.6], "val_balanced_accuracy"),
            ],
            "b",
        ),
        # selected on different validation values: no ranking, no best
        ([_score("a", 0.4, [0.9]), _score("b", 0.8, [0.6], "val_roc_auc")], None),
        ([_score("a", float("nan"), [0.9]), _score("b", float("nan"), [0.6])], None),
        ([_score("only", float("nan"), [0.9])], "only"),  # nothing to choose
    ],
)
def test_best_model_reads_validation_only(scores, expected):
    from brainlens.report.performance import best_model

    best = best_model(scores)
    assert (best.model if best else None) == expected


def test_paired_differences_use_the_corrected_t():
    from brainlens.report.comparison import paired_differences
    from brainlens.stats import corrected_resampled_t

    a, b = _score("a", 0.4, [0.6, 0.7, 0.8]), _score("b", 0.5, [0.5, 0.7, 0.6])
    d = paired_differences([a, b])
    row = d[d.metric == "balanced_accuracy"].iloc[0]
    ref = corrected_resampled_t([0.1, 0.0, 0.2], 40, 10)
    assert (row.model_a, row.model_b, row.n_folds) == ("a", "b", 3)
    assert row.mean_diff == pytest.approx(0.1) and row.p == pytest.approx(ref.p)
    assert (row.ci95_low, row.ci95_high) == pytest.approx((ref.ci_low, ref.ci_high))


def test_summary_recomputed_when_missing_or_old(tmp_path):
    from brainlens.report import plots
    from brainlens.report.performance import performance_section

    kw = make_results(tmp_path / "results", ground_truth=False)
    summary = pd.read_csv(kw["summaries"][MODEL], sep="\t", index_col="fold")
    old = tmp_path / "old_summary.tsv"  # an older brainlens: scan-level, no scan_ columns
    summary.drop(columns=[c for c in summary.columns if c.startswith("scan_")]).to_csv(
        old, sep="\t"
    )
    writer = plots.FigureWriter(tmp_path / "figures", tmp_path)
    args = (kw["fold_metrics"], kw["predictions"], {}, writer)
    for summaries in ({}, {MODEL: old}):
        _, (score,) = performance_section([MODEL], summaries, *args, kw["folds_tsv"])
        assert score.level == "subject" and score.val_metric == "val_loss"
        assert score.balanced_accuracy == pytest.approx(summary.loc["mean", "balanced_accuracy"])
        assert score.ci_low == pytest.approx(max(0, summary.loc["ci95_low", "balanced_accuracy"]))
    # without predictions: per scan, still with the corrected interval from folds.tsv
    _, (score,) = performance_section(
        [MODEL], {}, kw["fold_metrics"], {}, {}, writer, kw["folds_tsv"]
    )
    assert score.level == "scan"
    assert score.balanced_accuracy == pytest.approx(summary.loc["mean", "scan_balanced_accuracy"])
    assert not np.isnan(score.ci_low)


def test_consensus_regions_leave_out_unfaithful_and_randomisation_failures() -> None:
    """The header's consensus averages only methods that pass both kinds of check."""
    from brainlens.report.attribution import RegionFacts, consensus_regions
    from brainlens.report.meaning import MethodCheck
    from brainlens.report.sanity import SanityVerdict

    def table(order: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"region": order, "rank": range(1, len(order) + 1)})

    facts = RegionFacts(
        tables={
            ("m", "good", "aal"): table(["A", "B", "C", "D"]),
            ("m", "coarse", "aal"): table(["D", "C", "B", "A"]),  # not faithful
            ("m", "random", "aal"): table(["C", "D", "B", "A"]),  # fails randomisation
        }
    )
    ok = SanityVerdict(randomization=True, faithful_deletion=True, faithful_insertion=True)
    unfaithful = SanityVerdict(randomization=True, faithful_deletion=True, faithful_insertion=False)
    checks = {
        ("m", "good"): MethodCheck("m", "good", verdict=ok),
        ("m", "coarse"): MethodCheck("m", "coarse", verdict=unfaithful),
        ("m", "random"): MethodCheck("m", "random", verdict=SanityVerdict(randomization=False)),
    }
    top, used = consensus_regions(facts, "m", "aal", ["good", "coarse", "random"], checks, n=2)
    assert used == ["good"] and top == ["A", "B"]
    # without any faithful method, the randomisation passers are averaged
    checks[("m", "good")] = MethodCheck("m", "good", verdict=unfaithful)
    _, used = consensus_regions(facts, "m", "aal", ["good", "coarse", "random"], checks)
    assert used == ["good", "coarse"]


def test_header_says_when_the_best_model_has_no_maps() -> None:
    """A best model without maps (a linear baseline) is named as the reason, not the atlas."""
    from brainlens.report.attribution import RegionFacts
    from brainlens.report.header import _gt_sentence
    from brainlens.report.meaning import MethodCheck

    gt = {"region": "Temporal_Inf_L", "atlas": "aal"}
    best = SimpleNamespace(model="linear_svm_regions")
    facts = RegionFacts(gt_rank={("cnn", "gradients"): 2})
    text = _gt_sentence(gt, best, facts, {("cnn", "gradients"): MethodCheck("cnn", "gradients")})
    assert "linear_svm_regions, has no attribution maps" in text and "(cnn)" in text
    assert "no results for its atlas" not in text
    # no model has maps for the planted region's atlas: that is the reason given
    assert "no results for its atlas" in _gt_sentence(gt, best, RegionFacts(), {})
    # the best model's own ranks are quoted when it has maps
    text = _gt_sentence(gt, SimpleNamespace(model="cnn"), facts, {})
    assert "#2 by gradients" in text and "was found" in text


# --- QC pictures of flagged scans --------------------------------------------------------


def test_flagged_scans_qc_pictures_copied_into_the_report(with_gt):
    kw, out, text = with_gt
    dataset = text.split('id="dataset"')[1].split('id="folds"')[0]
    parser = _Links()
    parser.feed(dataset)
    flagged = f"{FLAGGED}_T1w"
    assert parser.srcs == [f"figures/qc_{flagged}.png"]  # the flagged scan's picture only
    copied = out.parent / parser.srcs[0]
    assert copied.read_bytes() == kw["qc_figures"][flagged].read_bytes()
    others = [p for p in (out.parent / "figures").glob("qc_*.png") if p != copied]
    assert not others, others


def test_no_flagged_scan_says_so_and_a_missing_picture_is_named(tmp_path):
    kw = make_results(tmp_path / "results", ground_truth=False)
    qc = pd.read_csv(kw["qc_tsv"], sep="\t")
    clean = tmp_path / "qc_clean.tsv"
    flags = [c for c in qc.columns if c.endswith("_outlier")]
    qc.assign(**{c: False for c in flags}).to_csv(clean, sep="\t", index=False)
    for key in ("attribution_tables", "region_tables", "region_fold_tables"):
        kw[key] = {}
    common = {k: v for k, v in kw.items() if k not in ("qc_tsv", "qc_figures")}
    out = build_report(
        out_html=tmp_path / "a" / "index.html",
        figures_dir=tmp_path / "a" / "figures",
        qc_tsv=clean,
        qc_figures=kw["qc_figures"],
        **common,
    )
    dataset = out.read_text().split('id="dataset"')[1].split('id="folds"')[0]
    assert "No scan was flagged" in dataset and "<img" not in dataset
    assert not list((tmp_path / "a" / "figures").glob("qc_*"))
    # the flagged scan's picture is not there: the page names the scan instead
    pictures = {s: p for s, p in kw["qc_figures"].items() if not s.startswith(FLAGGED)}
    out = build_report(
        out_html=tmp_path / "b" / "index.html",
        figures_dir=tmp_path / "b" / "figures",
        qc_tsv=kw["qc_tsv"],
        qc_figures=pictures,
        **common,
    )
    dataset = out.read_text().split('id="dataset"')[1].split('id="folds"')[0]
    assert f"No QC picture found for {FLAGGED}_T1w" in dataset and "<img" not in dataset


# --- the manifest: the report's inputs by name, not by position ----------------------------


def _records(kw: dict) -> list[dict]:
    """Manifest records of build_report's file arguments (the inverse of read_manifest)."""
    from brainlens.report.io import MANIFEST_KINDS

    records = []
    for kind, (arg, names) in MANIFEST_KINDS.items():
        value = kw.get(arg)
        if value is None:
            continue
        if not names:
            records.append({"kind": kind, "path": str(value)})
            continue
        for key, path in value.items():
            keys = dict(zip(names, key if isinstance(key, tuple) else (key,), strict=True))
            records.append({"kind": kind, **keys, "path": str(path)})
    return records


def test_manifest_names_each_file_by_its_keys(tmp_path):
    from brainlens.report.io import read_manifest, write_manifest

    records = [
        {"kind": "history", "model": "m", "fold": 1, "path": "results/train/m/fold-1/h.tsv"},
        {"kind": "qc", "path": "results/preprocess/qc.tsv"},
        {"kind": "history", "model": "m", "fold": 0, "path": "results/train/m/fold-0/h.tsv"},
        {"kind": "regions", "model": "m", "method": "ig", "atlas": "aal", "path": "r.tsv"},
        {"kind": "qc_figure", "scan": "sub-01_ses-1", "path": "/abs/q.png"},
    ]
    path = write_manifest(records, tmp_path / "results" / "report_manifest.json")
    args = read_manifest(path, root=tmp_path)
    assert args["histories"] == {
        ("m", 1): tmp_path / "results/train/m/fold-1/h.tsv",
        ("m", 0): tmp_path / "results/train/m/fold-0/h.tsv",
    }
    assert args["region_tables"] == {("m", "ig", "aal"): tmp_path / "r.tsv"}
    assert args["qc_figures"] == {"sub-01_ses-1": Path("/abs/q.png")}  # absolute stays
    assert args["qc_tsv"] == tmp_path / "results/preprocess/qc.tsv"
    assert args["ground_truth"] is None and args["summaries"] == {}  # absent kinds
    assert read_manifest(path)["qc_tsv"] == Path("results/preprocess/qc.tsv")  # no root


@pytest.mark.parametrize(
    "record, message",
    [
        ({"kind": "metric", "model": "m", "fold": 0, "path": "x"}, "unknown kind 'metric'"),
        ({"kind": "metrics", "model": "m", "path": "x"}, "'metrics' record has the fields"),
        ({"kind": "qc", "model": "m", "path": "x"}, "'qc' record has the fields"),
        ({"kind": "summary", "model": "m", "path": ""}, "'path' must be a non-empty string"),
        ({"kind": "metrics", "model": "m", "fold": None, "path": "x"}, "'fold' must be"),
        ({"kind": "summary", "model": "a", "path": "other"}, "a second 'summary' file"),
    ],
)
def test_malformed_manifest_record_is_named(tmp_path, record, message):
    from brainlens.errors import InputFileError
    from brainlens.report.io import write_manifest

    good = {"kind": "summary", "model": "a", "path": "results/train/a/metrics_summary.tsv"}
    target = tmp_path / "report_manifest.json"
    with pytest.raises(InputFileError, match=re.escape(message)) as err:
        write_manifest([good, record], target)
    assert "files[1]" in str(err.value) and "Fix:" in str(err.value)
    assert not target.exists()


def test_manifest_of_another_version_or_missing_is_refused(tmp_path):
    from brainlens.errors import InputFileError
    from brainlens.report.io import read_manifest

    with pytest.raises(InputFileError, match="does not exist"):
        read_manifest(tmp_path / "nothing.json")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 0, "files": []}))
    with pytest.raises(InputFileError, match="manifest version 0, expected 1"):
        read_manifest(old)


def _without_timestamps(text: str) -> str:
    return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "<time>", text)


def test_report_from_manifest_is_the_same_page_in_one_folder(without_gt, tmp_path):
    """The rule's path (manifest -> folder) gives the page build_report gives."""
    from brainlens.report.build import build_report_from_manifest
    from brainlens.report.io import write_manifest

    kw, out, text = without_gt
    files = {k: v for k, v in kw.items() if k not in ("config", "title")}
    files["attribution_tables"] = {}  # as in the fixture (no brain figures)
    manifest = write_manifest(_records(files), tmp_path / "report_manifest.json")
    folder = tmp_path / "results" / "report"
    page = build_report_from_manifest(
        manifest=manifest, out_dir=folder, title=kw["title"], config=kw["config"]
    )
    assert page == folder / "index.html"
    assert _without_timestamps(page.read_text()) == _without_timestamps(text)
    assert sorted(p.name for p in (folder / "figures").iterdir()) == sorted(
        p.name for p in (out.parent / "figures").iterdir()
    )
    parser = _Links()
    parser.feed(page.read_text())
    assert parser.srcs and all((folder / s).resolve().is_relative_to(folder) for s in parser.srcs)


def test_own_report_modules_have_no_function_over_100_lines():
    import ast

    import brainlens.report as pkg

    root = Path(pkg.__file__).parent
    long = []
    for name in ("build.py", "header.py", "dataset.py", "io.py", "html.py"):
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 100:
                long.append(f"{name}:{node.name}")
    assert not long, long
