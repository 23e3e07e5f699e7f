"""The ``covariates:`` config key: validation, values per scan, encoding.

An entry is a ``participants.tsv`` column name (``age``), a one-key mapping that
declares its kind (``{site: categorical}``, ``{age: numeric}``), or the special name
``tiv`` (total intracranial volume in mL, per scan, from ``results/preprocess/tiv.tsv``
of the ``tiv`` rule). A column of undeclared kind is numeric when every value parses as
a number and categorical when none does; a mix is an error naming the values.
``n/a`` in a used column is an error listing the participants (no silent imputation).

Categorical columns are one-hot coded with the levels seen in the rows the encoding is
fitted on (a fold's training part): all levels for a classifier's input
(``confounds_only``), all but the first (reference coding) for a regression on the
covariates (``residualize``, ``combat``), where an unseen level is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens.errors import ConfigError, DatasetError, InputFileError

#: The computed covariate (not a participants.tsv column).
TIV = "tiv"
KINDS = ("auto", "numeric", "categorical")
#: Missing-value spellings in participants.tsv.
MISSING = ("", "n/a", "na", "nan")


def covariate_specs(covariates: Sequence[Any] | None, key: str = "covariates") -> list[tuple]:
    """``[(name, kind)]`` of a ``covariates:`` value (kind ``auto`` when undeclared).

    Raises
    ------
    ConfigError
        An entry that is neither a name nor a one-key ``{name: kind}`` mapping, an
        unknown kind, or a name listed twice.
    """
    out: list[tuple[str, str]] = []
    for item in covariates or []:
        if isinstance(item, str):
            name, kind = item, "auto"
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, kind),) = item.items()
        else:
            raise ConfigError(
                f"{key}: entry {item!r} is neither a column name nor a one-key mapping "
                "{column: numeric|categorical}. Fix: e.g. [age, sex, {site: categorical}]"
            )
        if kind not in KINDS[1:] and not (kind == "auto" and isinstance(item, str)):
            raise ConfigError(
                f"{key}: {name!r}: unknown kind {kind!r}; allowed numeric, categorical"
            )
        if name == TIV and kind == "categorical":
            raise ConfigError(f"{key}: {TIV!r} is a volume (numeric), not categorical")
        out.append((str(name), kind))
    names = [n for n, _ in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{key}: {twice} listed more than once. Fix: list each column once")
    return out


def covariate_names(covariates: Sequence[Any] | None) -> list[str]:
    """The column names of a ``covariates:`` value (``tiv`` included)."""
    return [n for n, _ in covariate_specs(covariates)]


def read_participants(path: str | Path) -> pd.DataFrame:
    """``participants.tsv`` as strings (``n/a`` kept literally)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(
            p,
            "participants table not found (the covariates are read from it)",
            "add participants.tsv to the BIDS root, or empty covariates and remove "
            "confounds_only from baselines.models",
        )
    table = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in table.columns:
        raise InputFileError(p, "no participant_id column", "add the BIDS participant_id column")
    return table


def read_tiv(path: str | Path) -> pd.DataFrame:
    """``results/preprocess/tiv.tsv`` (``scan_id, participant_id, ..., tiv_ml``)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "TIV table not found", "run the tiv rule (snakemake tiv)")
    table = pd.read_csv(p, sep="\t", dtype={"scan_id": str, "participant_id": str})
    if not {"scan_id", "tiv_ml"} <= set(table.columns):
        raise InputFileError(p, f"columns {list(table.columns)}", "re-run the tiv rule")
    return table


def _numbers(column: str, raw: pd.Series, kind: str) -> pd.Series | None:
    """``raw`` (str, index participant) as floats; None for a categorical column."""
    num = pd.to_numeric(raw, errors="coerce")
    bad = raw[num.isna() | ~np.isfinite(num.fillna(0.0))]
    if kind == "categorical" or (kind == "auto" and len(bad) == len(raw)):
        return None
    if len(bad):
        shown = ", ".join(f"{v!r} ({p})" for p, v in bad.head(5).items())
        hint = (
            "" if kind == "numeric" else f", or declare it categorical: {{{column}: categorical}}"
        )
        raise ConfigError(
            f"covariates: column {column!r} holds numbers and non-numbers: {shown} "
            f"({len(bad)} in all). Fix: correct the value(s) in participants.tsv{hint}"
        )
    return num.astype(float)


def covariate_values(
    participants: pd.DataFrame,
    covariates: Sequence[Any],
    rows: pd.DataFrame,
    *,
    tiv: pd.DataFrame | None = None,
    label_column: str | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Validated covariate values of some scans.

    Parameters
    ----------
    participants : DataFrame
        ``participants.tsv`` as strings (:func:`read_participants`).
    covariates : sequence
        The ``covariates:`` config value (see :func:`covariate_specs`).
    rows : DataFrame, n rows
        ``participant_id`` and, when ``tiv`` is a covariate, ``scan_id``.
    tiv : DataFrame, optional
        :func:`read_tiv` (required when ``tiv`` is a covariate).
    label_column : str, optional
        Refused as a covariate (it is the label).

    Returns
    -------
    values : DataFrame, shape (n, k)
        Numeric columns as float, categorical ones as str, in config order.
    kinds : dict of str to {"numeric", "categorical"}

    Raises
    ------
    ConfigError
        The label as a covariate, a column not in the table, ``n/a`` in a used column
        (listing the participants), a numeric column with a non-number (naming it).
    DatasetError
        A participant (or, for ``tiv``, a scan) without a row.
    """
    specs = covariate_specs(covariates)
    names = [n for n, _ in specs]
    if label_column is not None and label_column in names:
        raise ConfigError(
            f"covariates: {label_column!r} is the label column; a model given the label "
            "scores perfectly. Fix: remove it from covariates"
        )
    if TIV in names and TIV in participants.columns:
        raise ConfigError(
            f"covariates: {TIV!r} means the TIV brainlens computes, but participants.tsv "
            "also has a 'tiv' column. Fix: rename that column (e.g. tiv_external) and list "
            "the new name to use it instead"
        )
    missing = [n for n in names if n != TIV and n not in participants.columns]
    if missing:
        raise ConfigError(
            f"covariates: column(s) {missing} not in participants.tsv (columns "
            f"{list(participants.columns)}). Fix: add them to participants.tsv or remove "
            f"them from covariates ({TIV!r} is the computed TIV)"
        )
    by_id = participants.drop_duplicates("participant_id").set_index("participant_id")
    ids = [str(p) for p in rows["participant_id"]]
    unknown = sorted(set(ids) - set(by_id.index))
    if unknown:
        raise DatasetError(
            f"participants.tsv lacks participant(s) {unknown[:5]} ({len(unknown)} in all) "
            "of the scans used. Fix: list every participant in participants.tsv"
        )
    people = by_id.loc[sorted(set(ids))]
    out, kinds = {}, {}
    for name, kind in specs:
        if name == TIV:
            out[name], kinds[name] = _tiv_values(tiv, rows), "numeric"
            continue
        raw = people[name].astype(str).str.strip()
        absent = raw[raw.str.lower().isin(MISSING)]
        if len(absent):
            raise ConfigError(
                f"covariates: column {name!r} is n/a for participant(s) "
                f"{list(absent.index[:10])} ({len(absent)} in all). Fix: fill in the values, "
                "remove the column from covariates, or exclude those participants"
            )
        num = _numbers(name, raw, kind)
        kinds[name] = "categorical" if num is None else "numeric"
        per_row = (raw if num is None else num).reindex(ids)
        out[name] = per_row.to_numpy()
    return pd.DataFrame(out, index=rows.index, columns=names), kinds


def covariates_of_rows(
    rows: pd.DataFrame,
    participants_tsv: str | Path,
    tiv_tsv: str | Path | None,
    covariates: Sequence[Any],
    site_column: str | None,
) -> tuple[pd.DataFrame, dict[str, str], np.ndarray | None]:
    """Covariate values, their kinds and (optionally) the site of each row.

    Parameters
    ----------
    rows : pandas.DataFrame, shape (n, ...)
        Scans with ``participant_id`` (and ``scan_id`` for ``tiv``).
    participants_tsv, tiv_tsv : path
        ``participants.tsv`` and the ``tiv`` rule's table (None without ``tiv``).
    covariates : sequence
        ``covariates:`` entries.
    site_column : str or None
        Categorical column whose values ComBat harmonises.

    Returns
    -------
    values : pandas.DataFrame, shape (n, n_covariates)
    kinds : dict of str to str
        ``"numeric"`` or ``"categorical"`` per covariate.
    site : np.ndarray of str, shape (n,), or None
    """
    table = read_participants(participants_tsv)
    tiv = read_tiv(tiv_tsv) if tiv_tsv is not None else None
    values, kinds = covariate_values(table, covariates, rows, tiv=tiv)
    site = None
    if site_column is not None:
        site_values, _ = covariate_values(table, [{site_column: "categorical"}], rows)
        site = site_values[site_column].to_numpy(str)
    return values, kinds, site


def _tiv_values(tiv: pd.DataFrame | None, rows: pd.DataFrame) -> np.ndarray:
    if tiv is None:
        raise ConfigError(
            f"covariates: {TIV!r} listed, but no TIV table was given. Fix: pass "
            "results/preprocess/tiv.tsv (the tiv rule)"
        )
    by_scan = tiv.drop_duplicates("scan_id").set_index("scan_id")["tiv_ml"]
    scans = [str(s) for s in rows["scan_id"]]
    lacking = [s for s in scans if s not in by_scan.index]
    if lacking:
        raise DatasetError(
            f"tiv.tsv lacks scan(s) {lacking[:5]} ({len(lacking)} in all). Fix: re-run the "
            "tiv rule (results/preprocess/tiv.tsv) after preprocessing"
        )
    return by_scan.loc[scans].to_numpy(float)


def check_covariates(
    participants_tsv: str | Path,
    covariates: Sequence[Any],
    label_column: str | None = None,
    participant_ids: Sequence[str] | None = None,
) -> dict[str, str]:
    """Validate ``covariates`` against ``participants.tsv`` (``tiv`` not read here).

    Parameters
    ----------
    participants_tsv : path
    covariates : sequence
        The ``covariates:`` config value.
    label_column : str, optional
        Refused as a covariate.
    participant_ids : sequence of str, optional
        The participants used (default every row of the table).

    Returns
    -------
    dict of str to str
        Kind (``numeric`` / ``categorical``) of each participants.tsv covariate.
    """
    specs = covariate_specs(covariates)  # validates the entries, tiv included
    table = read_participants(participants_tsv)
    ids = table["participant_id"] if participant_ids is None else list(participant_ids)
    entries = [n if k == "auto" else {n: k} for n, k in specs if n != TIV]
    _, kinds = covariate_values(
        table, entries, pd.DataFrame({"participant_id": ids}), label_column=label_column
    )
    return kinds


def fit_encoding(
    values: pd.DataFrame, kinds: Mapping[str, str], fit_rows: np.ndarray, *, drop_first: bool
) -> list[dict[str, Any]]:
    """How each covariate becomes columns, from the rows ``fit_rows`` only.

    Parameters
    ----------
    values : DataFrame, shape (n, k)
        :func:`covariate_values`.
    kinds : dict of str to str
    fit_rows : ndarray of bool, shape (n,)
        The rows that define the categorical levels (a fold's training part).
    drop_first : bool
        Reference coding (no column for the first level), for regressions with an
        intercept; False gives every level a column.

    Returns
    -------
    list of dict
        JSON-serialisable: ``{"name", "kind", "levels", "drop_first"}`` per covariate.
    """
    fit = values[np.asarray(fit_rows, bool)]
    out = []
    for name in values.columns:
        levels = sorted(map(str, set(fit[name]))) if kinds[name] == "categorical" else []
        out.append({"name": name, "kind": kinds[name], "levels": levels, "drop_first": drop_first})
    return out


def encode(
    values: pd.DataFrame,
    encoding: Sequence[Mapping[str, Any]],
    *,
    unseen: str = "zeros",
    ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Covariate matrix of ``values`` with a fitted ``encoding``.

    Parameters
    ----------
    values : DataFrame, shape (n, k)
    encoding : list of dict
        :func:`fit_encoding`.
    unseen : {"zeros", "error"}
        A categorical level not in the encoding: all-zero columns, or a DatasetError
        naming the column, the level and (``ids``) the rows.
    ids : sequence of str, optional
        Row names for messages.

    Returns
    -------
    X : ndarray, shape (n, p)
    names : list of str
        ``age``, ``sex=M``, ...
    """
    cols, names = [], []
    for enc in encoding:
        name, col = enc["name"], values[enc["name"]]
        if enc["kind"] == "numeric":
            cols.append(col.to_numpy(float))
            names.append(name)
            continue
        col = col.astype(str)
        new = ~col.isin(enc["levels"]).to_numpy()
        if new.any() and unseen == "error":
            who = list(np.asarray(ids if ids is not None else values.index)[new][:5])
            raise DatasetError(
                f"covariates: column {name!r} has level(s) {sorted(set(col[new]))} (rows "
                f"{who}) that the fit rows never had (levels {enc['levels']}); their effect "
                "cannot be estimated. Fix: stratify the folds by it (folds.stratify) or "
                "exclude those participants"
            )
        for level in enc["levels"][1 if enc["drop_first"] else 0 :]:
            cols.append((col == level).to_numpy(float))
            names.append(f"{name}={level}")
    if not cols:
        return np.zeros((len(values), 0)), []
    return np.column_stack(cols), names
