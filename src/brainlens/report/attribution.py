"""Report sections "Attribution maps" and "Regions"."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from brainlens.regions import RANK_STATS
from brainlens.report import brainmaps, plots
from brainlens.report.html import Section, badge, esc, figure, note, slug, table
from brainlens.report.io import fmt, fmt_pct, read_tsv, sorted_keys
from brainlens.report.meaning import MethodCheck

log = logging.getLogger(__name__)

#: Regions shown per bar chart and table.
TOP_N = 15
#: Resolution of the glass-brain and slice figures (they are large and slow to render).
BRAIN_DPI = 80
#: Integrated gradients' relative completeness error (|sum of attributions - logit
#: change| / |logit change|) above which a scan's map is flagged.
COMPLETENESS_TOLERANCE = 0.1

#: One line per attribution method, shown next to its maps.
METHOD_NOTES = {
    "gradients": "|gradient| of the class logit w.r.t. each voxel (sensitivity)",
    "guided_backprop": "|guided back-propagation| (gradients through ReLUs, positive only)",
    "integrated_gradients": "integrated gradients from the fold's baseline; signed "
    "(positive = evidence for the explained class)",
    "occlusion": "drop of the class score when a cube of voxels is masked; signed",
    "region_occlusion": "drop of the class score when a whole atlas region is masked; signed",
    "gradcam": "3D Grad-CAM of the last convolutional layer (rectified, upsampled)",
    "cam_ng2018": "class-invariant activation map of the last convolutional layer (Ng 2018)",
    "layer_maps": "per-layer rectified Grad-CAM",
}


def _flag(check: MethodCheck | None) -> str:
    if check is not None and check.fails:
        return " " + badge("fails randomisation check: do not interpret", "bad")
    return ""


def _explained(tables: Mapping[Any, Path]) -> str:
    """One line: the class explained, the baseline, and integrated gradients' completeness."""
    frames = [f for f in (read_tsv(p) for p in tables.values()) if f is not None and len(f)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if df.empty or not {"target_class", "label"} <= set(df):
        return ""
    tgt, lab = df["target_class"].astype(str), df["label"].astype(str)
    if (tgt == lab).all():
        what = "each scan's true class"
    elif "predicted_class" in df and (tgt == df["predicted_class"].astype(str)).all():
        what = "each scan's predicted class"
    else:
        what = ", ".join(f"<code>{esc(c)}</code>" for c in sorted(set(tgt)))
    kinds = sorted(set(df.get("baseline", pd.Series(dtype=str)).astype(str)) - {"none", "nan"})
    text = f"Explained class: {what}." + (
        f" Baseline: <code>{esc(', '.join(kinds))}</code> (from each fold's training part)."
        if kinds
        else ""
    )
    if "input_space" in df:  # a model trained on harmonised inputs (confounds.method)
        spaces = ", ".join(sorted(set(df["input_space"].dropna().astype(str))))
        text += (
            f" Inputs: <code>{esc(spaces)}</code>: the model was trained, tested and explained "
            "on inputs with the covariates' (or site's) effect removed in each fold, so these "
            "maps are relevance for the harmonised input, not for the raw map."
        )
    if "completeness_rel_error" in df:
        err = pd.to_numeric(df["completeness_rel_error"], errors="coerce")
        bad = df[err > COMPLETENESS_TOLERANCE]
        text += (
            " Completeness error (|sum of attributions − logit change| / |logit change|): "
            f"max {fmt(err.max(), 3)}."
        )
        if len(bad):
            text += " " + badge(
                f"{len(bad)} of {len(df)} scans above {COMPLETENESS_TOLERANCE:g}: raise n_steps",
                "bad",
            )
    return f"<p>{text}</p>"


def maps_section(
    models: list[str],
    methods: list[str],
    attribution_tables: Mapping[tuple, Path],
    template_t1w: Path | None,
    checks: Mapping[tuple[str, str], MethodCheck],
    writer: plots.FigureWriter,
) -> Section:
    """Section 5: per model and method, glass brains and slices of class-mean maps."""
    sec = Section("maps", "Attribution maps")
    template = brainmaps.find_template(template_t1w)
    intro = (
        "<p>For each test scan, each method gives a relevance map (higher = more relevant for "
        "the explained class). Maps were averaged per true class within each fold and then "
        "over folds. Every map is shown with voxels above the "
        f"{brainmaps.THRESHOLD_PERCENTILE:g}th percentile of |relevance|; the colour scale is "
        "shared by the rows of one figure so classes can be compared, but not across methods "
        "(their units differ).</p>"
    )
    if template is None:
        intro += note(
            f"Template T1w <code>{esc(template_t1w)}</code> not found: slices are drawn on "
            "nilearn's MNI152 template.",
            "warn",
        )
    sec.body = intro
    for model in models:
        msub = Section(slug("maps", model), f"Maps of model {model}", level=3)
        for method in methods:
            tables = {
                k[2]: attribution_tables[k]
                for k in sorted_keys(attribution_tables)
                if k[0] == model and k[1] == method
            }
            if not tables:
                continue
            h = Section(slug("maps", model, method), method, level=4)
            body = [
                f"<p><i>{esc(METHOD_NOTES.get(method.split('@')[0], ''))}</i>{_flag(checks.get((model, method)))}</p>",
                _explained(tables),
            ]
            cm = brainmaps.class_maps_over_folds(tables)
            for n in cm.notes:
                log.warning("%s/%s: %s", model, method, n)
            if not cm.maps:
                h.body = "\n".join(body) + note("No maps found for this method.", "warn")
                msub.children.append(h)
                continue
            if cm.notes:
                body.append(note("<br>".join(esc(n) for n in cm.notes[:5]), "warn"))
            order = brainmaps.class_order(cm.maps)
            ordered = {k: cm.maps[k] for k in order}
            glass, slices, info = brainmaps.brain_figures(ordered, template, method)
            nf = max(cm.n_folds.values())
            fold_txt = f"averaged over {nf} fold{'s' if nf != 1 else ''}"
            scale = (
                "Signed map: red = evidence for the class, blue = against (RdBu scale)."
                if info["signed"]
                else "Non-negative map: yellow = most relevant (viridis scale)."
            )
            g = writer.save(glass, f"glass_{model}_{method}", dpi=BRAIN_DPI)
            s = writer.save(slices, f"slices_{model}_{method}", dpi=BRAIN_DPI)
            body.append(
                figure(
                    g,
                    f"<b>Glass brains</b> of the mean {esc(method)} map of model "
                    f"{esc(model)}, {fold_txt}; rows: all test scans, then each true class. "
                    "Each view projects the maximum through the brain (L = left). "
                    f"{scale} Threshold {fmt(info['threshold'])}, colour maximum "
                    f"{fmt(info['vmax'])}.",
                    f"glass brains {model} {method}",
                )
            )
            x, y, z = info["cut_coords"]
            body.append(
                figure(
                    s,
                    f"<b>Slices</b> through the largest cluster of relevance (x = {x:.0f}, "
                    f"y = {y:.0f}, z = {z:.0f} mm, MNI) on the template T1w; same rows, "
                    "threshold and colour scale as the glass brains.",
                    f"slices {model} {method}",
                )
            )
            if cm.computed:
                body.append(
                    note(
                        f"{cm.computed} fold mean map(s) were missing and were computed here "
                        "from the per-scan maps.",
                        "info",
                    )
                )
            h.body = "\n".join(body)
            msub.children.append(h)
        if not msub.children:
            msub.body = note(f"No attribution tables for model {esc(model)}.", "warn")
        sec.children.append(msub)
    return sec


@dataclass
class RegionFacts:
    """Region results the page header quotes."""

    top: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    tables: dict[tuple[str, str, str], pd.DataFrame] = field(default_factory=dict)
    gt_rank: dict[tuple[str, str], int] = field(default_factory=dict)
    gt_n: dict[tuple[str, str], int] = field(default_factory=dict)


def _gt_row(df: pd.DataFrame, gt: Mapping[str, Any]) -> pd.Series:
    hit = df["region"].astype(str) == str(gt.get("region"))
    if not hit.any() and "label" in df and gt.get("label") is not None:
        hit = pd.to_numeric(df["label"], errors="coerce") == float(gt["label"])
    return hit


def _fold_ranks(folds_df: pd.DataFrame | None) -> dict[str, str]:
    if folds_df is None or not {"fold", "region", "rank"} <= set(folds_df.columns):
        return {}
    d = folds_df
    if "class" in d:
        d = d[d["class"].astype(str) == "all"]
    d = d.sort_values("fold")
    return {
        str(r): ", ".join(fmt(v, 0) if not math.isnan(v) else "–" for v in g["rank"].astype(float))
        for r, g in d.groupby("region", sort=False)
    }


def _rank_by(df: pd.DataFrame) -> str:
    """``regions.rank_by`` of a region table (``signed`` for tables without the column)."""
    return str(df["rank_by"].iloc[0]) if "rank_by" in df and len(df) else "signed"


def _ranked(df: pd.DataFrame) -> pd.DataFrame:
    """``mean`` and ``sd`` replaced by the ranking statistic (what the bar chart draws)."""
    stat = RANK_STATS.get(_rank_by(df), "mean")
    sd = "sd_abs" if stat == "mean_abs" else "sd"
    return df.assign(mean=df[stat], sd=df[sd] if sd in df else df["sd"])


def _region_table_html(df: pd.DataFrame, fold_ranks: dict[str, str], highlight: pd.Series) -> str:
    top = df.head(TOP_N)
    rows, classes = [], []
    for i, r in top.iterrows():
        rows.append(
            {
                "rank": fmt(r.get("rank"), 0) if "rank" in r else "",
                "region": str(r["region"]),
                "mean |r|": fmt(r.get("mean_abs"), 4),
                "mean (signed)": fmt(r.get("mean"), 4),
                "classes differ in sign": "yes" if bool(r.get("sign_conflict", False)) else "",
                "SD": fmt(r.get("sd_abs" if _rank_by(df) == "abs" else "sd"), 4),
                "rank over folds (mean ± SD)": f"{fmt(r.get('rank_mean'), 1)} ± {fmt(r.get('rank_sd'), 1)}",
                "in top 10 of folds": fmt_pct(r.get("top10_share")),
                "rank per fold": fold_ranks.get(str(r["region"]), "–"),
                "voxels": fmt(r.get("n_voxels"), 0),
            }
        )
        classes.append("good" if bool(highlight.loc[i]) else "")
    return table(
        pd.DataFrame(rows),
        text_columns=["region", "rank per fold"],
        row_class=classes,
        caption_html=f"Top {len(top)} regions by {_STAT_TEXT[_rank_by(df)]} (mean over folds "
        "of the region's voxel mean; <i>SD</i> of that statistic over folds). <i>Mean |r|</i>: "
        "mean |relevance|; <i>mean (signed)</i>: positive = evidence for the explained class; "
        "<i>classes differ in sign</i>: the classes' signed means have opposite signs, so the "
        "all-scans signed mean averages opposite evidence. <i>Rank over folds</i> and <i>in top 10 of folds</i> measure "
        "stability: a region that is highly ranked in every fold is a robust finding; one that "
        "is high in a single fold is not. Green row: the planted region (synthetic data).",
    )


_STAT_TEXT = {
    "abs": "mean |relevance| (<code>regions.rank_by: abs</code>)",
    "signed": "mean signed relevance (<code>regions.rank_by: signed</code>)",
}
#: Region-table "methods" that are not attribution maps, with what they are.
_NOT_MAPS = {
    "pattern": " This is the linear baseline's activation pattern (Haufe et al. 2014): the "
    "covariance of each voxel with the model's decision score on the fold's training part, "
    "one map per fold (positive: more tissue in the positive class), not a per-scan "
    "attribution; compare its ranking with the CNN's."
}


def _agreement_html(
    agree: pd.DataFrame | None, model: str, atlas: str, writer: plots.FigureWriter
) -> list[str]:
    """The method-agreement figure of one model and atlas; nothing without the table."""
    if agree is None or not len(agree):
        return []
    agree = agree.set_index(agree.columns[0])
    agree.index = agree.index.astype(str)
    src = writer.save(
        plots.agreement_figure(agree, f"{model}, {atlas}"), f"agreement_{model}_{atlas}"
    )
    return [
        figure(
            src,
            "<b>Agreement between methods</b>: Spearman rank correlation of the "
            f"region rankings of two methods ({esc(atlas)} regions). Near 1: the two "
            "methods order regions alike; near 0: unrelated. Findings shared by "
            "several methods that pass the sanity checks are the most credible.",
            f"method agreement {model} {atlas}",
        )
    ]


def _method_regions_html(
    df: pd.DataFrame,
    key: tuple[str, str, str],
    fold_ranks: dict[str, str],
    check: MethodCheck | None,
    ground_truth: Mapping[str, Any] | None,
    facts: RegionFacts,
    writer: plots.FigureWriter,
) -> list[str]:
    """Heading, top-regions figure and table of one (model, method, atlas) region table.

    ``df`` is the ranked table; its top regions, and the planted region's rank when
    ``ground_truth`` names this atlas, are recorded in ``facts``.
    """
    model, method, atlas = key
    facts.tables[key] = df
    facts.top[key] = [str(r) for r in df["region"].head(5)]
    hl = (
        _gt_row(df, ground_truth)
        if ground_truth and ground_truth.get("atlas") == atlas
        else pd.Series(False, index=df.index)
    )
    gt_name = None
    if hl.any():
        gt_name = str(df.loc[hl, "region"].iloc[0])
        rank = df.loc[hl, "rank"].iloc[0] if "rank" in df else df.index[hl][0] + 1
        facts.gt_rank[(model, method)] = int(rank)
        facts.gt_n[(model, method)] = len(df)
    src = writer.save(
        plots.region_bar_figure(_ranked(df.head(TOP_N)), f"{model}, {method}, {atlas}", gt_name),
        f"regions_{model}_{method}_{atlas}",
    )
    gt_txt = (
        f" The planted region {esc(gt_name)} (vermilion) is ranked "
        f"{facts.gt_rank[(model, method)]} of {len(df)}."
        if gt_name
        else ""
    )
    return [
        f"<h5>{esc(method)}{_flag(check)}</h5>",
        figure(
            src,
            f"<b>Top {min(TOP_N, len(df))} {esc(atlas)} regions</b> for "
            f"{esc(method)} (model {esc(model)}), by "
            f"{_STAT_TEXT[_rank_by(df)]} over folds; error bars: SD over folds."
            f"{gt_txt}{_NOT_MAPS.get(method, '')}",
            f"top regions {model} {method} {atlas}",
        ),
        "<details><summary>Table of the top regions</summary>"
        + _region_table_html(df, fold_ranks, hl)
        + "</details>",
    ]


def regions_section(
    models: list[str],
    methods: list[str],
    atlases: list[str],
    region_tables: Mapping[tuple, Path],
    region_fold_tables: Mapping[tuple, Path],
    agreement_tables: Mapping[tuple, Path],
    checks: Mapping[tuple[str, str], MethodCheck],
    ground_truth: Mapping[str, Any] | None,
    writer: plots.FigureWriter,
) -> tuple[Section, RegionFacts]:
    """Section 6: top regions per model, method and atlas; agreement between methods."""
    sec = Section("regions", "Regions")
    facts = RegionFacts()
    rank_bys: set[str] = set()
    for model in models:
        msub = Section(slug("regions", model), f"Regions of model {model}", level=3)
        for atlas in atlases:
            asub = Section(slug("regions", model, atlas), f"Atlas {atlas}", level=4)
            agree = read_tsv(agreement_tables.get((model, atlas)))
            body = _agreement_html(agree, model, atlas, writer)
            for method in methods:
                df = read_tsv(
                    region_tables.get((model, method, atlas)), required=("region", "mean")
                )
                if df is None:
                    continue
                df = df.sort_values("rank" if "rank" in df else "mean", ascending="rank" in df)
                df = df.reset_index(drop=True)
                rank_bys.add(_rank_by(df))
                key = (model, method, atlas)
                fold_ranks = _fold_ranks(read_tsv(region_fold_tables.get(key)))
                body += _method_regions_html(
                    df, key, fold_ranks, checks.get((model, method)), ground_truth, facts, writer
                )
            if not body:
                continue
            asub.body = "\n".join(body)
            msub.children.append(asub)
        if not msub.children:
            msub.body = note(f"No region tables for model {esc(model)}.", "warn")
        sec.children.append(msub)
    stats = " and ".join(_STAT_TEXT[r] for r in sorted(rank_bys)) or _STAT_TEXT["abs"]
    sec.body = (
        "<p>Relevance maps summarised per atlas region: each scan's map is scaled so that its "
        "|relevance| sums to 1 inside the atlas, the region's voxel mean is averaged over the "
        f"fold's scans, then over folds. Regions are ranked by {stats} (1 = most relevant); "
        "the tables give both the mean |relevance| and the signed mean (positive = evidence for "
        "the explained class), for all scans and per class.</p>"
    )
    return sec, facts


def consensus_regions(
    facts: RegionFacts,
    model: str,
    atlas: str,
    methods: list[str],
    checks: Mapping[tuple[str, str], MethodCheck],
    n: int = 3,
) -> tuple[list[str], list[str]]:
    """Regions with the best mean rank over the methods whose maps can be interpreted.

    A method counts when it passes the randomisation check and is not marked not
    faithful (its deletion and insertion curves beat a random order); when none does,
    the methods that pass randomisation; when none of those, all available ones.

    Returns
    -------
    regions : list of str
        Up to ``n`` region names.
    used : list of str
        The methods averaged.
    """
    avail = [m for m in methods if (model, m, atlas) in facts.tables]
    check = {m: checks.get((model, m), MethodCheck(model, m)) for m in avail}
    passing = [m for m in avail if not check[m].fails]
    faithful = [m for m in passing if not check[m].not_faithful]
    used = faithful or passing or avail
    if not used:
        return [], []
    ranks = []
    for m in used:
        df = facts.tables[(model, m, atlas)]
        r = df["rank"] if "rank" in df else pd.Series(range(1, len(df) + 1), index=df.index)
        ranks.append(pd.Series(r.to_numpy(float), index=df["region"].astype(str), name=m))
    mean_rank = pd.concat(ranks, axis=1).mean(axis=1).sort_values()
    return [str(r) for r in mean_rank.index[:n]], used


__all__ = ["RegionFacts", "consensus_regions", "maps_section", "regions_section"]
