"""The report's entry point: :func:`build_report` writes ``index.html`` and its figures.

:func:`build_report_from_manifest` (the ``report`` rule) reads the file arguments from
the manifest the ``report_manifest`` rule writes.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainlens import __version__
from brainlens._io import write_text_atomic
from brainlens.report import plots
from brainlens.report.attribution import maps_section, regions_section
from brainlens.report.dataset import DataFacts, dataset_section, folds_section
from brainlens.report.external import external_sections
from brainlens.report.header import Findings, page_header
from brainlens.report.html import Section, esc, page
from brainlens.report.io import read_json, read_manifest
from brainlens.report.meaning import ground_truth_section, meaning_section
from brainlens.report.performance import best_model, performance_section

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


def _settings_section(config: Mapping[str, Any]) -> Section:
    text = json.dumps(config, indent=2, default=str, sort_keys=False)
    return Section(
        "settings",
        "Settings",
        body="<p>The configuration this report was built from (all seeds derive from "
        f"<code>seed</code>).</p><details><summary>Show configuration</summary><pre>{esc(text)}"
        "</pre></details>",
    )


@dataclass
class ReportFiles:
    """Every file the report reads: the file arguments of :func:`build_report`.

    Attributes
    ----------
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
    qc_figures : dict scan -> Path, optional
        Per-scan preprocessing QC pictures (``figures/…_desc-qc_T1w.png``); those of the scans
        ``qc.tsv`` flags are copied into ``figures_dir`` and shown. ``None``: not given
        (the page says so when a scan is flagged).
    ground_truth : Path or None
        ``ground_truth.json`` of synthetic data (``atlas``, ``region``, ``label``); None for
        real data (the planted-region parts are then left out).
    template_t1w : Path or None
        Template T1w on the analysis grid (or a folder holding ``*T1w*.nii*``): the
        background of the slice figures.
    external_metrics, external_predictions : dict (dataset, model, fold) -> Path
        Each fold's model on an external test set (:mod:`brainlens.external`).
    external_summaries : dict (dataset, model) -> Path
        Their ``metrics_summary.tsv`` (ensemble, bootstrap interval); the sections
        "External test set: <name>" (absent without these files).
    """

    inputs_tsv: Path | None = None
    qc_tsv: Path | None = None
    folds_tsv: Path | None = None
    summaries: Mapping[str, Path] = field(default_factory=dict)
    fold_metrics: Mapping[tuple[str, Any], Path] = field(default_factory=dict)
    predictions: Mapping[tuple[str, Any], Path] = field(default_factory=dict)
    histories: Mapping[tuple[str, Any], Path] = field(default_factory=dict)
    attribution_tables: Mapping[tuple[str, str, Any], Path] = field(default_factory=dict)
    region_tables: Mapping[tuple[str, str, str], Path] = field(default_factory=dict)
    region_fold_tables: Mapping[tuple[str, str, str], Path] = field(default_factory=dict)
    agreement_tables: Mapping[tuple[str, str], Path] = field(default_factory=dict)
    sanity_tables: Mapping[tuple[str, str], Path] = field(default_factory=dict)
    deletion_tables: Mapping[tuple[str, str], Path] = field(default_factory=dict)
    sanity_summary_tables: Mapping[tuple[str, str], Path] = field(default_factory=dict)
    sanity_cascade_tables: Mapping[tuple[str, str], Path] = field(default_factory=dict)
    qc_figures: Mapping[str, Path] | None = None
    ground_truth: Path | None = None
    template_t1w: Path | None = None
    external_metrics: Mapping[tuple[str, str, Any], Path] = field(default_factory=dict)
    external_predictions: Mapping[tuple[str, str, Any], Path] = field(default_factory=dict)
    external_summaries: Mapping[tuple[str, str], Path] = field(default_factory=dict)


def _names(config: Mapping[str, Any], files: ReportFiles) -> tuple[list[str], ...]:
    """Models, methods and atlases: the configured order first, then others with files."""
    models = _order(
        _config_list((config.get("train") or {}).get("model")),
        [
            *files.summaries,
            *(k[0] for k in files.fold_metrics),
            *(k[0] for k in files.predictions),
            *(k[0] for k in files.attribution_tables),
            *(k[0] for k in files.sanity_tables),
        ],
    )
    methods = _order(
        _config_list((config.get("attribution") or {}).get("methods")),
        [
            *(k[1] for k in files.attribution_tables),
            *(k[1] for k in files.region_tables),
            *(k[1] for k in files.sanity_tables),
        ],
    )
    atlases = _order(
        _config_list((config.get("regions") or {}).get("atlases")),
        [*(k[2] for k in files.region_tables), *(k[1] for k in files.agreement_tables)],
    )
    return models, methods, atlases


def _sections(
    files: ReportFiles,
    config: Mapping[str, Any],
    names: tuple[list[str], ...],
    gt: Mapping[str, Any] | None,
    writer: plots.FigureWriter,
) -> tuple[list[Section], Findings]:
    """Every section of the page, in page order, and what the header quotes from them."""
    models, methods, atlases = names
    data = DataFacts()
    s_data = dataset_section(files.inputs_tsv, files.qc_tsv, data, files.qc_figures, writer)
    s_folds = folds_section(files.folds_tsv, config, data)
    s_perf, scores = performance_section(
        models,
        files.summaries,
        files.fold_metrics,
        files.predictions,
        files.histories,
        writer,
        files.folds_tsv,
        positive_class=config.get("positive_class"),
    )
    s_meaning, checks = meaning_section(
        models,
        methods,
        files.sanity_tables,
        files.deletion_tables,
        gt,
        writer,
        files.sanity_summary_tables,
    )
    s_maps = maps_section(
        models, methods, files.attribution_tables, files.template_t1w, checks, writer
    )
    s_regions, region_facts = regions_section(
        models,
        methods,
        atlases,
        files.region_tables,
        files.region_fold_tables,
        files.agreement_tables,
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
    s_external = external_sections(
        models,
        files.external_metrics,
        files.external_predictions,
        files.external_summaries,
        writer,
        positive_class=config.get("positive_class"),
    )  # own sections, after (never inside) the cross-validation ones
    sections = [s_data, s_folds, s_perf, s_maps, s_regions, s_meaning, *s_external]
    sections.append(_settings_section(config))
    return sections, Findings(data, scores, checks, region_facts, best)


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
    qc_figures: Mapping[str, Path] | None = None,
    ground_truth: Path | None,
    template_t1w: Path | None,
    external_metrics: Mapping[tuple[str, str, Any], Path] | None = None,
    external_predictions: Mapping[tuple[str, str, Any], Path] | None = None,
    external_summaries: Mapping[tuple[str, str], Path] | None = None,
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
    inputs_tsv, qc_tsv, folds_tsv, summaries, ... : Path, dict or None
        The files to read: see :class:`ReportFiles` for each one.

    Returns
    -------
    Path
        ``out_html``.

    Notes
    -----
    Missing optional files never stop the report: the affected part shows a note.
    Malformed files raise :class:`brainlens.errors.InputFileError`.
    """
    files = ReportFiles(
        inputs_tsv=inputs_tsv,
        qc_tsv=qc_tsv,
        folds_tsv=folds_tsv,
        summaries=summaries,
        fold_metrics=fold_metrics,
        predictions=predictions,
        histories=histories,
        attribution_tables=attribution_tables,
        region_tables=region_tables,
        region_fold_tables=region_fold_tables,
        agreement_tables=agreement_tables,
        sanity_tables=sanity_tables,
        deletion_tables=deletion_tables,
        sanity_summary_tables=sanity_summary_tables or {},
        sanity_cascade_tables=sanity_cascade_tables or {},
        qc_figures=qc_figures,
        ground_truth=ground_truth,
        template_t1w=template_t1w,
        external_metrics=external_metrics or {},
        external_predictions=external_predictions or {},
        external_summaries=external_summaries or {},
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    writer = plots.FigureWriter(Path(figures_dir), out_html.parent)
    config = dict(config or {})
    gt = read_json(ground_truth) if ground_truth is not None else None
    if ground_truth is not None and gt is None:
        log.warning("ground truth %s not found; planted-region checks left out", ground_truth)
    names = _names(config, files)
    sections, found = _sections(files, config, names, gt, writer)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    footer = (
        f"brainlens {esc(__version__)} · {now} · Figures are in <code>"
        f"{esc(os.path.relpath(writer.figures_dir, out_html.parent))}/</code>; keep them next "
        "to this page when sharing it."
    )
    html_text = page(title, page_header(title, now, names, found, gt), sections, footer)
    write_text_atomic(out_html, html_text)
    log.info("report written to %s (%d figures)", out_html, len(writer.written))
    return out_html


def build_report_from_manifest(
    *,
    manifest: str | Path,
    out_dir: str | Path,
    title: str,
    config: Mapping[str, Any],
    root: str | Path | None = None,
) -> Path:
    """Write the report into ``out_dir`` from the files a manifest names.

    Parameters
    ----------
    manifest : str or Path
        ``results/report_manifest.json`` (:func:`brainlens.report.io.write_manifest`):
        every input file with its kind and its model/method/fold/atlas/scan keys.
    out_dir : str or Path
        The report folder (``results/report``): ``index.html`` and ``figures/``, every
        picture linked relatively, so the folder is self-contained (``snakemake
        --report`` bundles it).
    title : str
        Page title.
    config : dict
        The workflow configuration (see :func:`build_report`).
    root : str or Path, optional
        Folder the manifest's relative paths are relative to (default: the current
        directory, the workflow's working directory in a job).

    Returns
    -------
    Path
        ``out_dir/index.html``.

    Raises
    ------
    InputFileError
        The manifest is missing or malformed, or a table it names is.
    """
    out_dir = Path(out_dir)
    return build_report(
        out_html=out_dir / "index.html",
        figures_dir=out_dir / "figures",
        title=title,
        config=config,
        **read_manifest(manifest, root=root),
    )
