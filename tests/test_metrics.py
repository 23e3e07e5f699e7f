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
from brainlens.metrics import (
    classification_metrics,
    summarize_metrics,
    to_jsonable,
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


def test_summary_mean_sd_ci():
    vals = [0.6, 0.7, 0.8, 0.9]
    per_fold = [
        {"fold": i, "balanced_accuracy": v, "per_class": {"a": {"f1": v}}}
        for i, v in enumerate(vals)
    ]
    t = summarize_metrics(per_fold)
    assert list(t.index) == [0, 1, 2, 3, "mean", "sd", "ci95_low", "ci95_high"]
    assert t.index.name == "fold"
    col = t["balanced_accuracy"]
    sd = np.std(vals, ddof=1)
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert col["mean"] == pytest.approx(0.75) and col["sd"] == pytest.approx(sd)
    assert col["ci95_low"] == pytest.approx(0.75 - half)
    assert col["ci95_high"] == pytest.approx(0.75 + half)
    assert t.loc["mean", "f1_a"] == pytest.approx(0.75)


def test_write_metrics_summary(tmp_path):
    paths = []
    for fold in (2, 0, 1):
        m = classification_metrics(Y2, np.roll(PROBA2, fold, axis=0), ["n", "p"])
        m.update(fold=fold, best_epoch=3 + fold, n_test=10)
        p = tmp_path / f"fold-{fold}" / "metrics.json"
        p.parent.mkdir()
        p.write_text(json.dumps(to_jsonable(m)))
        paths.append(p)
    out = tmp_path / "summary.tsv"
    table = write_metrics_summary(paths, out)
    back = pd.read_csv(out, sep="\t", index_col="fold")
    assert list(back.index) == ["2", "0", "1", "mean", "sd", "ci95_low", "ci95_high"]
    assert "balanced_accuracy" in back.columns and "roc_auc" in back.columns
    assert back.loc["mean", "best_epoch"] == pytest.approx(4.0)
    assert back.loc["mean", "balanced_accuracy"] == pytest.approx(
        table.loc["mean", "balanced_accuracy"], rel=1e-5
    )
    with pytest.raises(ConfigError, match="duplicate fold"):
        write_metrics_summary([paths[0], paths[0]], out)
