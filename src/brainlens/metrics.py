"""Classification metrics per fold, and their summary over folds.

Conventions: class names are given in the order of the model's outputs (brainlens
sorts them, see :mod:`brainlens.training`). For two classes the positive class
(sensitivity, PPV, ROC AUC, ... are about it) is ``positive_class`` when given (the
config's ``positive_class``), else the *second* name: with sorted names
``["AD", "CN"]`` that would be CN, so pass ``positive_class="AD"``. For three or more
classes, sensitivity etc. are one-vs-rest per
class (``per_class``) and their unweighted (macro) mean at the top level; ROC AUC is
the macro one-vs-rest AUC.

Undefined values (e.g. AUC when the test part holds one class only) are ``nan`` in
the dict and ``null`` in JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from brainlens.errors import ConfigError, InputFileError
from brainlens.stats import corrected_resampled_t

#: Scalar metrics present for every number of classes.
SCALAR_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "roc_auc",
    "f1",
    "precision",
    "ppv",
    "recall",
    "sensitivity",
    "specificity",
    "npv",
    "average_precision",
)
#: Rows appended by :func:`summarize_metrics`.
SUMMARY_ROWS = ("mean", "sd", "ci95_low", "ci95_high")


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def _binary_counts(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = int(np.sum((y == 1) & (pred == 1)))
    tn = int(np.sum((y == 0) & (pred == 0)))
    fp = int(np.sum((y == 0) & (pred == 1)))
    fn = int(np.sum((y == 1) & (pred == 0)))
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "specificity": _div(tn, tn + fp),
        "npv": _div(tn, tn + fn),
        "f1": f1,
    }


def _ranking(y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """ROC AUC, average precision and ROC points of a binary problem (nan if one class)."""
    if len(np.unique(y)) < 2:
        nan = float("nan")
        return {
            "roc_auc": nan,
            "average_precision": nan,
            "roc": {"fpr": [], "tpr": [], "thresholds": []},
        }
    fpr, tpr, thr = skm.roc_curve(y, score)
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return {
        "roc_auc": float(skm.roc_auc_score(y, score)),
        "average_precision": float(skm.average_precision_score(y, score)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()},
    }


def classification_metrics(
    y_true: Sequence[int] | Sequence[str] | np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
    positive_class: str | None = None,
) -> dict[str, Any]:
    """All classification metrics of one test (or validation) part.

    Parameters
    ----------
    y_true : array-like, shape (N,)
        True classes, as indices into ``class_names`` or as the names themselves.
    proba : ndarray, shape (N, K)
        Predicted class probabilities (rows sum to 1); the prediction is the argmax.
    class_names : sequence of str, length K
        Names in the order of ``proba``'s columns.
    positive_class : str, optional
        For K = 2, the class sensitivity, specificity, PPV, NPV, F1, ROC AUC and
        average precision are about; None: the second of ``class_names``. Must be
        None for K > 2 (one-vs-rest means over all classes).

    Returns
    -------
    dict
        ``n``, ``n_per_class``, the :data:`SCALAR_METRICS` (``ppv`` = ``precision``,
        ``sensitivity`` = ``recall``; macro one-vs-rest means for K > 2),
        ``confusion_matrix`` (K x K list, rows true, columns predicted, in
        ``class_names`` order), ``roc`` (binary: ``{fpr, tpr, thresholds}``; K > 2:
        one such dict per class) and, for K > 2, ``per_class`` one-vs-rest metrics.
    """
    names = [str(c) for c in class_names]
    k = len(names)
    proba = np.asarray(proba, dtype=float)
    if k < 2 or proba.ndim != 2 or proba.shape[1] != k:
        raise ConfigError(
            f"classification_metrics: expected proba of shape (N, {k}) for classes {names} "
            f"(K >= 2), got {proba.shape}"
        )
    y = np.asarray(y_true)
    if y.dtype.kind in "OUS":
        lookup = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(y.astype(str)) - set(lookup))
        if unknown:
            raise ConfigError(f"classification_metrics: labels {unknown} not in {names}")
        y = np.array([lookup[v] for v in y.astype(str)], dtype=int)
    y = y.astype(int)
    if y.shape != (proba.shape[0],):
        raise ConfigError(
            f"classification_metrics: y_true has shape {y.shape}, proba {proba.shape}; "
            "expected one label per row"
        )
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ConfigError(f"classification_metrics: class indices must lie in 0..{k - 1}")
    pos = _positive_index(names, positive_class)
    pred = proba.argmax(axis=1)
    cm = skm.confusion_matrix(y, pred, labels=list(range(k)))
    recalls = [_div(cm[i, i], cm[i].sum()) for i in range(k)]
    present = [r for r in recalls if not math.isnan(r)]
    out: dict[str, Any] = {
        "n": int(len(y)),
        "n_per_class": {names[i]: int(cm[i].sum()) for i in range(k)},
        "accuracy": _div(np.trace(cm), cm.sum()),
        "balanced_accuracy": float(np.mean(present)) if present else float("nan"),
    }
    if k == 2:
        out.update(_binary_counts((y == pos).astype(int), (pred == pos).astype(int)))
        out.update(_ranking((y == pos).astype(int), proba[:, pos]))
        out["positive_class"] = names[pos]
    else:
        per_class = {}
        for i, name in enumerate(names):
            yi, pi = (y == i).astype(int), (pred == i).astype(int)
            per_class[name] = {**_binary_counts(yi, pi), **_ranking(yi, proba[:, i])}
        for key in ("precision", "recall", "specificity", "npv", "f1", "average_precision"):
            vals = [v[key] for v in per_class.values() if not math.isnan(v[key])]
            out[key] = float(np.mean(vals)) if vals else float("nan")
        if len(np.unique(y)) == k:
            p = proba / proba.sum(axis=1, keepdims=True)
            out["roc_auc"] = float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
        else:
            out["roc_auc"] = float("nan")
        out["roc"] = {name: v.pop("roc") for name, v in per_class.items()}
        out["per_class"] = per_class
    out["ppv"] = out["precision"]
    out["sensitivity"] = out["recall"]
    out["confusion_matrix"] = cm.tolist()
    out["class_names"] = names
    return out


def _positive_index(names: list[str], positive_class: str | None) -> int:
    """Column of the positive class: ``positive_class``, else the second (K = 2 only)."""
    if positive_class is None:
        return 1
    if len(names) != 2:
        raise ConfigError(
            f"positive_class: {positive_class!r} given for {len(names)} classes {names}; it "
            "applies to two classes only. Fix: set positive_class: null"
        )
    if str(positive_class) not in names:
        raise ConfigError(
            f"positive_class: {positive_class!r} is not one of the classes {names}. Fix: set "
            "it to one of them, or null for the last"
        )
    return names.index(str(positive_class))


def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays and nan to JSON-safe values (nan -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _scalars(d: Mapping[str, Any]) -> dict[str, float]:
    """Numeric scalar entries of a metrics dict; ``per_class`` flattened to metric_class."""
    out: dict[str, float] = {}
    for key, value in d.items():
        if key == "fold":
            continue
        if key == "per_class" and isinstance(value, Mapping):
            for cls, m in value.items():
                for mk, mv in m.items():
                    if isinstance(mv, (int, float)) and not isinstance(mv, bool):
                        out[f"{mk}_{cls}"] = float(mv)
        elif value is None:
            out[key] = float("nan")
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def _sizes_of(
    items: Sequence[tuple[Any, Mapping[str, Any]]],
    given: Mapping[Any, float] | Sequence[float] | float | None,
    choices: Sequence[Sequence[str]],
    name: str,
) -> np.ndarray:
    """One size per fold: ``given`` (by fold or position), else the first of ``choices``
    (key groups, summed) that a fold's dict has."""
    if given is not None:
        if isinstance(given, Mapping):
            missing = [f for f, _ in items if f not in given and str(f) not in given]
            if missing:
                raise ConfigError(f"summarize_metrics: {name} lacks fold(s) {missing}")
            return np.array([float(given.get(f, given.get(str(f)))) for f, _ in items])
        arr = np.asarray(given, dtype=float)
        return np.full(len(items), float(arr)) if arr.ndim == 0 else arr
    out = []
    for f, d in items:
        keys = next((ks for ks in choices if d.get(ks[0]) is not None), None)
        if keys is None:
            raise ConfigError(
                f"summarize_metrics: fold {f} has none of {[ks[0] for ks in choices]}, so "
                f"the corrected interval cannot be computed. Fix: pass {name}= (subjects "
                "per fold, from folds.tsv) or use write_metrics_summary"
            )
        out.append(sum(float(d.get(k) or 0) for k in keys))
    return np.array(out)


def summarize_metrics(
    per_fold: Sequence[Mapping[str, Any]] | Mapping[Any, Mapping[str, Any]],
    *,
    n_train: Mapping[Any, float] | Sequence[float] | float | None = None,
    n_test: Mapping[Any, float] | Sequence[float] | float | None = None,
) -> pd.DataFrame:
    """One row per fold plus mean, SD and the corrected resampled 95 % interval.

    Parameters
    ----------
    per_fold : sequence of dict, or dict fold -> dict
        Metrics dicts (as in ``metrics.json``). In a sequence, a dict's ``fold`` key
        names its fold (else its position).
    n_train, n_test : dict fold -> int, sequence, int, or None
        Training and test sizes per fold for the correction (subjects, as splits are
        by subject; the training size counts every unit not tested: train + val).
        None: each dict's ``n_subjects_trainval`` / ``n_subjects_test``, else
        ``n_train + n_val`` / ``n_test`` (scans).

    Returns
    -------
    DataFrame
        Index ``fold``: the folds, then ``mean``, ``sd`` (ddof 1), ``ci95_low``,
        ``ci95_high``: the corrected resampled t-interval of Nadeau and Bengio (2003)
        (:func:`brainlens.stats.corrected_resampled_t`; folds share training
        subjects, so the naive t-interval would be too narrow); nan for one fold.
        Columns: every numeric scalar metric (e.g. ``balanced_accuracy``); nested
        per-class metrics become ``<metric>_<class>``. Folds missing a metric get nan.
    """
    if isinstance(per_fold, Mapping):
        items = list(per_fold.items())
    else:
        items = [(d.get("fold", i), d) for i, d in enumerate(per_fold)]
    if not items:
        raise ConfigError("summarize_metrics: expected at least one fold's metrics, got none")
    tr = _sizes_of(items, n_train, [("n_subjects_trainval",), ("n_train", "n_val")], "n_train")
    te = _sizes_of(items, n_test, [("n_subjects_test",), ("n_test",)], "n_test")
    rows = pd.DataFrame([_scalars(d) for _, d in items], index=[f for f, _ in items])
    ci = {c: corrected_resampled_t(rows[c].to_numpy(dtype=float), tr, te) for c in rows.columns}
    summary = pd.DataFrame(
        [
            rows.mean(),
            rows.std(ddof=1),
            pd.Series({c: r.ci_low for c, r in ci.items()}, dtype=float),
            pd.Series({c: r.ci_high for c, r in ci.items()}, dtype=float),
        ],
        index=list(SUMMARY_ROWS),
        columns=rows.columns,
    )
    table = pd.concat([rows, summary])
    table.index = pd.Index(list(table.index), name="fold", dtype=object)
    return table


def read_metrics_json(path: str | Path) -> dict[str, Any]:
    """Read one ``metrics.json`` written by :func:`brainlens.training.train_fold`."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "metrics file not found", "run the training step for this fold")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(p, f"not valid JSON ({err})", "re-run the training step") from err
