"""The report's page header: question, headline numbers and the one-paragraph summary.

:func:`page_header` turns what the sections found (:class:`Findings`) into the header
HTML; :mod:`brainlens.report.build` assembles the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brainlens import __version__
from brainlens.report.attribution import RegionFacts, consensus_regions
from brainlens.report.dataset import DataFacts
from brainlens.report.html import esc, kpis, note
from brainlens.report.io import fmt
from brainlens.report.meaning import TOP_K, MethodCheck
from brainlens.report.performance import ModelScore, best_model


@dataclass
class Findings:
    """What the sections found that the page header quotes."""

    data: DataFacts
    scores: list[ModelScore]
    checks: Mapping[tuple[str, str], MethodCheck]
    regions: RegionFacts
    best: ModelScore | None


def _model_sentence(data: DataFacts, shown: ModelScore, scores: list[ModelScore]) -> str:
    """How the named model was chosen, and its test results (subject level first)."""
    k = max(len(data.classes), len(shown.classes), 2)
    ci = (
        f" (95% CI {fmt(shown.ci_low, 2)}–{fmt(shown.ci_high, 2)}, corrected for the folds "
        "sharing training subjects)"
        if not math.isnan(shown.ci_low)
        else " (no confidence interval: one fold)"
    )
    best = best_model(scores)
    if len(scores) <= 1:
        which = f"The model <b>{esc(shown.model)}</b> (the only one: nothing to choose)"
    elif best is shown:
        which = (
            f"Chosen among {len(scores)} models by mean validation "
            f"{esc(str(shown.val_metric)[4:])} over folds (the test parts played no part in "
            f"the choice), <b>{esc(shown.model)}</b>"
        )
    else:
        which = (
            f"No model could be chosen on validation; the first of {len(scores)} models, "
            f"<b>{esc(shown.model)}</b>,"
        )
    unit = "subject" if shown.level == "subject" else "scan"
    scan = (
        f"; per scan {fmt(shown.scan_balanced_accuracy, 2)}"
        if shown.level == "subject" and not math.isnan(shown.scan_balanced_accuracy)
        else ""
    )
    return (
        f"{which} reached a mean {unit}-level balanced accuracy of "
        f"<b>{fmt(shown.balanced_accuracy, 2)}</b>{ci} over {shown.n_folds} test "
        f"fold{'s' if shown.n_folds != 1 else ''} (chance: {fmt(1 / k, 2)})"
        + (f", ROC AUC {fmt(shown.roc_auc, 2)}" if not math.isnan(shown.roc_auc) else "")
        + scan
        + "."
    )


def _summary_html(
    data: DataFacts,
    best: ModelScore | None,
    scores: list[ModelScore],
    regions: RegionFacts,
    atlases: list[str],
    methods: list[str],
    checks: Mapping[tuple[str, str], MethodCheck],
    gt: Mapping[str, Any] | None,
) -> str:
    parts = []
    cls = ", ".join(f"{esc(c)} {n}" for c, n in data.classes.items())
    parts.append(
        f"The analysis used {data.n_scans} scans of {data.n_participants} participants "
        f"({cls})"
        + (
            f"; {data.n_excluded} scan{' was' if data.n_excluded == 1 else 's were'} excluded"
            if data.n_excluded
            else ""
        )
        + "."
    )
    if best is None:
        parts.append("No model performance results were available.")
    else:
        parts.append(_model_sentence(data, best, scores))
        if atlases:
            top, used = consensus_regions(regions, best.model, atlases[0], methods, checks)
            if top:
                parts.append(
                    f"The regions it relied on most ({esc(atlases[0])} atlas, mean rank over "
                    f"{', '.join(esc(m) for m in used)}): <b>{', '.join(esc(t) for t in top)}</b>."
                )
    coarse = sorted(
        {
            m
            for (_, m), c in checks.items()
            if c.verdict is not None and c.verdict.localizes is False
        }
    )
    failing = sorted({m for (_, m), c in checks.items() if c.fails} - set(coarse))
    if failing:
        parts.append(
            "Methods failing the randomisation check (not to be interpreted): "
            + ", ".join(esc(m) for m in failing)
            + "."
        )
    if coarse:
        parts.append(
            "Methods whose map is too coarse to localise (fewer than "
            "<code>attribution.sanity.min_map_positions</code> positions along an axis; "
            "randomisation not testable, not to be interpreted): "
            + ", ".join(esc(m) for m in coarse)
            + "."
        )
    unfaithful = sorted({m for (_, m), c in checks.items() if c.not_faithful})
    if unfaithful:
        parts.append(
            "Methods whose deletion or insertion curve does not beat a random order (not "
            "faithful): " + ", ".join(esc(m) for m in unfaithful) + "."
        )
    if gt:
        parts.append(_gt_sentence(gt, best, regions, checks))
    if data.random_labels:
        parts.append("<b>This was a random-label run: results must be at chance level.</b>")
    return '<p class="summary">' + " ".join(parts) + "</p>"


def _gt_sentence(
    gt: Mapping[str, Any],
    best: ModelScore | None,
    regions: RegionFacts,
    checks: Mapping[tuple[str, str], MethodCheck],
) -> str:
    region = esc(gt.get("region", "?"))
    model = best.model if best else None
    ranks = {m: r for (mod, m), r in regions.gt_rank.items() if mod == model}
    source = "region table rank"
    if not ranks:
        ranks = {
            m: c.gt_rank
            for (mod, m), c in checks.items()
            if mod == model and not math.isnan(c.gt_rank)
        }
        source = "median rank over scans"
    if not ranks:
        mapped = sorted({mod for mod, _ in regions.gt_rank} | {mod for mod, _ in checks})
        if model is not None and mapped:
            return (
                f"The best model by validation, {esc(model)}, has no attribution maps, so the "
                f"planted region {region} is judged below for the models that have them "
                f"({', '.join(esc(m) for m in mapped)})."
            )
        return f"The planted region {region} could not be evaluated (no results for its atlas)."
    listed = ", ".join(
        f"#{fmt(r, 0)} by {esc(m)}" for m, r in sorted(ranks.items(), key=lambda x: x[1])
    )
    found = any(
        r <= TOP_K
        for m, r in ranks.items()
        if not checks.get((model, m), MethodCheck("", "")).fails
    )
    verdict = (
        f"<b>was found</b> (in the top {TOP_K} of a method that passes the randomisation check)"
        if found
        else f"<b>was not found</b> in the top {TOP_K} by any method that passes the randomisation check"
    )
    return f"The planted region <b>{region}</b> ({esc(gt.get('atlas', '?'))}) {verdict}; {source}: {listed}."


def _question(classes: list[str]) -> str:
    """The study question, naming the classes."""
    return (
        "Can a 3D convolutional neural network tell "
        + (
            " and ".join(esc(c) for c in classes)
            if len(classes) == 2
            else ", ".join(esc(c) for c in classes) or "the classes"
        )
        + " apart from T1-weighted brain MRI, without any information leaking from test to "
        "training data, and which brain regions does its decision rely on?"
    )


def _headline(found: Findings) -> list[tuple[str, str]]:
    """The header's (value, label) boxes."""
    best, data = found.best, found.data
    headline = []
    if best is not None:
        unit = "subjects" if best.level == "subject" else "scans"
        headline.append(
            (fmt(best.balanced_accuracy, 2), f"balanced accuracy ({unit}), {best.model}")
        )
        if not math.isnan(best.ci_low):
            headline.append((f"{fmt(best.ci_low, 2)}–{fmt(best.ci_high, 2)}", "95% CI (corrected)"))
    return headline + [
        (str(data.n_scans), "scans"),
        (str(data.n_participants), "participants"),
        (str(data.n_folds), "folds"),
    ]


def page_header(
    title: str,
    now: str,
    names: tuple[list[str], ...],
    found: Findings,
    gt: Mapping[str, Any] | None,
) -> str:
    """The page header: title, run facts, question, headline numbers, summary.

    Parameters
    ----------
    title : str
        Page title.
    now : str
        Generation time as shown.
    names : tuple of (models, methods, atlases)
        The names the page covers, in page order.
    found : Findings
        What the sections found.
    gt : dict or None
        ``ground_truth.json`` of synthetic data (``atlas``, ``region``).

    Returns
    -------
    str
        The ``<header>`` element.
    """
    models, methods, atlases = names
    data, best = found.data, found.best
    classes = list(data.classes) or (best.classes if best else [])
    banner = (
        note(
            '<span class="banner">⚠ Random-label run: every result below must be at chance '
            "level; it explains nothing about the classes.</span>",
            "bad",
        )
        if data.random_labels
        else ""
    )
    summary = _summary_html(
        data, best, found.scores, found.regions, atlases, methods, found.checks, gt
    )
    return (
        f'<header class="page" id="top"><h1>{esc(title)}</h1>'
        f'<div class="meta">Generated {now} by brainlens {esc(__version__)} · '
        f"{len(models)} model(s), {len(methods)} attribution method(s), "
        f"{len(atlases)} atlas(es)</div>"
        + banner
        + f'<div class="question"><b>Question.</b> {_question(classes)}</div>'
        + kpis(_headline(found))
        + summary
        + "</header>"
    )


__all__ = ["Findings", "page_header"]
