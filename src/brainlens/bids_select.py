"""Choose participants and T1w of a BIDS dataset, with pybids/snakebids semantics.

The config's ``participants`` block and ``t1w_filters`` select what
:func:`brainlens.bids.scan_table` returns; this is the same selection that
``BIDSLayout.get`` / snakebids ``filters`` + ``--participant-label`` make, done on the
file names directly (pybids would index the whole dataset at every DAG parse):

``participants.participant_label`` / ``exclude_participant_label``
    BIDS labels with or without ``sub-`` (``01`` = ``sub-01``), as fMRIPrep and
    snakebids take them. An unknown label is an error.
``participants.include_labels``
    The label values kept; participants with any other label are left out (logged).
``participants.drop_missing_labels``
    Participants with a T1w but an empty or ``n/a`` label are left out with a warning
    instead of stopping the run.
``t1w_filters``
    Entity -> value or list of values (``{acq: mprage}``, ``{run: [1, 2]}``,
    ``{ses: [test]}``); ``run`` (and ``echo``, ``chunk``) compare as numbers, so
    ``1`` matches ``run-01``; ``ses``/``session`` values may carry ``ses-``; ``true``
    requires the entity, ``false`` requires its absence (pybids ``Query.ANY`` /
    ``Query.NONE``). Long pybids names (``acquisition``, ``session``,
    ``reconstruction``, ``ceagent``) are accepted.
``t1w_multiple``
    Several T1w left in one session of one participant: ``error`` (default),
    ``first`` or ``all``, see :func:`one_per_session`.

Participants without any T1w (MEG ``sub-emptyroom``, dropouts) or whose T1w are all
filtered out are logged as a warning and left out; T1w of participants missing from
``participants.tsv`` stay an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from brainlens.bids import LABEL_RE, entity_dict, is_missing, scan_key
from brainlens.errors import ConfigError, DatasetError

log = logging.getLogger("brainlens.bids")

MULTIPLE = ("error", "first", "all")
#: Long (pybids) entity names -> the short names in file names.
ALIASES = {
    "session": "ses",
    "acquisition": "acq",
    "reconstruction": "rec",
    "ceagent": "ce",
    "subject": "sub",
}
ENTITIES = ("ses", "task", "acq", "ce", "rec", "run", "echo", "part", "chunk", "inv", "flip", "mt")
#: Index entities: compared as integers (``run-01`` == 1).
NUMERIC = ("run", "echo", "chunk", "inv", "flip")
_SHOWN = 10


def _shown(items: Sequence[str]) -> str:
    items = list(items)
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _as_list(key: str, value: object) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ConfigError(f"{key}: expected strings, got {v!r}. Fix: e.g. {key}: ['01', '02']")
        out.append(str(v).strip())
    return out


def _participant(key: str, label: str) -> str:
    bare = label[4:] if label.startswith("sub-") else label
    if not LABEL_RE.match(bare):
        raise ConfigError(
            f"{key}: {label!r} is not a BIDS participant label (letters and digits, with or "
            "without 'sub-'). Fix: e.g. ['01', 'sub-02']"
        )
    return f"sub-{bare}"


def _filter_value(entity: str, value: object) -> tuple[object, ...] | bool:
    key = f"t1w_filters.{entity}"
    if isinstance(value, bool):
        return value
    values = _as_list(key, value)
    if not values:
        raise ConfigError(f"{key}: an empty list matches no T1w. Fix: give values or remove it")
    if entity == "ses":
        values = [v[4:] if v.startswith("ses-") else v for v in values]
    if entity in NUMERIC:
        try:
            return tuple(int(v) for v in values)
        except ValueError:
            raise ConfigError(
                f"{key}: expected numbers, got {values}. Fix: e.g. {{run: [1]}}"
            ) from None
    return tuple(values)


@dataclass(frozen=True)
class Selection:
    """What to keep of a dataset (see the module docstring for the semantics).

    Parameters
    ----------
    include_labels : tuple of str
        Label values kept (empty: all).
    participant_label, exclude_participant_label : tuple of str
        ``sub-<label>`` ids kept (empty: all) / left out.
    drop_missing_labels : bool
        Leave out participants without a label instead of raising.
    t1w_filters : mapping of str to tuple or bool
        Short entity name -> accepted values (ints for :data:`NUMERIC`), or
        True (entity required) / False (entity absent).
    t1w_multiple : {"error", "first", "all"}
    """

    include_labels: tuple[str, ...] = ()
    participant_label: tuple[str, ...] = ()
    exclude_participant_label: tuple[str, ...] = ()
    drop_missing_labels: bool = False
    t1w_filters: Mapping[str, tuple[object, ...] | bool] = field(default_factory=dict)
    t1w_multiple: str = "error"

    @classmethod
    def from_config(
        cls, participants: Mapping, t1w_filters: Mapping, t1w_multiple: str = "error"
    ) -> Selection:
        """Build it from the config's ``participants``, ``t1w_filters``, ``t1w_multiple``.

        Raises
        ------
        ConfigError
            An unknown key or entity, a malformed label or value.
        """
        known = {
            "include_labels",
            "participant_label",
            "exclude_participant_label",
            "drop_missing_labels",
        }
        unknown = sorted(set(participants) - known)
        if unknown:
            raise ConfigError(f"participants: unknown key(s) {unknown}; expected {sorted(known)}")
        if t1w_multiple not in MULTIPLE:
            raise ConfigError(
                f"t1w_multiple: expected one of {list(MULTIPLE)}, got {t1w_multiple!r}"
            )
        filters: dict[str, tuple[object, ...] | bool] = {}
        for name, value in (t1w_filters or {}).items():
            entity = ALIASES.get(name, name)
            if entity not in ENTITIES:
                raise ConfigError(
                    f"t1w_filters: {name!r} is not an entity of raw T1w names; expected one of "
                    f"{list(ENTITIES)} (or {sorted(k for k in ALIASES if k != 'subject')}); "
                    "choose participants with participants.participant_label"
                )
            if entity in filters:
                raise ConfigError(
                    f"t1w_filters: {entity!r} given twice (as {name!r}). Fix: keep one"
                )
            filters[entity] = _filter_value(entity, value)

        def ids(key: str) -> tuple[str, ...]:
            return tuple(
                _participant(f"participants.{key}", v)
                for v in _as_list(f"participants.{key}", participants.get(key))
            )

        return cls(
            include_labels=tuple(
                _as_list("participants.include_labels", participants.get("include_labels"))
            ),
            participant_label=ids("participant_label"),
            exclude_participant_label=ids("exclude_participant_label"),
            drop_missing_labels=bool(participants.get("drop_missing_labels", False)),
            t1w_filters=filters,
            t1w_multiple=t1w_multiple,
        )


def matches(entities: str, session_id: str, filters: Mapping[str, object]) -> bool:
    """Whether one T1w (its ``entities`` string and session) passes ``filters``."""
    have = entity_dict(entities)
    if not is_missing(session_id):
        have["ses"] = str(session_id).split("_")[0][4:]
    for entity, wanted in filters.items():
        value = have.get(entity)
        if wanted is True or wanted is False:
            if (value is not None) != wanted:
                return False
            continue
        if value is None:
            return False
        if entity in NUMERIC:
            if not value.isdigit():
                return False
            value = int(value)
        if value not in wanted:
            return False
    return True


def _by_participant(
    scans: pd.DataFrame, table: pd.DataFrame, sel: Selection, where: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply participant_label / exclude_participant_label to both tables."""
    known = set(table["participant_id"]) | set(scans["participant_id"])
    for key in ("participant_label", "exclude_participant_label"):
        unknown = sorted(set(getattr(sel, key)) - known)
        if unknown:
            raise ConfigError(
                f"participants.{key}: {unknown} are neither in {where}/participants.tsv nor "
                "folders of the dataset (YAML reads 01 as 1: quote labels, '01'). Fix the labels"
            )
    keep = set(sel.participant_label) or known
    keep -= set(sel.exclude_participant_label)
    return scans[scans["participant_id"].isin(keep)], table[table["participant_id"].isin(keep)]


def _by_label(
    scans: pd.DataFrame, table: pd.DataFrame, sel: Selection, label_column: str, where: Path
) -> tuple[set[str], dict[str, str]]:
    """Participants with a T1w whose label is usable; the others and why."""
    labels = table.set_index("participant_id")[label_column]
    imaged = labels[labels.index.isin(scans["participant_id"])]
    reasons = {}
    missing = sorted(imaged.index[imaged.map(is_missing)])
    if missing and not sel.drop_missing_labels:
        raise DatasetError(
            f"{where}/participants.tsv: no {label_column!r} value for {_shown(missing)}. Fix: fill "
            "in the label, remove the participants, or set participants.drop_missing_labels: true"
        )
    if missing:
        log.warning("left out (no %r label): %s", label_column, _shown(missing))
        reasons |= {
            p: f"no {label_column} label (participants.drop_missing_labels)" for p in missing
        }
    present = imaged.drop(missing).str.strip()
    if sel.include_labels:
        unknown = sorted(set(sel.include_labels) - set(labels[~labels.map(is_missing)].str.strip()))
        if unknown:
            raise ConfigError(
                f"participants.include_labels: {unknown} are not values of {label_column!r} in "
                f"{where}/participants.tsv (values: {sorted(set(present))}). Fix the labels"
            )
        other = present[~present.isin(sel.include_labels)]
        for value, group in other.groupby(other):
            log.warning(
                "left out (label %r not in participants.include_labels): %d participant(s): %s",
                value,
                len(group),
                _shown(sorted(group.index)),
            )
        reasons |= {p: f"label {v!r} not in participants.include_labels" for p, v in other.items()}
        present = present[present.isin(sel.include_labels)]
    return set(present.index), reasons


def _run_number(entities: str) -> int:
    """The ``run`` index of a T1w (-1 without one, so such a file sorts first)."""
    run = entity_dict(entities).get("run")
    return int(run) if run is not None and run.isdigit() else -1


def one_per_session(scans: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Give every scan its id; settle sessions that kept several T1w.

    Parameters
    ----------
    scans : pandas.DataFrame
        :func:`brainlens.bids.find_scans` rows after filtering.
    rule : {"error", "first", "all"}
        ``error``: raise, listing the files. ``first``: keep the T1w with the lowest
        ``run`` (a file without ``run-`` counts as lowest), ties broken by file name;
        the others are logged and left out. ``all``: keep each; their ``session_id``
        becomes the session plus their entities (``ses-01_acq-x_run-2``) and their
        scan id the file stem (``sub-02_ses-01_acq-x_run-2``).

    Returns
    -------
    tuple of (pandas.DataFrame, dict)
        The scans with ``scan`` set to the scan id, sorted by it, and stem -> reason
        for each T1w left out.
    """
    visit = ["participant_id", "session_id"]
    scans = scans.assign(_run=scans["entities"].map(_run_number))
    scans = scans.sort_values([*visit, "_run", "stem"]).drop(columns="_run")
    several = scans.duplicated(visit, keep=False)
    left_out: dict[str, str] = {}
    if several.any() and rule == "error":
        groups = [
            f"{scan_key(p, s)}: {', '.join(Path(x).name for x in g['path'])}"
            for (p, s), g in scans[several].groupby(visit)
        ]
        raise DatasetError(
            f"{len(groups)} session(s) have several T1w, which would count as separate "
            f"training samples: {'; '.join(groups[:_SHOWN])}. Fix: choose one with t1w_filters "
            "(e.g. t1w_filters: {acq: <value>} or {run: [1]}), or set t1w_multiple: first "
            "(lowest run, then file name) or all (each T1w its own scan)"
        )
    if several.any() and rule == "first":
        extra = scans.duplicated(visit, keep="first")
        kept = scans[~extra].set_index(visit)["stem"]
        for stem, p, s in scans.loc[extra, ["stem", *visit]].itertuples(index=False):
            left_out[stem] = f"t1w_multiple: first kept {kept[(p, s)]} of its session"
        log.warning("left out (t1w_multiple: first): %s", _shown(sorted(left_out)))
        scans = scans[~extra]
    elif several.any():
        rows = scans[several]
        keys = [
            "_".join(x for x in ("" if is_missing(s) else s, e) if x) or "n/a"
            for s, e in zip(rows["session_id"], rows["entities"], strict=True)
        ]
        scans.loc[several, "session_id"] = keys
    ids = [
        scan_key(p, s) for p, s in zip(scans["participant_id"], scans["session_id"], strict=True)
    ]
    return scans.assign(scan=ids).sort_values("scan").reset_index(drop=True), left_out


def _by_entities(
    scans: pd.DataFrame, filters: Mapping[str, object]
) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """Apply ``t1w_filters``: kept scans, stem -> reason, participants with none left."""
    passed = pd.Series(
        [
            matches(e, s, filters)
            for e, s in zip(scans["entities"], scans["session_id"], strict=True)
        ],
        index=scans.index,
        dtype=bool,
    )
    dropped = sorted(scans.loc[~passed, "stem"])
    if dropped:
        log.info("left out by t1w_filters: %s", _shown(dropped))
    emptied = sorted(set(scans["participant_id"]) - set(scans.loc[passed, "participant_id"]))
    if emptied:
        log.warning("participants whose T1w t1w_filters all left out: %s", _shown(emptied))
    reasons = {s: "left out by t1w_filters" for s in dropped}
    reasons |= {p: "every T1w left out by t1w_filters" for p in emptied}
    return scans[passed], reasons, emptied


def select(
    scans: pd.DataFrame,
    table: pd.DataFrame,
    sel: Selection,
    *,
    label_column: str,
    where: Path,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The selected scans (with their ids) and what was left out, stem or id -> reason.

    Parameters
    ----------
    scans : pandas.DataFrame
        Every T1w (:func:`brainlens.bids.find_scans`).
    table : pandas.DataFrame
        ``participants.tsv`` (:func:`brainlens.bids.read_participants`, labels kept).
    sel : Selection
    label_column : str
    where : Path
        The dataset root, for messages.

    Raises
    ------
    DatasetError
        T1w of participants missing from ``participants.tsv``, missing labels (unless
        dropped), several T1w per session (``error``), or nothing left.
    ConfigError
        Unknown participant labels or label values in the selection.
    """
    scans, table = _by_participant(scans, table, sel, where)
    orphans = sorted(set(scans["participant_id"]) - set(table["participant_id"]))
    if orphans:
        raise DatasetError(
            f"{where}: T1w scans of participants missing from participants.tsv: {_shown(orphans)} "
            "(fix: add rows for them, remove the scans, or leave them out with "
            "participants.exclude_participant_label)"
        )
    usable, left_out = _by_label(scans, table, sel, label_column, where)
    scans, reasons, emptied = _by_entities(
        scans[scans["participant_id"].isin(usable)], sel.t1w_filters
    )
    left_out |= reasons
    label = table.set_index("participant_id")[label_column].str.strip()
    wanted = (
        label
        if not sel.include_labels
        else label[label.map(is_missing) | label.isin(sel.include_labels)]
    )
    no_t1w = sorted(set(wanted.index) - set(left_out) - set(scans["participant_id"]) - set(emptied))
    if no_t1w:
        log.warning("participants.tsv rows without a T1w, left out: %s", _shown(no_t1w))
        left_out |= {p: "no T1w in the dataset" for p in no_t1w}
    if scans.empty:
        raise DatasetError(
            f"{where}: the selection (participants, t1w_filters) leaves no T1w scan. Fix: "
            "loosen participants.include_labels / participant_label or t1w_filters"
        )
    scans, multiple = one_per_session(scans, sel.t1w_multiple)
    return scans, left_out | multiple
