"""The per-model summary over folds (``metrics_summary.tsv``), subject-level first.

Metrics are computed per *subject*: a subject's sessions in a test part are combined by
their mean predicted class probability (:func:`subject_predictions`), so a subject with
two sessions counts once. These are the headline numbers, under the plain metric names;
the per-scan metrics of ``metrics.json`` sit beside them as ``scan_<metric>``. With a
``positive_class`` (the config's), every binary metric, subject- and scan-level, is
computed from ``predictions.tsv`` about that class (``metrics.json`` is written by
training with the default, the last of the sorted class names). The 95 %
intervals are the corrected resampled t-intervals (:mod:`brainlens.stats`) with the
numbers of train+val and test subjects of each fold from ``folds.tsv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from brainlens._io import atomic_output
from brainlens.errors import ConfigError, InputFileError
from brainlens.folds import read_folds
from brainlens.metrics import (
    SCALAR_METRICS,
    _scalars,
    classification_metrics,
    read_metrics_json,
    summarize_metrics,
)

__all__ = [
    "fold_row",
    "fold_sizes",
    "model_summary",
    "scan_metrics",
    "subject_metrics",
    "subject_predictions",
    "validation_value",
    "write_metrics_summary",
]


def subject_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """Combine each subject's sessions into one prediction (mean class probability).

    Parameters
    ----------
    predictions : DataFrame
        A fold's ``predictions.tsv``: ``participant_id``, ``label`` and one
        ``prob_<class>`` column per class (the training's class order).

    Returns
    -------
    DataFrame
        One row per subject (and label: a subject whose sessions carry different labels
        gives one row per label), columns ``participant_id``, ``label``, ``n_scans``,
        the mean ``prob_<class>`` and ``pred`` (argmax of the mean).
    """
    probs = [c for c in predictions.columns if str(c).startswith("prob_")]
    missing = [c for c in ("participant_id", "label") if c not in predictions.columns]
    if missing or not probs:
        raise ConfigError(
            f"subject_predictions: predictions lack column(s) {missing or ['prob_<class>']}; "
            f"they have {list(predictions.columns)}. Fix: re-run training, whose "
            "predictions.tsv has participant_id, label and prob_<class> columns"
        )
    df = predictions.assign(
        participant_id=predictions["participant_id"].astype(str),
        label=predictions["label"].astype(str),
    )
    grouped = df.groupby(["participant_id", "label"], sort=True)
    out = grouped[probs].mean()
    out.insert(0, "n_scans", grouped.size())
    out = out.reset_index()
    out["pred"] = [probs[i][5:] for i in out[probs].to_numpy(dtype=float).argmax(axis=1)]
    return out


def subject_metrics(predictions: pd.DataFrame, positive_class: str | None = None) -> dict[str, Any]:
    """:func:`classification_metrics` of a fold with each subject counted once.

    Parameters
    ----------
    predictions : DataFrame
        A fold's ``predictions.tsv`` (see :func:`subject_predictions`).
    positive_class : str, optional
        The class the binary metrics are about; None: the last ``prob_`` column's.

    Returns
    -------
    dict
        As :func:`classification_metrics`, over subjects: ``n`` is the number of
        subjects.
    """
    subj = subject_predictions(predictions)
    probs = [c for c in subj.columns if str(c).startswith("prob_")]
    return classification_metrics(
        subj["label"].to_numpy(dtype=str),
        subj[probs].to_numpy(dtype=float),
        [c[5:] for c in probs],
        positive_class,
    )


def scan_metrics(predictions: pd.DataFrame, positive_class: str | None = None) -> dict[str, Any]:
    """:func:`classification_metrics` of a fold's scans (each row of ``predictions.tsv``).

    Parameters
    ----------
    predictions : DataFrame
        A fold's ``predictions.tsv`` (``label``, ``prob_<class>`` columns).
    positive_class : str, optional
        As in :func:`subject_metrics`.

    Returns
    -------
    dict
        As :func:`classification_metrics`, ``n`` = scans.
    """
    probs = [c for c in predictions.columns if str(c).startswith("prob_")]
    if "label" not in predictions.columns or not probs:
        raise ConfigError(
            f"scan_metrics: predictions lack label or prob_<class> columns; they have "
            f"{list(predictions.columns)}. Fix: re-run training"
        )
    return classification_metrics(
        predictions["label"].astype(str).to_numpy(dtype=str),
        predictions[probs].to_numpy(dtype=float),
        [c[5:] for c in probs],
        positive_class,
    )


def fold_sizes(folds: pd.DataFrame) -> pd.DataFrame:
    """Subjects per fold for the corrected interval.

    Parameters
    ----------
    folds : DataFrame
        ``folds.tsv`` (``participant_id``, ``fold``, ``role``).

    Returns
    -------
    DataFrame
        Index ``fold`` (int), columns ``n_subjects_trainval`` (subjects not tested:
        train and val parts, everything the fold's model was fitted and selected on)
        and ``n_subjects_test``.
    """
    df = folds.assign(participant_id=folds["participant_id"].astype(str))
    test = df["role"].astype(str) == "test"
    out = pd.DataFrame(
        {
            "n_subjects_trainval": df[~test].groupby("fold")["participant_id"].nunique(),
            "n_subjects_test": df[test].groupby("fold")["participant_id"].nunique(),
        }
    )
    return out.reindex(sorted(set(df["fold"]))).fillna(0).astype(int)


def fold_row(
    metrics: Mapping[str, Any], predictions: pd.DataFrame, positive_class: str | None = None
) -> dict[str, Any]:
    """One fold's row of the model summary: subject-level metrics, then ``scan_`` ones.

    Parameters
    ----------
    metrics : dict
        The fold's ``metrics.json`` (scan-level test metrics and training facts).
    predictions : DataFrame
        The fold's ``predictions.tsv``.
    positive_class : str, optional
        The class the binary metrics are about. When given, the scan-level metrics are
        recomputed from ``predictions`` about it (``metrics.json`` has the default).

    Returns
    -------
    dict
        Subject-level metrics under their plain names (``balanced_accuracy``, ``n``
        = subjects, ...), the scan-level ones of ``metrics`` as ``scan_<name>``, the
        other numbers of ``metrics`` (``best_epoch``, ``best_val``, ...) unchanged and
        ``val_<monitor>``: the monitored validation value of the kept model.
    """
    subj = _scalars(subject_metrics(predictions, positive_class))
    scan = _scalars(metrics)
    if positive_class is not None:
        recomputed = _scalars(scan_metrics(predictions, positive_class))
        scan |= {k: v for k, v in recomputed.items() if k in SCALAR_METRICS}
    metric_keys = set(subj) | set(SCALAR_METRICS) | {"n"}
    row: dict[str, Any] = dict(subj)
    for key, value in scan.items():
        row[f"scan_{key}" if key in metric_keys else key] = value
    return row | validation_value(metrics)


def validation_value(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{val_<monitor>: value}`` of a fold's kept model, from its ``metrics.json``.

    Parameters
    ----------
    metrics : dict
        A ``metrics.json`` (``monitor``, e.g. ``val_loss``, and ``best_val``: the
        monitored value of the selected epoch of the selected restart).

    Returns
    -------
    dict
        One entry, or empty when the file does not record them.
    """
    monitor, value = metrics.get("monitor"), metrics.get("best_val")
    if not monitor or value is None:
        return {}
    name = str(monitor) if str(monitor).startswith("val_") else f"val_{monitor}"
    return {name: float(value)}


def model_summary(
    per_fold: Sequence[Mapping[str, Any]],
    predictions: Sequence[pd.DataFrame],
    folds: pd.DataFrame,
    positive_class: str | None = None,
) -> pd.DataFrame:
    """The ``metrics_summary.tsv`` table of one model.

    Parameters
    ----------
    per_fold : sequence of dict
        Each fold's ``metrics.json`` (its ``fold`` key labels the row, else position).
    predictions : sequence of DataFrame
        Each fold's ``predictions.tsv``, in the same order.
    folds : DataFrame
        ``folds.tsv`` (subject counts per fold for the corrected interval).
    positive_class : str, optional
        The class the binary metrics are about (see :func:`fold_row`).

    Returns
    -------
    DataFrame
        :func:`summarize_metrics` of the :func:`fold_row` rows plus
        ``n_subjects_trainval`` and ``n_subjects_test``; the interval rows are the
        corrected resampled t-intervals over subjects.
    """
    if len(per_fold) != len(predictions):
        raise ConfigError(
            f"model_summary: {len(per_fold)} metrics files but {len(predictions)} "
            "predictions files. Fix: pass one of each per fold, in the same order"
        )
    sizes = fold_sizes(folds)
    rows = {}
    for i, (m, pred) in enumerate(zip(per_fold, predictions, strict=True)):
        fold = m.get("fold", i)
        if fold in rows:
            raise ConfigError(f"model_summary: duplicate fold id {fold} among the inputs")
        if int(fold) not in sizes.index:
            raise ConfigError(
                f"model_summary: fold {fold} is not in the folds table (folds "
                f"{sizes.index.tolist()}). Fix: re-run the training of this model"
            )
        rows[fold] = (
            fold_row(m, pred, positive_class) | sizes.loc[int(fold)].astype(float).to_dict()
        )
    return summarize_metrics(rows)


def write_metrics_summary(
    metrics_jsons: Sequence[str | Path],
    out_tsv: str | Path,
    *,
    predictions_tsvs: Sequence[str | Path],
    folds_tsv: str | Path,
    positive_class: str | None = None,
) -> pd.DataFrame:
    """Summarise one model's folds into ``metrics_summary.tsv``.

    Parameters
    ----------
    metrics_jsons : sequence of path
        One ``metrics.json`` per fold; each one's ``fold`` key (else its position)
        labels its row.
    out_tsv : path
        Output TSV (index column ``fold``), written atomically.
    predictions_tsvs : sequence of path
        The folds' ``predictions.tsv``, in the same order.
    folds_tsv : path
        ``results/folds/folds.tsv``.
    positive_class : str, optional
        The config's ``positive_class`` (None: the last of the sorted class names).

    Returns
    -------
    DataFrame
        The table from :func:`model_summary`: plain metric names are subject-level
        (sessions combined by mean probability), ``scan_<metric>`` per scan.
    """
    per_fold = []
    for i, path in enumerate(metrics_jsons):
        d = read_metrics_json(path)
        d.setdefault("fold", i)
        per_fold.append(d)
    preds = []
    for path in predictions_tsvs:
        p = Path(path)
        if not p.is_file():
            raise InputFileError(p, "predictions not found", "run the training step for this fold")
        preds.append(pd.read_csv(p, sep="\t", dtype={"participant_id": str, "label": str}))
    table = model_summary(per_fold, preds, read_folds(folds_tsv), positive_class)
    out = Path(out_tsv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        table.to_csv(tmp, sep="\t", float_format="%.6g")
    return table
