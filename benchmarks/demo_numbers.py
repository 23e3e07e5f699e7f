"""Print the numbers the README quotes for the demo, from a finished run's results/.

    python benchmarks/demo_numbers.py [results]

Per model: subject-level test balanced accuracy per fold, its mean with the corrected
resampled t-interval, ROC AUC, the scan-level mean and the mean validation value; per
model and method: the rank of the demo's planted region (AAL ``Temporal_Inf_L``) for
all scans and per class, by the table's ``rank_by`` statistic; per method: the sanity
verdicts (mean, 95 % bootstrap interval, number of scans, PASS/FAIL).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

REGION = "Temporal_Inf_L"
SUMMARY_ROWS = ("mean", "sd", "ci95_low", "ci95_high")


def metrics(results: Path) -> None:
    """Subject-level metrics of every model."""
    print("== metrics (per subject; interval: corrected resampled t)")
    for path in sorted(results.glob("train/*/metrics_summary.tsv")):
        d = pd.read_csv(path, sep="\t", index_col=0)
        folds = [i for i in d.index if str(i) not in SUMMARY_ROWS]
        val = [c for c in d.columns if c.startswith("val_")]
        ba = d["balanced_accuracy"]
        print(
            f"{path.parent.name}: per fold {ba.loc[folds].round(3).tolist()} | mean "
            f"{ba['mean']:.3f} [{ba['ci95_low']:.3f}, {ba['ci95_high']:.3f}] | AUC "
            f"{d.loc['mean', 'roc_auc']:.3f} | per scan {d.loc['mean', 'scan_balanced_accuracy']:.3f}"
            + (f" | {val[0]} {d.loc['mean', val[0]]:.3f}" if val else "")
        )


def regions(results: Path) -> None:
    """Rank of the planted region in every AAL table."""
    print(f"== rank of {REGION} (AAL)")
    for path in sorted(results.glob("regions/*/*/aal.tsv")):
        d = pd.read_csv(path, sep="\t")
        row = d[d["region"] == REGION].iloc[0]
        per_class = {
            c.split("-", 1)[1]: int(row[c]) for c in d.columns if c.startswith("rank_class-")
        }
        print(
            f"{path.parent.parent.name} {path.parent.name}: all {int(row['rank'])} of {len(d)}, "
            f"per class {per_class}, rank_by {row.get('rank_by', '?')}"
        )


def sanity(results: Path) -> None:
    """Verdict rows of every sanity summary."""
    print("== sanity verdicts")
    for path in sorted(results.glob("sanity/*/*_summary.tsv")):
        d = pd.read_csv(path, sep="\t")
        parts = []
        for _, r in d[d["passes"].notna()].iterrows():
            mode = f"@{r['mode']}" if isinstance(r["mode"], str) and r["mode"] else ""
            verdict = "PASS" if r["passes"] in (True, "True") else "FAIL"
            if r["statistic"] == "map_positions":  # the grid the map is computed on
                parts.append(f"grid {r['layer']} {verdict}")
                continue
            parts.append(
                f"{r['statistic']}{mode} {r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] "
                f"n={r['n_scans']} {verdict}"
            )
        print(f"{path.parent.name} {path.name.removesuffix('_summary.tsv')}: " + "; ".join(parts))


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    metrics(root)
    regions(root)
    sanity(root)
