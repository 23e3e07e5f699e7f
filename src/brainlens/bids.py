"""Find T1w scans in a BIDS dataset and match them with ``participants.tsv``.

Scan ids
    A scan's id is ``sub-<label>`` or ``sub-<label>_ses-<label>`` (:func:`scan_key`),
    whatever other entities (``acq-``, ``run-``, ``rec-``, ...) its file name carries.
    Only where one session keeps several T1w (``t1w_multiple: all``) does each of them
    get its file's full stem, e.g. ``sub-02_ses-01_acq-x_run-2``; its ``session_id``
    is then ``ses-01_acq-x_run-2`` (the session plus the entities that tell the T1w
    apart), so ``scan_key(participant_id, session_id)`` gives the scan id everywhere.

Selection
    :func:`scan_table` applies the config's ``participants`` and ``t1w_filters``
    (:mod:`brainlens.bids_select`) with the semantics of pybids/snakebids filters.

Dataset-level problems (a derivatives dataset, duplicate IDs, IDs that are not plain
BIDS labels, scans without a participants row, missing labels, several T1w of one
session) raise :class:`~brainlens.errors.DatasetError` listing every offender and the
fix; nothing is written before that check passes. Participants without a T1w (an MEG
``sub-emptyroom``, a dropout) are logged as a warning and left out.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from brainlens.errors import DatasetError, InputFileError

log = logging.getLogger(__name__)

#: A BIDS label: letters and digits only (no path characters, no underscores).
LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
#: Entities of processed (BIDS-Derivatives) images; raw T1w never carry them.
DERIVATIVE_ENTITIES = ("space", "desc", "res", "den", "label")
#: Values that mean "no value" in a BIDS TSV (and in a session column).
MISSING = ("", "n/a", "N/A", "NA", "nan", "None")
_T1W_RE = re.compile(
    r"^(?P<sub>sub-[A-Za-z0-9]+)(?:_(?P<ses>ses-[A-Za-z0-9]+))?"
    r"(?P<rest>(?:_[a-z]+-[A-Za-z0-9]+)*)_T1w\.nii(?:\.gz)?$"
)
_ENTITY_RE = re.compile(r"([a-z]+)-([A-Za-z0-9]+)")


def is_missing(value: object) -> bool:
    """True for None, NaN and the strings of :data:`MISSING`."""
    if value is None:
        return True
    if not isinstance(value, str) and pd.isna(value):
        return True
    return str(value).strip() in MISSING


def scan_key(participant_id: str, session_id: str | None) -> str:
    """The scan id: ``sub-01`` or ``sub-01_ses-02`` (the one home of scan ids).

    Parameters
    ----------
    participant_id : str
        E.g. ``"sub-01"``.
    session_id : str or None
        ``"ses-02"``; ``"n/a"``, empty, None or NaN for no session; or, for a session
        with several T1w kept (``t1w_multiple: all``), ``"ses-02_run-2"``.

    Returns
    -------
    str
        ``participant_id`` alone without a session, else ``f"{participant_id}_{session_id}"``.
    """
    if is_missing(session_id):
        return str(participant_id)
    return f"{participant_id}_{session_id}"


def scan_subdir(participant_id: str, session_id: str | None) -> str:
    """``sub-01`` or ``sub-01/ses-02``: the folder of a scan's outputs.

    Only the BIDS session counts: ``session_id="ses-02_run-2"`` gives ``sub-01/ses-02``.
    """
    ses = "" if is_missing(session_id) else str(session_id).split("_")[0]
    if not ses.startswith("ses-"):
        return str(participant_id)
    return f"{participant_id}/{ses}"


def entity_dict(entities: str) -> dict[str, str]:
    """``"acq-x_run-02"`` -> ``{"acq": "x", "run": "02"}`` (empty string -> ``{}``)."""
    return dict(_ENTITY_RE.findall(entities or ""))


def check_raw_dataset(bids_dir: Path) -> None:
    """Refuse a derivatives dataset by its ``dataset_description.json``.

    Raises
    ------
    DatasetError
        ``DatasetType`` is ``"derivative"`` (or the pre-1.4 ``PipelineDescription``
        is present): its images are processed outputs, not raw scans.
    """
    path = Path(bids_dir) / "dataset_description.json"
    if not path.is_file():
        return
    try:
        desc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: not readable as JSON (%s); not checked for DatasetType", path, err)
        return
    if not isinstance(desc, dict):
        return
    if str(desc.get("DatasetType", "")).lower() == "derivative" or "PipelineDescription" in desc:
        raise DatasetError(
            _derivative_message(Path(bids_dir), f"{path} says DatasetType derivative")
        )


def _derivative_message(bids_dir: Path, why: str) -> str:
    hint = ""
    if bids_dir.resolve().parent.name == "derivatives":
        hint = f" (probably {bids_dir.resolve().parent.parent})"
    return (
        f"{bids_dir}: a BIDS-Derivatives dataset ({why}); brainlens preprocesses raw T1w "
        f"itself and would treat processed images as raw scans. Fix: point bids_dir at the "
        f"raw BIDS dataset{hint}"
    )


def _parse_t1w(path: Path, bids_dir: Path) -> dict[str, str]:
    """One discovered file as a scan-table row (checks its name and folder)."""
    m = _T1W_RE.match(path.name)
    rel = path.relative_to(bids_dir).parts
    if m is None:
        raise DatasetError(
            f"{path}: not a BIDS T1w name (expected sub-<label>[_ses-<label>][_<key>-<value>]"
            "_T1w.nii[.gz], labels of letters and digits only). Fix: rename the file"
        )
    ses = m.group("ses") or "n/a"
    expected_dir = (m.group("sub"),) + ((ses,) if ses != "n/a" else ()) + ("anat",)
    if rel[:-1] != expected_dir:
        raise DatasetError(
            f"{path}: file name entities do not match its folder {'/'.join(rel[:-1])} "
            f"(expected {'/'.join(expected_dir)}). Fix: move or rename the file"
        )
    stem = path.name.split("_T1w")[0]
    return {
        "scan": stem,
        "participant_id": m.group("sub"),
        "session_id": ses,
        "subdir": scan_subdir(m.group("sub"), ses),
        "path": str(path.resolve()),
        "stem": stem,
        "entities": m.group("rest").lstrip("_"),
    }


def find_scans(bids_dir: Path) -> pd.DataFrame:
    """All T1w files under ``sub-*/[ses-*/]anat/``, before any selection.

    Returns
    -------
    pandas.DataFrame
        Columns ``scan`` (here the file's stem, the name before ``_T1w``),
        ``participant_id``, ``session_id`` ("n/a" without sessions), ``subdir``,
        ``path`` (absolute), ``stem`` and ``entities`` (the stem's entities after
        ``sub``/``ses``, e.g. ``acq-mprage_run-01``; empty if none), sorted by ``stem``.

    Raises
    ------
    DatasetError
        No T1w at all, a malformed name, a file in the wrong folder, one scan as both
        ``.nii`` and ``.nii.gz``, or processed images (``desc-``/``space-`` entities:
        a derivatives dataset).
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputFileError(
            bids_dir, "the BIDS folder does not exist", "set bids_dir in the config"
        )
    rows = [_parse_t1w(p, bids_dir) for p in sorted(bids_dir.glob("sub-*/**/anat/*_T1w.nii*"))]
    if not rows:
        raise DatasetError(
            f"{bids_dir}: no T1w scans found (expected sub-*/[ses-*/]anat/*_T1w.nii[.gz]). "
            "Fix: point bids_dir at the dataset root"
        )
    scans = pd.DataFrame(rows).sort_values("stem").reset_index(drop=True)
    derived = [
        Path(p).name
        for p, e in zip(scans["path"], scans["entities"], strict=True)
        if set(entity_dict(e)) & set(DERIVATIVE_ENTITIES)
    ]
    if derived:
        raise DatasetError(
            _derivative_message(
                bids_dir,
                f"{len(derived)} T1w with {'/'.join(f'{e}-' for e in DERIVATIVE_ENTITIES)} "
                f"entities, e.g. {', '.join(derived[:3])}",
            )
        )
    dup = scans[scans["stem"].duplicated(keep=False)]
    if not dup.empty:
        raise DatasetError(
            "the same scan exists twice (.nii and .nii.gz?): "
            + ", ".join(dup["path"])
            + ". Fix: keep one file per scan"
        )
    return scans


def read_participants(
    path: Path, *, label_column: str, missing_labels: str = "error"
) -> pd.DataFrame:
    """Read and check ``participants.tsv``.

    Parameters
    ----------
    path : Path
        The file.
    label_column : str
        The column that must exist.
    missing_labels : {"error", "keep"}
        ``error``: a row with an empty or ``n/a`` label raises. ``keep``: such rows are
        returned as they are (:func:`scan_table` decides, per participant with a T1w).

    Raises
    ------
    InputFileError
        The file is missing.
    DatasetError
        A missing label column, duplicate or malformed ``participant_id`` values, and
        (``missing_labels="error"``) empty labels, naming the rows and the fix.
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
    missing = ids[table[label_column].map(is_missing)].tolist()
    if missing and missing_labels == "error":
        raise DatasetError(
            f"{path}: no {label_column!r} value for {missing[:10]}. Fix: fill in the label "
            "or remove the participants (or set participants.drop_missing_labels: true)"
        )
    return table


def scan_table(
    bids_dir: Path,
    *,
    label_column: str,
    participants: Mapping | None = None,
    t1w_filters: Mapping | None = None,
    t1w_multiple: str = "error",
    exclude_scans: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The selected scans joined with their participants' labels, after all checks.

    Parameters
    ----------
    bids_dir : Path
        The raw BIDS dataset root.
    label_column : str
        The label column of ``participants.tsv``.
    participants : mapping, optional
        The config's ``participants`` block (``include_labels``, ``participant_label``,
        ``exclude_participant_label``, ``drop_missing_labels``), see
        :class:`brainlens.bids_select.Selection`.
    t1w_filters : mapping, optional
        Entity -> value(s), e.g. ``{"acq": "mprage", "run": [1]}``.
    t1w_multiple : {"error", "first", "all"}
        What several T1w left in one session do, see :func:`brainlens.bids_select.one_per_session`.
    exclude_scans : mapping, optional
        The config's ``exclude_scans``: every id must be a selected scan's id.

    Returns
    -------
    pandas.DataFrame
        :func:`find_scans` columns (``scan`` now the scan id) plus ``label`` and every
        other column of ``participants.tsv``, sorted by ``scan``. ``attrs["left_out"]``
        maps each file stem or participant left out by the selection to the reason.

    Raises
    ------
    DatasetError
        See the module docstring; also when the selection leaves no scan.
    ConfigError
        A selection setting is malformed or names labels the dataset does not have.
    """
    from brainlens.bids_select import Selection, select

    bids_dir = Path(bids_dir)
    check_raw_dataset(bids_dir)
    table = read_participants(
        bids_dir / "participants.tsv", label_column=label_column, missing_labels="keep"
    )
    selection = Selection.from_config(participants or {}, t1w_filters or {}, t1w_multiple)
    scans, left_out = select(
        find_scans(bids_dir), table, selection, label_column=label_column, where=bids_dir
    )
    check_exclude_scans(scans, exclude_scans or {}, left_out)
    out = scans.merge(table, on="participant_id", how="left")
    out["label"] = out[label_column].str.strip()
    out = out.sort_values("scan").reset_index(drop=True)
    out.attrs["left_out"] = left_out
    return out


def check_exclude_scans(
    scans: pd.DataFrame, excluded: Mapping[str, str], left_out: Mapping[str, str] | None = None
) -> None:
    """Every ``exclude_scans`` id must be the id of a selected scan.

    An id the selection left out anyway (``left_out``: stem or id -> reason) is only
    logged.

    Raises
    ------
    DatasetError
        Naming each unknown id and, where it is the file stem of a scan, the id to use.
    """
    left_out = dict(left_out or {})
    by_stem = dict(zip(scans["stem"], scans["scan"], strict=True)) if "stem" in scans else {}
    problems = []
    for key in sorted(set(excluded) - set(scans["scan"])):
        if key in left_out:
            log.warning("exclude_scans: %s is left out anyway (%s)", key, left_out[key])
        elif key in by_stem:
            problems.append(f"{key} (the file of scan {by_stem[key]!r}: use that id)")
        else:
            problems.append(key)
    if problems:
        raise DatasetError(
            f"exclude_scans names {len(problems)} scan(s) not in the dataset: "
            f"{'; '.join(problems)}; scan ids look like {scans['scan'].iloc[0]!r} "
            "(sub-<label>[_ses-<label>]). Fix: use the scan ids or remove them from exclude_scans"
        )


def scan_table_from_config(config: Mapping) -> pd.DataFrame:
    """:func:`scan_table` of ``config["bids_dir"]`` with the config's selection keys.

    The one call the workflow (``common.smk``) and ``brainlens check`` share; keys
    missing from ``config`` take the schema defaults (no selection, ``t1w_multiple:
    error``, no exclusions).
    """
    return scan_table(
        Path(config["bids_dir"]),
        label_column=config.get("label_column", "diagnosis"),
        participants=config.get("participants") or {},
        t1w_filters=config.get("t1w_filters") or {},
        t1w_multiple=config.get("t1w_multiple", "error"),
        exclude_scans=config.get("exclude_scans") or {},
    )
