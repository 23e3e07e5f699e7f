"""Report section "Model performance": metrics per fold, ROC, confusion, learning curves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainlens.metrics import summarize_metrics
from brainlens.report import plots
from brainlens.report.html import Section, esc, figure, note, slug, table
from brainlens.report.io import fmt, read_json, read_tsv, sorted_keys

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


@dataclass
class ModelScore:
    """Headline numbers of one model (mean over folds and t-based 95% CI)."""

    model: str
    balanced_accuracy: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    roc_auc: float = float("nan")
    n_folds: int = 0
    classes: list[str] = field(default_factory=list)


def _by_model(d: Mapping[tuple, Path], model: str) -> dict[str, Path]:
    return {str(k[1]): d[k] for k in sorted_keys(d) if k[0] == model}


def _summary_table(summary_tsv: Path | None, metrics: Mapping[str, dict]) -> pd.DataFrame | None:
    df = read_tsv(summary_tsv, index_col="fold")
    if df is None and metrics:
        df = summarize_metrics({f: m for f, m in metrics.items()})
        df.index = df.index.astype(str)
    return df


def clip01(value: float) -> float:
    """Clip a CI bound of a metric that lives in [0, 1] (nan stays nan)."""
    return value if math.isnan(value) else min(1.0, max(0.0, value))


def _get(df: pd.DataFrame, row: str, col: str) -> float:
    try:
        return float(df.loc[row, col])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def model_score(model: str, summary: pd.DataFrame | None) -> ModelScore:
    """The headline numbers of a model from its summary table."""
    s = ModelScore(model)
    if summary is None:
        return s
    s.balanced_accuracy = _get(summary, "mean", "balanced_accuracy")
    s.ci_low = clip01(_get(summary, "ci95_low", "balanced_accuracy"))
    s.ci_high = clip01(_get(summary, "ci95_high", "balanced_accuracy"))
    s.roc_auc = _get(summary, "mean", "roc_auc")
    s.n_folds = sum(1 for i in summary.index if i not in ("mean", "sd", "ci95_low", "ci95_high"))
    return s


def _metrics_html(summary: pd.DataFrame, metrics: Mapping[str, dict]) -> str:
    folds = [i for i in summary.index if i not in ("mean", "sd", "ci95_low", "ci95_high")]
    cols = [c for c in TABLE_METRICS if c in summary.columns]
    rows, classes = [], []
    restarts = max((int(m.get("restarts") or 1) for m in metrics.values()), default=1)
    for f in folds:
        r = {"fold": f}
        m = metrics.get(str(f), {})
        r["test scans"] = fmt(m.get("n_test", m.get("n")))
        r["best epoch"] = fmt(m.get("best_epoch"))
        if restarts > 1:
            kept = m.get("restart")
            r["kept restart"] = "" if kept is None else f"{int(kept) + 1} of {m.get('restarts')}"
        r |= {TABLE_METRICS[c]: fmt(summary.loc[f, c]) for c in cols}
        rows.append(r)
        classes.append("")
    blank = {"test scans": "", "best epoch": ""} | ({"kept restart": ""} if restarts > 1 else {})
    for key, label in (("mean", "mean"), ("sd", "SD")):
        if key in summary.index:
            r = {"fold": label} | blank
            r |= {TABLE_METRICS[c]: fmt(summary.loc[key, c]) for c in cols}
            rows.append(r)
            classes.append("summary-row")
    if "ci95_low" in summary.index:
        r = {"fold": "95% CI"} | blank
        for c in cols:
            lo, hi = clip01(_get(summary, "ci95_low", c)), clip01(_get(summary, "ci95_high", c))
            r[TABLE_METRICS[c]] = "–" if math.isnan(lo) else f"{fmt(lo, 2)} – {fmt(hi, 2)}"
        rows.append(r)
        classes.append("summary-row")
    pos = next((m.get("positive_class") for m in metrics.values() if m.get("positive_class")), None)
    pos_txt = (
        f"Sensitivity, specificity, PPV, NPV and F1 treat <b>{esc(pos)}</b> as the positive class. "
        if pos
        else "With more than two classes, sensitivity etc. are unweighted means of the "
        "one-vs-rest values and ROC AUC is the macro one-vs-rest AUC. "
    )
    return table(
        pd.DataFrame(rows),
        text_columns=["fold"],
        row_class=classes,
        caption_html="Performance on each fold's <i>test</i> part (scans never used for "
        "training or model selection). Balanced accuracy = mean of the per-class recalls "
        f"(chance level = 1/number of classes). {pos_txt}"
        "The 95% confidence interval of the mean is t-based over folds (bounds clipped to "
        "[0, 1]); folds share training data, so it is optimistic. – = undefined (e.g. a "
        "test part without one of the classes)."
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


def performance_section(
    models: list[str],
    summaries: Mapping[str, Path],
    fold_metrics: Mapping[tuple, Path],
    predictions: Mapping[tuple, Path],
    histories: Mapping[tuple, Path],
    writer: plots.FigureWriter,
) -> tuple[Section, list[ModelScore]]:
    """One subsection per model; returns the section and each model's headline score."""
    sec = Section("performance", "Model performance")
    sec.body = (
        "<p>Each fold's model was chosen on that fold's validation part; the numbers below "
        "come from the test part of each fold only, seen once, by the chosen model.</p>"
    )
    scores = []
    for model in models:
        sub = Section(slug("perf", model), f"Model {model}", level=3)
        metrics = {f: read_json(p) or {} for f, p in _by_model(fold_metrics, model).items()}
        metrics = {str(m.get("fold", f)) if m else f: m for f, m in metrics.items()}
        summary = _summary_table(summaries.get(model), {f: m for f, m in metrics.items() if m})
        score = model_score(model, summary)
        scores.append(score)
        body = []
        if summary is None:
            body.append(note(f"No metrics found for model {esc(model)}.", "warn"))
        else:
            body.append(_metrics_html(summary, metrics))
        preds = {f: read_tsv(p) for f, p in _by_model(predictions, model).items()}
        preds = {f: p for f, p in preds.items() if p is not None}
        if preds:
            score.classes = [
                c[5:] for c in next(iter(preds.values())).columns if c.startswith("prob_")
            ]
        figs = []
        src = plots.save_if(writer, plots.roc_figure(preds), f"roc_{model}")
        if src:
            figs.append(
                figure(
                    src,
                    "<b>ROC curves.</b> Thin lines: each fold's test part; thick line: all test "
                    "predictions pooled. The closer the curve runs to the top-left corner, the "
                    "better the model separates the classes at every threshold; the dotted "
                    "diagonal is chance.",
                    f"ROC curves of {model}",
                )
            )
        cm, classes = _confusion(preds, metrics)
        if cm is not None and len(classes):
            src = writer.save(plots.confusion_figure(cm, classes), f"confusion_{model}")
            figs.append(
                figure(
                    src,
                    "<b>Confusion matrix</b>, summed over the test parts of all folds (each "
                    "scan appears once per fold it is tested in). Rows: true class, columns: "
                    "predicted class; percentages are per row (the recall of each class on the "
                    "diagonal).",
                    f"confusion matrix of {model}",
                )
            )
        if figs:
            body.append(f'<div class="grid2">{"".join(figs)}</div>')
        elif not preds:
            body.append(
                note("No predictions found: ROC curves and confusion matrix omitted.", "warn")
            )
        hist = {f: read_tsv(p) for f, p in _by_model(histories, model).items()}
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
        sub.body = "\n".join(body)
        sec.children.append(sub)
    if len(scores) > 1:
        sec.body += comparison_table(scores)
    return sec, scores


def comparison_table(scores: list[ModelScore]) -> str:
    """One row per model: mean balanced accuracy with its CI and ROC AUC, best first."""
    order = sorted(
        scores, key=lambda s: -s.balanced_accuracy if not math.isnan(s.balanced_accuracy) else 1
    )
    rows = [
        {
            "model": s.model,
            "balanced accuracy (mean)": fmt(s.balanced_accuracy),
            "95% CI": "–" if math.isnan(s.ci_low) else f"{fmt(s.ci_low, 2)} – {fmt(s.ci_high, 2)}",
            "ROC AUC (mean)": fmt(s.roc_auc),
            "folds": str(s.n_folds),
        }
        for s in order
    ]
    return table(
        pd.DataFrame(rows),
        text_columns=["model"],
        row_class=["good"] + [""] * (len(rows) - 1),
        caption_html="Models compared on the same folds, best mean balanced accuracy first. "
        "Overlapping confidence intervals mean the data do not show a difference.",
    )


def best_model(scores: list[ModelScore]) -> ModelScore | None:
    """The model with the highest mean balanced accuracy (None if none has one)."""
    valid = [s for s in scores if not math.isnan(s.balanced_accuracy)]
    return max(valid, key=lambda s: s.balanced_accuracy) if valid else None


__all__ = ["ModelScore", "best_model", "model_score", "performance_section"]
