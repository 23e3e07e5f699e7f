"""Find T1w scans in a BIDS dataset and match them with ``participants.tsv``.

A scan's key is its BIDS stem, the file name before ``_T1w``: ``sub-01`` or
``sub-01_ses-02`` (further entities such as ``_run-1`` are kept). Dataset-level
problems (duplicate IDs, IDs that are not plain BIDS labels, participants without
scans, scans without a participants row, missing labels) raise
:class:`~brainlens.errors.DatasetError` listing every offender and the fix; nothing
is written before that check passes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from brainlens.errors import DatasetError, InputFileError

#: A BIDS label: letters and digits only (no path characters, no underscores).
LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
_T1W_RE = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)(?:_(?P<ses>ses-[A-Za-z0-9]+))?(?P<rest>(?:_[a-z]+-[A-Za-z0-9]+)*)_T1w\.nii(?:\.gz)?$"
)


def scan_key(participant_id: str, session_id: str | None) -> str:
    """``sub-01`` or ``sub-01_ses-02`` from a participant and a session ("n/a" = none)."""
    if session_id in (None, "", "n/a") or pd.isna(session_id):
        return participant_id
    return f"{participant_id}_{session_id}"


def scan_subdir(participant_id: str, session_id: str | None) -> str:
    """``sub-01`` or ``sub-01/ses-02``: the folder of a scan's outputs."""
    if session_id in (None, "", "n/a") or pd.isna(session_id):
        return participant_id
    return f"{participant_id}/{session_id}"


def find_scans(bids_dir: Path) -> pd.DataFrame:
    """All T1w scans under ``sub-*/[ses-*/]anat/``.

    Returns
    -------
    pandas.DataFrame
        Columns ``scan``, ``participant_id``, ``session_id`` ("n/a" without
        sessions), ``subdir``, ``path`` (absolute), sorted by ``scan``.
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputFileError(
            bids_dir, "the BIDS folder does not exist", "set bids_dir in the config"
        )
    rows = []
    for path in sorted(bids_dir.glob("sub-*/**/anat/*_T1w.nii*")):
        m = _T1W_RE.match(path.name)
        rel = path.relative_to(bids_dir).parts
        if m is None:
            raise DatasetError(
                f"{path}: not a BIDS T1w name (expected sub-<label>[_ses-<label>][_<key>-<value>]_T1w.nii[.gz], "
                "labels of letters and digits only). Fix: rename the file"
            )
        ses = m.group("ses") or "n/a"
        expected_dir = (m.group("sub"),) + ((ses,) if ses != "n/a" else ()) + ("anat",)
        if rel[:-1] != expected_dir:
            raise DatasetError(
                f"{path}: file name entities do not match its folder {'/'.join(rel[:-1])} "
                f"(expected {'/'.join(expected_dir)}). Fix: move or rename the file"
            )
        stem = path.name.split("_T1w")[0]
        rows.append(
            {
                "scan": stem,
                "participant_id": m.group("sub"),
                "session_id": ses,
                "subdir": scan_subdir(m.group("sub"), ses),
                "path": str(path.resolve()),
            }
        )
    if not rows:
        raise DatasetError(
            f"{bids_dir}: no T1w scans found (expected sub-*/[ses-*/]anat/*_T1w.nii[.gz]). "
            "Fix: point bids_dir at the dataset root"
        )
    scans = pd.DataFrame(rows).sort_values("scan").reset_index(drop=True)
    dup = scans[scans["scan"].duplicated(keep=False)]
    if not dup.empty:
        raise DatasetError(
            "the same scan exists twice (.nii and .nii.gz?): "
            + ", ".join(dup["path"])
            + ". Fix: keep one file per scan"
        )
    return scans


def read_participants(path: Path, *, label_column: str) -> pd.DataFrame:
    """Read and check ``participants.tsv``.

    Raises :class:`DatasetError` for a missing label column, duplicate or malformed
    ``participant_id`` values, and empty labels, naming the rows and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "participants.tsv is missing", "add it at the BIDS root")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in table.columns:
        raise DatasetError(
            f"{path}: no participant_id column (columns: {list(table.columns)}). Fix: add it"
        )
    if label_column not in table.columns:
        raise DatasetError(
            f"{path}: label column {label_column!r} not found (columns: {list(table.columns)}). "
            "Fix: set label_column in the config to one of them"
        )
    ids = table["participant_id"]
    bad = [i for i in ids if not (i.startswith("sub-") and LABEL_RE.match(i[4:]))]
    if bad:
        raise DatasetError(
            f"{path}: participant_id values that are not sub-<letters/digits>: {bad[:10]}. "
            "Fix: use BIDS labels without path characters, underscores or spaces"
        )
    dups = sorted(set(ids[ids.duplicated()]))
    if dups:
        raise DatasetError(
            f"{path}: duplicate participant_id values: {dups[:10]}. Fix: one row per participant"
        )
    missing = ids[table[label_column].str.strip().isin(["", "n/a", "NA", "nan"])].tolist()
    if missing:
        raise DatasetError(
            f"{path}: no {label_column!r} value for {missing[:10]}. Fix: fill in the label or remove the participants"
        )
    return table


def scan_table(bids_dir: Path, *, label_column: str) -> pd.DataFrame:
    """Scans joined with their participants' labels, after the dataset-level checks.

    Returns
    -------
    pandas.DataFrame
        :func:`find_scans` columns plus ``label`` and every other column of
        ``participants.tsv``.
    """
    bids_dir = Path(bids_dir)
    participants = read_participants(bids_dir / "participants.tsv", label_column=label_column)
    scans = find_scans(bids_dir)
    listed, found = set(participants["participant_id"]), set(scans["participant_id"])
    problems = []
    if listed - found:
        problems.append(
            f"listed in participants.tsv but without a T1w scan: {sorted(listed - found)[:10]} "
            "(fix: add the scans or remove the rows)"
        )
    if found - listed:
        problems.append(
            f"T1w scans of participants missing from participants.tsv: {sorted(found - listed)[:10]} "
            "(fix: add rows for them or remove the scans)"
        )
    if problems:
        raise DatasetError(f"{bids_dir}: " + "; ".join(problems))
    table = scans.merge(participants, on="participant_id", how="left")
    table["label"] = table[label_column]
    return table
