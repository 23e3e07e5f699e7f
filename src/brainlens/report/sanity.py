"""Report parts of the sanity checks: cascade curves, deletion/insertion areas, verdicts.

Reads the tables of :mod:`brainlens.attribution.checks` (``results/sanity/<model>/``):
``<method>_summary.tsv`` (means with bootstrap intervals and the verdicts), the
per-scan table ``<method>.tsv`` (scans per class) and ``<method>_deletion.tsv``
(deletion and insertion curves in relevance and random order). Nothing here
recomputes a verdict: pass/fail comes from the summary's ``passes`` column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from brainlens.report.html import badge, esc, table
from brainlens.report.io import as_bool, fmt
from brainlens.report.plots import OKABE_ITO, colour, plt

#: Fewer scans per class than this are flagged as too few for a firm verdict.
MIN_PER_CLASS = 10


@dataclass
class SanityVerdict:
    """Verdicts of one method from its summary table (None = not run)."""

    randomization: bool | None = None
    spearman_abs: tuple[float, float, float] = (math.nan,) * 3
    spearman_signed: tuple[float, float, float] = (math.nan,) * 3
    deletion: tuple[float, float, float] = (math.nan,) * 3
    insertion: tuple[float, float, float] = (math.nan,) * 3
    faithful_deletion: bool | None = None
    faithful_insertion: bool | None = None
    data_randomization: bool | None = None
    spearman_random_labels: tuple[float, float, float] = (math.nan,) * 3
    threshold: float = math.nan
    per_class: dict[str, int] = field(default_factory=dict)
    requested_per_class: float = math.nan
    #: grid the map is computed on (e.g. ``"1x2x1"``), when the summary has one
    map_grid: str = ""
    #: False when that grid has fewer than ``min_map_positions`` positions along some axis
    localizes: bool | None = None
    min_map_positions: float = math.nan

    @property
    def faithful(self) -> bool | None:
        """Both curves beat random order (None when neither was run)."""
        flags = [f for f in (self.faithful_deletion, self.faithful_insertion) if f is not None]
        return None if not flags else all(flags)

    @property
    def interpretable(self) -> bool | None:
        """Passes randomisation on a grid that can localise (None when not run)."""
        if self.localizes is False:
            return False
        return self.randomization

    @property
    def few_scans(self) -> bool:
        """Fewer than :data:`MIN_PER_CLASS` scans checked in some class."""
        return bool(self.per_class) and min(self.per_class.values()) < MIN_PER_CLASS


def _triple(row: pd.Series) -> tuple[float, float, float]:
    return tuple(
        float(pd.to_numeric(row[c], errors="coerce")) for c in ("mean", "ci_low", "ci_high")
    )


def _flag(row: pd.Series) -> bool | None:
    v = as_bool(pd.Series([row.get("passes")])).iloc[0]
    return None if not isinstance(v, bool) else v


def read_verdict(summary: pd.DataFrame | None, per_scan: pd.DataFrame | None) -> SanityVerdict:
    """A :class:`SanityVerdict` from a summary table and the per-scan table."""
    v = SanityVerdict()
    if per_scan is not None and "label" in per_scan:
        v.per_class = {
            str(k): int(n) for k, n in per_scan["label"].astype(str).value_counts().items()
        }
    if summary is None or summary.empty or "statistic" not in summary:
        return v
    s = summary
    if "requested_per_class" in s and s["requested_per_class"].notna().any():
        v.requested_per_class = float(s["requested_per_class"].dropna().iloc[0])
    if "threshold" in s and s["threshold"].notna().any():
        v.threshold = float(s["threshold"].dropna().iloc[0])
    judged = s[as_bool(s["passes"]).map(lambda b: isinstance(b, bool))] if "passes" in s else s[:0]
    rand = judged[judged["statistic"].isin(["spearman_abs", "spearman_signed"])]
    if len(rand):
        v.randomization = all(_flag(r) for _, r in rand.iterrows())
    for _, r in judged.iterrows():
        stat = r["statistic"]
        if stat in ("spearman_abs", "spearman_signed"):
            setattr(v, stat, _triple(r))
        elif stat == "deletion_area":
            v.deletion, v.faithful_deletion = _triple(r), _flag(r)
        elif stat == "insertion_area":
            v.insertion, v.faithful_insertion = _triple(r), _flag(r)
        elif stat == "spearman_abs_random_labels":
            v.spearman_random_labels = _triple(r)
        elif stat == "map_positions":
            v.map_grid, v.localizes = str(r.get("layer", "")), _flag(r)
            v.min_map_positions = float(pd.to_numeric(r.get("min_map_positions"), errors="coerce"))
    if v.localizes is False:
        # a grid of a few positions gives rank correlations of about +-1 per scan
        # whatever the weights: the randomisation test has nothing to measure
        v.randomization = None
    data = judged[judged["statistic"].astype(str).str.endswith("_random_labels")]
    if len(data):
        v.data_randomization = all(_flag(r) for _, r in data.iterrows())
    return v


def _interval(t: tuple[float, float, float]) -> str:
    return "–" if math.isnan(t[0]) else f"{fmt(t[0])} [{fmt(t[1])}, {fmt(t[2])}]"


def _yes_no(flag: bool | None, yes: str, no: str) -> str:
    return "–" if flag is None else badge(yes, "ok") if flag else badge(no, "bad")


def _randomisation_cell(v: SanityVerdict) -> str:
    if v.localizes is False:
        return badge(f"not testable: {esc(v.map_grid)} grid too coarse", "bad")
    return _yes_no(v.randomization, "passes", "FAILS")


def verdict_table(verdicts: Mapping[str, SanityVerdict]) -> str:
    """HTML table: per method scans per class, randomisation and faithfulness verdicts."""
    rows, classes = [], []
    for method, v in verdicts.items():
        counts = ", ".join(f"{esc(k)} {n}" for k, n in sorted(v.per_class.items())) or "–"
        if v.few_scans:
            counts += " " + badge(f"fewer than {MIN_PER_CLASS} per class", "warn")
        rows.append(
            {
                "method": esc(method),
                "scans per class": counts,
                "Spearman |map|, full randomisation": _interval(v.spearman_abs),
                "Spearman signed": _interval(v.spearman_signed),
                "randomisation": _randomisation_cell(v),
                "deletion area vs random": _interval(v.deletion),
                "insertion area vs random": _interval(v.insertion),
                "faithful": _yes_no(v.faithful, "yes", "not faithful"),
            }
        )
        if any(w.data_randomization is not None for w in verdicts.values()):
            rows[-1]["random-label model, Spearman |map|"] = _interval(v.spearman_random_labels)
            rows[-1]["data randomisation"] = _yes_no(v.data_randomization, "passes", "FAILS")
        bad = False in (v.randomization, v.faithful, v.data_randomization, v.localizes)
        classes.append("flag" if bad else "")
    thr = next((v.threshold for v in verdicts.values() if not math.isnan(v.threshold)), 0.5)
    minpos = next(
        (v.min_map_positions for v in verdicts.values() if not math.isnan(v.min_map_positions)), 3
    )
    cap = (
        "Mean over the checked scans [95% seeded two-stage bootstrap interval: folds with "
        "replacement, then scans within each drawn fold, since the scans of a fold share its "
        "model; it does not undo the overlap of the folds' training sets]. "
        "<b>Randomisation</b> "
        "(Adebayo et al. 2018): Spearman ρ between the map of the trained model and of the "
        "model whose weights were all re-initialised, of |map| and of the signed map, inside "
        "the brain mask and the model's field of view; a method <i>passes</i> when the upper "
        f"end of both intervals is below {fmt(thr, 2)}. <b>Deletion / insertion area</b>: area "
        "between the curve in relevance order and the curve in random order (deletion: the "
        "target probability must fall sooner; insertion, from the fold's baseline: rise "
        "sooner), voxels replaced by the baseline inside the brain; a method is "
        "<i>faithful</i> when the lower end of both intervals is above 0. A map computed on "
        f"a grid with fewer than {fmt(minpos, 0)} positions along some axis (a Grad-CAM / CAM layer, "
        "occlusion patches) is <i>too coarse</i>: it cannot rank regions, and its "
        "randomisation test is not testable (a two-valued map correlates about ±1 with any "
        "other); choose an earlier layer or a smaller patch."
    )
    if any(v.data_randomization is not None for v in verdicts.values()):
        cap += (
            " <b>Data randomisation</b> (with <code>attribution.sanity.random_label_run</code>): "
            "the same comparison with the map of the same fold's model trained on shuffled "
            "labels; it passes under the same rule (|map| and signed)."
        )
    return table(
        pd.DataFrame(rows),
        text_columns=[
            "method",
            "scans per class",
            "randomisation",
            "faithful",
            "data randomisation",
        ],
        row_class=classes,
        escape=False,
        caption_html=cap,
    )


def cascade_figure(summaries: Mapping[str, pd.DataFrame], threshold: float) -> Figure | None:
    """Mean Spearman (band: bootstrap interval) vs randomised layer groups, per method.

    Columns: |map| and signed map; rows: cascading and (when run) independent mode.
    """
    need = {"statistic", "mode", "step", "mean", "ci_low", "ci_high"}
    ok = {
        m: s[s["statistic"].isin(["spearman_abs", "spearman_signed"])]
        for m, s in summaries.items()
        if s is not None and need <= set(s.columns)
    }
    ok = {m: s for m, s in ok.items() if len(s) and s["step"].nunique() > 2}
    if not ok:
        return None
    modes = [
        m for m in ("cascade", "independent") if any((s["mode"] == m).any() for s in ok.values())
    ]
    fig, axes = plt.subplots(len(modes), 2, figsize=(10, 3.3 * len(modes)), squeeze=False)
    for r, mode in enumerate(modes):
        for c, stat in enumerate(("spearman_abs", "spearman_signed")):
            ax = axes[r][c]
            labels: list[str] = []
            for i, (method, s) in enumerate(ok.items()):
                d = s[(s["mode"] == mode) & (s["statistic"] == stat)].sort_values("step")
                if d.empty:
                    continue
                x = d["step"].to_numpy(float)
                ax.plot(x, d["mean"], color=colour(i), lw=1.8, marker="o", ms=3, label=method)
                ax.fill_between(x, d["ci_low"], d["ci_high"], color=colour(i), alpha=0.15, lw=0)
                if len(d) > len(labels):
                    labels = ["none", *(str(v).split("+")[0] for v in d["layer"].iloc[1:])]
            ax.axhline(threshold, color=OKABE_ITO[5], ls="--", lw=1)
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=7)
            ax.set_ylim(-1.02, 1.02)
            what = "|map|" if stat == "spearman_abs" else "signed map"
            kind = "cascading (top down)" if mode == "cascade" else "independent (one group)"
            ax.set_title(f"{kind}: {what}", fontsize=9.5)
            ax.set_ylabel("Spearman ρ vs trained", fontsize=8.5)
    for r, mode in enumerate(modes):
        what = "randomised up to layer group" if mode == "cascade" else "randomised layer group"
        axes[r][0].set_xlabel(what, fontsize=8.5)
    axes[0][0].legend(frameon=False, fontsize=7.5, loc="lower left")
    fig.tight_layout()
    return fig


def curves_figure(curves: Mapping[str, pd.DataFrame]) -> Figure | None:
    """Mean deletion and insertion curves per method, relevance order vs random order."""
    need = {"curve", "order", "fraction", "score"}
    ok = {m: d for m, d in curves.items() if d is not None and need <= set(d.columns) and len(d)}
    if not ok:
        return None
    ncol = min(len(ok), 4)
    nrow = int(np.ceil(len(ok) / ncol))
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.3 * ncol, 2.9 * nrow), squeeze=False, sharey=True
    )
    styles = {"deletion": OKABE_ITO[0], "insertion": OKABE_ITO[1]}
    for ax, (method, d) in zip(axes.ravel(), ok.items(), strict=False):
        for (curve, order), g in d.groupby(["curve", "order"], sort=True):
            mean = g.groupby("fraction")["score"].mean()
            ax.plot(
                mean.index.to_numpy(float),
                mean.to_numpy(),
                color=styles.get(str(curve), "grey"),
                ls="-" if order == "relevance" else "--",
                lw=1.8,
                label=f"{curve}, {'relevance' if order == 'relevance' else 'random'} order",
            )
        ax.set_title(str(method), fontsize=9.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes.ravel()[len(ok) :]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("fraction of brain voxels replaced", fontsize=8.5)
    for row in axes:
        row[0].set_ylabel("P(target class)", fontsize=8.5)
    axes[0][0].legend(frameon=False, fontsize=7, loc="best")
    fig.tight_layout()
    return fig


CURVES_CAPTION = (
    "<b>Deletion and insertion curves</b> per method: probability of the target class while "
    "brain voxels (inside the template brain mask and the model's field of view) are "
    "replaced by the fold's baseline, most relevant first (deletion, solid) or inserted "
    "from the baseline, most relevant first (insertion, solid), against the same in a "
    "random order (dashed); mean over the checked scans. A faithful map makes deletion "
    "fall and insertion rise before their random-order curves."
)

CASCADE_CAPTION = (
    "<b>Parameter randomisation</b> (Adebayo et al. 2018). Mean Spearman ρ between the map "
    "of the trained model and the map after re-initialising layer groups, from the output "
    "down (cascading: all groups up to the one named are random) and one group at a time "
    "(independent, when run), of |map| (left) and the signed map (right); band: 95% "
    "bootstrap interval over the checked scans; dashed: the pass threshold. A map that "
    "explains the model falls to near 0 once the top layers are random; one that stays "
    "high shows image structure, whatever the weights."
)


def sanity_parts(
    model: str,
    checks: Mapping[tuple[str, str], Any],
    summaries: Mapping[str, pd.DataFrame | None],
    writer: Any,
) -> list[str]:
    """HTML of one model: notes, the verdict table and the cascade figure.

    Parameters
    ----------
    model : str
    checks : dict (model, method) -> MethodCheck
        With ``verdict`` (:class:`SanityVerdict`) set where a summary was read.
    summaries : dict method -> DataFrame or None
        The summary tables of the model's methods.
    writer : brainlens.report.plots.FigureWriter
    """
    from brainlens.report.html import figure, note
    from brainlens.report.plots import save_if

    verdicts = {
        m: checks[(model, m)].verdict
        for m, s in summaries.items()
        if s is not None and getattr(checks.get((model, m)), "verdict", None) is not None
    }
    if not verdicts:
        return []
    out = []
    few = [m for m, v in verdicts.items() if v.few_scans]
    if few:
        out.append(
            note(
                f"Fewer than {MIN_PER_CLASS} scans per class were checked for "
                + ", ".join(f"<code>{esc(m)}</code>" for m in few)
                + " (not enough explained test scans, or fewer asked for in "
                "<code>attribution.sanity</code>): their intervals are wide and the verdicts "
                "tentative.",
                "warn",
            )
        )
    unfaithful = [m for m, v in verdicts.items() if v.faithful is False]
    if unfaithful:
        out.append(
            note(
                "⚠ <b>Not faithful:</b> "
                + ", ".join(f"<code>{esc(m)}</code>" for m in unfaithful)
                + ". Deleting (or inserting) voxels in their relevance order does not change "
                "the model's output more than a random order does.",
                "bad",
            )
        )
    out.append(verdict_table(verdicts))
    thr = next((v.threshold for v in verdicts.values() if not math.isnan(v.threshold)), 0.5)
    present = {m: s for m, s in summaries.items() if m in verdicts}
    src = save_if(writer, cascade_figure(present, thr), f"cascade_{model}")
    if src:
        out.append(figure(src, CASCADE_CAPTION, f"randomisation cascade of {model}"))
    elif present:
        out.append(
            note(
                "No cascade curves: only the fully randomised model was mapped "
                "(<code>attribution.sanity.cascade: false</code> or its overrides).",
                "info",
            )
        )
    return out


__all__ = [
    "CASCADE_CAPTION",
    "CURVES_CAPTION",
    "MIN_PER_CLASS",
    "SanityVerdict",
    "cascade_figure",
    "curves_figure",
    "read_verdict",
    "sanity_parts",
    "verdict_table",
]
