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
from brainlens.bids import scan_key
from brainlens.errors import ConfigError, DatasetError, InputFileError, LeakageError
from brainlens.feasibility import check_feasible

MODES = ("kfold", "repeated", "holdout")
ROLES = ("train", "val", "test")
NA = "n/a"
#: Columns of a folds table, in order.
FOLD_COLUMNS = ["participant_id", "session_id", "fold", "role", "label", "random_labels"]


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
        Columns :data:`FOLD_COLUMNS`; one row per scan per fold.

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
    assignments: list[np.ndarray] = []  # per fold: role per group
    if mode == "kfold":
        rng = np.random.default_rng(split_ss)
        order = _stratified_order(strata, rng)
        test_fold = np.empty(len(gt), dtype=int)
        test_fold[order] = (np.arange(len(gt)) + rng.integers(n_folds)) % n_folds
        val_share = val_fraction / (1 - 1.0 / n_folds)
        for k, fold_ss in enumerate(split_ss.spawn(n_folds)):
            fold_rng = np.random.default_rng(fold_ss)
            roles = np.full(len(gt), "train", dtype=object)
            roles[test_fold == k] = "test"
            rest = np.flatnonzero(test_fold != k)
            roles[rest[_take(strata[rest], val_share, fold_rng)]] = "val"
            assignments.append(roles)
    else:
        repeats = 1 if mode == "holdout" else int(n_repeats)
        for fold_ss in split_ss.spawn(repeats):
            fold_rng = np.random.default_rng(fold_ss)
            roles = np.full(len(gt), "train", dtype=object)
            test = _take(strata, test_fraction, fold_rng)
            roles[test] = "test"
            rest = np.flatnonzero(~test)
            roles[rest[_take(strata[rest], val_fraction / (1 - test_fraction), fold_rng)]] = "val"
            assignments.append(roles)

    true_labels = gt["label"].to_numpy()
    label_rngs = [np.random.default_rng(ss) for ss in label_ss.spawn(len(assignments))]
    scan_part = df[["participant_id", "session_id", "group"]].copy()
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


def audit_folds(folds: pd.DataFrame, *, scans: pd.DataFrame | None = None) -> None:
    """Raise :class:`LeakageError` if a folds table lets information leak.

    Checks, per fold: no scan has two roles; no participant is on two sides; no two
    scans with identical ``image_hash`` (from ``folds`` or ``scans``) are on two
    sides; the fold has a train, a val and a test part.

    Parameters
    ----------
    folds : DataFrame
        As returned by :func:`make_folds` (or read from its TSV).
    scans : DataFrame, optional
        The scans table with ``participant_id``, ``session_id`` and ``image_hash``.

    Raises
    ------
    LeakageError
        Naming the fold, the participants/scans and the kind of leak.
    """
    need = ["participant_id", "session_id", "fold", "role"]
    missing = [c for c in need if c not in folds.columns]
    if missing:
        raise DatasetError(
            f"folds table: missing column(s) {missing}. Fix: create it with make_folds"
        )
    f = folds.copy()
    f["participant_id"] = f["participant_id"].astype(str)
    f["session_id"] = f["session_id"].fillna(NA).astype(str)
    bad_roles = sorted(set(f["role"]) - set(ROLES))
    if bad_roles:
        raise DatasetError(f"folds table: unknown role(s) {bad_roles}; expected {list(ROLES)}")
    hashes = None
    if scans is not None and "image_hash" in scans.columns:
        s = scans.copy()
        if "session_id" not in s.columns:
            s["session_id"] = NA
        s["participant_id"] = s["participant_id"].astype(str)
        s["session_id"] = s["session_id"].fillna(NA).astype(str)
        hashes = s[["participant_id", "session_id", "image_hash"]]
    elif "image_hash" in f.columns:
        hashes = f[["participant_id", "session_id", "image_hash"]].drop_duplicates()

    for k, g in f.groupby("fold", sort=True):
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
        if hashes is not None:
            m = g.merge(hashes, on=["participant_id", "session_id"], how="left").dropna(
                subset=["image_hash"]
            )
            per_hash = m.groupby("image_hash")["role"].nunique()
            for h in per_hash[per_hash > 1].index[:1]:
                rows = m[m["image_hash"] == h]
                ids = [
                    f"{scan_id(p, s)} ({r})"
                    for p, s, r in rows[["participant_id", "session_id", "role"]].itertuples(
                        index=False
                    )
                ]
                raise LeakageError(
                    f"fold {k}: scans {ids} have identical image content (image_hash "
                    f"{str(h)[:12]}...) but are on different sides. Fix: remove the duplicate "
                    "or regenerate the folds with make_folds(scans with image_hash)"
                )


def read_scans(path: str | Path) -> pd.DataFrame:
    """Read a scans TSV (strings kept as strings, ``n/a`` kept literally)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "file not found", "create the scans table first")
    return pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)


def read_folds(path: str | Path) -> pd.DataFrame:
    """Read a folds TSV written by :func:`write_folds`."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "file not found", "run the folds step (write_folds) first")
    df = pd.read_csv(
        p,
        sep="\t",
        dtype={"participant_id": str, "session_id": str, "label": str},
        keep_default_na=False,
    )
    missing = [c for c in ["participant_id", "session_id", "fold", "role", "label"] if c not in df]
    if missing:
        raise InputFileError(p, f"missing column(s) {missing}", "regenerate it with write_folds")
    df["fold"] = df["fold"].astype(int)
    if "random_labels" in df.columns:
        df["random_labels"] = df["random_labels"].astype(str).str.lower() == "true"
    return df


def fold_part(
    folds: pd.DataFrame, fold: int, role: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of one fold (of one role, of several, or of all), with a ``scan_id`` column.

    Parameters
    ----------
    folds : pandas.DataFrame
        A folds table (:func:`read_folds`): ``participant_id``, ``session_id``, ``fold``,
        ``role`` per row.
    fold : int
        The fold.
    role : str or sequence of str, optional
        One of :data:`ROLES`, several of them, or None for every row of the fold.

    Returns
    -------
    pandas.DataFrame
        The matching rows in table order, index reset, plus ``scan_id`` (:func:`scan_id`).

    Raises
    ------
    ConfigError
        ``role`` names a role not in :data:`ROLES`.
    """
    keep = folds["fold"] == int(fold)
    if role is not None:
        roles = [role] if isinstance(role, str) else list(role)
        if unknown := sorted(set(roles) - set(ROLES)):
            raise ConfigError(f"fold role(s) {unknown}: expected some of {list(ROLES)}")
        keep &= folds["role"].isin(roles)
    part = folds[keep].copy()
    part["scan_id"] = [
        scan_id(p, s) for p, s in zip(part["participant_id"], part["session_id"], strict=True)
    ]
    return part.reset_index(drop=True)


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
