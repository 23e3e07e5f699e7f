"""Reading the workflow's result tables for the report, tolerant of missing files.

Every reader returns ``None`` (never raises) when an optional file is absent, so a
report of a partial run still renders, with a note where the data would be.
Malformed files raise :class:`brainlens.errors.InputFileError` naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
