"""Report sections "External test set: <name>", one per external dataset.

Each fold's model was evaluated once on a dataset that took no part in training, model
selection or the cross-validation (:mod:`brainlens.external`). Per model: a table of
the fold-ensemble's metrics (mean probability of the folds' models per subject) with
its subject-level bootstrap interval, beside the mean and range of the folds' models,
and an ROC figure of the ensemble. These numbers are kept apart from the
cross-validation section and its figures. Without external records the sections are
absent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from brainlens.errors import BrainlensError
from brainlens.report import plots
from brainlens.report.html import Section, esc, figure, note, slug, table
from brainlens.report.io import fmt, read_json, read_tsv, sorted_keys
from brainlens.report.performance import TABLE_METRICS, clip01

log = logging.getLogger(__name__)

__all__ = ["external_sections"]

#: Rows of the per-model table: the subject-level metrics, then two per scan.
ROWS = TABLE_METRICS | {
    "scan_balanced_accuracy": "balanced accuracy (scans)",
    "scan_roc_auc": "ROC AUC (scans)",
}


def _by(d: Mapping[tuple, Path], dataset: str, model: str) -> dict[str, Path]:
    """``{fold: path}`` of one dataset and model from a (dataset, model, fold) mapping."""
    return {str(k[2]): d[k] for k in sorted_keys(d) if k[0] == dataset and k[1] == model}


def _get(df: pd.DataFrame | None, row: str, col: str) -> float:
    try:
        return float(df.loc[row, col])  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return float("nan")


def _computed_summary(preds: Mapping[str, pd.DataFrame], positive: str | None) -> pd.DataFrame:
    """Folds' rows, min, max and the ensemble (no interval) from the predictions alone."""
    from brainlens.external.summary import ensemble_predictions, external_fold_row

    rows = pd.DataFrame([external_fold_row(p, positive) for p in preds.values()])
    rows.index = list(preds)
    ens = pd.Series(external_fold_row(ensemble_predictions(preds), positive))
    extra = pd.DataFrame(
        [rows.mean(), rows.min(), rows.max(), ens], index=["mean", "min", "max", "ensemble"]
    )
    return pd.concat([rows, extra])


def _metrics_table(summary: pd.DataFrame, positive: str | None, has_ci: bool) -> str:
    """The ensemble / interval / mean / range table of one model on one dataset."""
    folds = [i for i in summary.index if str(i).isdigit()]
    out = []
    for col, label in ROWS.items():
        if col not in summary.columns:
            continue
        lo, hi = _get(summary, "ensemble_ci95_low", col), _get(summary, "ensemble_ci95_high", col)
        lo, hi = clip01(lo), clip01(hi)
        out.append(
            {
                "metric": label,
                "ensemble": fmt(_get(summary, "ensemble", col)),
                "95% interval (bootstrap over subjects)": "–"
                if math.isnan(lo)
                else f"{fmt(lo, 2)} – {fmt(hi, 2)}",
                "mean of the folds' models": fmt(_get(summary, "mean", col)),
                "range of the folds' models": f"{fmt(_get(summary, 'min', col), 2)} – "
                f"{fmt(_get(summary, 'max', col), 2)}",
            }
        )
    n_subj, n_scans = _get(summary, "ensemble", "n"), _get(summary, "ensemble", "scan_n")
    pos = (
        f"Sensitivity, specificity, PPV, NPV, F1 and ROC AUC treat <b>{esc(positive)}</b> "
        "as the positive class, as in the cross-validation. "
        if positive
        else ""
    )
    ci = (
        "The 95% interval is a percentile bootstrap over the external <b>subjects</b> "
        "(resampled within each true class), of the ensemble: it reflects which external "
        "subjects happened to be tested, not how the models would vary if retrained. No "
        "t-interval over folds is given: every fold's model is tested on the same fixed "
        "external set and the models are trained on overlapping data, so their scores are "
        "not independent samples; their range only shows how much the models differ."
        if has_ci
        else "No interval: the external summary table was not found (run the "
        "external_summary rule); the ensemble was computed from the predictions."
    )
    return table(
        pd.DataFrame(out),
        text_columns=["metric"],
        caption_html=f"{len(folds)} folds' models on {fmt(n_subj, 0)} external subjects "
        f"({fmt(n_scans, 0)} scans). <i>Ensemble</i>: each scan's class probabilities "
        "averaged over the folds' models, then a subject's sessions by their mean, as in "
        f"the cross-validation. Metrics are per subject unless marked <i>(scans)</i>. {pos}"
        + ci
        + " – = undefined (e.g. an external set without one of the classes).",
    )


def _fold_table(summary: pd.DataFrame, metrics: Mapping[str, dict]) -> str:
    """Per fold: the model's balanced accuracy and AUC on the external set, and its input."""
    rows = []
    for f in [i for i in summary.index if str(i).isdigit()]:
        m = metrics.get(str(f)) or {}
        rows.append(
            {
                "fold's model": str(f),
                "balanced accuracy": fmt(_get(summary, f, "balanced_accuracy")),
                "ROC AUC": fmt(_get(summary, f, "roc_auc")),
                "subjects": fmt(_get(summary, f, "n"), 0),
                "input": str(m.get("input_space", "–")),
            }
        )
    if not rows:
        return ""
    inner = table(pd.DataFrame(rows), text_columns=["fold's model", "input"])
    return f"<details><summary>Each fold's model</summary>{inner}</details>"


def roc_ensemble_figure(
    per_fold: Mapping[str, pd.DataFrame], ensemble: pd.DataFrame, positive: str | None
):
    """ROC per subject: each fold's model (thin) and the fold-ensemble (thick); None if
    the external set lacks a class."""
    from sklearn import metrics as skm

    classes = [c[5:] for c in ensemble.columns if str(c).startswith("prob_")]
    target = positive if positive in classes else classes[-1]
    y = (ensemble["label"].astype(str) == target).to_numpy()
    if len(classes) < 2 or y.all() or not y.any():
        return None
    fig, ax = plots.plt.subplots(figsize=(4.6, 4.3))
    for i, (fold, df) in enumerate(per_fold.items()):
        yf = (df["label"].astype(str) == target).to_numpy()
        fpr, tpr, _ = skm.roc_curve(yf, df[f"prob_{target}"].to_numpy(float))
        ax.plot(fpr, tpr, lw=1, alpha=0.55, color=plots.colour(i + 1), label=f"fold {fold}'s model")
    score = ensemble[f"prob_{target}"].to_numpy(float)
    fpr, tpr, _ = skm.roc_curve(y, score)
    auc = skm.roc_auc_score(y, score)
    ax.plot(fpr, tpr, lw=2.6, color=plots.colour(0), label=f"ensemble (AUC {auc:.2f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        title=f"positive class: {target}" if len(classes) == 2 else f"{target} vs rest",
    )
    ax.set_aspect("equal")
    ax.legend(fontsize=7.5, loc="lower right", frameon=False)
    fig.tight_layout()
    return fig


def _model_body(
    dataset: str,
    model: str,
    summary_tsv: Path | None,
    metrics: Mapping[str, dict],
    preds: Mapping[str, pd.DataFrame],
    writer: plots.FigureWriter,
    positive: str | None,
) -> list[str]:
    """The table, the per-fold details and the ROC figure of one model on one dataset."""
    from brainlens.external.summary import ensemble_predictions
    from brainlens.summary import subject_predictions

    summary = read_tsv(summary_tsv, index_col="fold")
    body: list[str] = []
    try:
        if summary is None and preds:
            summary = _computed_summary(preds, positive)
            summary.index = summary.index.astype(str)
            has_ci = False
        else:
            has_ci = summary is not None
        ensemble = subject_predictions(ensemble_predictions(preds)) if preds else None
    except BrainlensError as err:
        return [note(f"External results of {esc(model)} could not be read: {esc(err)}", "bad")]
    if summary is None:
        return [note(f"No external results found for model {esc(model)}.", "warn")]
    body.append(_metrics_table(summary, positive, has_ci))
    body.append(_fold_table(summary, metrics))
    if ensemble is not None:
        subj = {f: subject_predictions(p) for f, p in preds.items()}
        fig = roc_ensemble_figure(subj, ensemble, positive)
        src = plots.save_if(writer, fig, f"external_roc_{dataset}_{model}")
        if src:
            body.append(
                figure(
                    src,
                    f"<b>ROC curves on the external set {esc(dataset)}</b> (per subject). Thin "
                    "lines: each fold's model; thick line: the fold-ensemble. Not pooled with "
                    "the cross-validation's test parts.",
                    f"external ROC curves of {model} on {dataset}",
                )
            )
    return body


def external_sections(
    models: Sequence[str],
    external_metrics: Mapping[tuple, Path],
    external_predictions: Mapping[tuple, Path],
    external_summaries: Mapping[tuple, Path],
    writer: plots.FigureWriter,
    *,
    positive_class: str | None = None,
) -> list[Section]:
    """One section per external dataset (none without external records).

    Parameters
    ----------
    models : sequence of str
        The report's model order (others with external files follow, sorted).
    external_metrics, external_predictions : dict (dataset, model, fold) -> Path
        ``metrics.json`` and ``predictions.tsv`` of each fold's model on the dataset.
    external_summaries : dict (dataset, model) -> Path
        ``metrics_summary.tsv`` of :func:`brainlens.external.summary.summarize_external`.
    writer : plots.FigureWriter
    positive_class : str, optional
        The config's ``positive_class``.

    Returns
    -------
    list of Section
        Titled ``External test set: <name>``, one subsection per model.
    """
    keys: set[tuple[str, str]] = {(str(k[0]), str(k[1])) for k in external_summaries}
    keys |= {(str(k[0]), str(k[1])) for k in [*external_metrics, *external_predictions]}
    sections = []
    for dataset in sorted({d for d, _ in keys}):
        found = {m for d, m in keys if d == dataset}
        order = [m for m in models if m in found] + sorted(found - set(models))
        sec = Section(slug("external", dataset), f"External test set: {dataset}")
        sec.body = (
            f"<p>Every fold's model, as selected in the cross-validation, evaluated once on "
            f"the external dataset <b>{esc(dataset)}</b>, whose subjects took no part in "
            "training, model selection or the cross-validation above. Its scans went through "
            "the same preprocessing; its labels are mapped to the main classes. These "
            "numbers are not mixed into the cross-validation figures.</p>"
        )
        for model in order:
            metrics = {
                f: read_json(p) or {} for f, p in _by(external_metrics, dataset, model).items()
            }
            preds = {f: read_tsv(p) for f, p in _by(external_predictions, dataset, model).items()}
            preds = {f: p for f, p in preds.items() if p is not None}
            sub = Section(slug("external", dataset, model), f"Model {model}", level=3)
            sub.body = "\n".join(
                _model_body(
                    dataset,
                    model,
                    external_summaries.get((dataset, model)),
                    metrics,
                    preds,
                    writer,
                    positive_class,
                )
            )
            sec.children.append(sub)
        sections.append(sec)
    return sections
