"""Leakage-free, subject-level, stratified data splits.

Every split keeps all sessions of a participant on one side, and participants whose
scans share identical image content (``image_hash``) are grouped with each other, so
no image can be seen in training and again in validation or testing.

Three protocols are supported (all fractions are shares of *all* participants):

``kfold``
    K stratified folds; fold ``k`` is the test part, a stratified ``val_fraction`` of
    all participants is taken from the remaining K-1 folds for validation, the rest
    trains. With ``n_folds=5, val_fraction=0.2``: 60/20/20.
``repeated``
    R independent random stratified train/val/test splits (e.g. the migraine paper's
    10 x 80/10/10: ``n_repeats=10, val_fraction=0.1, test_fraction=0.1``); ``fold`` is
    the repeat index.
``holdout``
    One such split (``fold`` 0).

Stratification is by label and any extra columns (sex, site, ...): participants are
ordered by stratum (random order within a stratum) and dealt out systematically,
so every stratum is spread over the parts as evenly as its size allows (+-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainlens._io import atomic_output
from brainlens.errors import ConfigError, DatasetError
from brainlens.feasibility import check_feasible
from brainlens.fold_table import (
    FOLD_COLUMNS,
    NA,
    ROLES,
    audit_folds,
    fold_part,
    read_folds,
    read_scans,
    scan_id,
)

__all__ = [
    "FOLD_COLUMNS",
    "MODES",
    "NA",
    "ROLES",
    "audit_folds",
    "fold_part",
    "make_folds",
    "read_folds",
    "read_scans",
    "scan_id",
    "write_folds",
]

MODES = ("kfold", "repeated", "holdout")


def _normalise_scans(
    scans: pd.DataFrame, label_column: str, stratify: Sequence[str]
) -> pd.DataFrame:
    if not isinstance(scans, pd.DataFrame):
        raise ConfigError(f"make_folds: expected a pandas DataFrame of scans, got {type(scans)}")
    missing = [c for c in ["participant_id", label_column, *stratify] if c not in scans.columns]
    if missing:
        raise DatasetError(
            f"scans table: missing column(s) {missing}; it has {list(scans.columns)}. "
            "Fix: provide one row per scan with participant_id, session_id (optional) and the "
            f"label column {label_column!r} (or set label_column), plus the stratify columns"
        )
    df = scans.copy()
    if "session_id" not in df.columns:
        df["session_id"] = NA
    df["participant_id"] = df["participant_id"].astype(str)
    df["session_id"] = df["session_id"].fillna(NA).astype(str).replace({"": NA})
    if len(df) == 0:
        raise DatasetError("scans table: it has no rows. Fix: list at least one scan per class")
    dup = df.duplicated(["participant_id", "session_id"], keep=False)
    if dup.any():
        ids = df.loc[dup, ["participant_id", "session_id"]].drop_duplicates().head(5)
        raise DatasetError(
            f"scans table: duplicate (participant_id, session_id) rows, e.g. "
            f"{ids.to_records(index=False).tolist()}. Fix: list each scan once"
        )
    bad = df[label_column].isna()
    if bad.any():
        raise DatasetError(
            f"scans table: {int(bad.sum())} scan(s) without a {label_column!r} value, e.g. "
            f"{df.loc[bad, 'participant_id'].head(3).tolist()}. Fix: drop them or fill in the label"
        )
    df["label"] = df[label_column].astype(str)
    df["scan_id"] = [
        scan_id(p, s) for p, s in zip(df["participant_id"], df["session_id"], strict=True)
    ]
    return df


def _groups(df: pd.DataFrame) -> pd.Series:
    """Group id per scan: participants linked by a shared image_hash form one group."""
    subjects = sorted(df["participant_id"].unique())
    parent = {s: s for s in subjects}

    def find(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    if "image_hash" in df.columns:
        hashed = df.dropna(subset=["image_hash"])
        for _, subj in hashed.groupby("image_hash")["participant_id"]:
            subj = sorted(set(subj))
            for other in subj[1:]:
                ra, rb = find(subj[0]), find(other)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return df["participant_id"].map(find)


def _group_table(df: pd.DataFrame, stratify: Sequence[str]) -> pd.DataFrame:
    """One row per group: its label and stratification key."""
    rows = []
    for gid, g in df.groupby("group", sort=True):
        labels = sorted(g["label"].unique())
        if len(labels) > 1:
            who = sorted(g["participant_id"].unique())
            raise DatasetError(
                f"scans table: participant(s) {who} (grouped by participant or identical "
                f"image_hash) carry more than one label {labels}. Fix: give every participant "
                "one label for all sessions, or remove the duplicate images"
            )
        extra = []
        for col in stratify:
            values = g[col].astype(str).value_counts()
            extra.append(values.index[0])  # the participant's most frequent value
        rows.append({"group": gid, "label": labels[0], "stratum": "|".join([labels[0], *extra])})
    return pd.DataFrame(rows)


def _systematic(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask selecting ~``share`` of ``n`` ordered items, evenly spread."""
    u = rng.uniform()
    pos = np.arange(n + 1) * share + u
    return np.diff(np.floor(pos)) > 0


def _stratified_order(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices ordered by label, then stratum, then randomly.

    ``strata`` holds ``"label|extra|..."`` keys. Labels and strata within a label come
    in random order, so every label (and every stratum within it) is one contiguous
    run, which systematic dealing spreads over the parts within +-1.
    """
    labels = np.array([s.split("|", 1)[0] for s in strata])
    label_keys = np.unique(labels)
    label_rank = dict(zip(label_keys, rng.permutation(len(label_keys)), strict=True))
    keys = np.unique(strata)
    key_rank = dict(zip(keys, rng.permutation(len(keys)), strict=True))
    jitter = rng.permutation(len(strata))
    return np.lexsort(
        (jitter, np.array([key_rank[s] for s in strata]), np.array([label_rank[x] for x in labels]))
    )


def _take(strata: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over groups: a stratified random ``share`` of them."""
    order = _stratified_order(strata, rng)
    sel = np.zeros(len(strata), dtype=bool)
    sel[order] = _systematic(len(strata), share, rng)
    return sel


def make_folds(
    scans: pd.DataFrame,
    *,
    label_column: str = "label",
    mode: str = "kfold",
    n_folds: int = 5,
    n_repeats: int = 10,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    stratify: Sequence[str] = (),
    seed: int,
    random_labels: bool = False,
) -> pd.DataFrame:
    """Assign every scan a role (train/val/test) in every fold, leakage-free.

    Parameters
    ----------
    scans : DataFrame
        One row per scan: ``participant_id``, ``session_id`` (optional, ``"n/a"`` when
        absent), the label column, optional stratification columns and optional
        ``image_hash`` (participants sharing a hash are kept on one side).
    label_column : str
        Column with the class label.
    mode : {"kfold", "repeated", "holdout"}
        Protocol, see the module docstring.
    n_folds : int
        Number of folds (``kfold``).
    n_repeats : int
        Number of random splits (``repeated``).
    val_fraction : float
        Share of all participants used for validation, taken from the training part.
    test_fraction : float
        Share of all participants used for testing (``repeated``, ``holdout``; in
        ``kfold`` it is ``1 / n_folds``).
    stratify : sequence of str
        Extra columns to stratify on besides the label (per participant, the most
        frequent value).
    seed : int
        Seed of the random generator; the same seed gives the same folds.
    random_labels : bool
        Sanity run whose accuracy must come out at chance: the folds are the ones of
        the real run (split on the true labels), then in every fold the labels are
        shuffled separately within train, val and test (seeded), balanced so that in
        each part every true class gets each label in proportion (within one
        participant): each part keeps its class counts and the shuffled labels say
        nothing about the true ones. A participant's label may differ between folds.
        The ``label`` column holds the shuffled labels, the ``random_labels`` column
        is True and ``attrs["random_labels"]`` is set.

    Returns
    -------
    DataFrame
        Columns :data:`FOLD_COLUMNS`; one row per scan per fold. ``scan_id`` is
        :func:`brainlens.bids.scan_key` of the row, made here once: every reader of the
        table takes it from there (:func:`brainlens.fold_table.fold_part`).

    Raises
    ------
    ConfigError
        Unknown mode, fractions out of range, or a class too small for the request.
    DatasetError
        Missing columns, duplicate scans, missing labels, a participant with two labels.
    """
    if mode not in MODES:
        raise ConfigError(f"folds.mode: expected one of {list(MODES)}, got {mode!r}")
    stratify = [c for c in stratify if c != label_column]
    df = _normalise_scans(scans, label_column, stratify)
    df["group"] = _groups(df)
    gt = _group_table(df, stratify)
    root = np.random.SeedSequence(int(seed))
    label_ss, split_ss = root.spawn(2)

    check_feasible(
        gt["label"].value_counts(),
        label_column=label_column,
        mode=mode,
        n_folds=n_folds,
        n_repeats=n_repeats,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    strata = gt["stratum"].to_numpy()
    if mode == "kfold":
        assignments = _kfold_roles(strata, n_folds, val_fraction, split_ss)
    else:
        repeats = 1 if mode == "holdout" else int(n_repeats)
        assignments = _random_split_roles(strata, repeats, val_fraction, test_fraction, split_ss)
    return _folds_table(df, gt, assignments, label_ss, random_labels=random_labels)


def _kfold_roles(
    strata: np.ndarray, n_folds: int, val_fraction: float, split_ss: np.random.SeedSequence
) -> list[np.ndarray]:
    """Role per group in each of ``n_folds`` folds: fold ``k`` tests the k-th stratified fold.

    The validation part is a stratified ``val_fraction`` of all groups, taken from the
    other folds with the fold's own generator.
    """
    rng = np.random.default_rng(split_ss)
    order = _stratified_order(strata, rng)
    n = len(strata)
    test_fold = np.empty(n, dtype=int)
    test_fold[order] = (np.arange(n) + rng.integers(n_folds)) % n_folds
    val_share = val_fraction / (1 - 1.0 / n_folds)
    assignments = []
    for k, fold_ss in enumerate(split_ss.spawn(n_folds)):
        fold_rng = np.random.default_rng(fold_ss)
        roles = np.full(n, "train", dtype=object)
        roles[test_fold == k] = "test"
        rest = np.flatnonzero(test_fold != k)
        roles[rest[_take(strata[rest], val_share, fold_rng)]] = "val"
        assignments.append(roles)
    return assignments


def _random_split_roles(
    strata: np.ndarray,
    repeats: int,
    val_fraction: float,
    test_fraction: float,
    split_ss: np.random.SeedSequence,
) -> list[np.ndarray]:
    """Role per group in each of ``repeats`` independent stratified train/val/test splits."""
    assignments = []
    for fold_ss in split_ss.spawn(repeats):
        fold_rng = np.random.default_rng(fold_ss)
        roles = np.full(len(strata), "train", dtype=object)
        test = _take(strata, test_fraction, fold_rng)
        roles[test] = "test"
        rest = np.flatnonzero(~test)
        roles[rest[_take(strata[rest], val_fraction / (1 - test_fraction), fold_rng)]] = "val"
        assignments.append(roles)
    return assignments


def _folds_table(
    df: pd.DataFrame,
    gt: pd.DataFrame,
    assignments: list[np.ndarray],
    label_ss: np.random.SeedSequence,
    *,
    random_labels: bool,
) -> pd.DataFrame:
    """The folds table from the groups' roles per fold: one row per scan per fold.

    ``df`` holds the scans (with their ``group``), ``gt`` one row per group (its true
    ``label``); with ``random_labels`` each fold's labels are shuffled
    (:func:`_random_labels_for`, one generator per fold spawned from ``label_ss``).
    """
    true_labels = gt["label"].to_numpy()
    label_rngs = [np.random.default_rng(ss) for ss in label_ss.spawn(len(assignments))]
    scan_part = df[["participant_id", "session_id", "scan_id", "group"]].copy()
    out = []
    for k, roles in enumerate(assignments):
        labels = (
            _random_labels_for(true_labels, roles, label_rngs[k]) if random_labels else true_labels
        )
        role_of = dict(zip(gt["group"], roles, strict=True))
        label_of = dict(zip(gt["group"], labels, strict=True))
        f = scan_part.copy()
        f["fold"] = k
        f["role"] = f["group"].map(role_of)
        f["label"] = f["group"].map(label_of)
        out.append(f)
    folds = pd.concat(out, ignore_index=True)
    folds["random_labels"] = bool(random_labels)
    folds = folds[FOLD_COLUMNS].sort_values(["fold", "participant_id", "session_id"])
    folds = folds.reset_index(drop=True)
    folds.attrs["random_labels"] = bool(random_labels)
    return folds


def _balanced_shuffle(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same labels, reassigned so they carry (within +-1 count) no trace of the old.

    Participants are ordered by their label (random order within), and the labels are
    dealt back as an evenly interleaved sequence, so every true class receives each
    label in proportion to its count (a balanced permutation).
    """
    n = len(labels)
    order = _stratified_order(labels.astype(str), rng)
    keys = np.empty(n)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keys[idx] = (np.arange(len(idx)) + rng.uniform()) / len(idx)
    out = labels.copy()
    out[order] = labels[np.argsort(keys, kind="stable")]
    return out


def _random_labels_for(
    labels: np.ndarray, roles: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Random labels for one fold: a balanced permutation within train, val and test.

    A plain permutation leaves each part with a chance association between its
    shuffled and its true labels (with 8 test participants often 6 of 8 agreeing, or
    2 of 8). A model that learns the real effect then scores far from chance in
    either direction, fold by fold, and the mean of a few folds misses chance by more
    than the sanity check allows (measured on the demo: 0.31 and 0.39). Balancing the
    permutation within each part removes that association, keeps every part's class
    counts, and draws each part independently.
    """
    out = labels.copy()
    for role in ROLES:
        idx = np.flatnonzero(roles == role)
        out[idx] = _balanced_shuffle(labels[idx], rng)
    return out


def write_folds(
    scans: str | Path | pd.DataFrame,
    out_tsv: str | Path,
    *,
    near_duplicates: pd.DataFrame | None = None,
    on_duplicate: str = "fail",
    **options,
) -> pd.DataFrame:
    """Make, audit and write the folds table.

    Parameters
    ----------
    scans : path or DataFrame
        The scans table (TSV path or frame), see :func:`make_folds`.
    out_tsv : path
        Where to write the folds TSV (written to a temp file, then renamed).
    near_duplicates : DataFrame, optional
        Pairs of scans of different participants with near-identical maps
        (:mod:`brainlens.duplicates`); checked before any fold is made.
    on_duplicate : {"fail", "warn"}
        What such a pair does (``folds.on_duplicate``): ``fail`` raises and writes
        nothing, ``warn`` logs a warning and writes the folds.
    **options
        Keyword arguments of :func:`make_folds` (``seed`` is required).

    Returns
    -------
    DataFrame
        The folds table that was written.

    Raises
    ------
    LeakageError
        The audit failed, or a near-duplicate pair exists with ``on_duplicate="fail"``.
    """
    table = scans if isinstance(scans, pd.DataFrame) else read_scans(scans)
    if near_duplicates is not None:
        from brainlens.duplicates import check_near_duplicates

        check_near_duplicates(near_duplicates, on_duplicate, scans=table)
    folds = make_folds(table, **options)
    audit_folds(folds, scans=table)
    out = Path(out_tsv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        folds.to_csv(tmp, sep="\t", index=False)
    return folds
