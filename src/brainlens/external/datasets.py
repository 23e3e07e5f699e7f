"""The config's external test sets, read and checked when the workflow parses its config.

Each entry of ``external.datasets`` is a raw BIDS dataset read with the main dataset's
reader (:func:`brainlens.bids.scan_table`) and selection semantics: its ``t1w_filters``,
``t1w_multiple`` and ``participants.drop_missing_labels`` (the other ``participants``
keys name the main dataset's labels and IDs, so they do not apply). Its labels are
mapped to the main classes with ``label_map`` (a label mapped to null leaves those
participants out). Every problem is a :class:`~brainlens.errors.ConfigError` naming
the dataset, the file or value and the fix, raised before any job runs (in the
workflow's ``common.smk`` and in ``brainlens check``):

* ``external.final_model: true`` (not implemented yet);
* two datasets with one name;
* a missing ``bids_dir`` or ``participants.tsv``, a derivatives dataset, a missing
  label column or any other dataset problem of :func:`brainlens.bids.scan_table`;
* a label that is not a main class after mapping;
* a participant ID present in the main and the external dataset.

Near-duplicate images across datasets are found after preprocessing
(:mod:`brainlens.external.audit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from brainlens.bids import scan_table
from brainlens.errors import BrainlensError, ConfigError

#: Columns of an external scan table the workflow uses (plus ``label``, ``raw_label``).
SCAN_COLUMNS = ["scan", "participant_id", "session_id", "subdir", "path"]


def external_entries(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The validated ``external.datasets`` entries (``label_column`` resolved).

    Raises
    ------
    ConfigError
        ``external.final_model: true``, or two entries with one name.
    """
    external = config.get("external") or {}
    if external.get("final_model", False):
        raise ConfigError(
            "external.final_model: true is not implemented yet (a model retrained on all "
            "main subjects); the external datasets are scored by every fold's model. Fix: "
            "set external.final_model: false"
        )
    entries = []
    seen: set[str] = set()
    for k, entry in enumerate(external.get("datasets") or []):
        name = str(entry["name"])
        if name in seen:
            raise ConfigError(
                f"external.datasets[{k}]: the name {name!r} is used twice; it names the "
                f"output folder results/external/{name}/. Fix: give each dataset its own name"
            )
        seen.add(name)
        entries.append(
            {
                "name": name,
                "bids_dir": str(entry["bids_dir"]),
                "label_column": entry.get("label_column") or config.get("label_column"),
                "label_map": dict(entry.get("label_map") or {}),
            }
        )
    return entries


def _where(entry: Mapping[str, Any]) -> str:
    return f"external dataset {entry['name']!r} (bids_dir {entry['bids_dir']})"


def read_external(entry: Mapping[str, Any], config: Mapping[str, Any]) -> pd.DataFrame:
    """The selected scans of one external dataset, raw labels as read.

    Raises
    ------
    ConfigError
        A missing folder or participants.tsv, or any dataset problem of
        :func:`brainlens.bids.scan_table` (derivatives dataset, missing label column,
        malformed names, missing labels), naming the dataset.
    """
    bids_dir = Path(entry["bids_dir"])
    if not bids_dir.is_dir():
        raise ConfigError(
            f"{_where(entry)}: the folder does not exist. Fix: set "
            "external.datasets[].bids_dir to the external raw BIDS dataset, or remove the entry"
        )
    if not (bids_dir / "participants.tsv").is_file():
        raise ConfigError(
            f"{_where(entry)}: {bids_dir / 'participants.tsv'} is missing. Fix: add "
            f"participants.tsv with participant_id and {entry['label_column']!r} columns"
        )
    drop_missing = bool((config.get("participants") or {}).get("drop_missing_labels", False))
    try:
        table = scan_table(
            bids_dir,
            label_column=str(entry["label_column"]),
            participants={"drop_missing_labels": drop_missing},
            t1w_filters=config.get("t1w_filters") or {},
            t1w_multiple=config.get("t1w_multiple", "error"),
        )
    except BrainlensError as err:
        raise ConfigError(f"{_where(entry)}: {err}") from err
    return table


def map_labels(
    table: pd.DataFrame, entry: Mapping[str, Any], classes: Sequence[str]
) -> pd.DataFrame:
    """``label`` mapped to the main classes (``raw_label`` keeps the dataset's own).

    Parameters
    ----------
    table : pandas.DataFrame
        A scan table with ``label`` (from :func:`read_external`).
    entry : mapping
        The dataset's entry (``name``, ``bids_dir``, ``label_column``, ``label_map``).
    classes : sequence of str
        The main dataset's classes.

    Returns
    -------
    pandas.DataFrame
        The rows kept (labels mapped to null left out), ``label`` mapped.

    Raises
    ------
    ConfigError
        A ``label_map`` target or a label that is not a main class, or no scan left.
    """
    classes = [str(c) for c in classes]
    label_map = {str(k): v for k, v in entry["label_map"].items()}
    bad_targets = sorted(
        {str(v) for v in label_map.values() if v is not None and str(v) not in classes}
    )
    if bad_targets:
        raise ConfigError(
            f"{_where(entry)}: label_map maps to {bad_targets}, not classes of the main "
            f"dataset {classes}. Fix: map each external label to one of {classes} (or null "
            "to leave it out)"
        )
    raw = table["label"].astype(str)
    mapped = raw.map(lambda v: label_map.get(v, v))
    out = table.assign(raw_label=raw, label=mapped)
    out = out[out["label"].notna()].reset_index(drop=True)
    unknown = sorted(set(out["label"].astype(str)) - set(classes))
    if unknown:
        who = out.loc[out["label"].isin(unknown), "participant_id"].unique().tolist()
        raise ConfigError(
            f"{_where(entry)}: {entry['label_column']!r} value(s) {unknown} of "
            f"{Path(entry['bids_dir']) / 'participants.tsv'} (e.g. {who[:5]}) are not classes "
            f"of the main dataset {classes}. Fix: map them in external.datasets[].label_map "
            f"(e.g. {{{unknown[0]}: {classes[0]}}}, or null to leave them out)"
        )
    if out.empty:
        raise ConfigError(
            f"{_where(entry)}: label_map leaves no scan. Fix: map fewer labels to null"
        )
    return out


def check_no_shared_participants(
    table: pd.DataFrame, entry: Mapping[str, Any], main_ids: Sequence[str]
) -> None:
    """A participant in both datasets would be scored on a model trained on them.

    Raises
    ------
    ConfigError
        Listing up to 10 shared ``participant_id`` values.
    """
    shared = sorted(set(table["participant_id"].astype(str)) & {str(i) for i in main_ids})
    if shared:
        raise ConfigError(
            f"{_where(entry)}: {len(shared)} participant ID(s) also in the main dataset: "
            f"{shared[:10]}; a subject in both would be tested on a model trained on it. "
            "Fix: if they are the same people, remove them from the external dataset; if "
            "not, rename them there (e.g. sub-ext01; `brainlens demo --id-prefix` for a "
            "demo dataset)"
        )


def external_scan_tables(
    config: Mapping[str, Any], main_scans: pd.DataFrame, classes: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """Every external dataset's scan table, checked (see the module docstring).

    Parameters
    ----------
    config : mapping
        The validated config.
    main_scans : pandas.DataFrame
        The main dataset's scan table (``participant_id``).
    classes : sequence of str
        The main dataset's classes.

    Returns
    -------
    dict of str to pandas.DataFrame
        Dataset name -> :data:`SCAN_COLUMNS` + ``label`` (mapped) + ``raw_label``,
        indexed by ``scan``, in config order; ``attrs["entry"]`` holds the entry.
    """
    main_ids = main_scans["participant_id"].astype(str).tolist()
    tables = {}
    for entry in external_entries(config):
        table = map_labels(read_external(entry, config), entry, classes)
        check_no_shared_participants(table, entry, main_ids)
        table = table[[*SCAN_COLUMNS, "label", "raw_label"]].set_index("scan", drop=False)
        table.attrs["entry"] = entry
        tables[entry["name"]] = table
    return tables


def external_summary_lines(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """One line per external dataset for ``brainlens check``."""
    lines = []
    for name, table in tables.items():
        counts = table.drop_duplicates("participant_id")["label"].value_counts().sort_index()
        per = ", ".join(f"{c} {n}" for c, n in counts.items())
        lines.append(
            f"external {name}: {len(table)} scans of {table['participant_id'].nunique()} "
            f"subjects ({per})"
        )
    return lines


def check_external_covariates(
    tables: Mapping[str, pd.DataFrame], covariates: Sequence[Any]
) -> None:
    """Each external participants.tsv carries the covariates (harmonised CNN inputs).

    Raises
    ------
    ConfigError
        A missing covariate column or a bad value
        (:func:`brainlens.confounds.covariates.check_covariates`), naming the dataset.
    """
    from brainlens.confounds.covariates import check_covariates

    for table in tables.values():
        entry = table.attrs["entry"]
        try:
            check_covariates(
                Path(entry["bids_dir"]) / "participants.tsv",
                covariates,
                entry["label_column"],
                participant_ids=sorted(set(table["participant_id"])),
            )
        except BrainlensError as err:
            raise ConfigError(
                f"{_where(entry)}, harmonised CNN inputs (confounds.method with scope all) "
                f"need the covariates in {Path(entry['bids_dir']) / 'participants.tsv'}: {err}"
            ) from err
