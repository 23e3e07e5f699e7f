"""The input-check stage: every scan checked once before any preprocessing.

:func:`check_dataset` runs the cheap header/content checks of
:func:`brainlens.preprocess.check_t1w` on every scan and writes one table with a
``status`` per scan (``ok`` or ``invalid``), the problem, the participant's label and
the scan's content hash (used by the leakage audit to catch the same image under two
IDs). With ``on_invalid="fail"`` any invalid scan stops the run with one error that
lists every bad file and its fix; with ``"exclude"`` the bad scans are recorded, left
out of everything downstream, and listed in the report. :func:`usable_scans` is the one
filter for the scans that go on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from brainlens._io import atomic_output
from brainlens.bids import is_missing, read_participants
from brainlens.errors import DatasetError, InputFileError

log = logging.getLogger(__name__)

COLUMNS = [
    "scan",
    "participant_id",
    "session_id",
    "label",
    "path",
    "status",
    "problem",
    "image_hash",
]
#: The ``status`` of a scan that passed the input checks (the others: invalid, excluded).
USABLE = "ok"


def usable_mask(table: pd.DataFrame) -> pd.Series:
    """True for the rows of an input table (``inputs.tsv``) whose scan passed the checks.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per scan with a ``status`` column (:func:`check_dataset`).

    Returns
    -------
    pandas.Series of bool, shape (n_rows,)
        ``status == "ok"`` (:data:`USABLE`), on the table's index.

    Raises
    ------
    DatasetError
        The table has no ``status`` column.
    """
    if "status" not in table.columns:
        raise DatasetError(
            f"input table: no 'status' column (columns {list(table.columns)}). Fix: pass "
            "the table check_dataset writes (results/preprocess/inputs.tsv)"
        )
    return table["status"] == USABLE


def usable_scans(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of an input table (``inputs.tsv``) whose scan passed the input checks.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per scan with a ``status`` column (:func:`check_dataset`).

    Returns
    -------
    pandas.DataFrame
        The rows of :func:`usable_mask`, in table order, index kept.
    """
    return table[usable_mask(table)]


def _scan_row(
    rec: Mapping[str, Any],
    labels: pd.Series,
    *,
    label_map: Mapping[str, str],
    excluded: Mapping[str, str],
) -> dict[str, Any]:
    """One row of the input table: the scan's ids, path and (mapped) label, and its
    status (``excluded``, ``invalid`` with the problem, or ``ok`` with its image hash).

    ``labels`` is the label per participant id; a participant not in it is invalid.
    """
    from brainlens.preprocess import check_t1w

    row = {k: rec[k] for k in ("scan", "participant_id", "session_id", "path")}
    pid = rec["participant_id"]
    row["label"] = labels.loc[pid] if pid in labels.index else ""
    row["label"] = label_map.get(row["label"], row["label"])
    if rec["scan"] in excluded:
        reason = excluded[rec["scan"]]
        return row | {
            "status": "excluded",
            "problem": f"{rec['path']}: excluded in the config (exclude_scans): {reason}",
            "image_hash": "",
        }
    try:
        if pid not in labels.index:
            raise InputFileError(
                rec["path"], f"participant {pid} is not in participants.tsv", "add a row for it"
            )
        report = check_t1w(rec["path"])
        return row | {"status": "ok", "problem": "", "image_hash": report.sha1}
    except InputFileError as err:
        return row | {"status": "invalid", "problem": str(err), "image_hash": ""}


def check_dataset(
    scans: pd.DataFrame,
    *,
    participants_tsv: Path,
    label_column: str,
    on_invalid: str,
    out_tsv: Path,
    excluded: Mapping[str, str] | None = None,
    label_map: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Check every scan and write the input table.

    Parameters
    ----------
    scans : pandas.DataFrame
        One row per scan with ``scan``, ``participant_id``, ``session_id``, ``path``.
    participants_tsv : Path
        The dataset's ``participants.tsv``.
    label_column : str
        Its label column.
    on_invalid : {"fail", "exclude"}
    out_tsv : Path
        Output table (columns :data:`COLUMNS` plus the participants' other columns).
    excluded : mapping of str to str, optional
        Scans to leave out on purpose, scan id (``sub-01_ses-02``) -> reason, e.g. a scan
        whose preprocessing failed. They are not checked, get status ``excluded`` and are
        listed in the report like invalid scans.
    label_map : mapping of str to str, optional
        Label as in ``participants.tsv`` -> the label written (an external test set's
        labels mapped to the main classes, :mod:`brainlens.external.datasets`); labels
        not in it are written as they are.

    Returns
    -------
    pandas.DataFrame
        The table written.

    Raises
    ------
    DatasetError
        With ``on_invalid="fail"`` and at least one invalid scan, an ``excluded`` id
        that is not a scan of the dataset, or a scan whose participant has no label in
        ``participants.tsv`` (rows of participants without a scan may lack one); nothing
        is written.
    """
    if on_invalid not in ("fail", "exclude"):
        raise DatasetError(
            f"preprocess.on_invalid_scan: expected fail or exclude, got {on_invalid!r}"
        )
    excluded = dict(excluded or {})
    unknown = sorted(set(excluded) - set(scans["scan"]))
    if unknown:
        raise DatasetError(
            f"exclude_scans names {len(unknown)} scan(s) not in the dataset: "
            f"{', '.join(unknown)}; expected scan ids such as {scans['scan'].iloc[0]!r} "
            "(sub-<label>[_ses-<label>]). Fix the ids or remove them from exclude_scans."
        )
    participants = read_participants(
        Path(participants_tsv), label_column=label_column, missing_labels="keep"
    )
    labels = participants.set_index("participant_id")
    unlabelled = sorted(
        set(scans["participant_id"]) & set(labels.index[labels[label_column].map(is_missing)])
    )
    if unlabelled:
        raise DatasetError(
            f"{participants_tsv}: no {label_column!r} value for {unlabelled[:10]}. Fix: fill in "
            "the label, or set participants.drop_missing_labels: true to leave them out"
        )
    rows = [
        _scan_row(rec, labels[label_column], label_map=label_map or {}, excluded=excluded)
        for rec in scans.to_dict("records")
    ]
    table = pd.DataFrame(rows, columns=COLUMNS)
    extra = participants.drop(columns=[label_column]).rename(columns=lambda c: c)
    table = table.merge(extra, on="participant_id", how="left")
    bad = table[table["status"] == "invalid"]
    if len(bad) and on_invalid == "fail":
        raise DatasetError(
            f"{len(bad)} of {len(table)} scans failed the input checks:\n  "
            + "\n  ".join(bad["problem"])
            + "\nFix each file, or set preprocess.on_invalid_scan: exclude to leave them out "
            "(they are then listed in the report)."
        )
    usable = usable_mask(table)
    for problem in table.loc[~usable, "problem"]:
        log.warning("excluded: %s", problem)
    if not usable.any():
        raise DatasetError("no scan passed the input checks; see the problems above")
    out_tsv = Path(out_tsv)
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
