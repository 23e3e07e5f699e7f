"""Near-duplicate audit across datasets: an external scan that looks like a main scan.

A participant ID shared by the main and an external dataset stops the workflow at
parse time (:mod:`brainlens.external.datasets`); a copy of the same person under
another ID is only visible in the images. This audit correlates the unmodulated
MNI-space grey-matter maps of every external scan with those of every main scan,
with the main audit's functions and settings (:func:`brainlens.duplicates.maps_near_duplicates`,
``folds.duplicate_threshold``, ``folds.duplicate_smooth_fwhm_mm``, ``folds.on_duplicate``),
and lists the pairs above the threshold. Pairs within one dataset are not compared
here (the main audit handles the main dataset; an external set is never split).
The external evaluation takes the table as input, so it runs only after this passes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainlens._io import atomic_output, write_text_atomic
from brainlens.duplicates import DUPLICATE_COLUMNS, ON_DUPLICATE, maps_near_duplicates
from brainlens.errors import ConfigError, LeakageError

log = logging.getLogger(__name__)

#: The group of every main scan in the correlation (pairs within a group are skipped).
MAIN = "main"


def external_near_duplicates(
    external: tuple[Sequence[str | Path], Sequence[str], Sequence[str]],
    main: tuple[Sequence[str | Path], Sequence[str], Sequence[str]],
    *,
    dataset: str,
    threshold: float,
    smooth_fwhm_mm: float = 0.0,
) -> pd.DataFrame:
    """Pairs (external scan, main scan) whose maps correlate above ``threshold``.

    Parameters
    ----------
    external, main : tuple of (paths, scan ids, participant ids)
        One GM map per scan, all on one grid.
    dataset : str
        The external dataset's name (for messages).
    threshold, smooth_fwhm_mm : float
        As :func:`brainlens.duplicates.maps_near_duplicates`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`~brainlens.duplicates.DUPLICATE_COLUMNS`: ``scan_a``/``subject_a``
        the external scan, ``scan_b``/``subject_b`` the main one; sorted by descending
        correlation. ``attrs``: ``dataset``, ``n_external``, ``n_main``, ``n_voxels``,
        ``threshold``, ``max_shift``, ``smooth_fwhm_mm`` and ``max_cross`` (the most
        correlated external/main pair).
    """
    ext_paths, ext_scans, ext_subjects = (list(x) for x in external)
    main_paths, main_scans, main_subjects = (list(x) for x in main)
    if not (len(ext_paths) == len(ext_scans) == len(ext_subjects)) or not (
        len(main_paths) == len(main_scans) == len(main_subjects)
    ):
        raise ConfigError(
            f"external_near_duplicates ({dataset}): expected one map, scan id and "
            "participant id per scan"
        )
    # one group per dataset: maps_near_duplicates then flags (and reports the maximum
    # over) pairs across the two datasets only
    groups = [f"external:{dataset}"] * len(ext_paths) + [MAIN] * len(main_paths)
    pairs = maps_near_duplicates(
        ext_paths + main_paths,
        ext_scans + main_scans,
        groups,
        threshold=threshold,
        smooth_fwhm_mm=smooth_fwhm_mm,
    )
    subject = dict(zip(ext_scans + main_scans, ext_subjects + main_subjects, strict=True))
    table = pairs.assign(
        subject_a=pairs["scan_a"].map(subject), subject_b=pairs["scan_b"].map(subject)
    )[DUPLICATE_COLUMNS]
    table.attrs = {
        "dataset": dataset,
        "n_external": len(ext_paths),
        "n_main": len(main_paths),
        "n_voxels": pairs.attrs["n_voxels"],
        "threshold": pairs.attrs["threshold"],
        "max_shift": pairs.attrs["max_shift"],
        "smooth_fwhm_mm": pairs.attrs["smooth_fwhm_mm"],
        "max_cross": pairs.attrs["max_other"],
    }
    return table


def check_external_duplicates(table: pd.DataFrame, on_duplicate: str) -> None:
    """Fail (``fail``) or warn (``warn``) when an external scan matches a main scan.

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
    if len(table) == 0:
        return
    pairs = "; ".join(
        f"{r.scan_a} ({r.subject_a}) ~ main {r.scan_b} ({r.subject_b}): "
        f"r = {float(r.correlation):.4f}"
        for r in table.head(10).itertuples(index=False)
    )
    more = f" and {len(table) - 10} more" if len(table) > 10 else ""
    msg = (
        f"external dataset {table.attrs.get('dataset', '?')!r}: {len(table)} scan pair(s) "
        f"near-identical to main-dataset scans (the same person in training and in the "
        f"external test set would inflate its metrics): {pairs}{more}. Fix: remove these "
        "participants from the external dataset; if they are different people, raise "
        "folds.duplicate_threshold or set folds.on_duplicate: warn"
    )
    if on_duplicate == "fail":
        raise LeakageError(msg)
    log.warning(msg)


def write_external_duplicates(
    external: tuple[Sequence[str | Path], Sequence[str], Sequence[str]],
    main: tuple[Sequence[str | Path], Sequence[str], Sequence[str]],
    out_tsv: str | Path,
    *,
    dataset: str,
    threshold: float,
    smooth_fwhm_mm: float,
    on_duplicate: str,
) -> pd.DataFrame:
    """Audit one external dataset against the main one and write the table.

    The table (columns :data:`~brainlens.duplicates.DUPLICATE_COLUMNS`, possibly no
    rows) and ``<stem>.json`` (its ``attrs``) are written only when the check passes
    (:func:`check_external_duplicates`), so a failed audit leaves no output and the
    external evaluation, which takes the table as input, cannot run.
    """
    table = external_near_duplicates(
        external, main, dataset=dataset, threshold=threshold, smooth_fwhm_mm=smooth_fwhm_mm
    )
    log.info(
        "external %s: %d scans against %d main scans, %d mask voxels, %d pair(s) above "
        "%.4g; highest cross-dataset correlation %s",
        dataset, table.attrs["n_external"], table.attrs["n_main"], table.attrs["n_voxels"],
        len(table), threshold, table.attrs["max_cross"],
    )  # fmt: skip
    check_external_duplicates(table, on_duplicate)
    out = Path(out_tsv)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps(table.attrs, indent=2) + "\n")
    with atomic_output(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6f")
    return table
