"""Report section "Is the map meaningful?": randomisation, deletion and ground-truth checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from brainlens.report import plots
from brainlens.report import sanity as sanity_report
from brainlens.report.html import Section, badge, esc, figure, note, slug, table
from brainlens.report.io import as_bool, fmt, fmt_pct, read_tsv

#: A method "fails" the randomisation check when fewer than this share of its scans pass.
PASS_SHARE = 0.5
#: Default |Spearman| threshold of brainlens.attribution.sanity (drawn as a guide only;
#: pass/fail itself is read from the table's ``passes_randomization`` column).
RANDOMIZATION_THRESHOLD = 0.5
#: The planted region counts as "found" when its median rank is at most this.
TOP_K = 3


@dataclass
class MethodCheck:
    """Summary of the sanity checks of one model and method."""

    model: str
    method: str
    n_scans: int = 0
    pass_share: float = float("nan")
    aoc: float = float("nan")
    aoc_random: float = float("nan")
    gt_rank: float = float("nan")
    gt_mass_share: float = float("nan")
    gt_hit_rate: float = float("nan")
    verdict: sanity_report.SanityVerdict | None = None

    @property
    def fails(self) -> bool:
        """True when the randomisation check failed or could not be run because the map's
        grid is too coarse to localise: by the summary's bootstrap verdict when there is
        one, else (older results) when most scans failed it."""
        if self.verdict is not None and self.verdict.localizes is False:
            return True  # too coarse to localise: the test could not tell
        if self.verdict is not None and self.verdict.randomization is not None:
            return not self.verdict.randomization
        return not math.isnan(self.pass_share) and self.pass_share < PASS_SHARE

    @property
    def not_faithful(self) -> bool:
        """True when deletion or insertion did not beat random order (summary verdict)."""
        return self.verdict is not None and self.verdict.faithful is False

    @property
    def gt_top(self) -> bool | None:
        """Whether the planted region's median rank is within the top :data:`TOP_K`."""
        return None if math.isnan(self.gt_rank) else bool(self.gt_rank <= TOP_K)


def _mean(df: pd.DataFrame, col: str) -> float:
    if col not in df:
        return float("nan")
    v = pd.to_numeric(df[col], errors="coerce")
    return float(v.mean()) if v.notna().any() else float("nan")


def summarize_checks(
    model: str, method: str, df: pd.DataFrame | None, summary: pd.DataFrame | None = None
) -> MethodCheck:
    """Aggregate one sanity table (one row per scan) and its summary into a :class:`MethodCheck`."""
    c = MethodCheck(model, method)
    if summary is not None:
        c.verdict = sanity_report.read_verdict(summary, df)
    if df is None or df.empty:
        return c
    c.n_scans = len(df)
    if "passes_randomization" in df:
        p = as_bool(df["passes_randomization"]).dropna()
        c.pass_share = float(p.astype(bool).mean()) if len(p) else float("nan")
    c.aoc = _mean(df, "deletion_aoc")
    c.aoc_random = _mean(df, "deletion_aoc_random")
    if "gt_rank" in df:
        r = pd.to_numeric(df["gt_rank"], errors="coerce").dropna()
        c.gt_rank = float(r.median()) if len(r) else float("nan")
    c.gt_mass_share = _mean(df, "gt_mass_share")
    if "gt_pointing_hit" in df:
        h = as_bool(df["gt_pointing_hit"]).dropna()
        c.gt_hit_rate = float(h.astype(bool).mean()) if len(h) else float("nan")
    return c


def _aoc_text(c: MethodCheck) -> str:
    v = c.verdict
    if v is not None and v.faithful is not None:
        kind = "ok" if v.faithful else "bad"
        return f"{fmt(v.deletion[0])} / {fmt(v.insertion[0])} " + badge(
            "faithful" if v.faithful else "not faithful", kind
        )
    if math.isnan(c.aoc):
        return "–"
    txt = f"{fmt(c.aoc)} vs {fmt(c.aoc_random)}"
    if not math.isnan(c.aoc_random):
        kind = "ok" if c.aoc > c.aoc_random else "bad"
        txt += " " + badge("better" if kind == "ok" else "not better", kind)
    return txt


def check_table(checks: list[MethodCheck], ground_truth: bool) -> str:
    """The per-method summary table (HTML) of one model."""
    rows, classes = [], []
    for c in checks:
        if math.isnan(c.pass_share):
            rand = "not run"
        else:
            rand = f"{fmt_pct(c.pass_share)} " + (
                badge("FAILS", "bad") if c.fails else badge("passes", "ok")
            )
        r = {
            "method": esc(c.method),
            "scans checked": str(c.n_scans),
            "passes randomisation (share of scans)": rand,
            "deletion vs random": _aoc_text(c),
        }
        if ground_truth:
            r |= {
                "planted region rank (median)": fmt(c.gt_rank, 1),
                "mass share": fmt(c.gt_mass_share),
                "pointing hit rate": fmt_pct(c.gt_hit_rate),
                f"planted region in top {TOP_K}": "–"
                if c.gt_top is None
                else badge("yes", "ok")
                if c.gt_top
                else badge("no", "bad"),
            }
        rows.append(r)
        classes.append("flag" if c.fails else "")
    cap = (
        "<b>passes randomisation</b>: share of checked scans whose map changed when the "
        "trained weights were replaced by random ones (|Spearman ρ| between the two maps below "
        f"{RANDOMIZATION_THRESHOLD:g}; Adebayo et al. 2018). A method that fails on most scans "
        "(red rows) shows image structure rather than what the model learned; do not "
        "interpret its maps. The verdict (badge) is the bootstrap rule of the table below when "
        "the checks wrote a summary, else the majority of scans. <b>Deletion vs random</b>: "
        "mean deletion / insertion area between the relevance-ordered and the random-ordered "
        "curve and the faithfulness verdict (older results: the deletion area over the curve, "
        "relevance order vs random order; it should clearly exceed the random one)."
    )
    if ground_truth:
        cap += (
            " <b>Planted region rank</b>: rank (1 = most relevant) of the region with the "
            "planted effect among all atlas regions, median over scans; <b>mass share</b>: "
            "share of the positive relevance inside the region (mean over scans); "
            "<b>pointing hit rate</b>: share of scans whose relevance maximum lies in the region."
        )
    return table(
        pd.DataFrame(rows),
        text_columns=["method", "passes randomisation (share of scans)", "deletion vs random"],
        row_class=classes,
        escape=False,
        caption_html=cap,
    )


def _warnings_html(
    model: str, tables: Mapping[str, pd.DataFrame | None], have: list[MethodCheck]
) -> list[str]:
    """Warnings of one model: a field of view short of the brain mask, methods failing
    the randomisation check."""
    body: list[str] = []
    view = pd.concat(
        [
            pd.to_numeric(t["field_of_view_brain_share"], errors="coerce")
            for t in tables.values()
            if t is not None and "field_of_view_brain_share" in t
        ]
        or [pd.Series(dtype=float)]
    ).dropna()
    if len(view) and view.min() < 1:
        body.append(
            note(
                f"⚠ <b>Model {esc(model)} sees only {fmt_pct(view.min())} of the brain "
                "mask</b>: its layers never read the other voxels (e.g. pooling that drops "
                "the trailing positions of an axis), so every method gives them zero or "
                "interpolated relevance whatever the model learned, and regions there rank "
                "last. They are left out of the randomisation comparison. Fix: a model or "
                "option whose field of view covers the grid (brainlens.models.field_of_view).",
                "bad",
            )
        )
    failing = [c.method for c in have if c.fails]
    if failing:
        body.append(
            note(
                "⚠ <b>Failing the randomisation check:</b> "
                + ", ".join(f"<code>{esc(m)}</code>" for m in failing)
                + ". Their maps barely change when the model is replaced by a random one, "
                "so they do not reflect what this model learned.",
                "bad",
            )
        )
    return body


def _figures_html(
    model: str,
    methods: list[str],
    tables: Mapping[str, pd.DataFrame | None],
    deletion_tables: Mapping[tuple, Path],
    writer: plots.FigureWriter,
) -> list[str]:
    """The randomisation figure and the deletion (or deletion/insertion) curves of one
    model, after a note when there are no deletion curves at all."""
    body: list[str] = []
    rand = {
        m: pd.to_numeric(t["spearman_random"], errors="coerce").to_numpy()
        for m, t in tables.items()
        if t is not None and "spearman_random" in t
    }
    figs = []
    src = plots.save_if(
        writer,
        plots.randomization_figure(rand, RANDOMIZATION_THRESHOLD),
        f"randomization_{model}",
    )
    if src:
        figs.append(
            figure(
                src,
                "<b>Randomisation check.</b> One dot per checked scan: |Spearman ρ| between "
                "the map of the trained model and the map of the fully randomised model, "
                "inside the template brain mask for 3D maps (zeros shared outside the "
                "head would otherwise count as agreement), restricted to the voxels the "
                "model can see at all; black bar: median. Low is good "
                "(the map depends on the learned weights); dots above the dashed line fail.",
                f"randomisation check of {model}",
            )
        )
    dele = {m: read_tsv(deletion_tables.get((model, m))) for m in methods}
    src = None
    if any(d is not None and "order" in d for d in dele.values()):
        src = plots.save_if(writer, sanity_report.curves_figure(dele), f"curves_{model}")
        if src:
            figs.append(figure(src, sanity_report.CURVES_CAPTION, f"curves of {model}"))
        src = None
    else:
        src = plots.save_if(writer, plots.deletion_figure(dele), f"deletion_{model}")
    if src:
        figs.append(
            figure(
                src,
                "<b>Deletion curves</b> per method: probability of the target class while "
                "the most relevant voxels are deleted first (solid) or voxels are deleted "
                "in random order (dashed); mean over scans, band = SD. A faithful map makes "
                "the solid curve drop well before the dashed one.",
                f"deletion curves of {model}",
            )
        )
    elif not any(d is not None for d in dele.values()):
        body.append(note("No deletion curves found.", "warn"))
    return body + figs


def meaning_section(
    models: list[str],
    methods: list[str],
    sanity_tables: Mapping[tuple, Path],
    deletion_tables: Mapping[tuple, Path],
    ground_truth: Mapping[str, Any] | None,
    writer: plots.FigureWriter,
    summary_tables: Mapping[tuple, Path] | None = None,
) -> tuple[Section, dict[tuple[str, str], MethodCheck]]:
    """Section 7; returns it and the check summary per (model, method).

    ``summary_tables`` (``results/sanity/<model>/<method>_summary.tsv``) add the
    bootstrap verdicts, the cascade curves and the deletion/insertion area table.
    """
    summary_tables = summary_tables or {}
    sec = Section("meaningful", "Is the map meaningful?")
    sec.body = (
        "<p>An attribution map can look plausible and still explain nothing. Three checks: "
        "(1) <b>randomisation</b>: the map must change when the model's weights are "
        "randomised; (2) <b>deletion</b>: deleting the voxels the map calls most relevant must "
        "lower the model's confidence faster than deleting random voxels; (3) with synthetic "
        "data, the map must point at the <b>planted region</b>.</p>"
    )
    if not ground_truth:
        sec.body += note(
            "No ground truth was given (real data): the planted-region check is not applicable. "
            "Only the randomisation and deletion checks are shown.",
            "info",
        )
    checks: dict[tuple[str, str], MethodCheck] = {}
    for model in models:
        sub = Section(slug("meaning", model), f"Checks of model {model}", level=3)
        tables = {m: read_tsv(sanity_tables.get((model, m))) for m in methods}
        summaries = {m: read_tsv(summary_tables.get((model, m))) for m in methods}
        for m in methods:
            checks[(model, m)] = summarize_checks(model, m, tables[m], summaries[m])
        have = [checks[(model, m)] for m in methods if tables[m] is not None]
        if not have:
            sub.body = note(f"No sanity-check results for model {esc(model)}.", "warn")
            sec.children.append(sub)
            continue
        body = _warnings_html(model, tables, have)
        body.append(check_table(have, bool(ground_truth)))
        body.extend(sanity_report.sanity_parts(model, checks, summaries, writer))
        body += _figures_html(model, methods, tables, deletion_tables, writer)
        sub.body = "\n".join(body)
        sec.children.append(sub)
    return sec, checks


def ground_truth_section(
    gt: Mapping[str, Any],
    checks: Mapping[tuple[str, str], MethodCheck],
    region_ranks: Mapping[tuple[str, str], int],
    n_regions: Mapping[tuple[str, str], int],
) -> Section:
    """Subsection "Planted region": where each model/method puts the planted region.

    Parameters
    ----------
    gt : dict
        ``ground_truth.json`` (``atlas``, ``region``, ``positive_class``, ...).
    checks : dict (model, method) -> MethodCheck
        Per-scan planted-region scores, summarised.
    region_ranks, n_regions : dict (model, method) -> int
        The planted region's rank in the region table of its atlas, and the table's size.
    """
    sub = Section("ground-truth", "Planted region (ground truth)", level=3)
    desc = (
        f"<p>The data are synthetic: the class <b>{esc(gt.get('positive_class', '?'))}</b> "
        f"carries a planted {esc(gt.get('kind', 'effect'))} in region "
        f"<b>{esc(gt.get('region', '?'))}</b> of atlas <code>{esc(gt.get('atlas', '?'))}</code>"
        f" (effect size {esc(gt.get('effect', '?'))}). A map that explains the model should "
        "rank this region at or near the top.</p>"
    )
    keys = [k for k in checks if k in region_ranks or not math.isnan(checks[k].gt_rank)]
    keys += [k for k in region_ranks if k not in checks]
    if not keys:
        sub.body = desc + note("No planted-region scores were found for its atlas.", "warn")
        return sub
    rows, classes, found = [], [], []
    for model, method in keys:
        c = checks.get((model, method), MethodCheck(model, method))
        rank = region_ranks.get((model, method))
        top = (rank is not None and rank <= TOP_K) or bool(c.gt_top)
        if top and not c.fails:
            found.append(f"{model}/{method}")
        rows.append(
            {
                "model": esc(model),
                "method": esc(method)
                + (" " + badge("fails randomisation", "bad") if c.fails else ""),
                "rank in region table": "–"
                if rank is None
                else f"{rank} of {n_regions.get((model, method), '?')}",
                "median rank over scans": fmt(c.gt_rank, 1),
                f"in top {TOP_K}": badge("yes", "ok") if top else badge("no", "bad"),
            }
        )
        classes.append("good" if top and not c.fails else "")
    if found:
        msg = note(
            f"✔ Planted region found (in the top {TOP_K}) by methods that pass the "
            "randomisation check: " + ", ".join(f"<code>{esc(f)}</code>" for f in found) + ".",
            "ok",
        )
    else:
        msg = note(
            f"✘ No method that passes the randomisation check ranks the planted region in the "
            f"top {TOP_K}.",
            "bad",
        )
    tab = table(
        pd.DataFrame(rows),
        text_columns=["model", "method"],
        row_class=classes,
        escape=False,
        caption_html="<i>Rank in region table</i>: rank of the planted region by mean relevance "
        "over folds (section Regions). <i>Median rank over scans</i>: the same ranking done per "
        "scan, from the sanity checks.",
    )
    sub.body = desc + msg + tab
    return sub


__all__ = [
    "MethodCheck",
    "check_table",
    "ground_truth_section",
    "meaning_section",
    "summarize_checks",
]
