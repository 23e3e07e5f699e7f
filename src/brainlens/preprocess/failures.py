"""Which scans failed in preprocessing, and why: the summary after ``--keep-going``.

A scan can pass the input checks and still fail in preprocessing (a registration that
does not converge, a full disk). With ``snakemake --keep-going`` every other scan
finishes, but training and the report need the whole cohort and wait. The workflow's
``onerror`` handler then calls :func:`write_failure_summary`, which lists the failed
scans with the last error of each job's log in ``failed_scans.tsv`` and returns a
message with the ``exclude_scans`` entries that leave them out on purpose.

A scan counts as failed when its preprocessing log exists (the job ran) and at least
one of its outputs is missing (Snakemake removes the outputs of a failed job). Scans
whose job never ran are not listed: they did not fail, they were not tried.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from brainlens._io import atomic_output

#: Columns of ``failed_scans.tsv``.
FAILURE_COLUMNS = [
    "scan",
    "participant_id",
    "session_id",
    "missing_outputs",
    "error",
    "log",
    "interrupted",
]
#: The ``error`` of a job whose log gives no reason (see :func:`job_error`).
INTERRUPTED = "(no error in the log: the job was stopped from outside, e.g. Ctrl-C, a cluster time or memory limit)"
# "brainlens.errors.PreprocessingError: /data/sub-01_T1w.nii.gz: " before the reason
_REASON_PREFIX = re.compile(r"^[\w.]*(Error|Exception)\w*: (\S+\.nii(\.gz)?: )?")


def last_error(log_text: str) -> str:
    """The exception line(s) of the last traceback in a job log, on one line.

    Parameters
    ----------
    log_text : str
        The whole log.

    Returns
    -------
    str
        ``"ExceptionType: message"`` of the last traceback (a multi-line message joined
        with spaces), else the last non-empty line, else ``""``.
    """
    from brainlens.joblogs import last_exception

    return " ".join(line.strip() for line in last_exception(log_text, max_lines=10**6))


def job_error(log_text: str) -> dict[str, object]:
    """``error`` and ``interrupted`` of a failed job, from its log.

    A log that reports no error (:func:`brainlens.joblogs.reports_an_error`) belongs to
    a job that was stopped, not one that failed on its scan: ``interrupted`` is true and
    ``error`` is :data:`INTERRUPTED`, so nobody is told to exclude a good scan.
    """
    from brainlens.joblogs import reports_an_error

    if not log_text.strip():
        return {"error": "(the log is empty)", "interrupted": False}
    if not reports_an_error(log_text):
        return {"error": INTERRUPTED, "interrupted": True}
    return {"error": last_error(log_text), "interrupted": False}


def _text(value: object) -> str:
    """A table cell as text: missing (None, NaN) is ``""``."""
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def find_failures(scans: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """The scans whose preprocessing job ran and left outputs missing.

    Parameters
    ----------
    scans : iterable of mapping
        One record per scan with ``scan``, ``participant_id``, ``session_id`` (may be
        empty), ``outputs`` (the job's output paths) and ``log`` (its log path).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FAILURE_COLUMNS`, one row per failed scan (``missing_outputs``
        counts the missing files), in the order given.
    """
    rows = []
    for record in scans:
        log = Path(str(record["log"]))
        outputs: Sequence[object] = record["outputs"]  # type: ignore[assignment]
        missing = [p for p in outputs if not Path(str(p)).exists()]
        if not missing or not log.is_file():
            continue
        rows.append(
            {
                "scan": record["scan"],
                "participant_id": record["participant_id"],
                "session_id": _text(record.get("session_id")),
                "missing_outputs": len(missing),
                **job_error(log.read_text(errors="replace")),
                "log": str(log),
            }
        )
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def exclude_snippet(failures: pd.DataFrame, *, max_reason: int = 100) -> str:
    """The ``exclude_scans`` config entry that leaves the failed scans out (YAML).

    Each reason is the start of the scan's error (without the exception type and the
    file name); edit it to say why the scan is left out (the report lists it).
    """
    entries = []
    for scan, error in zip(failures["scan"], failures["error"], strict=True):
        reason = _REASON_PREFIX.sub("", str(error))
        if len(reason) > max_reason:
            reason = reason[: max_reason - 3] + "..."
        entries.append(f"  {scan}: {json.dumps('preprocessing failed: ' + reason)}")
    return "exclude_scans:\n" + "\n".join(entries)


def write_failure_summary(scans: Iterable[Mapping[str, object]], out_tsv: str | Path) -> str:
    """Write ``failed_scans.tsv`` and return the message for the user.

    Parameters
    ----------
    scans : iterable of mapping
        As for :func:`find_failures`.
    out_tsv : str or Path
        The table to write. When no scan failed, a table left by an earlier run is
        removed (it no longer describes the results) and nothing is written.

    Returns
    -------
    str
        ``""`` when no scan failed; else which scans failed, where their logs are and
        the ``exclude_scans`` entries to add to the config after looking at them.
    """
    out_tsv = Path(out_tsv)
    failures = find_failures(scans)
    if failures.empty:
        out_tsv.unlink(missing_ok=True)
        return ""
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_tsv) as tmp:
        failures.to_csv(tmp, sep="\t", index=False)
    listing = "\n".join(
        f"  {row.scan}: {row.error} (log: {row.log})" for row in failures.itertuples()
    )
    message = (
        f"{len(failures)} scan(s) did not finish preprocessing (listed in {out_tsv}):\n{listing}\n"
    )
    failed = failures[~failures["interrupted"].astype(bool)]
    if len(failed) < len(failures):
        message += (
            "Jobs stopped from outside left no error: run again to finish them (on a "
            "cluster, check their time and memory limits).\n"
        )
    if failed.empty:
        return message
    return message + (
        "Training and the report need every scan, so they did not run. Fix the input "
        "(see the log and the QC/crash files under work/preprocess/) and run again, or "
        "leave the scan(s) that failed out on purpose by adding to the config (the report "
        f"lists them with the reason):\n{exclude_snippet(failed)}"
    )
