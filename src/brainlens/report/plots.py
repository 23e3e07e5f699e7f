"""Matplotlib figures of the report (performance, regions, sanity checks).

Colours: the Okabe-Ito palette for categories, viridis / RdBu for continuous
values (both readable with common colour-vision deficiencies).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from brainlens.report.html import relpath  # noqa: E402

#: Okabe & Ito (2008) colour-blind-safe categorical palette.
OKABE_ITO = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)
DPI = 90


def colour(i: int) -> str:
    """The i-th categorical colour (cycling)."""
    return OKABE_ITO[i % len(OKABE_ITO)]


class FigureWriter:
    """Saves figures into the report's figure folder and returns page-relative links.

    Parameters
    ----------
    figures_dir : Path
        Folder for the PNGs (created).
    html_dir : Path
        Folder of the HTML page; links are relative to it.
    """

    def __init__(self, figures_dir: Path, html_dir: Path) -> None:
        self.figures_dir = Path(figures_dir)
        self.html_dir = Path(html_dir)
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def path(self, name: str) -> Path:
        """A file name in the figure folder, made safe (``[A-Za-z0-9_.-]``)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        return self.figures_dir / safe

    def save(self, fig: Figure, name: str, dpi: int = DPI) -> str:
        """Write ``fig`` as PNG, close it, and return its link relative to the page."""
        out = self.path(name if name.endswith(".png") else name + ".png")
        fig.savefig(out, dpi=dpi, bbox_inches="tight", facecolor=fig.get_facecolor())
        plt.close(fig)
        self.written.append(out)
        return relpath(out, self.html_dir)


def _class_columns(pred: pd.DataFrame) -> list[str]:
    return [c for c in pred.columns if c.startswith("prob_")]


def roc_figure(
    predictions: Mapping[str, pd.DataFrame], positive_class: str | None = None
) -> Figure | None:
    """ROC curves per fold (thin) and pooled over folds (thick).

    Parameters
    ----------
    predictions : dict fold -> DataFrame
        ``predictions.tsv`` tables (``label``, ``prob_<class>``); the class order is the
        order of the ``prob_`` columns.
    positive_class : str, optional
        With two classes, the class whose ROC curve is drawn; None: the second.

    Returns
    -------
    Figure or None
        None when no fold has both classes.
    """
    frames = [df for df in predictions.values() if df is not None and len(df)]
    if not frames:
        return None
    classes = [c[5:] for c in _class_columns(frames[0])]
    if len(classes) < 2:
        return None
    if len(classes) == 2:
        targets = [positive_class if positive_class in classes else classes[1]]
    else:
        targets = classes
    fig, axes = plt.subplots(1, len(targets), figsize=(4.4 * len(targets), 4.2), squeeze=False)
    pooled = pd.concat(frames, ignore_index=True)
    drawn = False
    for ax, target in zip(axes[0], targets, strict=True):
        for i, (fold, df) in enumerate(predictions.items()):
            if df is None or not len(df):
                continue
            y = (df["label"].astype(str) == target).to_numpy()
            if y.all() or not y.any():
                continue
            fpr, tpr, _ = skm.roc_curve(y, df[f"prob_{target}"].to_numpy(float))
            ax.plot(fpr, tpr, lw=1, alpha=0.55, color=colour(i + 1), label=f"fold {fold}")
        y = (pooled["label"].astype(str) == target).to_numpy()
        if y.any() and not y.all():
            score = pooled[f"prob_{target}"].to_numpy(float)
            fpr, tpr, _ = skm.roc_curve(y, score)
            auc = skm.roc_auc_score(y, score)
            ax.plot(fpr, tpr, lw=2.6, color=colour(0), label=f"pooled (AUC {auc:.2f})")
            drawn = True
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false positive rate (1 - specificity)",
            ylabel="true positive rate (sensitivity)",
            title=f"{target} vs rest" if len(targets) > 1 else f"positive class: {target}",
        )
        ax.set_aspect("equal")
        ax.legend(fontsize=7.5, loc="lower right", frameon=False)
    fig.tight_layout()
    if not drawn:
        plt.close(fig)
        return None
    return fig


def confusion_figure(cm: np.ndarray, classes: Sequence[str]) -> Figure:
    """Confusion matrix (rows true, columns predicted) with counts and row percentages."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.3 * k + 2.2, 1.1 * k + 1.6))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n({100 * share[i, j]:.0f}%)",
                ha="center",
                va="center",
                fontsize=10,
                color="white" if share[i, j] > 0.55 else "black",
            )
    ax.set_xticks(range(k), classes)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.tight_layout()
    return fig


def learning_curves_figure(
    histories: Mapping[str, pd.DataFrame], best_epochs: Mapping[str, int | None]
) -> Figure | None:
    """Training/validation loss per fold and, if recorded, validation balanced accuracy."""
    hs = {f: h for f, h in histories.items() if h is not None and "epoch" in h and len(h)}
    if not hs:
        return None
    has_bacc = any("val_balanced_accuracy" in h for h in hs.values())
    fig, axes = plt.subplots(
        1, 2 if has_bacc else 1, figsize=(10 if has_bacc else 5.5, 3.6), squeeze=False
    )
    ax = axes[0][0]
    for i, (fold, h) in enumerate(hs.items()):
        c = colour(i)
        if "train_loss" in h:
            ax.plot(h["epoch"], h["train_loss"], color=c, lw=1.4, label=f"fold {fold} train")
        if "val_loss" in h:
            ax.plot(h["epoch"], h["val_loss"], color=c, lw=1.4, ls="--", label=f"fold {fold} val")
        best = best_epochs.get(fold)
        if best is not None:
            ax.axvline(best, color=c, lw=0.8, ls=":")
    ax.set(xlabel="epoch", ylabel="loss", title="loss (solid: train, dashed: validation)")
    ax.legend(fontsize=7, ncol=2, frameon=False)
    if has_bacc:
        ax = axes[0][1]
        for i, (fold, h) in enumerate(hs.items()):
            if "val_balanced_accuracy" in h:
                ax.plot(
                    h["epoch"],
                    h["val_balanced_accuracy"],
                    color=colour(i),
                    lw=1.4,
                    label=f"fold {fold}",
                )
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set(
            xlabel="epoch",
            ylabel="balanced accuracy",
            ylim=(0, 1.02),
            title="validation balanced accuracy",
        )
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def region_bar_figure(top: pd.DataFrame, title: str, highlight: str | None = None) -> Figure:
    """Horizontal bars of the top regions' mean relevance with SD error bars.

    Parameters
    ----------
    top : DataFrame
        Rows in rank order with ``region``, ``mean``, ``sd``.
    title : str
    highlight : str, optional
        A region name drawn in another colour (the planted region).
    """
    n = len(top)
    fig, ax = plt.subplots(figsize=(7.2, 0.27 * n + 1.3))
    y = np.arange(n)[::-1]
    names = [str(r) for r in top["region"]]
    colours = [OKABE_ITO[5] if r == highlight else OKABE_ITO[0] for r in names]
    sd = np.nan_to_num(top["sd"].to_numpy(float)) if "sd" in top else None
    ax.barh(
        y,
        top["mean"].to_numpy(float),
        xerr=sd,
        color=colours,
        alpha=0.9,
        error_kw={"lw": 1, "capsize": 2, "ecolor": "#333"},
    )
    ax.set_yticks(y, names, fontsize=8.5)
    for lab in ax.get_yticklabels():
        if lab.get_text() == highlight:
            lab.set_color(OKABE_ITO[5])
            lab.set_fontweight("bold")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("mean relevance in the region (bars: mean over folds, lines: SD)", fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def agreement_figure(matrix: pd.DataFrame, title: str) -> Figure:
    """Heatmap of a square method-by-method rank-correlation matrix, values printed."""
    m = matrix.to_numpy(float)
    k = len(matrix)
    fig, ax = plt.subplots(figsize=(0.75 * k + 2.6, 0.6 * k + 1.8))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(k):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(m[i, j]) > 0.6 else "black",
                )
    ax.set_xticks(
        range(m.shape[1]), [str(c) for c in matrix.columns], rotation=40, ha="right", fontsize=8.5
    )
    ax.set_yticks(range(k), [str(c) for c in matrix.index], fontsize=8.5)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Spearman rank correlation")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def deletion_figure(curves: Mapping[str, pd.DataFrame]) -> Figure | None:
    """Mean deletion curves per method (most relevant voxels first vs random order).

    Parameters
    ----------
    curves : dict method -> DataFrame
        Deletion tables (``curve``, ``fraction``, ``score``); the band is the SD over scans.
    """
    need = {"curve", "fraction", "score"}
    ok = {m: d for m, d in curves.items() if d is not None and need <= set(d.columns) and len(d)}
    if not ok:
        return None
    n = len(ok)
    ncol = min(n, 4)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.3 * ncol, 2.9 * nrow), squeeze=False, sharey=True
    )
    styles = {
        "relevance": (OKABE_ITO[0], "-", "most relevant first"),
        "random": (OKABE_ITO[1], "--", "random order"),
    }
    for ax, (method, deletion) in zip(axes.ravel(), ok.items(), strict=False):
        for i, (curve, d) in enumerate(deletion.groupby("curve", sort=True)):
            c, ls, lab = styles.get(str(curve), (colour(i + 2), "-.", str(curve)))
            g = d.groupby("fraction")["score"]
            mean, sd = g.mean(), g.std(ddof=1).fillna(0)
            x = mean.index.to_numpy(float)
            ax.plot(x, mean.to_numpy(), color=c, ls=ls, lw=2, label=lab)
            ax.fill_between(
                x, (mean - sd).to_numpy(), (mean + sd).to_numpy(), color=c, alpha=0.15, lw=0
            )
        ax.set_title(str(method), fontsize=9.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("fraction of voxels deleted", fontsize=8.5)
    for row in axes:
        row[0].set_ylabel("P(target class)", fontsize=8.5)
    axes[0][0].legend(frameon=False, fontsize=7.5, loc="lower left")
    fig.tight_layout()
    return fig


def randomization_figure(
    values: Mapping[str, np.ndarray], threshold: float | None
) -> Figure | None:
    """Strip plot of |Spearman rho| between trained-model and randomised-model maps per method."""
    vals = {m: np.abs(np.asarray(v, float)) for m, v in values.items()}
    vals = {m: v[np.isfinite(v)] for m, v in vals.items()}
    vals = {m: v for m, v in vals.items() if v.size}
    if not vals:
        return None
    fig, ax = plt.subplots(figsize=(1.0 * len(vals) + 2.8, 3.4))
    rng = np.random.default_rng(0)
    for i, v in enumerate(vals.values()):
        x = i + rng.uniform(-0.15, 0.15, v.size)
        ax.scatter(x, v, s=16, color=colour(i), alpha=0.75, edgecolor="none")
        ax.plot([i - 0.3, i + 0.3], [np.median(v)] * 2, color="black", lw=2)
    if threshold is not None:
        ax.axhline(threshold, color=OKABE_ITO[5], ls="--", lw=1.2, label=f"threshold {threshold:g}")
        ax.legend(frameon=False, fontsize=8, loc="upper right")
    ax.set_xticks(range(len(vals)), list(vals), rotation=30, ha="right")
    ax.set_ylabel("|Spearman ρ| trained vs random model")
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    return fig


def save_if(writer: FigureWriter, fig: Figure | None, name: str) -> str | None:
    """Save ``fig`` when it exists; the link or None."""
    return None if fig is None else writer.save(fig, name)


__all__ = [
    "OKABE_ITO",
    "FigureWriter",
    "agreement_figure",
    "confusion_figure",
    "deletion_figure",
    "learning_curves_figure",
    "randomization_figure",
    "region_bar_figure",
    "roc_figure",
    "save_if",
]
