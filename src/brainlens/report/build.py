"""The report's entry point: :func:`build_report` writes ``index.html`` and its figures."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from brainlens import __version__
from brainlens.report import plots
from brainlens.report.attribution import (
    RegionFacts,
    consensus_regions,
    maps_section,
    regions_section,
)
from brainlens.report.dataset import DataFacts, dataset_section, folds_section
from brainlens.report.html import Section, esc, kpis, note, page
from brainlens.report.io import fmt, read_json
from brainlens.report.meaning import TOP_K, MethodCheck, ground_truth_section, meaning_section
from brainlens.report.performance import ModelScore, best_model, performance_section

log = logging.getLogger(__name__)


def _order(preferred: Iterable[Any], found: Iterable[Any]) -> list[str]:
    """``preferred`` (those found, in its order) then the other found names, sorted."""
    found = {str(f) for f in found}
    first = [str(p) for p in preferred if str(p) in found]
    return first + sorted(found - set(first))


def _config_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    return [str(v) for v in value]


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
    failing = sorted({m for (_, m), c in checks.items() if c.fails})
    if failing:
        parts.append(
            "Methods failing the randomisation check (not to be interpreted): "
            + ", ".join(esc(m) for m in failing)
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


def _settings_section(config: Mapping[str, Any]) -> Section:
    text = json.dumps(config, indent=2, default=str, sort_keys=False)
    return Section(
        "settings",
        "Settings",
        body="<p>The configuration this report was built from (all seeds derive from "
        f"<code>seed</code>).</p><details><summary>Show configuration</summary><pre>{esc(text)}"
        "</pre></details>",
    )


def build_report(
    *,
    out_html: Path,
    figures_dir: Path,
    title: str,
    config: Mapping[str, Any],
    inputs_tsv: Path | None,
    qc_tsv: Path | None,
    folds_tsv: Path | None,
    summaries: Mapping[str, Path],
    fold_metrics: Mapping[tuple[str, Any], Path],
    predictions: Mapping[tuple[str, Any], Path],
    histories: Mapping[tuple[str, Any], Path],
    attribution_tables: Mapping[tuple[str, str, Any], Path],
    region_tables: Mapping[tuple[str, str, str], Path],
    region_fold_tables: Mapping[tuple[str, str, str], Path],
    agreement_tables: Mapping[tuple[str, str], Path],
    sanity_tables: Mapping[tuple[str, str], Path],
    deletion_tables: Mapping[tuple[str, str], Path],
    sanity_summary_tables: Mapping[tuple[str, str], Path] | None = None,
    sanity_cascade_tables: Mapping[tuple[str, str], Path] | None = None,
    ground_truth: Path | None,
    template_t1w: Path | None,
) -> Path:
    """Write the HTML report of a brainlens run.

    Parameters
    ----------
    out_html : Path
        The page (``results/report/index.html``); written atomically.
    figures_dir : Path
        Folder for its PNGs (``results/report/figures``); the page links them relatively,
        so the page and this folder can be zipped together.
    title : str
        Page title.
    config : dict
        The workflow configuration (``folds``, ``train``, ``attribution``, ``regions`` are
        read; the whole dict is shown under *Settings*).
    inputs_tsv, qc_tsv, folds_tsv : Path or None
        ``inputs.tsv`` (``status``, ``problem``), ``qc.tsv`` (``*_outlier``,
        ``any_outlier``) and ``folds.tsv``.
    summaries : dict model -> Path
        ``metrics_summary.tsv`` per model (folds + ``mean``, ``sd``, ``ci95_low``,
        ``ci95_high``; plain metric names per subject, ``scan_*`` per scan; see
        :mod:`brainlens.summary`).
    fold_metrics, predictions, histories : dict (model, fold) -> Path
        ``metrics.json``, ``predictions.tsv`` and ``history.tsv`` per model and fold.
    attribution_tables : dict (model, method, fold) -> Path
        ``results/attribution/<model>/<method>/fold-<k>.tsv``; mean maps are read from the
        folder of the same name (computed from the per-scan maps when missing).
    region_tables, region_fold_tables : dict (model, method, atlas) -> Path
        ``<atlas>.tsv`` and ``<atlas>_folds.tsv`` of ``results/regions/<model>/<method>/``.
    agreement_tables : dict (model, atlas) -> Path
        Method-by-method Spearman matrices.
    sanity_tables, deletion_tables : dict (model, method) -> Path
        Sanity-check (one row per scan) and deletion/insertion-curve tables.
    sanity_summary_tables, sanity_cascade_tables : dict (model, method) -> Path, optional
        ``<method>_summary.tsv`` (bootstrap intervals and verdicts; the cascade curves
        are drawn from it) and ``<method>_cascade.tsv`` (per scan and step) of
        :mod:`brainlens.attribution.checks`; the cascade tables are an input so the
        report re-runs when they change.
    ground_truth : Path or None
        ``ground_truth.json`` of synthetic data (``atlas``, ``region``, ``label``); None for
        real data (the planted-region parts are then left out).
    template_t1w : Path or None
        Template T1w on the analysis grid (or a folder holding ``*T1w*.nii*``): the
        background of the slice figures.

    Returns
    -------
    Path
        ``out_html``.

    Notes
    -----
    Missing optional files never stop the report: the affected part shows a note.
    Malformed files raise :class:`brainlens.errors.InputFileError`.
    """
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    writer = plots.FigureWriter(Path(figures_dir), out_html.parent)
    config = dict(config or {})
    gt = read_json(ground_truth) if ground_truth is not None else None
    if ground_truth is not None and gt is None:
        log.warning("ground truth %s not found; planted-region checks left out", ground_truth)

    models = _order(
        _config_list((config.get("train") or {}).get("model")),
        [
            *summaries,
            *(k[0] for k in fold_metrics),
            *(k[0] for k in predictions),
            *(k[0] for k in attribution_tables),
            *(k[0] for k in sanity_tables),
        ],
    )
    methods = _order(
        _config_list((config.get("attribution") or {}).get("methods")),
        [
            *(k[1] for k in attribution_tables),
            *(k[1] for k in region_tables),
            *(k[1] for k in sanity_tables),
        ],
    )
    atlases = _order(
        _config_list((config.get("regions") or {}).get("atlases")),
        [*(k[2] for k in region_tables), *(k[1] for k in agreement_tables)],
    )

    data = DataFacts()
    s_data = dataset_section(inputs_tsv, qc_tsv, data)
    s_folds = folds_section(folds_tsv, config, data)
    s_perf, scores = performance_section(
        models,
        summaries,
        fold_metrics,
        predictions,
        histories,
        writer,
        folds_tsv,
        positive_class=config.get("positive_class"),
    )
    s_meaning, checks = meaning_section(
        models, methods, sanity_tables, deletion_tables, gt, writer, sanity_summary_tables
    )
    s_maps = maps_section(models, methods, attribution_tables, template_t1w, checks, writer)
    s_regions, region_facts = regions_section(
        models,
        methods,
        atlases,
        region_tables,
        region_fold_tables,
        agreement_tables,
        checks,
        gt,
        writer,
    )
    if gt:
        s_meaning.children.append(
            ground_truth_section(gt, checks, region_facts.gt_rank, region_facts.gt_n)
        )
    # named on validation only; without a validation ranking the first model with results
    best = best_model(scores)
    if best is None or not best.n_folds:
        best = next((s for s in scores if s.n_folds), None)
    classes = list(data.classes) or (best.classes if best else [])
    question = (
        "Can a 3D convolutional neural network tell "
        + (
            " and ".join(esc(c) for c in classes)
            if len(classes) == 2
            else ", ".join(esc(c) for c in classes) or "the classes"
        )
        + " apart from T1-weighted brain MRI, without any information leaking from test to "
        "training data, and which brain regions does its decision rely on?"
    )
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    headline = []
    if best is not None:
        unit = "subjects" if best.level == "subject" else "scans"
        headline.append(
            (fmt(best.balanced_accuracy, 2), f"balanced accuracy ({unit}), {best.model}")
        )
        if not math.isnan(best.ci_low):
            headline.append((f"{fmt(best.ci_low, 2)}–{fmt(best.ci_high, 2)}", "95% CI (corrected)"))
    headline += [
        (str(data.n_scans), "scans"),
        (str(data.n_participants), "participants"),
        (str(data.n_folds), "folds"),
    ]
    header = (
        f'<header class="page" id="top"><h1>{esc(title)}</h1>'
        f'<div class="meta">Generated {now} by brainlens {esc(__version__)} · '
        f"{len(models)} model(s), {len(methods)} attribution method(s), "
        f"{len(atlases)} atlas(es)</div>"
        + (
            note(
                '<span class="banner">⚠ Random-label run: every result below must be at chance '
                "level; it explains nothing about the classes.</span>",
                "bad",
            )
            if data.random_labels
            else ""
        )
        + f'<div class="question"><b>Question.</b> {question}</div>'
        + kpis(headline)
        + _summary_html(data, best, scores, region_facts, atlases, methods, checks, gt)
        + "</header>"
    )
    sections = [s_data, s_folds, s_perf, s_maps, s_regions, s_meaning, _settings_section(config)]
    footer = (
        f"brainlens {esc(__version__)} · {now} · Figures are in <code>"
        f"{esc(os.path.relpath(writer.figures_dir, out_html.parent))}/</code>; keep them next "
        "to this page when sharing it."
    )
    html_text = page(title, header, sections, footer)
    tmp = out_html.with_name(out_html.name + ".tmp")
    tmp.write_text(html_text, encoding="utf-8")
    tmp.replace(out_html)
    log.info("report written to %s (%d figures)", out_html, len(writer.written))
    return out_html
