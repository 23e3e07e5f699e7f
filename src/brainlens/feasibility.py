"""Whether a split can give every part every class: shared by the folds and the parse checks.

:func:`brainlens.folds.make_folds` calls :func:`check_feasible` with its participant
groups; the workflow (``brainlens.config.check_dataset``) and ``brainlens check``
call it with the participants of the scan table before any job, so the two raise
the same message.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from brainlens.errors import ConfigError

__all__ = ["check_feasible"]


def _check_share(
    counts: pd.Series, share: float, part: str, key: str, n_fold_note: str = ""
) -> None:
    for label, n in counts.items():
        if n * share < 1:
            raise ConfigError(
                f"{key}={share:g}: class {label!r} has {n} participant(s), so a {part} part "
                f"would get {n * share:.2f} of them (expected >= 1){n_fold_note}. Fix: raise "
                f"{key}, or use more participants of that class"
            )


def check_feasible(
    counts: Mapping[str, int] | pd.Series,
    *,
    label_column: str = "label",
    mode: str = "kfold",
    n_folds: int = 5,
    n_repeats: int = 10,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> None:
    """Raise :class:`ConfigError` if the split cannot give every part every class.

    :func:`make_folds` calls this with its participant groups; the workflow calls it
    when it parses the config, with the participants of the scan table, so a split
    that the ``folds`` job would refuse stops the run before any job.

    Parameters
    ----------
    counts : mapping or Series
        Participants (groups) per class label.
    label_column, mode, n_folds, n_repeats, val_fraction, test_fraction
        As in :func:`make_folds`.

    Raises
    ------
    ConfigError
        Fewer than 2 classes, fractions out of range, or a class too small for a part.
    """
    counts = pd.Series(dict(counts), dtype=int)
    if len(counts) < 2:
        raise ConfigError(
            f"{label_column}: expected at least 2 classes, got {sorted(counts.index)}. "
            "Fix: check the label column / the participants table"
        )
    if not 0 < val_fraction < 1:
        raise ConfigError(f"folds.val_fraction: expected 0 < value < 1, got {val_fraction!r}")
    if mode == "kfold":
        if int(n_folds) != n_folds or n_folds < 2:
            raise ConfigError(f"folds.n_folds: expected an integer >= 2, got {n_folds!r}")
        if counts.min() < n_folds:
            raise ConfigError(
                f"folds.n_folds={n_folds}: class {counts.idxmin()!r} has only "
                f"{counts.min()} participant(s), fewer than folds, so some test folds "
                "would lack it. Fix: lower n_folds or use mode 'repeated'"
            )
        if val_fraction + 1.0 / n_folds >= 1:
            raise ConfigError(
                f"folds.val_fraction={val_fraction:g} with n_folds={n_folds}: validation "
                f"and test ({1 / n_folds:.2f}) leave no training data. Fix: lower val_fraction"
            )
        _check_share(counts, val_fraction, "validation", "folds.val_fraction")
        return
    if not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"folds.test_fraction={test_fraction!r}, val_fraction={val_fraction!r}: "
            "expected both > 0 and their sum < 1. Fix: e.g. 0.1 and 0.1 for 80/10/10"
        )
    _check_share(counts, test_fraction, "test", "folds.test_fraction")
    _check_share(counts, val_fraction, "validation", "folds.val_fraction")
    if mode == "repeated" and (int(n_repeats) != n_repeats or n_repeats < 1):
        raise ConfigError(f"folds.n_repeats: expected an integer >= 1, got {n_repeats!r}")
