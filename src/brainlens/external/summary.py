"""One model's folds on one external test set: ``metrics_summary.tsv`` (:func:`summarize_external`).

Each fold's model was evaluated on the same, fixed external set
(:func:`brainlens.external.evaluate.evaluate_external_fold`). The table holds

- one row per fold's model (subject-level metrics under the plain names, sessions
  combined by mean probability as in the main ``metrics_summary.tsv``; per-scan ones
  as ``scan_<metric>``);
- ``mean``, ``sd``, ``min``, ``max`` over the folds' models: descriptive only;
- ``ensemble``: the fold-ensemble, each scan's class probabilities averaged over the
  folds' models (then sessions per subject), scored with the same metric functions;
- ``ensemble_ci95_low`` / ``ensemble_ci95_high``: a seeded percentile bootstrap over
  the external *subjects*, resampled with replacement within each true class (so every
  resample has every class and its class sizes), of the ensemble's metrics.

What the interval means: it is the uncertainty from having tested on this sample of
external subjects, for this ensemble. It is *not* a t-interval over folds: the
external set is the same for every fold and the folds' models are trained on
overlapping data, so their scores are neither independent nor a sample of test sets;
their spread (``min``-``max``) only shows how much the models differ. The
``description`` column says this per row. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens._io import atomic_output
from brainlens.errors import ConfigError, InputFileError
from brainlens.metrics import SCALAR_METRICS, _scalars, classification_metrics, read_metrics_json
from brainlens.summary import scan_metrics, subject_metrics, subject_predictions

__all__ = [
    "ENSEMBLE_ROWS",
    "bootstrap_interval",
    "ensemble_predictions",
    "external_fold_row",
    "read_external_predictions",
    "scan_columns",
    "summarize_external",
]

#: Rows after the folds' rows, in order.
SPREAD_ROWS = ("mean", "sd", "min", "max")
ENSEMBLE_ROWS = ("ensemble", "ensemble_ci95_low", "ensemble_ci95_high")
LEVEL = 0.95
_KEYS = ("scan_id", "participant_id", "session_id", "label")
#: Columns of ``predictions.tsv`` read as strings (IDs and labels).
STR_COLUMNS = dict.fromkeys(_KEYS, str)


def read_external_predictions(path: str | Path) -> pd.DataFrame:
    """A ``predictions.tsv`` (main or external), IDs and labels as strings."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "predictions not found", "run evaluate_external for this fold")
    return pd.read_csv(p, sep="\t", dtype=STR_COLUMNS, keep_default_na=False)


def _prob_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if str(c).startswith("prob_")]


def ensemble_predictions(per_fold: Mapping[Any, pd.DataFrame]) -> pd.DataFrame:
    """The fold-ensemble's predictions: each scan's probabilities averaged over the models.

    Parameters
    ----------
    per_fold : dict fold -> DataFrame
        Each fold's model's ``predictions.tsv`` on the external set (``scan_id,
        participant_id, session_id, label, pred, prob_<class>``).

    Returns
    -------
    DataFrame
        The same columns, one row per scan (sorted by ``scan_id``), ``prob_<class>`` the
        mean over folds, ``pred`` its argmax, plus ``n_models``.

    Raises
    ------
    ConfigError
        No folds, or folds with other scans, labels or classes than the first.
    """
    if not per_fold:
        raise ConfigError("ensemble_predictions: no fold's predictions given")
    items = list(per_fold.items())
    ref_fold, ref = items[0]
    probs = _prob_columns(ref)
    missing = [c for c in _KEYS if c not in ref.columns]
    if missing or not probs:
        raise ConfigError(
            f"ensemble_predictions: fold {ref_fold}'s predictions lack {missing or ['prob_*']}. "
            "Fix: re-run evaluate_external"
        )
    ref_keys = ref[list(_KEYS)].astype(str).sort_values("scan_id").reset_index(drop=True)
    for fold, df in items[1:]:
        keys = df[list(_KEYS)].astype(str).sort_values("scan_id").reset_index(drop=True)
        if _prob_columns(df) != probs or not keys.equals(ref_keys):
            raise ConfigError(
                f"ensemble_predictions: fold {fold}'s predictions cover other scans, labels or "
                f"classes than fold {ref_fold}'s; the ensemble needs every model on the same "
                "external scans. Fix: re-run evaluate_external of every fold"
            )
    allp = pd.concat([df.astype({k: str for k in _KEYS}) for _, df in items], ignore_index=True)
    out = allp.groupby(list(_KEYS), sort=False)[probs].mean().reset_index()
    out = out.sort_values("scan_id").reset_index(drop=True)
    out.insert(4, "pred", [probs[i][5:] for i in out[probs].to_numpy(float).argmax(axis=1)])
    out["n_models"] = len(items)
    return out


def scan_columns(predictions: pd.DataFrame, positive_class: str | None) -> dict[str, float]:
    """Per-scan :data:`~brainlens.metrics.SCALAR_METRICS` and ``n`` as ``scan_<name>``."""
    scan = _scalars(scan_metrics(predictions, positive_class))
    keep = set(SCALAR_METRICS) | {"n"}
    return {f"scan_{k}": v for k, v in scan.items() if k in keep}


def external_fold_row(predictions: pd.DataFrame, positive_class: str | None) -> dict[str, float]:
    """Subject-level scalar metrics (plain names) and :func:`scan_columns` of predictions."""
    row = _scalars(subject_metrics(predictions, positive_class))
    return row | scan_columns(predictions, positive_class)


def bootstrap_interval(
    subjects: pd.DataFrame,
    positive_class: str | None,
    *,
    n_resamples: int,
    seed: int,
    level: float = LEVEL,
) -> tuple[dict[str, float], dict[str, float]]:
    """Percentile bootstrap over subjects, stratified by true class, of every metric.

    Parameters
    ----------
    subjects : DataFrame
        One row per subject (:func:`brainlens.summary.subject_predictions`): ``label``
        and ``prob_<class>``.
    positive_class : str, optional
        As in :func:`brainlens.metrics.classification_metrics`.
    n_resamples : int
        Bootstrap resamples (``>= 1``).
    seed : int
        Seeds the resampling.
    level : float
        Coverage, in (0, 1).

    Returns
    -------
    low, high : dict of str to float
        The lower and upper percentile of each scalar metric over the resamples (nan
        where a metric is undefined in every resample). Perfect or constant predictions
        give ``low == high``.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError(f"bootstrap resamples: expected an integer >= 1, got {n_resamples!r}")
    if not 0 < level < 1:
        raise ConfigError(f"level: expected a value in (0, 1), got {level}")
    probs = _prob_columns(subjects)
    names = [c[5:] for c in probs]
    labels = subjects["label"].astype(str).to_numpy()
    proba = subjects[probs].to_numpy(float)
    strata = [np.flatnonzero(labels == c) for c in sorted(set(labels))]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        idx = np.concatenate([s[rng.integers(0, s.size, s.size)] for s in strata])
        m = _scalars(classification_metrics(labels[idx], proba[idx], names, positive_class))
        draws.append({k: m.get(k, np.nan) for k in SCALAR_METRICS})
    table = pd.DataFrame(draws, columns=list(SCALAR_METRICS), dtype=float)
    tail = 100 * (1 - level) / 2
    low, high = {}, {}
    for k in SCALAR_METRICS:
        v = table[k].to_numpy()
        v = v[np.isfinite(v)]
        low[k] = float(np.percentile(v, tail)) if v.size else float("nan")
        high[k] = float(np.percentile(v, 100 - tail)) if v.size else float("nan")
    return low, high


def _descriptions(n_folds: int, n_subjects: int, n_resamples: int, seed: int) -> dict[str, str]:
    boot = (
        f"{int(100 * LEVEL)}% percentile bootstrap of the ensemble's metric over the "
        f"{n_subjects} external subjects ({n_resamples} resamples within each true class, "
        f"seed {seed}): uncertainty from this sample of external subjects only (the external "
        "set is fixed and the folds' models share training data, so no interval over folds "
        "is given)"
    )
    return {
        "mean": f"mean over the {n_folds} folds' models (descriptive, no interval)",
        "sd": f"SD over the {n_folds} folds' models (spread between models, not an interval)",
        "min": "lowest of the folds' models",
        "max": "highest of the folds' models",
        "ensemble": f"fold-ensemble: class probabilities averaged over the {n_folds} folds' "
        "models per scan, sessions combined per subject",
        "ensemble_ci95_low": boot,
        "ensemble_ci95_high": boot,
    }


def summarize_external(
    *,
    metrics: Sequence[str | Path],
    predictions: Sequence[str | Path],
    out: str | Path,
    n_resamples: int,
    seed: int,
    positive_class: str | None = None,
) -> pd.DataFrame:
    """Write one model's external ``metrics_summary.tsv`` over its folds' models.

    Parameters
    ----------
    metrics, predictions : sequence of path
        Each fold's ``metrics.json`` and ``predictions.tsv`` of
        :func:`~brainlens.external.evaluate.evaluate_external_fold`, in the same order
        (the ``fold`` of each metrics file labels its row).
    out : path
        ``results/external/<dataset>/<model>/metrics_summary.tsv`` (index column
        ``fold``; a ``description`` column says what each row, and its interval, means).
    n_resamples : int
        Bootstrap resamples of the ensemble's interval.
    seed : int
        Seeds the bootstrap (derived from the master seed by the rule).
    positive_class : str, optional
        The config's ``positive_class``.

    Returns
    -------
    DataFrame
        Folds' rows, then :data:`SPREAD_ROWS` and :data:`ENSEMBLE_ROWS`.

    Raises
    ------
    ConfigError
        Unequal numbers of files, a fold twice, metrics of several datasets or models,
        or folds predicted on other scans.
    """
    if len(metrics) != len(predictions) or not metrics:
        raise ConfigError(
            f"summarize_external: {len(metrics)} metrics and {len(predictions)} predictions "
            "files; expected one of each per fold (at least one). Fix: pass them in fold order"
        )
    per_fold: dict[int, pd.DataFrame] = {}
    seen: set[tuple] = set()
    for m_path, p_path in zip(metrics, predictions, strict=True):
        m = read_metrics_json(m_path)
        seen.add((m.get("dataset"), m.get("model")))
        fold = int(m["fold"])
        if fold in per_fold:
            raise ConfigError(f"summarize_external: fold {fold} given twice ({m_path})")
        per_fold[fold] = read_external_predictions(p_path)
    if len(seen) != 1:
        raise ConfigError(
            f"summarize_external: metrics of several (dataset, model) pairs {sorted(seen)}. "
            "Fix: summarise one model on one external dataset at a time"
        )
    per_fold = dict(sorted(per_fold.items()))
    rows = pd.DataFrame([external_fold_row(p, positive_class) for p in per_fold.values()])
    rows.index = list(per_fold)
    spread = pd.DataFrame(
        [rows.mean(), rows.std(ddof=1), rows.min(), rows.max()], index=list(SPREAD_ROWS)
    )
    ens = ensemble_predictions(per_fold)
    subjects = subject_predictions(ens)
    low, high = bootstrap_interval(subjects, positive_class, n_resamples=n_resamples, seed=seed)
    ensemble = pd.DataFrame(
        [external_fold_row(ens, positive_class), low, high], index=list(ENSEMBLE_ROWS)
    )
    table = pd.concat([rows, spread, ensemble])
    table.index = pd.Index([str(i) for i in table.index], name="fold", dtype=object)
    text = _descriptions(len(per_fold), len(subjects), n_resamples, seed)
    table["description"] = [text.get(i, f"fold {i}'s model") for i in table.index]
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        table.to_csv(tmp, sep="\t", float_format="%.6g")
    return table
