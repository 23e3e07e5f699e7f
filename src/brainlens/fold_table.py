"""The folds table (``folds.tsv``): its columns, its readers and its leakage audit.

:func:`brainlens.folds.make_folds` builds the table and :func:`brainlens.folds.write_folds`
writes it; everything that reads it goes through :func:`read_folds`, selects a fold's
rows with :func:`fold_part` (which reads the table's ``scan_id`` column, built once by
:func:`brainlens.bids.scan_key` when the folds are made) and may check it with
:func:`audit_folds`. ``brainlens.folds`` re-exports all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainlens.bids import scan_key
from brainlens.errors import ConfigError, DatasetError, InputFileError, LeakageError

ROLES = ("train", "val", "test")
NA = "n/a"
#: Columns of a folds table, in order.
FOLD_COLUMNS = [
    "participant_id",
    "session_id",
    "fold",
    "role",
    "label",
    "random_labels",
    "scan_id",
]
#: What to do with a folds table written before it carried ``scan_id``.
_NO_SCAN_ID_FIX = (
    "re-run the folds rule to rewrite it (snakemake --forcerun folds), or make the table "
    "with brainlens.folds.make_folds"
)


def scan_id(participant_id: str, session_id: str) -> str:
    """BIDS-style scan identifier: ``sub-01`` or ``sub-01_ses-02``.

    Parameters
    ----------
    participant_id : str
        E.g. ``"sub-01"``.
    session_id : str
        E.g. ``"ses-02"``, or ``"n/a"`` (or empty) for single-session datasets.

    Returns
    -------
    str
        :func:`brainlens.bids.scan_key`, the one home of scan ids (a session with several
        T1w kept has ``session_id`` like ``ses-02_run-2``).
    """
    return scan_key(participant_id, session_id)


def read_scans(path: str | Path) -> pd.DataFrame:
    """Read a scans TSV (strings kept as strings, ``n/a`` kept literally)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "file not found", "create the scans table first")
    return pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)


def read_folds(path: str | Path) -> pd.DataFrame:
    """Read a folds TSV written by :func:`brainlens.folds.write_folds`.

    A table written before folds tables carried ``scan_id`` is still read (the report
    and the summary need no scan ids); :func:`fold_part` then refuses it, naming the
    file (``attrs["path"]``) and the fix.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "file not found", "run the folds step (write_folds) first")
    df = pd.read_csv(
        p,
        sep="\t",
        dtype={"participant_id": str, "session_id": str, "label": str, "scan_id": str},
        keep_default_na=False,
    )
    missing = [c for c in ["participant_id", "session_id", "fold", "role", "label"] if c not in df]
    if missing:
        raise InputFileError(p, f"missing column(s) {missing}", "regenerate it with write_folds")
    df["fold"] = df["fold"].astype(int)
    if "random_labels" in df.columns:
        df["random_labels"] = df["random_labels"].astype(str).str.lower() == "true"
    df.attrs["path"] = str(p)
    return df


def fold_part(
    folds: pd.DataFrame, fold: int, role: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of one fold (of one role, of several, or of all), with their ``scan_id``.

    Parameters
    ----------
    folds : pandas.DataFrame
        A folds table (:func:`read_folds` or :func:`brainlens.folds.make_folds`):
        ``participant_id``, ``session_id``, ``fold``, ``role`` and ``scan_id`` per row.
    fold : int
        The fold.
    role : str or sequence of str, optional
        One of :data:`ROLES`, several of them, or None for every row of the fold.

    Returns
    -------
    pandas.DataFrame
        The matching rows in table order, index reset.

    Raises
    ------
    ConfigError
        ``role`` names a role not in :data:`ROLES`.
    DatasetError
        The table has no ``scan_id`` column (a ``folds.tsv`` written by an older
        brainlens); the message names the file when :func:`read_folds` read it.
    """
    if "scan_id" not in folds.columns:
        where = folds.attrs.get("path", "folds table")
        raise DatasetError(
            f"{where}: no 'scan_id' column (columns {list(folds.columns)}); it was written "
            f"before folds tables carried scan ids. Fix: {_NO_SCAN_ID_FIX}"
        )
    keep = folds["fold"] == int(fold)
    if role is not None:
        roles = [role] if isinstance(role, str) else list(role)
        if unknown := sorted(set(roles) - set(ROLES)):
            raise ConfigError(f"fold role(s) {unknown}: expected some of {list(ROLES)}")
        keep &= folds["role"].isin(roles)
    return folds[keep].reset_index(drop=True)


def _with_sessions(table: pd.DataFrame) -> pd.DataFrame:
    """A copy with string ``participant_id`` and ``session_id`` (``n/a`` when absent)."""
    out = table.copy()
    if "session_id" not in out.columns:
        out["session_id"] = NA
    out["participant_id"] = out["participant_id"].astype(str)
    out["session_id"] = out["session_id"].fillna(NA).astype(str)
    return out


def _check_scan_ids(f: pd.DataFrame) -> None:
    """Raise if a ``scan_id`` (when the table has them) is not its row's scan: the roles
    would then be handed to other scans' maps."""
    if "scan_id" not in f.columns:
        return
    pairs = zip(f["participant_id"], f["session_id"], f["scan_id"].astype(str), strict=True)
    wrong = [(p, s, i) for p, s, i in pairs if scan_id(p, s) != i]
    if wrong:
        raise DatasetError(
            f"folds table: {len(wrong)} row(s) whose scan_id is not the scan of their "
            f"participant_id and session_id, e.g. {wrong[:3]}. Fix: regenerate the folds "
            "with make_folds (re-run the folds rule); do not edit the table by hand"
        )


def _check_roles(k: int, g: pd.DataFrame) -> None:
    """Raise if fold ``k``'s rows ``g`` give a scan or a participant two roles, or lack one."""
    roles = g.groupby(["participant_id", "session_id"])["role"].nunique()
    if (roles > 1).any():
        ids = [scan_id(*i) for i in roles[roles > 1].index[:5]]
        raise LeakageError(
            f"fold {k}: scan(s) {ids} have more than one role. Fix: regenerate the folds "
            "with brainlens.folds.make_folds"
        )
    sides = g.groupby("participant_id")["role"].unique()
    split = sides[sides.map(len) > 1]
    if len(split):
        detail = {p: sorted(r) for p, r in split.head(5).items()}
        raise LeakageError(
            f"fold {k}: participant(s) on more than one side {detail}; all sessions of "
            "a participant must share one role. Fix: regenerate the folds with make_folds"
        )
    present = set(g["role"])
    for role in ROLES:
        if role not in present:
            raise LeakageError(
                f"fold {k}: no {role!r} part (roles present: {sorted(present)}); model "
                "selection needs val, evaluation needs test. Fix: regenerate the folds"
            )


def _check_hashes(k: int, g: pd.DataFrame, hashes: pd.DataFrame) -> None:
    """Raise if two scans of fold ``k`` with identical ``image_hash`` are on two sides."""
    m = g.merge(hashes, on=["participant_id", "session_id"], how="left").dropna(
        subset=["image_hash"]
    )
    per_hash = m.groupby("image_hash")["role"].nunique()
    for h in per_hash[per_hash > 1].index[:1]:
        rows = m[m["image_hash"] == h]
        ids = [
            f"{scan_id(p, s)} ({r})"
            for p, s, r in rows[["participant_id", "session_id", "role"]].itertuples(index=False)
        ]
        raise LeakageError(
            f"fold {k}: scans {ids} have identical image content (image_hash "
            f"{str(h)[:12]}...) but are on different sides. Fix: remove the duplicate "
            "or regenerate the folds with make_folds(scans with image_hash)"
        )


def audit_folds(folds: pd.DataFrame, *, scans: pd.DataFrame | None = None) -> None:
    """Raise :class:`LeakageError` if a folds table lets information leak.

    Checks that every ``scan_id`` (when present) is its row's scan, then, per fold: no
    scan has two roles; no participant is on two sides; no two scans with identical
    ``image_hash`` (from ``folds`` or ``scans``) are on two sides; the fold has a train,
    a val and a test part.

    Parameters
    ----------
    folds : DataFrame
        As returned by :func:`brainlens.folds.make_folds` (or read from its TSV).
    scans : DataFrame, optional
        The scans table with ``participant_id``, ``session_id`` and ``image_hash``.

    Raises
    ------
    LeakageError
        Naming the fold, the participants/scans and the kind of leak.
    DatasetError
        Missing columns, unknown roles, or a ``scan_id`` that is not its row's scan.
    """
    need = ["participant_id", "session_id", "fold", "role"]
    missing = [c for c in need if c not in folds.columns]
    if missing:
        raise DatasetError(
            f"folds table: missing column(s) {missing}. Fix: create it with make_folds"
        )
    f = _with_sessions(folds)
    bad_roles = sorted(set(f["role"]) - set(ROLES))
    if bad_roles:
        raise DatasetError(f"folds table: unknown role(s) {bad_roles}; expected {list(ROLES)}")
    hashes = None
    if scans is not None and "image_hash" in scans.columns:
        hashes = _with_sessions(scans)[["participant_id", "session_id", "image_hash"]]
    elif "image_hash" in f.columns:
        hashes = f[["participant_id", "session_id", "image_hash"]].drop_duplicates()
    _check_scan_ids(f)
    for k, g in f.groupby("fold", sort=True):
        _check_roles(k, g)
        if hashes is not None:
            _check_hashes(k, g, hashes)
