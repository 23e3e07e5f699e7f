"""Report section "Model performance": metrics per fold, ROC, confusion, learning curves.

Numbers are per subject (a subject's sessions combined by mean probability, see
:mod:`brainlens.summary`), with per-scan numbers beside them. Intervals are corrected
resampled t-intervals (:mod:`brainlens.stats`). Models are compared by paired per-fold
differences (:mod:`brainlens.report.comparison`); the best model is chosen on
validation only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainlens.errors import BrainlensError
from brainlens.folds import read_folds
from brainlens.metrics import SUMMARY_ROWS, summarize_metrics
from brainlens.report import plots
from brainlens.report.comparison import best_model, comparison_html
from brainlens.report.html import Section, esc, figure, note, slug, table
from brainlens.report.io import fmt, read_json, read_tsv, sorted_keys
from brainlens.summary import fold_sizes, model_summary, validation_value

log = logging.getLogger(__name__)

#: Metrics shown in the per-model table, in order, with their header.
TABLE_METRICS = {
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC AUC",
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
}
#: Scan-level metrics shown beside the subject-level ones.
SCAN_METRICS = {
    "scan_balanced_accuracy": "balanced accuracy (scans)",
    "scan_roc_auc": "ROC AUC (scans)",
}
#: How the 95% intervals are computed, for captions.
CI_TEXT = (
    "The 95% interval of the mean is the corrected resampled t-interval of Nadeau and "
    "Bengio (2003): the folds share training subjects, so their scores are correlated and "
    "the variance factor is 1/K + n<sub>test</sub>/n<sub>train</sub> instead of 1/K "
    "(an approximation; bounds clipped to [0, 1])."
)


@dataclass
class ModelScore:
    """Headline numbers of one model: test means with corrected 95% intervals, and the
    mean validation value the model is chosen by.

    ``balanced_accuracy``, ``ci_low``, ``ci_high`` and ``roc_auc`` are per subject
    (``level == "subject"``), or per scan where predictions were missing (``"scan"``).
    ``val_metric`` / ``val_mean``: the monitored validation value of each fold's kept
    model (e.g. ``val_loss``), mean over folds. ``folds``: the per-fold rows of the
    summary (for paired comparisons).
    """

    model: str
    balanced_accuracy: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    roc_auc: float = float("nan")
    n_folds: int = 0
    classes: list[str] = field(default_factory=list)
    level: str = "subject"
    scan_balanced_accuracy: float = float("nan")
    val_metric: str | None = None
    val_mean: float = float("nan")
    folds: pd.DataFrame | None = None


def _by_model(d: Mapping[tuple, Path], model: str) -> dict[str, Path]:
    return {str(k[1]): d[k] for k in sorted_keys(d) if k[0] == model}


def _summary_table(
    summary_tsv: Path | None,
    metrics: Mapping[str, dict],
    preds: Mapping[str, pd.DataFrame],
    folds: pd.DataFrame | None,
    positive_class: str | None = None,
) -> tuple[pd.DataFrame | None, str]:
    """The model's summary and its level: the TSV if it is of this version, else one
    computed from the per-fold files (subject level if predictions and folds exist)."""
    df = read_tsv(summary_tsv, index_col="fold")
    if df is not None and "scan_balanced_accuracy" in df.columns:
        return df, "subject"
    if not metrics:
        return None, "subject"
    if folds is not None and set(metrics) <= set(preds):
        try:
            df = model_summary(
                list(metrics.values()), [preds[f] for f in metrics], folds, positive_class
            )
            df.index = df.index.astype(str)
            return df, "subject"
        except BrainlensError as err:
            log.warning("subject-level summary not computed: %s", err)
    sizes = fold_sizes(folds) if folds is not None else None
    n_tr = (
        {f: sizes["n_subjects_trainval"].get(int(f), np.nan) for f in metrics}
        if sizes is not None
        else None
    )
    n_te = (
        {f: sizes["n_subjects_test"].get(int(f), np.nan) for f in metrics}
        if sizes is not None
        else None
    )
    per_fold = {f: dict(m) | validation_value(m) for f, m in metrics.items()}
    try:
        df = summarize_metrics(per_fold, n_train=n_tr, n_test=n_te)
    except BrainlensError:  # no fold sizes anywhere: no interval
        df = summarize_metrics(per_fold, n_train=np.nan, n_test=np.nan)
    df.index = df.index.astype(str)
    return df, "scan"


def clip01(value: float) -> float:
    """Clip a CI bound of a metric that lives in [0, 1] (nan stays nan)."""
    return value if math.isnan(value) else min(1.0, max(0.0, value))


def _get(df: pd.DataFrame, row: str, col: str) -> float:
    try:
        return float(df.loc[row, col])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def fold_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The per-fold rows of a summary table (without mean, sd and interval rows)."""
    return summary.loc[[i for i in summary.index if i not in SUMMARY_ROWS]]


def model_score(model: str, summary: pd.DataFrame | None, level: str = "subject") -> ModelScore:
    """The headline numbers of a model from its summary table."""
    s = ModelScore(model, level=level)
    if summary is None:
        return s
    s.balanced_accuracy = _get(summary, "mean", "balanced_accuracy")
    s.ci_low = clip01(_get(summary, "ci95_low", "balanced_accuracy"))
    s.ci_high = clip01(_get(summary, "ci95_high", "balanced_accuracy"))
    s.roc_auc = _get(summary, "mean", "roc_auc")
    s.scan_balanced_accuracy = _get(summary, "mean", "scan_balanced_accuracy")
    s.folds = fold_rows(summary)
    s.n_folds = len(s.folds)
    val = [c for c in summary.columns if str(c).startswith("val_")]
    if len(val) == 1:
        s.val_metric = str(val[0])
        s.val_mean = _get(summary, "mean", s.val_metric)
    return s


def _fold_facts(
    f: str, m: Mapping, summary: pd.DataFrame, restarts: int, val: str | None
) -> dict[str, str]:
    r = {"fold": f}
    if "n_subjects_test" in summary.columns:
        r["test subjects"] = fmt(_get(summary, f, "n_subjects_test"), 0)
    r["test scans"] = fmt(m.get("n_test", m.get("n")))
    if "C" in m:  # a linear baseline (brainlens.linear): its C was chosen, not an epoch
        r["chosen C"] = "–" if m["C"] is None else f"{float(m['C']):g}"
    else:
        r["best epoch"] = fmt(m.get("best_epoch"))
    if restarts > 1:
        kept = m.get("restart")
        r["kept restart"] = "" if kept is None else f"{int(kept) + 1} of {m.get('restarts')}"
    if val:
        r[f"validation {val[4:]}"] = fmt(_get(summary, f, val))
    return r


def _metrics_html(
    summary: pd.DataFrame,
    metrics: Mapping[str, dict],
    level: str,
    val: str | None,
    positive_class: str | None = None,
) -> str:
    folds = list(fold_rows(summary).index)
    labels = TABLE_METRICS | (SCAN_METRICS if level == "subject" else {})
    cols = [c for c in labels if c in summary.columns]
    rows, classes = [], []
    restarts = max((int(m.get("restarts") or 1) for m in metrics.values()), default=1)
    for f in folds:
        r = _fold_facts(f, metrics.get(str(f), {}), summary, restarts, val)
        r |= {labels[c]: fmt(summary.loc[f, c]) for c in cols}
        rows.append(r)
        classes.append("")
    blank = {k: "" for k in rows[0] if k != "fold"} if rows else {}
    for key, label in (("mean", "mean"), ("sd", "SD")):
        if key in summary.index:
            r = {"fold": label} | blank
            if val and key == "mean":
                r[f"validation {val[4:]}"] = fmt(_get(summary, "mean", val))
            r |= {labels[c]: fmt(summary.loc[key, c]) for c in cols}
            rows.append(r)
            classes.append("summary-row")
    if "ci95_low" in summary.index:
        r = {"fold": "95% CI"} | blank
        for c in cols:
            lo, hi = clip01(_get(summary, "ci95_low", c)), clip01(_get(summary, "ci95_high", c))
            r[labels[c]] = "–" if math.isnan(lo) else f"{fmt(lo, 2)} – {fmt(hi, 2)}"
        rows.append(r)
        classes.append("summary-row")
    pos = positive_class or next(
        (m.get("positive_class") for m in metrics.values() if m.get("positive_class")), None
    )
    how = (
        "set by <code>positive_class</code> in the config"
        if positive_class
        else "<code>positive_class: null</code>: the last of the sorted class names"
    )
    pos_txt = (
        f"Sensitivity, specificity, PPV, NPV, F1 and ROC AUC treat <b>{esc(pos)}</b> as the "
        f"positive class ({how}). "
        if pos
        else "With more than two classes, sensitivity etc. are unweighted means of the "
        "one-vs-rest values and ROC AUC is the macro one-vs-rest AUC. "
    )
    unit = (
        "Metrics are per <b>subject</b>: the sessions of a subject in a test part are "
        "combined by their mean predicted probability, so each subject counts once; the "
        "<i>(scans)</i> columns count every scan. "
        if level == "subject"
        else "Metrics are per <b>scan</b> (no predictions or folds table were found for "
        "subject-level metrics; subjects with several sessions count several times). "
    )
    return table(
        pd.DataFrame(rows),
        text_columns=["fold"],
        row_class=classes,
        caption_html="Performance on each fold's <i>test</i> part (subjects never used for "
        "training or model selection). "
        + unit
        + "Balanced accuracy = mean of the per-class recalls (chance level = 1/number of "
        f"classes). {pos_txt}"
        + (
            f"<i>Validation {esc(val[4:])}</i>: the fold's kept model on its validation "
            "part, the value it was selected by. "
            if val
            else ""
        )
        + CI_TEXT
        + " – = undefined (e.g. a test part without one of the classes)."
        + (
            f" Each fold was trained from {restarts} initialisations; the one with the best "
            "validation value was kept (<i>kept restart</i>), the test part played no part "
            "in that choice."
            if restarts > 1
            else ""
        ),
    )


def _confusion(preds: Mapping[str, pd.DataFrame], metrics: Mapping[str, dict]):
    frames = [p for p in preds.values() if p is not None and {"label", "pred"} <= set(p.columns)]
    if frames:
        classes = [c[5:] for c in frames[0].columns if c.startswith("prob_")]
        allp = pd.concat(frames, ignore_index=True)
        if not classes:
            classes = sorted(set(allp["label"].astype(str)) | set(allp["pred"].astype(str)))
        idx = {c: i for i, c in enumerate(classes)}
        cm = np.zeros((len(classes), len(classes)), dtype=int)
        for t, p in zip(allp["label"].astype(str), allp["pred"].astype(str), strict=True):
            if t in idx and p in idx:
                cm[idx[t], idx[p]] += 1
        return cm, classes
    cms = [m for m in metrics.values() if "confusion_matrix" in m and "class_names" in m]
    if cms:
        return np.sum([np.asarray(m["confusion_matrix"]) for m in cms], axis=0), cms[0][
            "class_names"
        ]
    return None, []


def _figures_html(
    model: str,
    preds: Mapping[str, pd.DataFrame],
    metrics: Mapping[str, dict],
    hist: Mapping[str, pd.DataFrame | None],
    writer: plots.FigureWriter,
    positive_class: str | None = None,
) -> list[str]:
    """ROC curves, confusion matrix and learning curves of one model (HTML parts)."""
    body, figs = [], []
    src = plots.save_if(writer, plots.roc_figure(preds, positive_class), f"roc_{model}")
    if src:
        figs.append(
            figure(
                src,
                "<b>ROC curves</b> (per scan). Thin lines: each fold's test part; thick line: "
                "all test predictions pooled. The closer the curve runs to the top-left "
                "corner, the better the model separates the classes at every threshold; the "
                "dotted diagonal is chance.",
                f"ROC curves of {model}",
            )
        )
    cm, classes = _confusion(preds, metrics)
    if cm is not None and len(classes):
        src = writer.save(plots.confusion_figure(cm, classes), f"confusion_{model}")
        figs.append(
            figure(
                src,
                "<b>Confusion matrix</b> (per scan), summed over the test parts of all folds "
                "(each scan appears once per fold it is tested in). Rows: true class, columns: "
                "predicted class; percentages are per row (the recall of each class on the "
                "diagonal).",
                f"confusion matrix of {model}",
            )
        )
    if figs:
        body.append(f'<div class="grid2">{"".join(figs)}</div>')
    elif not preds:
        body.append(note("No predictions found: ROC curves and confusion matrix omitted.", "warn"))
    best = {f: metrics.get(f, {}).get("best_epoch") for f in hist}
    src = plots.save_if(writer, plots.learning_curves_figure(hist, best), f"learning_{model}")
    if src:
        body.append(
            figure(
                src,
                "<b>Learning curves</b> per fold (one colour per fold). Training loss should "
                "fall; validation loss that rises while training loss keeps falling means "
                "over-fitting. Dotted vertical lines: the epoch whose weights were kept "
                "(best validation value).",
                f"learning curves of {model}",
            )
        )
    return body


def _read_folds(folds_tsv: Path | None) -> pd.DataFrame | None:
    if folds_tsv is None or not Path(folds_tsv).is_file():
        return None
    try:
        return read_folds(folds_tsv)
    except BrainlensError as err:
        log.warning("folds table not used for the performance section: %s", err)
        return None


def performance_section(
    models: list[str],
    summaries: Mapping[str, Path],
    fold_metrics: Mapping[tuple, Path],
    predictions: Mapping[tuple, Path],
    histories: Mapping[tuple, Path],
    writer: plots.FigureWriter,
    folds_tsv: Path | None = None,
    *,
    positive_class: str | None = None,
) -> tuple[Section, list[ModelScore]]:
    """One subsection per model, then the model comparison.

    Parameters
    ----------
    models : list of str
        Models in display order.
    summaries : dict model -> Path
        ``metrics_summary.tsv`` per model (recomputed from the per-fold files when
        missing or written by an older brainlens).
    fold_metrics, predictions, histories : dict (model, fold) -> Path
        Per-fold ``metrics.json``, ``predictions.tsv`` and ``history.tsv``.
    writer : plots.FigureWriter
        Where figures go.
    folds_tsv : Path, optional
        ``folds.tsv``: subjects per fold (for subject-level metrics and the intervals).
    positive_class : str, optional
        The config's ``positive_class`` (None: the last of the sorted class names).

    Returns
    -------
    section : Section
    scores : list of ModelScore
        Each model's headline numbers, in ``models`` order.
    """
    sec = Section("performance", "Model performance")
    sec.body = (
        "<p>Each fold's model (its epoch and, with restarts, its initialisation) was "
        "selected on that fold's validation part; the test part was used once, by the "
        "selected model, and the numbers below come from it only.</p>"
    )
    folds = _read_folds(folds_tsv)
    scores = []
    for model in models:
        sub = Section(slug("perf", model), f"Model {model}", level=3)
        metrics = {f: read_json(p) or {} for f, p in _by_model(fold_metrics, model).items()}
        metrics = {str(m.get("fold", f)) if m else f: m for f, m in metrics.items()}
        preds = {f: read_tsv(p) for f, p in _by_model(predictions, model).items()}
        preds = {f: p for f, p in preds.items() if p is not None}
        summary, level = _summary_table(
            summaries.get(model),
            {f: m for f, m in metrics.items() if m},
            preds,
            folds,
            positive_class,
        )
        score = model_score(model, summary, level)
        scores.append(score)
        body = []
        if summary is None:
            body.append(note(f"No metrics found for model {esc(model)}.", "warn"))
        else:
            body.append(_metrics_html(summary, metrics, level, score.val_metric, positive_class))
        if preds:
            score.classes = [
                c[5:] for c in next(iter(preds.values())).columns if c.startswith("prob_")
            ]
        hist = {f: read_tsv(p) for f, p in _by_model(histories, model).items()}
        body += _figures_html(model, preds, metrics, hist, writer, positive_class)
        sub.body = "\n".join(body)
        sec.children.append(sub)
    sec.body += comparison_html(scores)
    return sec, scores


__all__ = ["ModelScore", "best_model", "fold_rows", "model_score", "performance_section"]
