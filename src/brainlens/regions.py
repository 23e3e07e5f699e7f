"""Atlas-region relevance tables across folds, classes and methods.

For every relevance map (one test scan, one fold, one method) the relevance is first
normalised so that each scan weighs the same: the map is divided by the sum of its
absolute values over the atlas's labelled voxels. Then, per region:

``mean``
    mean normalised relevance over the region's voxels (the ranking statistic:
    "how relevant is a voxel of this region", independent of region size);
``sum``
    total normalised relevance in the region;
``density``
    ``sum`` divided by the total over all regions: the share of the map's mass.

Per fold, the statistics of the fold's scans are averaged (all scans, and per true
class). Across folds the table gives ``mean`` and ``sd`` of the fold values, the
``rank`` of the across-fold mean (1 = most relevant; ties share the worst rank), and the rank's stability:
``rank_mean``, ``rank_sd`` and ``top10_share`` (share of folds in which the region is
among the 10 most relevant).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens.errors import InputFileError


def region_stats(relevance: np.ndarray, labels: np.ndarray, label_ids: np.ndarray) -> pd.DataFrame:
    """Per-region mean, sum and density of one normalised relevance map.

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
        Index ``label``; columns ``mean``, ``sum``, ``density``.
    """
    if relevance.shape != labels.shape:
        raise ValueError(f"relevance shape {relevance.shape} != atlas shape {labels.shape}")
    rel = np.nan_to_num(relevance.astype(np.float64))
    inside = labels > 0
    scale = np.abs(rel[inside]).sum()
    rel = rel / scale if scale > 0 else rel
    n = int(max(labels.max(), label_ids.max())) + 1
    sums = np.bincount(labels[inside], weights=rel[inside], minlength=n)
    counts = np.bincount(labels[inside], minlength=n)
    sums, counts = sums[label_ids], counts[label_ids]
    total = sums.sum()
    return pd.DataFrame(
        {
            "mean": np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0),
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

    Returns
    -------
    pandas.DataFrame
        Long table: ``fold, class, region, label, mean, sum, density, rank``
        (``class`` is ``"all"`` or a class name).
    """
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
        stats["rank"] = _ranks(stats["mean"])
        rows.append(stats)
    return pd.concat(rows, ignore_index=True)


def summarize_regions(fold_tables: pd.DataFrame, label_table: pd.DataFrame) -> pd.DataFrame:
    """Across-fold region table, ranked.

    Parameters
    ----------
    fold_tables : pandas.DataFrame
        Concatenated :func:`fold_region_table` outputs.
    label_table : pandas.DataFrame
        ``index``, ``name`` and optionally ``n_voxels``.

    Returns
    -------
    pandas.DataFrame
        One row per region, sorted by ``rank``: ``region, label, n_voxels, rank,
        mean, sd, sum, density, rank_mean, rank_sd, top10_share, n_folds`` and per
        class ``mean_class-<c>``, ``rank_class-<c>``.
    """
    allc = fold_tables[fold_tables["class"] == "all"]
    g = allc.groupby("label")
    out = pd.DataFrame(
        {
            "mean": g["mean"].mean(),
            "sd": g["mean"].std(ddof=1).fillna(0.0),
            "sum": g["sum"].mean(),
            "density": g["density"].mean(),
            "rank_mean": g["rank"].mean(),
            "rank_sd": g["rank"].std(ddof=1).fillna(0.0),
            "top10_share": g["rank"].apply(lambda r: float((r <= 10).mean())),
            "n_folds": g["fold"].nunique(),
        }
    )
    for cls in sorted(set(fold_tables["class"]) - {"all"}):
        sub = fold_tables[fold_tables["class"] == cls].groupby("label")["mean"].mean()
        out[f"mean_class-{cls}"] = sub
        out[f"rank_class-{cls}"] = _ranks(sub.reindex(out.index).fillna(-np.inf))
    out["rank"] = _ranks(out["mean"])
    meta = label_table.set_index("index")
    out.insert(0, "region", meta.loc[out.index, "name"].to_numpy())
    if "n_voxels" in meta:
        out.insert(1, "n_voxels", meta.loc[out.index, "n_voxels"].to_numpy())
    out = out.reset_index().sort_values(["rank", "label"])
    first = (
        ["region", "label", "n_voxels", "rank"]
        if "n_voxels" in out
        else ["region", "label", "rank"]
    )
    return out[first + [c for c in out.columns if c not in first]].reset_index(drop=True)


def write_region_tables(
    attribution_tables: Sequence[str | Path],
    *,
    atlas_nii: Path,
    atlas_tsv: Path,
    out_tsv: Path,
    out_folds_tsv: Path,
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
    """
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


def method_agreement(tables: dict[str, str | Path]) -> pd.DataFrame:
    """Spearman rank correlation of region means between methods.

    Parameters
    ----------
    tables : dict of method name to region-table path (one atlas)

    Returns
    -------
    pandas.DataFrame
        Square, methods as index and columns.
    """
    means = {m: pd.read_csv(p, sep="\t").set_index("label")["mean"] for m, p in tables.items()}
    frame = pd.DataFrame(means)
    return frame.rank().corr(method="pearson")
