"""Near-duplicate audit: scans of different subjects whose MNI-space maps nearly match.

The folds audit groups byte-identical images (``image_hash``), but a re-export, a
defaced or re-cropped copy, or a rescan of one person filed under two participant IDs
differs in every byte and would land on two sides of a split. This module correlates
the MNI-space grey-matter maps of every pair of scans of *different* participants
inside a brain mask and lists the pairs above a threshold (``folds.duplicate_threshold``);
:func:`check_near_duplicates` then fails (``folds.on_duplicate: fail``) or warns
(``warn``).

What it catches, measured on the 4 mm demo (34 scans, GM smoothed by 6 mm; unsmoothed
in brackets): different participants correlate at 0.76-0.92 [0.72-0.90], median 0.85
[0.82]; a re-export of one scan (1 % noise, shifted by a voxel, preprocessed again
under a new ID) correlates with the original at 0.996 [0.995]. A *new acquisition* of
the same demo subject (ses-02: new position, bias and noise) correlates at only 0.80
and 0.90 [0.77, 0.88], inside the range of different people: the default 0.98 flags
copies and re-exports, not rescans of brains as alike as the demo's (all one template
brain with a small deformation).

A copy that is misregistered by a voxel correlates poorly with its original (a 1-voxel
shift on the 4 mm grid alone brings 0.997 down to about 0.8), so each pair's correlation
is the largest over shifts of one map by up to ``max_shift`` voxels along one axis.

Memory and time: the maps are read one at a time and only the mask voxels (and their
shifted neighbours) are kept, in float16: about N x M x 2 bytes for N scans and M mask
voxels (44 scans on the 4 mm grid, M ~ 30k: 3 MB; 1000 scans on the 1.5 mm grid,
M ~ 600k: ~1.4 GB), plus float32 blocks of 128 rows (~0.3 GB at 1.5 mm). The
correlations are block matrix products, 7 x N^2 x M / 2 multiply-adds with the default
shifts: 200 scans x 150k voxels took 29 s on a busy 2-core machine, so 1000 scans at
1.5 mm take about 50 min there and much less on more cores (``max_shift=0``: 7x less).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainlens._io import atomic_output, write_text_atomic
from brainlens.bids import scan_key
from brainlens.errors import ConfigError, InputFileError, LeakageError
from brainlens.volumes import fwhm_to_sigma_voxels, load_volume, smooth_volume

log = logging.getLogger(__name__)

#: Columns of the near-duplicates table, in order.
DUPLICATE_COLUMNS = ["scan_a", "subject_a", "scan_b", "subject_b", "correlation"]
ON_DUPLICATE = ("fail", "warn")
#: Voxels whose mean map value over all scans exceeds this form the default mask.
MASK_LEVEL = 0.1
#: Rows per block of the correlation matrix product.
BLOCK = 128
#: Default largest shift (voxels) tried per pair, see :func:`near_duplicate_pairs`.
MAX_SHIFT = 1


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0 < t <= 1:
        raise ConfigError(
            f"folds.duplicate_threshold: expected a number in (0, 1], got {threshold!r}. "
            "Fix: e.g. 0.98"
        )
    return t


def _standardise(rows: np.ndarray) -> np.ndarray:
    """Rows as float32 z-scores (mean 0, SD 1); constant rows become all zero."""
    x = np.asarray(rows, dtype=np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)


def shifts(max_shift: int) -> list[tuple[int, int, int]]:
    """No shift, then +-1..max_shift voxels along each axis (7 shifts for 1)."""
    out = [(0, 0, 0)]
    for d in range(1, int(max_shift) + 1):
        for ax in range(3):
            for sign in (1, -1):
                s = [0, 0, 0]
                s[ax] = sign * d
                out.append((s[0], s[1], s[2]))
    return out


def _columns(mask: np.ndarray, max_shift: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stored voxels (flat indices) and, per shift, the columns of the shifted mask.

    Parameters
    ----------
    mask : np.ndarray of bool, shape (X, Y, Z)
        Voxels to correlate over; voxels within ``max_shift`` of the grid's edge are
        dropped so that every shifted voxel stays on the grid.

    Returns
    -------
    stored : np.ndarray of int, shape (D,)
        Flat indices of the mask dilated by every shift.
    cols : list of np.ndarray of int, each shape (M,)
        For each shift of :func:`shifts`, the columns of ``stored`` of mask + shift.
    """
    m = np.asarray(mask, dtype=bool).copy()
    k = int(max_shift)
    if k:
        inner = np.zeros_like(m)
        inner[k:-k, k:-k, k:-k] = True
        m &= inner
    where = np.argwhere(m)
    flat = [np.ravel_multi_index((where + np.array(s)).T, m.shape) for s in shifts(k)]
    stored = np.unique(np.concatenate(flat))
    return stored, [np.searchsorted(stored, f) for f in flat]


def _pairs_above(
    x: np.ndarray, cols: list[np.ndarray], subjects: np.ndarray, threshold: float
) -> tuple[list[tuple[int, int, float]], tuple[int, int, float], tuple[int, int, float]]:
    """Block products of z-scored rows, the best shift per pair.

    Returns the flagged pairs, the most correlated pair of different subjects and the
    least correlated pair of one subject (indices -1 when there is none).
    """
    n = x.shape[0]
    # a . z(b) = a . b / sd(b) for a z-scored row a (it sums to 0): b needs only its SD
    sd = np.stack([x[:, c].astype(np.float32).std(axis=1) for c in cols], axis=1)
    scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0) / len(cols[0])
    flagged: list[tuple[int, int, float]] = []
    best = (-1, -1, -np.inf)  # highest correlation between different subjects
    worst = (-1, -1, np.inf)  # lowest correlation between sessions of one subject
    for i in range(0, n, BLOCK):
        a = _standardise(x[i : i + BLOCK][:, cols[0]])
        for j in range(i, n, BLOCK):
            b_rows = x[j : j + BLOCK]
            r = np.full((len(a), len(b_rows)), -np.inf, dtype=np.float32)
            for s_idx, c in enumerate(cols):
                prod = a @ b_rows[:, c].astype(np.float32).T
                np.maximum(r, prod * scale[j : j + BLOCK, s_idx], out=r)
            ii, jj = np.meshgrid(
                np.arange(i, i + len(a)), np.arange(j, j + len(b_rows)), indexing="ij"
            )
            upper = jj > ii
            other = upper & (subjects[ii] != subjects[jj])
            same = upper & ~other
            if other.any():
                k = np.argmax(np.where(other, r, -np.inf))
                if r.flat[k] > best[2]:
                    best = (int(ii.flat[k]), int(jj.flat[k]), float(r.flat[k]))
            if same.any():
                k = np.argmin(np.where(same, r, np.inf))
                if r.flat[k] < worst[2]:
                    worst = (int(ii.flat[k]), int(jj.flat[k]), float(r.flat[k]))
            hit = other & (r > threshold)
            flagged += [
                (int(p), int(q), float(c)) for p, q, c in zip(ii[hit], jj[hit], r[hit], strict=True)
            ]
    return flagged, best, worst


def near_duplicate_pairs(
    maps: np.ndarray,
    scan_ids: Sequence[str],
    subject_ids: Sequence[str],
    *,
    threshold: float,
    mask: np.ndarray | None = None,
    max_shift: int = MAX_SHIFT,
) -> pd.DataFrame:
    """Pairs of scans of different subjects whose maps correlate above ``threshold``.

    Parameters
    ----------
    maps : np.ndarray, shape (N, X, Y, Z) or (N, V)
        One map per scan on a common grid (e.g. MNI-space GM probability).
    scan_ids, subject_ids : sequence of str, length N
        Scan and participant of each row; pairs of one participant are never flagged.
    threshold : float
        Pearson correlation in (0, 1] above which a pair is listed.
    mask : np.ndarray of bool, shape (X, Y, Z) or (V,), optional
        Voxels to correlate over; default: where the mean map exceeds
        :data:`MASK_LEVEL` (all voxels if none does).
    max_shift : int
        A pair's correlation is the largest over shifts of one map by up to this many
        voxels along one axis (:func:`shifts`), so a copy misregistered by a voxel is
        still caught; 0 = no shift (always so for 2-D ``maps``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DUPLICATE_COLUMNS`, one row per flagged pair (``scan_a`` comes
        before ``scan_b`` in input order), sorted by descending correlation.
        ``attrs`` holds ``n_scans``, ``n_voxels`` (mask size), ``threshold``,
        ``max_shift``, ``max_other`` (the most correlated pair of different subjects:
        ``scan_a``, ``scan_b``, ``correlation``) and ``min_same`` (the least correlated
        pair of scans of one subject), each None when there is no such pair.

    Raises
    ------
    ConfigError
        Bad threshold, mismatched lengths or mask shape.
    """
    threshold = _check_threshold(threshold)
    x = np.asarray(maps, dtype=np.float32)
    n = x.shape[0] if x.ndim else 0
    if x.ndim not in (2, 4) or len(scan_ids) != n or len(subject_ids) != n:
        raise ConfigError(
            f"near_duplicate_pairs: expected maps of shape (N, X, Y, Z) or (N, V) with N = "
            f"{len(scan_ids)} scan ids and subject ids, got maps {x.shape}, "
            f"{len(subject_ids)} subject ids"
        )
    two_d = x.ndim == 2
    grid = (x.shape[1], 1, 1) if two_d else x.shape[1:]
    x = x.reshape(n, -1)
    keep = _default_mask(x.sum(axis=0) / max(n, 1)) if mask is None else np.asarray(mask)
    if keep.size != x.shape[1]:
        raise ConfigError(
            f"near_duplicate_pairs: mask has {keep.size} voxels, maps have {x.shape[1]}"
        )
    k = 0 if two_d else int(max_shift)
    stored, cols = _columns(keep.reshape(grid), k)
    return _table(x[:, stored], cols, list(scan_ids), list(subject_ids), threshold, k)


def _default_mask(mean_map: np.ndarray) -> np.ndarray:
    keep = mean_map > MASK_LEVEL
    return keep if keep.any() else np.ones_like(keep, dtype=bool)


def _table(
    x: np.ndarray,
    cols: list[np.ndarray],
    scans: list[str],
    subjects: list[str],
    threshold: float,
    max_shift: int,
) -> pd.DataFrame:
    subj = np.asarray([str(s) for s in subjects])
    flagged, best, worst = _pairs_above(x, cols, subj, threshold)
    rows = [(scans[p], subj[p], scans[q], subj[q], c) for p, q, c in flagged]
    table = pd.DataFrame(rows, columns=DUPLICATE_COLUMNS)
    table = table.sort_values("correlation", ascending=False, kind="stable").reset_index(drop=True)

    def pair(t: tuple[int, int, float]) -> dict | None:
        if t[0] < 0:
            return None
        return {"scan_a": scans[t[0]], "scan_b": scans[t[1]], "correlation": round(t[2], 6)}

    table.attrs.update(
        n_scans=len(scans),
        n_voxels=int(len(cols[0])) if cols else 0,
        threshold=threshold,
        max_shift=int(max_shift) if len(cols) > 1 else 0,
        max_other=pair(best),
        min_same=pair(worst),
    )
    return table


def _load(path: Path, fwhm_mm: float) -> np.ndarray:
    """One 3D map of shape (X, Y, Z), Gaussian-smoothed by ``fwhm_mm`` (0 = not)."""
    data, affine = load_volume(path, fix="re-run preprocessing")
    if fwhm_mm > 0:  # as brainlens.packing smooths (zero-padded borders)
        data = smooth_volume(data, fwhm_to_sigma_voxels(fwhm_mm, affine))
    return data


def maps_near_duplicates(
    paths: Sequence[str | Path],
    scan_ids: Sequence[str],
    subject_ids: Sequence[str],
    *,
    threshold: float,
    smooth_fwhm_mm: float = 0.0,
    max_shift: int = MAX_SHIFT,
) -> pd.DataFrame:
    """:func:`near_duplicate_pairs` over NIfTI maps, read one at a time (two passes).

    The first pass builds the default mask from the mean map, the second keeps only
    the voxels of the mask and its shifts of each scan (float16), so memory stays at
    about N x M x 2 bytes (see the module docstring).

    Parameters
    ----------
    paths : sequence of path, length N
        3D maps of shape (X, Y, Z), all on one grid.
    scan_ids, subject_ids : sequence of str, length N
    threshold : float
    smooth_fwhm_mm : float
        Isotropic Gaussian smoothing (FWHM, mm) of every map before correlating.
    max_shift : int
        See :func:`near_duplicate_pairs`.

    Returns
    -------
    pandas.DataFrame
        As :func:`near_duplicate_pairs`; ``attrs`` also holds ``smooth_fwhm_mm``.

    Raises
    ------
    InputFileError
        A map is missing, unreadable, not 3D or on another grid than the first.
    """
    threshold = _check_threshold(threshold)
    paths = [Path(p) for p in paths]
    if not (len(paths) == len(scan_ids) == len(subject_ids)):
        raise ConfigError(
            f"maps_near_duplicates: {len(paths)} maps, {len(scan_ids)} scan ids and "
            f"{len(subject_ids)} subject ids; expected one of each per scan"
        )
    total, shape = None, None
    for p in paths:
        v = _load(p, smooth_fwhm_mm)
        if shape is not None and v.shape != shape:
            raise InputFileError(
                p,
                f"grid {v.shape} differs from {shape} of {paths[0]}",
                "preprocess every scan onto the same MNI grid (re-run preprocessing)",
            )
        shape = v.shape
        total = v.astype(np.float64) if total is None else total + v
    if total is None:
        table = _table(np.zeros((0, 0), np.float16), [], [], [], threshold, 0)
    else:
        stored, cols = _columns(_default_mask(total / len(paths)), max_shift)
        x = np.empty((len(paths), len(stored)), dtype=np.float16)
        for k, p in enumerate(paths):
            x[k] = _load(p, smooth_fwhm_mm).ravel()[stored]
        table = _table(x, cols, list(scan_ids), list(subject_ids), threshold, max_shift)
    table.attrs["smooth_fwhm_mm"] = float(smooth_fwhm_mm)
    return table


def write_near_duplicates(
    paths: Sequence[str | Path],
    scan_ids: Sequence[str],
    subject_ids: Sequence[str],
    out_tsv: str | Path,
    *,
    threshold: float,
    smooth_fwhm_mm: float = 0.0,
) -> pd.DataFrame:
    """Find near-duplicate pairs and write them as a TSV with a JSON summary beside it.

    Parameters
    ----------
    paths, scan_ids, subject_ids, threshold, smooth_fwhm_mm
        See :func:`maps_near_duplicates`.
    out_tsv : path
        The table (columns :data:`DUPLICATE_COLUMNS`, possibly no rows); ``<stem>.json``
        beside it holds ``attrs`` (mask size, highest other-subject and lowest
        same-subject correlation). Both are written to temporary names and renamed.

    Returns
    -------
    pandas.DataFrame
        The table written.
    """
    table = maps_near_duplicates(
        paths, scan_ids, subject_ids, threshold=threshold, smooth_fwhm_mm=smooth_fwhm_mm
    )
    out = Path(out_tsv)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = out.with_suffix(".json")
    write_text_atomic(summary, json.dumps(table.attrs, indent=2) + "\n")
    with atomic_output(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6f")
    best = table.attrs["max_other"]
    log.info(
        "near duplicates: %d scans, %d mask voxels, %d pair(s) above %.4g; highest between "
        "different subjects %s; lowest between sessions of one subject %s",
        len(scan_ids), table.attrs["n_voxels"], len(table), threshold, best,
        table.attrs["min_same"],
    )  # fmt: skip
    return table


def read_near_duplicates(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_near_duplicates`."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "file not found", "run the near_duplicates step first")
    df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in DUPLICATE_COLUMNS if c not in df.columns]
    if missing:
        raise InputFileError(
            p, f"missing column(s) {missing}", "regenerate it with write_near_duplicates"
        )
    df["correlation"] = df["correlation"].astype(float)
    return df


def _hash_linked(table: pd.DataFrame, scans: pd.DataFrame) -> np.ndarray:
    """Rows whose two scans share an ``image_hash`` (make_folds already groups those)."""
    if "image_hash" not in scans.columns or not len(table):
        return np.zeros(len(table), dtype=bool)
    sessions = scans.get("session_id", pd.Series("n/a", index=scans.index)).astype(str)
    keys = [
        scan_key(p, s) for p, s in zip(scans["participant_id"].astype(str), sessions, strict=True)
    ]
    hashes = dict(zip(keys, scans["image_hash"].astype(str), strict=True))
    a = table["scan_a"].map(hashes).fillna("")
    b = table["scan_b"].map(hashes).fillna("")
    return ((a == b) & (a != "")).to_numpy()


def check_near_duplicates(
    table: pd.DataFrame, on_duplicate: str = "fail", *, scans: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Fail or warn when scans of different participants look like one person's.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns :data:`DUPLICATE_COLUMNS` (from :func:`near_duplicate_pairs` or
        :func:`read_near_duplicates`).
    on_duplicate : {"fail", "warn"}
        ``fail`` raises, ``warn`` logs a warning (the report lists the pairs) and
        returns.
    scans : pandas.DataFrame, optional
        The scans table (``participant_id``, ``session_id``, ``image_hash``): pairs
        with identical ``image_hash`` are dropped, as the folds keep them on one side.

    Returns
    -------
    pandas.DataFrame
        The pairs that remain (warned about with ``warn``).

    Raises
    ------
    LeakageError
        With ``fail`` and at least one pair, listing up to 10 pairs and the fix.
    ConfigError
        Unknown ``on_duplicate``.
    """
    if on_duplicate not in ON_DUPLICATE:
        raise ConfigError(
            f"folds.on_duplicate: expected one of {list(ON_DUPLICATE)}, got {on_duplicate!r}"
        )
    if scans is not None:
        table = table[~_hash_linked(table, scans)]
    if len(table) == 0:
        return table
    pairs = "; ".join(
        f"{r.scan_a} ({r.subject_a}) ~ {r.scan_b} ({r.subject_b}): r = {float(r.correlation):.4f}"
        for r in table.head(10).itertuples(index=False)
    )
    more = f" and {len(table) - 10} more" if len(table) > 10 else ""
    msg = (
        f"{len(table)} pair(s) of scans of different participants have near-identical "
        f"MNI-space grey-matter maps (a rescan or copy of one person under two IDs would "
        f"leak across folds): {pairs}{more}. Fix: if these are the same person, give them "
        "one participant_id in participants.tsv; if they are different people, raise "
        "folds.duplicate_threshold or set folds.on_duplicate: warn"
    )
    if on_duplicate == "fail":
        raise LeakageError(msg)
    log.warning(msg)
    return table


__all__ = [
    "DUPLICATE_COLUMNS",
    "check_near_duplicates",
    "maps_near_duplicates",
    "near_duplicate_pairs",
    "read_near_duplicates",
    "write_near_duplicates",
]
