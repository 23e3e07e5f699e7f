"""Report sections on the data: scans, exclusions, preprocessing QC and the folds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens.inputs import usable_mask
from brainlens.report.html import Section, esc, figure, kpis, note, relpath, table
from brainlens.report.io import as_flag, fmt, read_tsv
from brainlens.report.plots import FigureWriter

#: Plain-language names of the QC metrics of ``qc.tsv``.
QC_DESCRIPTIONS = {
    "tiv_ml": "total intracranial volume (ml)",
    "gm_ml": "grey-matter volume (ml)",
    "wm_ml": "white-matter volume (ml)",
    "csf_ml": "CSF volume (ml)",
    "corr_template": "correlation with the template after registration",
    "dice_template_mask": "Dice overlap of brain mask and template mask",
    "jac_min": "smallest Jacobian determinant of the warp",
    "jac_max": "largest Jacobian determinant of the warp",
    "jac_frac_nonpos": "share of voxels with folding (Jacobian <= 0)",
    "seconds": "preprocessing run time (s)",
}


@dataclass
class DataFacts:
    """Numbers the page header quotes."""

    n_scans: int = 0
    n_participants: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    n_excluded: int = 0
    n_flagged: int = 0
    n_folds: int = 0
    random_labels: bool = False


def dataset_section(
    inputs_tsv: Path | None,
    qc_tsv: Path | None,
    facts: DataFacts,
    qc_figures: Mapping[str, Path] | None = None,
    writer: FigureWriter | None = None,
) -> Section:
    """Section "Dataset & QC": counts, excluded scans, QC summary and flagged scans.

    Parameters
    ----------
    inputs_tsv, qc_tsv : Path or None
        ``inputs.tsv`` and ``qc.tsv`` of the preprocessing stage.
    facts : DataFacts
        Filled in with the counts the page header quotes.
    qc_figures : dict scan -> Path, optional
        Per-scan QC pictures; those of flagged scans are copied into the report's figure
        folder (``writer``) and shown under the flagged-scans table.
    writer : FigureWriter, optional
        The report's figure folder; needed to show QC pictures.
    """
    sec = Section("dataset", "Dataset & quality control")
    sec.children = [
        _inputs_part(inputs_tsv, facts),
        _qc_part(qc_tsv, facts, qc_figures, writer),
    ]
    return sec


def _inputs_part(inputs_tsv: Path | None, facts: DataFacts) -> Section:
    sub = Section("dataset-scans", "Scans and participants", level=3)
    df = read_tsv(inputs_tsv, required=("status",))
    if df is None:
        sub.body = note(f"The input table <code>{esc(inputs_tsv)}</code> is missing.", "warn")
        return sub
    df["status"] = df["status"].fillna("").astype(str)
    usable = usable_mask(df)
    ok, bad = df[usable], df[~usable]
    facts.n_scans = len(ok)
    facts.n_excluded = len(bad)
    pid = "participant_id" if "participant_id" in df else None
    facts.n_participants = int(ok[pid].nunique()) if pid else len(ok)
    labels = ok["label"].fillna("n/a").astype(str) if "label" in ok else pd.Series(dtype=str)
    facts.classes = {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}
    items = [
        (str(len(ok)), "scans used"),
        (str(facts.n_participants), "participants"),
        (str(len(facts.classes)), "classes"),
        (str(len(bad)), "scans excluded"),
    ]
    rows = []
    for cls in facts.classes:
        part = ok[labels == cls]
        rows.append(
            {
                "class": cls,
                "scans": len(part),
                "participants": int(part[pid].nunique()) if pid else len(part),
            }
        )
    body = [kpis(items)]
    if rows:
        body.append(
            table(
                pd.DataFrame(rows),
                text_columns=["class"],
                caption_html="Scans that passed the input checks, per class. A participant "
                "with several sessions counts once under <i>participants</i>.",
            )
        )
    if len(bad):
        cols = [c for c in ("scan", "participant_id", "label", "problem") if c in bad.columns]
        shown = bad[cols].fillna("").astype(str)
        body.append(f"<h4>Excluded scans ({len(bad)})</h4>")
        body.append(
            table(
                shown,
                text_columns=cols,
                row_class=["flag"] * len(shown),
                caption_html="These scans failed the input checks "
                "(<code>preprocess.on_invalid_scan: exclude</code>) and were left out of "
                "preprocessing, training and attribution. <i>problem</i> says what was wrong "
                "and how to fix it.",
            )
        )
    else:
        body.append(note("No scan was excluded: every input file passed the checks.", "ok"))
    sub.body = "\n".join(body)
    return sub


def _qc_part(
    qc_tsv: Path | None,
    facts: DataFacts,
    qc_figures: Mapping[str, Path] | None,
    writer: FigureWriter | None,
) -> Section:
    sub = Section("dataset-qc", "Preprocessing quality control", level=3)
    df = read_tsv(qc_tsv)
    if df is None:
        sub.body = note(f"The QC table <code>{esc(qc_tsv)}</code> is missing.", "warn")
        return sub
    metrics = [c for c in df.columns if f"{c}_outlier" in df.columns]
    flags = {m: as_flag(df[f"{m}_outlier"]) for m in metrics}
    any_flag = (
        as_flag(df["any_outlier"])
        if "any_outlier" in df
        else pd.concat(flags, axis=1).any(axis=1)
        if flags
        else pd.Series(False, index=df.index)
    )
    facts.n_flagged = int(any_flag.sum())
    body = [
        f"<p>{len(df)} preprocessed scans. A value is flagged when its robust z-score "
        "(distance to the median in units of 1.4826 × MAD) exceeds 3.5.</p>",
        _qc_metrics_table(df, metrics, flags),
    ]
    if facts.n_flagged:
        flagged = np.flatnonzero(any_flag.to_numpy())
        body.append(f"<h4>Flagged scans ({facts.n_flagged})</h4>")
        body.append(_flagged_table(df, metrics, flags, flagged))
        body.append(_qc_pictures([_scan_of(df, i) for i in flagged], qc_figures, writer))
    else:
        body.append(note("No scan was flagged as a QC outlier, so no QC pictures are shown.", "ok"))
    sub.body = "\n".join(b for b in body if b)
    return sub


def _scan_of(df: pd.DataFrame, i: int) -> str:
    """The scan id of row ``i`` of the QC table (its ``scan`` or ``scan_id`` column)."""
    col = next((c for c in ("scan", "scan_id") if c in df.columns), None)
    return str(df.iloc[i][col]) if col else str(i)


def _qc_metrics_table(df: pd.DataFrame, metrics: list[str], flags: Mapping[str, pd.Series]) -> str:
    """Median, range and number of flagged scans of each QC metric ("" without metrics)."""
    rows = []
    for m in metrics:
        v = pd.to_numeric(df[m], errors="coerce")
        rows.append(
            {
                "metric": m,
                "meaning": QC_DESCRIPTIONS.get(m, ""),
                "median": fmt(v.median()),
                "min": fmt(v.min()),
                "max": fmt(v.max()),
                "flagged scans": int(flags[m].sum()),
            }
        )
    if not rows:
        return ""
    return table(
        pd.DataFrame(rows),
        text_columns=["metric", "meaning"],
        caption_html="Distribution of each QC metric over all scans and the number of "
        "scans flagged as outliers on it.",
    )


def _flagged_table(
    df: pd.DataFrame, metrics: list[str], flags: Mapping[str, pd.Series], flagged: np.ndarray
) -> str:
    """One row per flagged scan: the metrics it is flagged on, its values and the medians."""
    recs = []
    for i in flagged:
        row = df.iloc[i]
        which = [m for m in metrics if flags[m].iloc[i]]
        recs.append(
            {
                "scan": _scan_of(df, i),
                "flagged on": ", ".join(which),
                "values (median of all scans)": "; ".join(
                    f"{m} = {fmt(row[m])} ({fmt(pd.to_numeric(df[m], errors='coerce').median())})"
                    for m in which
                ),
            }
        )
    return table(
        pd.DataFrame(recs),
        text_columns=["scan", "flagged on", "values (median of all scans)"],
        row_class=["flag"] * len(recs),
        caption_html="Scans with at least one outlying QC value. They were <b>not</b> "
        "removed; look at their QC pictures below and exclude them "
        "(<code>exclude_scans</code>) if the preprocessing failed.",
    )


def _qc_pictures(
    scans: list[str], qc_figures: Mapping[str, Path] | None, writer: FigureWriter | None
) -> str:
    """The flagged scans' QC pictures, copied into the report's figure folder."""
    if qc_figures is None or writer is None:
        return note(
            "The per-scan QC pictures were not given to the report; they are the "
            "<code>…_desc-qc_T1w.png</code> files in the <code>figures/</code> folders of "
            "<code>results/preprocess/</code>.",
            "warn",
        )
    shown, missing = [], []
    for scan in scans:
        src = qc_figures.get(scan)
        if src is None or not Path(src).is_file():
            missing.append(f"{esc(scan)} (<code>{esc(src or 'not listed')}</code>)")
            continue
        out = writer.path(f"qc_{scan}.png")
        shutil.copyfile(src, out)
        writer.written.append(out)
        shown.append(
            figure(
                relpath(out, writer.html_dir),
                f"<b>{esc(scan)}</b>: its preprocessing QC picture (the T1w in template "
                "space with the grey- and white-matter outlines and the template mask).",
                f"QC picture of {scan}",
            )
        )
    if missing:
        shown.append(note("No QC picture found for " + ", ".join(missing) + ".", "warn"))
    return "\n".join(shown)


def folds_section(folds_tsv: Path | None, config: Mapping[str, Any], facts: DataFacts) -> Section:
    """Section "Folds": split protocol, counts per fold/role/class, leakage audit, warnings."""
    sec = Section("folds", "Cross-validation folds")
    fcfg = dict(config.get("folds", {}) or {})
    df = read_tsv(folds_tsv, required=("fold", "role", "label"))
    body = []
    mode = fcfg.get("mode", "unknown")
    detail = {
        "kfold": f"{fcfg.get('n_folds', '?')}-fold stratified cross-validation; within each "
        f"training part a stratified {fmt_share(fcfg.get('val_fraction'))} of all participants "
        "is held out for validation (early stopping)",
        "repeated": f"{fcfg.get('n_repeats', '?')} repeated random stratified splits "
        f"(validation {fmt_share(fcfg.get('val_fraction'))}, test "
        f"{fmt_share(fcfg.get('test_fraction'))})",
        "holdout": f"one stratified hold-out split (validation "
        f"{fmt_share(fcfg.get('val_fraction'))}, test {fmt_share(fcfg.get('test_fraction'))})",
    }.get(mode, f"mode {mode}")
    strat = fcfg.get("stratify") or []
    body.append(
        f"<p><b>Split:</b> {esc(detail)}. Splits are made per participant (all sessions of "
        "a participant stay together; participants sharing an identical image are grouped), "
        f"stratified by label{(' and ' + esc(', '.join(strat))) if strat else ''}.</p>"
    )
    random_labels = bool(fcfg.get("random_labels", False))
    if df is not None and "random_labels" in df:
        random_labels |= bool(as_flag(df["random_labels"]).any())
    facts.random_labels = random_labels
    if random_labels:
        body.insert(
            0,
            note(
                '<span class="banner">⚠ Random-label run.</span> The labels were permuted '
                "before training (<code>folds.random_labels: true</code>). This is a sanity "
                "check: accuracy must be at chance level, and the maps and regions below "
                "explain nothing about the disease.",
                "bad",
            ),
        )
    if df is None:
        body.append(note(f"The folds table <code>{esc(folds_tsv)}</code> is missing.", "warn"))
        sec.body = "\n".join(body)
        return sec
    body.append(
        note(
            "✔ <b>Leakage audit passed.</b> The folds table exists only if the audit found no "
            "participant (and no identical image) in more than one role of a fold.",
            "ok",
        )
    )
    body.append(_near_duplicates_part(Path(folds_tsv), fcfg))
    df["role"] = df["role"].astype(str)
    df["label"] = df["label"].astype(str)
    facts.n_folds = int(df["fold"].nunique())
    counts = df.groupby(["fold", "role", "label"]).size().unstack(["role", "label"], fill_value=0)
    roles = [r for r in ("train", "val", "test") if r in counts.columns.get_level_values(0)]
    classes = sorted(df["label"].unique())
    out = pd.DataFrame(index=counts.index)
    for r in roles:
        for c in classes:
            out[f"{r}: {c}"] = counts.get((r, c), pd.Series(0, index=counts.index)).astype(int)
        out[f"{r} total"] = out[[f"{r}: {c}" for c in classes]].sum(axis=1)
    out.index.name = "fold"
    body.append(
        table(
            out.reset_index().astype(str),
            caption_html="Number of scans per fold, role and class. <i>train</i> fits the "
            "weights, <i>val</i> picks the epoch (early stopping), <i>test</i> is seen only "
            "once, by the final model, and gives all performance numbers below.",
        )
    )
    if facts.n_folds == 1:
        body.append(
            note(
                "Only one split: no spread over folds can be estimated (SD and confidence "
                "intervals are shown as –).",
                "warn",
            )
        )
    sec.body = "\n".join(body)
    return sec


def _near_duplicates_part(folds_tsv: Path, fcfg: Mapping[str, Any]) -> str:
    """The near-duplicate audit (``near_duplicates.tsv`` beside the folds table)."""
    path = folds_tsv.parent / "near_duplicates.tsv"
    df = read_tsv(path, required=("scan_a", "scan_b", "correlation"))
    if df is None:
        return note(f"No near-duplicate audit (<code>{esc(path)}</code> is missing).", "warn")
    summary = folds_tsv.parent / "near_duplicates.json"
    facts = json.loads(summary.read_text()) if summary.is_file() else {}
    best = facts.get("max_other") or {}
    margin = (
        f" The most similar scans of different participants, {esc(best.get('scan_a'))} and "
        f"{esc(best.get('scan_b'))}, correlate at {fmt(best.get('correlation'), 4)}."
        if best
        else ""
    )
    threshold = fmt(fcfg.get("duplicate_threshold", facts.get("threshold")), 4)
    if not len(df):
        return note(
            f"✔ <b>No near duplicates:</b> no two scans of different participants have "
            f"grey-matter maps correlating above {threshold}.{margin}",
            "ok",
        )
    shown = df.copy()
    shown["correlation"] = pd.to_numeric(shown["correlation"]).map(lambda v: f"{v:.4f}")
    return note(
        f"⚠ <b>{len(df)} possible near duplicate(s)</b> (<code>folds.on_duplicate: "
        f"{esc(fcfg.get('on_duplicate', 'warn'))}</code>): scans of different participants "
        f"whose MNI-space grey-matter maps correlate above {threshold}. If they are one "
        "person, their scans may sit on two sides of a fold.",
        "warn",
    ) + table(
        shown.astype(str),
        text_columns=list(shown.columns),
        row_class=["flag"] * len(shown),
        caption_html="If a pair is one person, give both scans one participant_id in "
        "participants.tsv and re-run.",
    )


def fmt_share(value: Any) -> str:
    """A fraction like 0.2 as ``20%`` (``?`` when missing)."""
    try:
        return f"{100 * float(value):.0f}%"
    except (TypeError, ValueError):
        return "?"


__all__ = ["DataFacts", "dataset_section", "folds_section"]
