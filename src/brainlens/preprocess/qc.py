"""Quality control of the preprocessing: per-scan metrics, figure, dataset table.

The dataset-level BIDS files (``dataset_description.json``, ``.bidsignore``) are
:mod:`brainlens.preprocess.description`'s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens._io import atomic_output
from brainlens.derivatives import scan_of
from brainlens.preprocess import core

#: Metrics of the ``qc_json`` files that :func:`qc_table` flags with robust z-scores.
QC_METRICS = (
    "tiv_ml",
    "gm_ml",
    "wm_ml",
    "csf_ml",
    "corr_template",
    "dice_template_mask",
    "jac_min",
    "jac_max",
    "jac_frac_nonpos",
)
#: Columns copied into the QC table without an outlier flag (run time is no quality).
QC_INFO = ("seconds",)
OUTLIER_Z = 3.5


def registration_metrics(
    std_t1w: Path, template: Path, template_mask: Path, brain_mask: Path, tpl_mask_native: Path
) -> dict[str, float]:
    """Registration QC: template correlation and mask Dice.

    Parameters
    ----------
    std_t1w : Path
        The scan's brain T1w on the MNI grid.
    template, template_mask : Path
        Template T1w and its brain mask (same grid).
    brain_mask : Path
        The scan's native brain mask.
    tpl_mask_native : Path
        The template brain mask carried into native space.

    Returns
    -------
    dict
        ``corr_template`` (Pearson r inside the template mask) and
        ``dice_template_mask``.
    """
    m = np.asarray(nib.load(template_mask).dataobj) > 0
    r = core.masked_corr(
        np.asarray(nib.load(std_t1w).dataobj), np.asarray(nib.load(template).dataobj), m
    )
    d = core.dice(
        np.asarray(nib.load(brain_mask).dataobj) > 0,
        np.asarray(nib.load(tpl_mask_native).dataobj) > 0,
    )
    return {"corr_template": r, "dice_template_mask": d}


def jacobian_metrics(jacobian: Path, template_mask: Path) -> dict[str, float]:
    """Folding QC of det(J) inside the template brain mask (min, max, fraction <= 0)."""
    j = np.asarray(nib.load(jacobian).dataobj, np.float64)
    m = np.asarray(nib.load(template_mask).dataobj) > 0
    v = j[m]
    return {
        "jac_min": float(v.min()),
        "jac_max": float(v.max()),
        "jac_frac_nonpos": float((v <= 0).mean()),
    }


def qc_figure(
    std_t1w: Path, std_probseg: dict[str, Path], template_mask: Path, out_png: Path, title: str
) -> Path:
    """Three orthogonal MNI slices of the T1w with GM/WM (0.5) and template-mask contours.

    Parameters
    ----------
    std_t1w : Path
        Brain T1w on the MNI grid.
    std_probseg : dict of str to Path
        ``{"GM": ..., "WM": ...}`` maps on the same grid.
    template_mask : Path
        Template brain mask (drawn in yellow).
    out_png : Path
        Output PNG.
    title : str
        Figure title.

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t1 = np.asarray(nib.load(std_t1w).dataobj, np.float32)
    maps = {k: np.asarray(nib.load(p).dataobj, np.float32) for k, p in std_probseg.items()}
    tm = np.asarray(nib.load(template_mask).dataobj, np.float32)
    c = [s // 2 for s in t1.shape]
    c[2] = int(t1.shape[2] * 0.55)
    vmax = np.percentile(t1[t1 > 0], 99) if (t1 > 0).any() else 1.0
    colors = {"GM": "tab:red", "WM": "tab:cyan", "CSF": "tab:green"}
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8), facecolor="black")
    for ax, axis in zip(axes, range(3), strict=True):
        sl = [slice(None)] * 3
        sl[axis] = c[axis]
        ax.imshow(np.rot90(t1[tuple(sl)]), cmap="gray", vmin=0, vmax=vmax)
        for k, m in maps.items():
            ax.contour(
                np.rot90(m[tuple(sl)]), levels=[0.5], colors=colors.get(k, "w"), linewidths=0.6
            )
        ax.contour(np.rot90(tm[tuple(sl)]), levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_axis_off()
    fig.suptitle(f"{title}  (GM red, WM cyan, template mask yellow)", color="w", fontsize=9)
    fig.tight_layout()
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, dpi=80, facecolor="black")
    plt.close(fig)
    return Path(out_png)


def _entities(scan: str) -> tuple[str, str]:
    sub = re.search(r"sub-([A-Za-z0-9]+)", scan)
    ses = re.search(r"ses-([A-Za-z0-9]+)", scan)
    return (f"sub-{sub.group(1)}" if sub else "", f"ses-{ses.group(1)}" if ses else "")


def qc_table(qc_jsons: list[Path], out_tsv: Path) -> pd.DataFrame:
    """Collect per-scan QC JSONs into one TSV with robust-z outlier flags.

    Parameters
    ----------
    qc_jsons : list of Path
        ``qc_json`` files (:data:`brainlens.derivatives.DERIVATIVES`) written by
        :func:`run_t1w_preproc`.
    out_tsv : Path
        Output table.

    Returns
    -------
    DataFrame
        One row per scan: ``scan``, ``participant_id``, ``session_id`` (empty without
        sessions), every metric of :data:`QC_METRICS` present, ``<metric>_outlier``
        (|robust z| > 3.5, robust z = (x - median) / (1.4826 MAD); False where MAD = 0)
        and ``any_outlier``.
    """
    rows = []
    for p in qc_jsons:
        d = json.loads(Path(p).read_text())
        scan = d.get("scan") or scan_of(p, "qc_json")
        sub, ses = _entities(scan)
        row = {"scan": scan, "participant_id": sub, "session_id": ses}
        row |= {m: d.get(m, np.nan) for m in (*QC_METRICS, *QC_INFO)}
        rows.append(row)
    df = pd.DataFrame(rows, columns=["scan", "participant_id", "session_id", *QC_METRICS, *QC_INFO])
    flags = []
    for m in QC_METRICS:
        z = core.robust_z(df[m].to_numpy(dtype=float))
        df[f"{m}_outlier"] = np.abs(np.nan_to_num(z)) > OUTLIER_Z
        flags.append(f"{m}_outlier")
    df["any_outlier"] = df[flags].any(axis=1) if len(df) else pd.Series(dtype=bool)
    out_tsv = Path(out_tsv)
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return df
