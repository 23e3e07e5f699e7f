"""Model comparison: the best model by validation only, paired per-fold test differences.

The "best model" is the one with the best mean *validation* value over folds (the
value each fold's model was selected by, e.g. ``val_loss``); test metrics never enter
that choice. Models are then compared on the test parts of the same folds by paired
per-fold differences, with the corrected resampled t-test of Nadeau and Bengio (2003)
(:func:`brainlens.stats.corrected_resampled_t`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from brainlens.report.html import esc, table
from brainlens.report.io import fmt
from brainlens.stats import corrected_resampled_t

if TYPE_CHECKING:
    from brainlens.report.performance import ModelScore

#: Test metrics compared between models (subject level), with their label.
PAIRED_METRICS = {"balanced_accuracy": "balanced accuracy", "roc_auc": "ROC AUC"}


def lower_is_better(metric: str) -> bool:
    """Whether a smaller validation value is better (losses; brainlens's ``mode: auto``)."""
    return metric.endswith("loss")


def validation_order(scores: Sequence[ModelScore]) -> list[ModelScore] | None:
    """Models with a mean validation value, best first; None when they cannot be ranked
    (none has one, or they were selected on different validation metrics)."""
    ranked = [s for s in scores if s.val_metric and not math.isnan(s.val_mean)]
    if not ranked or len({s.val_metric for s in ranked}) > 1:
        return None
    sign = 1.0 if lower_is_better(str(ranked[0].val_metric)) else -1.0
    return sorted(ranked, key=lambda s: sign * s.val_mean)


def best_model(scores: Sequence[ModelScore]) -> ModelScore | None:
    """The model with the best mean validation value over folds; never reads test metrics.

    Parameters
    ----------
    scores : sequence of ModelScore
        One per model.

    Returns
    -------
    ModelScore or None
        With one model, that model (there is nothing to choose). Otherwise the best by
        mean validation value (lower is better for a loss, higher otherwise); None if
        the models cannot be ranked on validation.
    """
    if len(scores) == 1:
        return scores[0]
    order = validation_order(scores)
    return order[0] if order else None


def selection_text(scores: Sequence[ModelScore], best: ModelScore | None) -> str:
    """One sentence (HTML) saying how the named model was chosen."""
    if len(scores) <= 1:
        return "There is only one model, so there is nothing to choose between models."
    if best is None or not best.val_metric:
        return (
            "No model is named best: the models have no common validation value to be "
            "chosen by (test results are never used for that choice)."
        )
    better = "lower" if lower_is_better(best.val_metric) else "higher"
    return (
        f"The best model is chosen by mean validation {esc(best.val_metric[4:])} over folds "
        f"({better} is better), the value each fold's model was selected by; the test parts "
        "play no part in that choice."
    )


def _sizes(folds: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    nan = np.full(len(folds), np.nan)

    def col(name: str) -> np.ndarray:
        return folds[name].to_numpy(dtype=float) if name in folds.columns else nan

    if "n_subjects_trainval" in folds.columns:
        return col("n_subjects_trainval"), col("n_subjects_test")
    return col("n_train") + np.nan_to_num(col("n_val")), col("n_test")


def paired_differences(scores: Sequence[ModelScore]) -> pd.DataFrame:
    """Per-fold paired test differences between every two models, corrected t-test.

    Parameters
    ----------
    scores : sequence of ModelScore
        Models with per-fold summary rows (``folds``); pairs are formed in this order
        (model A is the earlier one), on the folds both have.

    Returns
    -------
    DataFrame
        Columns ``model_a``, ``model_b``, ``metric``, ``mean_diff`` (A - B), ``ci95_low``,
        ``ci95_high``, ``t``, ``p``, ``n_folds``; sizes for the correction from A's rows.
    """
    recs = []
    for a, b in combinations([s for s in scores if s.folds is not None], 2):
        common = [f for f in a.folds.index if f in set(b.folds.index)]
        fa, fb = a.folds.loc[common], b.folds.loc[common]
        n_tr, n_te = _sizes(fa)
        for metric in PAIRED_METRICS:
            if metric not in fa.columns or metric not in fb.columns:
                continue
            d = fa[metric].to_numpy(dtype=float) - fb[metric].to_numpy(dtype=float)
            r = corrected_resampled_t(d, n_tr, n_te)
            recs.append(
                {"model_a": a.model, "model_b": b.model, "metric": metric, **r._asdict()}
                | {"n_folds": int(np.isfinite(d).sum())}
            )
    cols = ["model_a", "model_b", "metric", "mean", "ci_low", "ci_high", "t", "p", "n_folds"]
    out = pd.DataFrame(recs, columns=cols)
    return out.rename(columns={"mean": "mean_diff", "ci_low": "ci95_low", "ci_high": "ci95_high"})


def _ci(lo: float, hi: float) -> str:
    return "–" if math.isnan(lo) else f"{fmt(lo, 2)} – {fmt(hi, 2)}"


def comparison_table(scores: Sequence[ModelScore]) -> str:
    """One row per model, in validation order (best first) when the models can be ranked."""
    order = validation_order(scores)
    ranked = order is not None and len(order) == len(scores)
    rows_of = order if ranked else list(scores)
    val = next((s.val_metric for s in scores if s.val_metric), None)
    rows = []
    for s in rows_of:
        r = {"model": s.model}
        if val:
            r[f"validation {val[4:]} (mean)"] = fmt(s.val_mean)
        level = "" if s.level == "subject" else " [scans]"
        r |= {
            "balanced accuracy (mean)": fmt(s.balanced_accuracy) + level,
            "95% CI": _ci(s.ci_low, s.ci_high),
            "ROC AUC (mean)": fmt(s.roc_auc),
            "balanced accuracy (scans)": fmt(s.scan_balanced_accuracy),
            "folds": str(s.n_folds),
        }
        rows.append(r)
    best = best_model(scores)
    return table(
        pd.DataFrame(rows),
        text_columns=["model"],
        row_class=["good" if best is not None and s is best else "" for s in rows_of],
        caption_html="Models compared on the same folds"
        + (", ordered by mean validation value (best first). " if ranked else ". ")
        + selection_text(scores, best)
        + " Test columns are per subject unless marked; 95% CI: corrected resampled "
        "t-interval (Nadeau and Bengio 2003). Whether two models differ is read from their "
        "paired differences below, not from these intervals.",
    )


def paired_table(scores: Sequence[ModelScore]) -> str:
    """HTML table of :func:`paired_differences`, empty string when there is no pair."""
    diffs = paired_differences(scores)
    if diffs.empty:
        return ""
    rows = [
        {
            "model A": r.model_a,
            "model B": r.model_b,
            "metric": PAIRED_METRICS[r.metric],
            "mean difference A − B": fmt(r.mean_diff),
            "95% CI": _ci(r.ci95_low, r.ci95_high),
            "t": fmt(r.t, 2),
            "p": fmt(r.p),
            "folds": str(r.n_folds),
        }
        for r in diffs.itertuples()
    ]
    return table(
        pd.DataFrame(rows),
        text_columns=["model A", "model B", "metric"],
        caption_html="<b>Paired differences</b> on the test parts of the same folds "
        "(subject level): the per-fold difference A − B, its mean, the corrected resampled "
        "t-interval and two-sided p of Nadeau and Bengio (2003; variance factor 1/K + "
        "n<sub>test</sub>/n<sub>train</sub>, K − 1 degrees of freedom), which allows for the "
        "folds sharing training subjects. An interval that contains 0 means these folds do "
        "not show a difference; it does not show that the models are equal. p values are "
        "not corrected for the number of comparisons. With one fold there is no interval.",
    )


def comparison_html(scores: Sequence[ModelScore]) -> str:
    """The comparison part of the performance section ('' with fewer than two models)."""
    if len(scores) < 2:
        return ""
    return comparison_table(scores) + paired_table(scores)


__all__ = [
    "best_model",
    "comparison_html",
    "comparison_table",
    "paired_differences",
    "selection_text",
    "validation_order",
]
