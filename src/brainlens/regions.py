"""Atlas-region relevance tables across folds, classes and methods.

For every relevance map (one test scan, one fold, one method) the relevance is first
normalised so that each scan weighs the same: the map is divided by the sum of its
absolute values over the atlas's labelled voxels (so a scan's |relevance| sums to 1
inside the atlas, and the signed values keep their signs). Then, per region:

``mean``
    mean normalised (signed) relevance over the region's voxels: "how relevant is a
    voxel of this region", independent of region size; positive = evidence for the
    explained class (``attribution.target``, the scan's true class by default);
``mean_abs``
    mean normalised |relevance| over the region's voxels (equal to ``mean`` for
    non-negative methods: gradients, guided backprop, Grad-CAM, CAM);
``sum``
    total normalised relevance in the region;
``density``
    ``sum`` divided by the total over all regions: the share of the map's mass.

Per fold, the statistics of the fold's scans are averaged (all scans, and per true
class). Across folds the table gives ``mean``/``mean_abs`` and ``sd``/``sd_abs`` of the
fold values, the ``rank`` of the across-fold mean (1 = most relevant; ties share the
worst rank), and the rank's stability: ``rank_mean``, ``rank_sd`` and ``top10_share``
(share of folds in which the region is among the 10 most relevant).

**Ranking statistic** (``regions.rank_by``, written into every table's ``rank_by``
column). ``abs`` (default) ranks by ``mean_abs``: a region matters whether its tissue
argues for or against the class, so signed methods and non-negative ones rank alike
and the ``all`` row never lets two classes' opposite signs cancel. ``signed`` ranks by
``mean``: "evidence for the explained class". With ``attribution.target: true_class``
(or ``predicted``) every scan's map is "for its own decision", so averaging patients
and controls in the ``all`` row is averaging one quantity; with a fixed target class
it mixes "for" (one class) and "against" (the other). Either way the summary's
``sign_conflict`` column marks the regions whose per-class signed means have opposite
signs (each larger than 1 % of the region's mean |relevance|), so no average over
opposite-signed classes goes unnoticed; the report repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens.errors import ConfigError, InputFileError

#: ``regions.rank_by`` -> the column a region is ranked by.
RANK_STATS = {"abs": "mean_abs", "signed": "mean"}
#: A class's signed mean counts as non-zero above this share of the region's mean |relevance|.
SIGN_TOLERANCE = 0.01


def rank_column(rank_by: str) -> str:
    """The statistic ranked by ``regions.rank_by`` (``abs`` -> ``mean_abs``, ``signed`` -> ``mean``)."""
    if rank_by not in RANK_STATS:
        raise ConfigError(f"regions.rank_by: expected one of {list(RANK_STATS)}, got {rank_by!r}")
    return RANK_STATS[rank_by]


def region_stats(relevance: np.ndarray, labels: np.ndarray, label_ids: np.ndarray) -> pd.DataFrame:
    """Per-region mean, mean |.|, sum and density of one normalised relevance map.

    Parameters
    ----------
    relevance : ndarray, shape (X, Y, Z)
    labels : ndarray of int, shape (X, Y, Z)
        Atlas on the same grid (0 = background).
    label_ids : ndarray of int, shape (R,)
        Regions to report, in order.

    Returns
    -------
    pandas.DataFrame
        Index ``label``; columns ``mean``, ``mean_abs``, ``sum``, ``density``.
    """
    if relevance.shape != labels.shape:
        raise ValueError(f"relevance shape {relevance.shape} != atlas shape {labels.shape}")
    rel = np.nan_to_num(relevance.astype(np.float64))
    inside = labels > 0
    scale = np.abs(rel[inside]).sum()
    rel = rel / scale if scale > 0 else rel
    n = int(max(labels.max(), label_ids.max())) + 1
    sums = np.bincount(labels[inside], weights=rel[inside], minlength=n)
    abs_sums = np.bincount(labels[inside], weights=np.abs(rel[inside]), minlength=n)
    counts = np.bincount(labels[inside], minlength=n)
    sums, abs_sums, counts = sums[label_ids], abs_sums[label_ids], counts[label_ids]
    total = sums.sum()
    return pd.DataFrame(
        {
            "mean": np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0),
            "mean_abs": np.divide(abs_sums, counts, out=np.zeros_like(sums), where=counts > 0),
            "sum": sums,
            "density": sums / total if total != 0 else np.zeros_like(sums),
        },
        index=pd.Index(label_ids, name="label"),
    )


def _ranks(values: pd.Series) -> pd.Series:
    # ties share the worst rank: regions of a constant (e.g. all-zero) map all rank last,
    # so a fold whose map carries no information cannot lift a region to the top
    return values.rank(ascending=False, method="max").astype(int)


def fold_region_table(
    maps: Sequence[np.ndarray | str | Path],
    classes: Sequence[str],
    *,
    labels: np.ndarray,
    label_table: pd.DataFrame,
    fold: int,
    rank_by: str = "abs",
) -> pd.DataFrame:
    """Region statistics of one fold, for all scans and per class.

    Parameters
    ----------
    maps : sequence of arrays (X, Y, Z) or NIfTI paths
        The fold's per-scan relevance maps.
    classes : sequence of str
        The true class of each scan.
    labels : ndarray of int, shape (X, Y, Z)
    label_table : pandas.DataFrame
        ``index`` (label value) and ``name``.
    fold : int
    rank_by : {"abs", "signed"}
        Rank by ``mean_abs`` or by ``mean`` (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        Long table: ``fold, class, region, label, mean, mean_abs, sum, density, rank,
        rank_by`` (``class`` is ``"all"`` or a class name).
    """
    stat = rank_column(rank_by)
    ids = label_table["index"].to_numpy(dtype=int)
    names = dict(zip(label_table["index"], label_table["name"], strict=True))
    per_scan = []
    for item in maps:
        arr = np.asanyarray(nib.load(str(item)).dataobj) if isinstance(item, str | Path) else item
        per_scan.append(region_stats(np.asarray(arr), labels, ids))
    if not per_scan:
        raise InputFileError(f"fold {fold}", "no relevance maps", "check the attribution step")
    rows = []
    groups = {"all": list(range(len(per_scan)))}
    for c in sorted(set(classes)):
        groups[c] = [i for i, k in enumerate(classes) if k == c]
    for cls, idx in groups.items():
        stats = sum(per_scan[i] for i in idx) / len(idx)
        stats = stats.reset_index()
        stats.insert(0, "class", cls)
        stats.insert(0, "fold", fold)
        stats.insert(2, "region", [names[i] for i in stats["label"]])
        stats["rank"] = _ranks(stats[stat])
        stats["rank_by"] = rank_by
        rows.append(stats)
    return pd.concat(rows, ignore_index=True)


def _table_rank_by(tables: pd.DataFrame) -> str:
    if "rank_by" not in tables:
        return "abs"
    values = sorted(set(tables["rank_by"].astype(str)))
    if len(values) != 1:
        raise ConfigError(
            f"region tables: folds ranked by different statistics {values}. Fix: re-run the "
            "regions rule with one regions.rank_by"
        )
    return values[0]


def summarize_regions(fold_tables: pd.DataFrame, label_table: pd.DataFrame) -> pd.DataFrame:
    """Across-fold region table, ranked by the folds' ``rank_by`` statistic.

    Parameters
    ----------
    fold_tables : pandas.DataFrame
        Concatenated :func:`fold_region_table` outputs (one ``rank_by``; tables without
        that column count as ``abs``).
    label_table : pandas.DataFrame
        ``index``, ``name`` and optionally ``n_voxels``.

    Returns
    -------
    pandas.DataFrame
        One row per region, sorted by ``rank``: ``region, label, n_voxels, rank,
        rank_by, mean, sd, mean_abs, sd_abs, sign_conflict, sum, density, rank_mean,
        rank_sd, top10_share, n_folds`` and per class ``mean_class-<c>``,
        ``mean_abs_class-<c>``, ``rank_class-<c>`` (ranked by the same statistic).
    """
    rank_by = _table_rank_by(fold_tables)
    stat = rank_column(rank_by)
    if "mean_abs" not in fold_tables:  # tables of an older version: signed maps only
        fold_tables = fold_tables.assign(mean_abs=fold_tables["mean"].abs())
    allc = fold_tables[fold_tables["class"] == "all"]
    g = allc.groupby("label")
    out = pd.DataFrame(
        {
            "mean": g["mean"].mean(),
            "sd": g["mean"].std(ddof=1).fillna(0.0),
            "mean_abs": g["mean_abs"].mean(),
            "sd_abs": g["mean_abs"].std(ddof=1).fillna(0.0),
            "sum": g["sum"].mean(),
            "density": g["density"].mean(),
            "rank_mean": g["rank"].mean(),
            "rank_sd": g["rank"].std(ddof=1).fillna(0.0),
            "top10_share": g["rank"].apply(lambda r: float((r <= 10).mean())),
            "n_folds": g["fold"].nunique(),
        }
    )
    class_means = []
    for cls in sorted(set(fold_tables["class"]) - {"all"}):
        sub = fold_tables[fold_tables["class"] == cls].groupby("label")
        out[f"mean_class-{cls}"] = sub["mean"].mean()
        out[f"mean_abs_class-{cls}"] = sub["mean_abs"].mean()
        ranked = out[f"{stat}_class-{cls}"]
        out[f"rank_class-{cls}"] = _ranks(ranked.reindex(out.index).fillna(-np.inf))
        class_means.append(out[f"mean_class-{cls}"])
    tol = SIGN_TOLERANCE * out["mean_abs"]
    if class_means:
        frame = pd.concat(class_means, axis=1)
        out["sign_conflict"] = frame.gt(tol, axis=0).any(axis=1) & frame.lt(-tol, axis=0).any(
            axis=1
        )
    else:
        out["sign_conflict"] = False
    out["rank"] = _ranks(out[stat])
    out["rank_by"] = rank_by
    meta = label_table.set_index("index")
    out.insert(0, "region", meta.loc[out.index, "name"].to_numpy())
    if "n_voxels" in meta:
        out.insert(1, "n_voxels", meta.loc[out.index, "n_voxels"].to_numpy())
    out = out.reset_index().sort_values(["rank", "label"])
    first = ["region", "label", "n_voxels"] if "n_voxels" in out else ["region", "label"]
    first += ["rank", "rank_by", "mean", "sd", "mean_abs", "sd_abs", "sign_conflict"]
    return out[first + [c for c in out.columns if c not in first]].reset_index(drop=True)


def write_region_tables(
    attribution_tables: Sequence[str | Path],
    *,
    atlas_nii: Path,
    atlas_tsv: Path,
    out_tsv: Path,
    out_folds_tsv: Path,
    rank_by: str = "abs",
) -> pd.DataFrame:
    """File level: region tables of one model and method for one atlas.

    Parameters
    ----------
    attribution_tables : sequence of Path
        One per fold, with columns ``fold``, ``scan_id``, ``label`` (true class) and
        ``path`` (the scan's relevance NIfTI).
    atlas_nii, atlas_tsv : Path
        Atlas on the analysis grid and its label table (:func:`brainlens.atlases.write_atlas`).
    out_tsv, out_folds_tsv : Path
        The across-fold table and the long per-fold table.
    rank_by : {"abs", "signed"}
        ``regions.rank_by``: the ranking statistic (see the module docstring).
    """
    rank_column(rank_by)
    labels = np.asanyarray(nib.load(str(atlas_nii)).dataobj).astype(np.int64)
    label_table = pd.read_csv(atlas_tsv, sep="\t")
    per_fold = []
    for tsv in attribution_tables:
        table = pd.read_csv(tsv, sep="\t", dtype={"label": str})
        if table.empty:
            continue
        fold = int(table["fold"].iloc[0])
        per_fold.append(
            fold_region_table(
                list(table["path"]),
                list(table["label"]),
                labels=labels,
                label_table=label_table,
                fold=fold,
                rank_by=rank_by,
            )
        )
    if not per_fold:
        raise InputFileError(
            str(attribution_tables[0]),
            "no relevance maps in any fold",
            "check the attribution step",
        )
    folds = pd.concat(per_fold, ignore_index=True)
    summary = summarize_regions(folds, label_table)
    Path(out_tsv).parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    folds.to_csv(out_folds_tsv, sep="\t", index=False, float_format="%.6g")
    return summary


def ranking_statistic(table: pd.DataFrame) -> pd.Series:
    """The column a region table was ranked by (``mean`` for tables without ``rank_by``)."""
    if "rank_by" in table and len(table):
        return table[rank_column(str(table["rank_by"].iloc[0]))]
    return table["mean"]


def method_agreement(tables: dict[str, str | Path]) -> pd.DataFrame:
    """Spearman rank correlation of the region rankings between methods.

    Each table contributes the statistic it was ranked by (``rank_by``).

    Parameters
    ----------
    tables : dict of method name to region-table path (one atlas)

    Returns
    -------
    pandas.DataFrame
        Square, methods as index and columns.
    """
    stats = {}
    for m, p in tables.items():
        t = pd.read_csv(p, sep="\t")
        stats[m] = ranking_statistic(t).set_axis(t["label"])
    frame = pd.DataFrame(stats)
    return frame.rank().corr(method="pearson")
