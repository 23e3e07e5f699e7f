"""Tests of brainlens.metrics against scikit-learn on known arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from brainlens.errors import ConfigError
from brainlens.metrics import classification_metrics, summarize_metrics, to_jsonable
from brainlens.summary import (
    fold_sizes,
    subject_metrics,
    subject_predictions,
    write_metrics_summary,
)

Y2 = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
P2 = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.2, 0.6, 0.55, 0.3])
PROBA2 = np.column_stack([1 - P2, P2])
PRED2 = (P2 > 0.5).astype(int)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("accuracy", skm.accuracy_score(Y2, PRED2)),
        ("balanced_accuracy", skm.balanced_accuracy_score(Y2, PRED2)),
        ("roc_auc", skm.roc_auc_score(Y2, P2)),
        ("f1", skm.f1_score(Y2, PRED2)),
        ("precision", skm.precision_score(Y2, PRED2)),
        ("ppv", skm.precision_score(Y2, PRED2)),
        ("recall", skm.recall_score(Y2, PRED2)),
        ("sensitivity", skm.recall_score(Y2, PRED2)),
        ("specificity", skm.recall_score(Y2, PRED2, pos_label=0)),
        ("npv", skm.precision_score(Y2, PRED2, pos_label=0)),
        ("average_precision", skm.average_precision_score(Y2, P2)),
    ],
)
def test_binary_against_sklearn(key, expected):
    m = classification_metrics(Y2, PROBA2, ["neg", "pos"])
    assert m[key] == pytest.approx(expected)


def test_binary_confusion_and_roc_and_string_labels():
    names = ["CN", "AD"]
    m = classification_metrics(np.array(names)[Y2], PROBA2, names)
    assert m["confusion_matrix"] == skm.confusion_matrix(Y2, PRED2).tolist()
    fpr, tpr, _ = skm.roc_curve(Y2, P2)
    assert np.allclose(m["roc"]["fpr"], fpr) and np.allclose(m["roc"]["tpr"], tpr)
    assert m["positive_class"] == "AD"
    assert m["n"] == 10 and m["n_per_class"] == {"CN": 5, "AD": 5}
    json.dumps(to_jsonable(m), allow_nan=False)  # JSON-safe


RNG = np.random.default_rng(0)
Y3 = np.array([0, 1, 2] * 5)
LOGIT3 = RNG.normal(size=(15, 3)) + 1.5 * np.eye(3)[Y3]
PROBA3 = np.exp(LOGIT3) / np.exp(LOGIT3).sum(1, keepdims=True)
PRED3 = PROBA3.argmax(1)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("accuracy", skm.accuracy_score(Y3, PRED3)),
        ("balanced_accuracy", skm.balanced_accuracy_score(Y3, PRED3)),
        ("roc_auc", skm.roc_auc_score(Y3, PROBA3, multi_class="ovr", average="macro")),
        ("f1", skm.f1_score(Y3, PRED3, average="macro")),
        ("precision", skm.precision_score(Y3, PRED3, average="macro", zero_division=np.nan)),
        ("recall", skm.recall_score(Y3, PRED3, average="macro")),
        (
            "average_precision",
            np.mean([skm.average_precision_score(Y3 == i, PROBA3[:, i]) for i in range(3)]),
        ),
        (
            "specificity",
            np.mean([skm.recall_score(Y3 != i, PRED3 != i) for i in range(3)]),
        ),
    ],
)
def test_multiclass_against_sklearn(key, expected):
    m = classification_metrics(Y3, PROBA3, ["a", "b", "c"])
    assert m[key] == pytest.approx(expected)


def test_multiclass_per_class_and_cm():
    m = classification_metrics(Y3, PROBA3, ["a", "b", "c"])
    assert m["confusion_matrix"] == skm.confusion_matrix(Y3, PRED3).tolist()
    assert m["per_class"]["b"]["roc_auc"] == pytest.approx(skm.roc_auc_score(Y3 == 1, PROBA3[:, 1]))
    assert set(m["roc"]) == {"a", "b", "c"}


def test_single_class_part_gives_nan_auc_not_error():
    m = classification_metrics(np.zeros(4, int), PROBA2[:4], ["x", "y"])
    assert math.isnan(m["roc_auc"]) and m["accuracy"] == pytest.approx(0.75)
    assert to_jsonable(m)["roc_auc"] is None


@pytest.mark.parametrize(
    "y, proba, names",
    [
        (Y2, PROBA2, ["only"]),
        (Y2, PROBA3[:10], ["a", "b"]),
        (Y2[:5], PROBA2, ["a", "b"]),
        (np.array(["a"] * 10), PROBA2, ["x", "y"]),
        (Y2 + 1, PROBA2, ["a", "b"]),
    ],
)
def test_bad_inputs_raise(y, proba, names):
    with pytest.raises(ConfigError):
        classification_metrics(y, proba, names)


def test_summary_mean_sd_corrected_ci():
    vals = [0.6, 0.7, 0.8, 0.9]
    per_fold = [
        {"fold": i, "balanced_accuracy": v, "per_class": {"a": {"f1": v}}}
        for i, v in enumerate(vals)
    ]
    t = summarize_metrics(per_fold, n_train=60, n_test={0: 20, 1: 20, 2: 20, 3: 20})
    assert list(t.index) == [0, 1, 2, 3, "mean", "sd", "ci95_low", "ci95_high"]
    assert t.index.name == "fold"
    col = t["balanced_accuracy"]
    sd = np.std(vals, ddof=1)
    # Nadeau-Bengio: variance factor 1/K + n_test/n_train, not 1/K
    half = stats.t.ppf(0.975, 3) * sd * np.sqrt(1 / 4 + 20 / 60)
    assert col["mean"] == pytest.approx(0.75) and col["sd"] == pytest.approx(sd)
    assert col["ci95_low"] == pytest.approx(0.75 - half)
    assert col["ci95_high"] == pytest.approx(0.75 + half)
    assert t.loc["mean", "f1_a"] == pytest.approx(0.75)


def test_summary_sizes_from_the_metrics_or_an_error():
    per_fold = [
        {"fold": i, "accuracy": v, "n_train": 50, "n_val": 10, "n_test": 20}
        for i, v in enumerate([0.6, 0.8, 0.7])
    ]
    t = summarize_metrics(per_fold)
    expect = summarize_metrics(per_fold, n_train=60, n_test=20)
    assert t.loc["ci95_low", "accuracy"] == pytest.approx(expect.loc["ci95_low", "accuracy"])
    with pytest.raises(ConfigError, match="corrected interval"):
        summarize_metrics([{"fold": 0, "accuracy": 0.5}, {"fold": 1, "accuracy": 0.6}])


def _two_session_predictions() -> pd.DataFrame:
    """sub-1 (pos) has two sessions, one right (0.9) and one wrong (0.3): mean 0.6."""
    rows = [
        ("sub-1_ses-1", "sub-1", "ses-1", "pos", 0.9),
        ("sub-1_ses-2", "sub-1", "ses-2", "pos", 0.3),
        ("sub-2", "sub-2", "n/a", "neg", 0.2),
        ("sub-3", "sub-3", "n/a", "neg", 0.7),
    ]
    df = pd.DataFrame(rows, columns=["scan_id", "participant_id", "session_id", "label", "p"])
    return df.assign(prob_neg=1 - df["p"], prob_pos=df["p"]).drop(columns="p")


def test_subject_predictions_average_the_sessions():
    subj = subject_predictions(_two_session_predictions())
    assert subj["participant_id"].tolist() == ["sub-1", "sub-2", "sub-3"]
    one = subj.set_index("participant_id").loc["sub-1"]
    assert one["prob_pos"] == pytest.approx(0.6) and one["n_scans"] == 2
    assert one["pred"] == "pos"
    m = subject_metrics(_two_session_predictions())
    # subjects: sub-1 right, sub-2 right, sub-3 wrong -> recalls pos 1, neg 1/2
    assert m["n"] == 3 and m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["positive_class"] == "pos"


def _folds_table() -> pd.DataFrame:
    rows = []
    subs = {"sub-1": ["ses-1", "ses-2"], "sub-2": ["n/a"], "sub-3": ["n/a"]}
    subs |= {f"sub-{i}": ["n/a"] for i in range(4, 10)}
    for fold in (0, 1, 2):
        for i, (s, sessions) in enumerate(subs.items()):
            role = "test" if (i < 3 if fold != 1 else 3 <= i < 6) else "val" if i == 8 else "train"
            for ses in sessions:
                rows.append((s, ses, fold, role, "pos" if s == "sub-1" else "neg"))
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "fold", "role", "label"])


def test_fold_sizes_count_subjects_not_scans():
    sizes = fold_sizes(_folds_table())
    assert sizes.loc[0].tolist() == [6, 3]  # sub-1's two sessions count once
    assert sizes.loc[1].tolist() == [6, 3]


def test_write_metrics_summary(tmp_path):
    metrics, preds = [], []
    pred = _two_session_predictions()
    for fold in (2, 0, 1):
        proba = pred[["prob_neg", "prob_pos"]].to_numpy()
        p = np.roll(proba, fold, axis=0)
        m = classification_metrics(pred["label"].to_numpy(), p, ["neg", "pos"])
        m.update(fold=fold, best_epoch=3 + fold, n_test=4, monitor="val_loss", best_val=0.5)
        path = tmp_path / f"fold-{fold}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(to_jsonable(m)))
        metrics.append(path)
        preds.append(tmp_path / f"fold-{fold}" / "predictions.tsv")
        pred.assign(prob_neg=p[:, 0], prob_pos=p[:, 1]).to_csv(preds[-1], sep="\t", index=False)
    folds = tmp_path / "folds.tsv"
    _folds_table().to_csv(folds, sep="\t", index=False)
    out = tmp_path / "summary.tsv"
    table = write_metrics_summary(metrics, out, predictions_tsvs=preds, folds_tsv=folds)
    back = pd.read_csv(out, sep="\t", index_col="fold")
    assert list(back.index) == ["2", "0", "1", "mean", "sd", "ci95_low", "ci95_high"]
    assert {"balanced_accuracy", "scan_balanced_accuracy", "roc_auc", "scan_roc_auc"} <= set(
        back.columns
    )
    # plain names are per subject (3), scan_ ones per scan (4)
    assert back.loc["0", "n"] == 3 and back.loc["0", "scan_n"] == 4
    assert back.loc["0", "balanced_accuracy"] == pytest.approx(0.75)
    assert back.loc["0", "scan_balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score([1, 1, 0, 0], [1, 0, 0, 1])
    )
    assert back.loc["0", "n_subjects_test"] == 3 and back.loc["0", "n_subjects_trainval"] == 6
    assert back.loc["mean", "val_loss"] == pytest.approx(0.5)
    assert back.loc["mean", "best_epoch"] == pytest.approx(4.0)
    assert back.loc["mean", "balanced_accuracy"] == pytest.approx(
        table.loc["mean", "balanced_accuracy"], rel=1e-5
    )
    with pytest.raises(ConfigError, match="duplicate fold"):
        write_metrics_summary(
            [metrics[0], metrics[0]], out, predictions_tsvs=preds[:2], folds_tsv=folds
        )


# --------------------------------------------------------------- positive_class (issue 23)

#: AD/CN test part: AD is column 0 (sorted names), so by default CN would be positive.
Y_ADCN = np.array(["AD", "AD", "AD", "AD", "CN", "CN", "CN", "CN", "CN", "CN"])
P_AD = np.array([0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2, 0.1, 0.2, 0.3])  # P(AD)
PROBA_ADCN = np.column_stack([P_AD, 1 - P_AD])


def test_positive_class_makes_sensitivity_about_that_class():
    m = classification_metrics(Y_ADCN, PROBA_ADCN, ["AD", "CN"], positive_class="AD")
    y_ad = (Y_ADCN == "AD").astype(int)
    pred_ad = (P_AD > 0.5).astype(int)
    assert m["positive_class"] == "AD"
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y_ad, pred_ad))  # 3/4
    assert m["specificity"] == pytest.approx(skm.recall_score(y_ad, pred_ad, pos_label=0))
    assert m["ppv"] == pytest.approx(skm.precision_score(y_ad, pred_ad))  # 3/4
    assert m["npv"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(skm.f1_score(y_ad, pred_ad))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_ad, P_AD))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y_ad, P_AD))
    # class-symmetric metrics and the confusion matrix (class_names order) do not move
    default = classification_metrics(Y_ADCN, PROBA_ADCN, ["AD", "CN"])
    assert default["positive_class"] == "CN"
    assert default["sensitivity"] == pytest.approx(m["specificity"])
    assert default["sensitivity"] != pytest.approx(m["sensitivity"])
    assert m["balanced_accuracy"] == default["balanced_accuracy"]
    assert m["confusion_matrix"] == default["confusion_matrix"]


@pytest.mark.parametrize(
    ("names", "proba", "pos", "match"),
    [
        (["AD", "CN"], PROBA_ADCN, "MCI", "not one of the classes"),
        (["AD", "CN", "MCI"], np.full((10, 3), 1 / 3), "AD", "two classes only"),
    ],
)
def test_positive_class_refused_when_it_cannot_apply(names, proba, pos, match):
    y = np.array([0, 1] * 5)
    with pytest.raises(ConfigError, match=match):
        classification_metrics(y, proba, names, positive_class=pos)


def _adcn_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i}" for i in range(10)],
            "session_id": "n/a",
            "label": Y_ADCN,
            "prob_AD": P_AD,
            "prob_CN": 1 - P_AD,
        }
    )


def test_summary_uses_the_positive_class_for_subject_and_scan_metrics(tmp_path):
    pred = _adcn_predictions()
    # metrics.json as training writes it: the default positive class (CN)
    m = classification_metrics(pred["label"], pred[["prob_AD", "prob_CN"]].to_numpy(), ["AD", "CN"])
    m.update(fold=0, n_test=10)
    (tmp_path / "metrics.json").write_text(json.dumps(to_jsonable(m)))
    pred.to_csv(tmp_path / "predictions.tsv", sep="\t", index=False)
    folds = pd.DataFrame(
        {
            "participant_id": [*pred["participant_id"], "sub-x", "sub-y"],
            "session_id": "n/a",
            "fold": 0,
            "role": ["test"] * 10 + ["train", "val"],
            "label": [*Y_ADCN, "AD", "CN"],
        }
    )
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    kw = {"predictions_tsvs": [tmp_path / "predictions.tsv"], "folds_tsv": tmp_path / "folds.tsv"}
    ad = write_metrics_summary(
        [tmp_path / "metrics.json"], tmp_path / "s.tsv", **kw, positive_class="AD"
    )
    cn = write_metrics_summary([tmp_path / "metrics.json"], tmp_path / "t.tsv", **kw)
    assert ad.loc[0, "sensitivity"] == pytest.approx(0.75)  # 3 of 4 AD found
    assert ad.loc[0, "scan_sensitivity"] == pytest.approx(0.75)  # recomputed, not metrics.json's
    assert ad.loc[0, "scan_roc_auc"] == pytest.approx(ad.loc[0, "roc_auc"])
    assert cn.loc[0, "sensitivity"] == pytest.approx(5 / 6)  # today's default: about CN
    assert cn.loc[0, "scan_sensitivity"] == pytest.approx(5 / 6)
    assert subject_metrics(pred, "AD")["positive_class"] == "AD"


def test_report_names_and_uses_the_configured_positive_class(tmp_path):
    from test_report import MODEL, make_results

    from brainlens.report import plots
    from brainlens.report.performance import performance_section

    kw = make_results(tmp_path / "results", ground_truth=False)
    writer = plots.FigureWriter(tmp_path / "figures", tmp_path)
    args = (kw["fold_metrics"], kw["predictions"], {}, writer, kw["folds_tsv"])
    sec, _ = performance_section([MODEL], {}, *args, positive_class="control")
    body = sec.children[0].body
    assert "treat <b>control</b> as the positive class (set by <code>positive_class</code>" in body
    default, _ = performance_section([MODEL], {}, *args)
    assert "<b>patient</b> as the positive class (<code>positive_class: null</code>" in (
        default.children[0].body
    )
    preds = {k[1]: pd.read_csv(p, sep="\t") for k, p in kw["predictions"].items()}
    fig = plots.roc_figure(preds, "control")
    assert fig.axes[0].get_title() == "positive class: control"
    assert plots.roc_figure(preds).axes[0].get_title() == "positive class: patient"
