"""Reading the workflow's result tables for the report, tolerant of missing files.

Every reader returns ``None`` (never raises) when an optional file is absent, so a
report of a partial run still renders, with a note where the data would be.
Malformed files raise :class:`brainlens.errors.InputFileError` naming the file.

The report manifest (:func:`write_manifest`, :func:`read_manifest`) names every input
of the ``report`` rule by kind and keys (:data:`MANIFEST_KINDS`); it is required, so a
missing manifest raises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens._io import write_text_atomic
from brainlens.errors import InputFileError

#: Strings that mean "missing" in brainlens tables.
NA_VALUES = ["n/a", "N/A", "NA", "nan", "NaN", "None", ""]


def exists(path: str | Path | None) -> bool:
    """Whether ``path`` is given and names an existing file."""
    return path is not None and str(path) != "" and Path(path).is_file()


def read_tsv(
    path: str | Path | None, *, required: tuple[str, ...] = (), index_col: str | None = None
) -> pd.DataFrame | None:
    """Read a TSV, or return ``None`` when it is not given or does not exist.

    Parameters
    ----------
    path : path or None
        The file.
    required : tuple of str
        Columns the file must have.
    index_col : str, optional
        Column to use as index (read as strings).

    Returns
    -------
    pandas.DataFrame or None

    Raises
    ------
    InputFileError
        The file exists but cannot be parsed or lacks a required column.
    """
    if not exists(path):
        return None
    p = Path(path)
    try:
        df = pd.read_csv(p, sep="\t", na_values=NA_VALUES, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputFileError(
            p, f"not a readable TSV ({err})", "re-run the step that wrote it"
        ) from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputFileError(
            p,
            f"missing column(s) {missing}; it has {list(df.columns)}",
            "re-run the step that wrote it with the current brainlens",
        )
    if index_col is not None and index_col in df.columns:
        df[index_col] = df[index_col].astype(str)
        df = df.set_index(index_col)
    return df


def read_json(path: str | Path | None) -> dict[str, Any] | None:
    """Read a JSON object, or ``None`` when the file is not given or does not exist."""
    if not exists(path):
        return None
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(p, f"not valid JSON ({err})", "re-run the step that wrote it") from err
    if not isinstance(data, dict):
        raise InputFileError(
            p, f"expected a JSON object, got {type(data).__name__}", "regenerate it"
        )
    return data


def as_bool(values: pd.Series) -> pd.Series:
    """Booleans from a column of bools or ``"True"/"False"`` strings; missing stays NaN.

    Returns
    -------
    pandas.Series
        Of dtype object holding True, False or NaN.
    """

    def conv(v: Any) -> Any:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return np.nan
        s = str(v).strip().lower()
        if s in ("true", "1", "1.0", "yes"):
            return True
        if s in ("false", "0", "0.0", "no"):
            return False
        return np.nan

    return values.map(conv).astype(object)


def as_flag(values: pd.Series) -> pd.Series:
    """Like :func:`as_bool` but missing or unreadable values count as False (dtype bool)."""
    return as_bool(values).map(lambda v: v is True).astype(bool)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for humans: ``digits`` significant decimals, ``–`` for missing.

    Integers print without decimals; floats with ``digits`` decimals when below
    100, else rounded to an integer.
    """
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if x != 0 and abs(x) < 10 ** (-digits):
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def fmt_pct(value: Any) -> str:
    """A share in [0, 1] as a percentage, ``–`` for missing."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(x) else f"{100 * x:.0f}%"


def sorted_keys(d: Mapping) -> list:
    """The keys of ``d`` sorted with numbers before strings (folds like 0, 1, 10)."""

    def key(k: Any) -> tuple:
        parts = k if isinstance(k, tuple) else (k,)
        return tuple((0, int(p), "") if str(p).isdigit() else (1, 0, str(p)) for p in parts)

    return sorted(d, key=key)


#: Format version of the report manifest (``results/report_manifest.json``).
MANIFEST_VERSION = 1

#: The report manifest's file kinds: kind -> (:func:`~brainlens.report.build_report`
#: argument, the keys that name one file of that kind). Kinds without keys are single
#: files (left out or ``None`` when the run has none); the others become dicts keyed by
#: the tuple of their keys' values (a single key: the value itself).
MANIFEST_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "inputs": ("inputs_tsv", ()),
    "qc": ("qc_tsv", ()),
    "folds": ("folds_tsv", ()),
    "ground_truth": ("ground_truth", ()),
    "template": ("template_t1w", ()),
    "qc_figure": ("qc_figures", ("scan",)),
    "summary": ("summaries", ("model",)),
    "metrics": ("fold_metrics", ("model", "fold")),
    "predictions": ("predictions", ("model", "fold")),
    "history": ("histories", ("model", "fold")),
    "attribution": ("attribution_tables", ("model", "method", "fold")),
    "regions": ("region_tables", ("model", "method", "atlas")),
    "region_folds": ("region_fold_tables", ("model", "method", "atlas")),
    "agreement": ("agreement_tables", ("model", "atlas")),
    "sanity": ("sanity_tables", ("model", "method")),
    "deletion": ("deletion_tables", ("model", "method")),
    "sanity_summary": ("sanity_summary_tables", ("model", "method")),
    "sanity_cascade": ("sanity_cascade_tables", ("model", "method")),
    # external test sets (brainlens.external; their own report sections)
    "external_metrics": ("external_metrics", ("dataset", "model", "fold")),
    "external_predictions": ("external_predictions", ("dataset", "model", "fold")),
    "external_summary": ("external_summaries", ("dataset", "model")),
}


class _BadRecord(Exception):
    """A malformed manifest record (turned into InputFileError by the callers)."""


def _manifest_key(record: Any, where: str) -> tuple[str, tuple]:
    """The kind and key tuple of one manifest record; raises naming what is wrong."""
    if not isinstance(record, Mapping):
        raise _BadRecord(f"{where}: expected an object with kind, path and keys, got {record!r}")
    kind = record.get("kind")
    if kind not in MANIFEST_KINDS:
        raise _BadRecord(f"{where}: unknown kind {kind!r}; known kinds: {sorted(MANIFEST_KINDS)}")
    names = MANIFEST_KINDS[kind][1]
    expected = {"kind", "path", *names}
    if set(record) != expected:
        raise _BadRecord(
            f"{where}: a {kind!r} record has the fields {sorted(expected)}, got {sorted(record)}"
        )
    if not isinstance(record["path"], str) or not record["path"]:
        raise _BadRecord(f"{where}: 'path' must be a non-empty string, got {record['path']!r}")
    for name in names:
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _BadRecord(f"{where}: {name!r} must be a string or integer, got {value!r}")
    return kind, tuple(record[n] for n in names)


def manifest_arguments(
    records: list[Mapping[str, Any]],
    *,
    root: str | Path | None = None,
    source: str = "manifest",
    fix: str = "re-run the report_manifest rule (delete the manifest and run snakemake again)",
) -> dict[str, Any]:
    """The :func:`~brainlens.report.build_report` file arguments a manifest names.

    Parameters
    ----------
    records : list of dict
        One per file: ``kind`` (a key of :data:`MANIFEST_KINDS`), ``path`` and that kind's
        keys (``model``, ``method``, ``fold``, ``atlas``, ``scan``).
    root : path, optional
        Folder that relative paths are relative to (the workflow's working directory);
        default: kept relative (to the current directory).
    source : str
        Name of the manifest in error messages.
    fix : str
        What to do about a malformed record, for the error message.

    Returns
    -------
    dict
        Every argument of :data:`MANIFEST_KINDS`: a Path or ``None`` for single files, a
        dict (key tuple, or the single key's value) -> Path for the others.

    Raises
    ------
    InputFileError
        A record has an unknown kind, missing or extra fields, or repeats another's keys.
    """
    try:
        return _arguments(records, root, source)
    except _BadRecord as err:
        raise InputFileError(source, str(err), fix) from None


def _arguments(records: Any, root: str | Path | None, source: str) -> dict[str, Any]:
    if not isinstance(records, list):
        raise _BadRecord(f"'files' must be a list of records, got {records!r}")
    out: dict[str, Any] = {arg: ({} if names else None) for arg, names in MANIFEST_KINDS.values()}
    seen: set[tuple[str, tuple]] = set()
    for i, record in enumerate(records):
        kind, key = _manifest_key(record, f"files[{i}]")
        if (kind, key) in seen:
            raise _BadRecord(
                f"files[{i}]: a second {kind!r} file for {key or 'the run'} "
                f"({record['path']}); each kind and key must be listed once"
            )
        seen.add((kind, key))
        path = Path(record["path"])
        path = Path(root) / path if root is not None and not path.is_absolute() else path
        arg = MANIFEST_KINDS[kind][0]
        if not key:
            out[arg] = path
        else:
            out[arg][key[0] if len(key) == 1 else key] = path
    return out


def write_manifest(records: list[Mapping[str, Any]], path: str | Path) -> Path:
    """Write the report manifest (JSON) after checking its records.

    Parameters
    ----------
    records : list of dict
        See :func:`manifest_arguments`; written in the given order.
    path : str or Path
        The manifest (``results/report_manifest.json``), written atomically.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputFileError
        A record is malformed (see :func:`manifest_arguments`).
    """
    records = [dict(r) for r in records]
    manifest_arguments(
        records,
        source=str(path),
        fix="the records come from workflow/rules/report.smk (report_records): correct them",
    )
    text = json.dumps({"version": MANIFEST_VERSION, "files": records}, indent=1)
    return write_text_atomic(path, text + "\n")


def read_manifest(path: str | Path, *, root: str | Path | None = None) -> dict[str, Any]:
    """Read a report manifest into :func:`~brainlens.report.build_report` arguments.

    Parameters
    ----------
    path : str or Path
        The manifest written by :func:`write_manifest`.
    root : path, optional
        Folder its relative paths are relative to (see :func:`manifest_arguments`).

    Returns
    -------
    dict
        See :func:`manifest_arguments`.

    Raises
    ------
    InputFileError
        The manifest is missing, not JSON, of another version, or has a malformed record.
    """
    p = Path(path)
    fix = "re-run the report_manifest rule (delete the file and run snakemake again)"
    if not p.is_file():
        raise InputFileError(p, "the report manifest does not exist", fix)
    data = read_json(p)
    if data.get("version") != MANIFEST_VERSION:
        raise InputFileError(
            p, f"manifest version {data.get('version')!r}, expected {MANIFEST_VERSION}", fix
        )
    return manifest_arguments(data.get("files"), root=root, source=str(p), fix=fix)
