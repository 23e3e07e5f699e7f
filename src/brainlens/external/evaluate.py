"""One fold's trained model on an external test set: :func:`evaluate_external_fold`.

An external dataset (``external:`` in the config) is preprocessed and packed by the
same rules as the main one; its ``inputs.tsv`` (rule ``check_inputs``) holds labels
already mapped to the main classes. Each fold's ``model.pt`` is loaded with
:func:`brainlens.training.load_trained_model` (the loader training and attribution
use), the external packs are checked against the inputs, grid and affine it records,
and every usable external scan is predicted through the same
:class:`~brainlens.training.dataset.PackedDataset` and
:func:`~brainlens.training.loop.predict` as the fold's own test part, with the model's
recorded 3D->2D transform.

A model trained on harmonised inputs (``confounds.method`` with ``scope: all``;
``model.pt`` records the fold's confound files and their SHA-256) sees harmonised
external scans: the fold's parameters (fitted on its training part, audited by
:func:`brainlens.confounds.inputs.open_input_confounds`) are applied with the
external participants' covariates, encoded as in the fit. ComBat cannot remove the
effect of a site it never saw in training: an external site outside the fit's sites
is an error naming it (as is an unseen level of a categorical covariate).

Outputs: ``predictions.tsv`` with the columns of the main predictions
(:func:`brainlens.training.outputs.write_predictions`) and ``metrics.json``: the
subject-level metrics (sessions combined by mean probability,
:func:`brainlens.summary.subject_metrics`, the headline as in ``metrics_summary.tsv``)
about the config's ``positive_class``, the scan-level ones as ``scan_<metric>``, and
the facts of the evaluation (``dataset``, ``model``, ``fold``, sizes, input space).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens.confounds.covariates import TIV, covariate_names, covariates_of_rows
from brainlens.confounds.infold import encode_rows
from brainlens.errors import ConfigError, DatasetError, InputFileError
from brainlens.external.summary import read_external_predictions, scan_columns
from brainlens.inputs import usable_scans
from brainlens.packing import Pack, open_packs
from brainlens.summary import subject_metrics

log = logging.getLogger(__name__)

__all__ = ["evaluate_external_fold", "external_metrics", "external_rows"]


def external_rows(inputs_tsv: str | Path, class_names: Sequence[str], dataset: str) -> pd.DataFrame:
    """The usable scans of an external ``inputs.tsv`` as prediction rows.

    Parameters
    ----------
    inputs_tsv : path
        ``results/external/<dataset>/inputs.tsv`` (:func:`brainlens.inputs.check_dataset`;
        ``label`` already mapped to the main classes).
    class_names : sequence of str
        The model's classes (``model.pt``).
    dataset : str
        The dataset's name, for messages.

    Returns
    -------
    DataFrame
        ``scan_id, participant_id, session_id, label`` of the scans with status ``ok``,
        sorted by ``scan_id``.

    Raises
    ------
    InputFileError
        Missing columns, no usable scan, or a label that is not a class of the model.
    """
    path = Path(inputs_tsv)
    if not path.is_file():
        raise InputFileError(path, "external input table not found", "run check_inputs for it")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in ("scan", "participant_id", "session_id", "label") if c not in table]
    if missing:
        raise InputFileError(path, f"missing column(s) {missing}", "re-run check_inputs")
    rows = usable_scans(table).rename(columns={"scan": "scan_id"})
    rows = rows[["scan_id", "participant_id", "session_id", "label"]]
    if rows.empty:
        raise InputFileError(path, "no scan passed the input checks", "fix the external scans")
    unknown = sorted(set(rows["label"]) - {str(c) for c in class_names})
    if unknown:
        raise InputFileError(
            path,
            f"external dataset {dataset!r} has label(s) {unknown} that are not classes of "
            f"the model ({list(class_names)})",
            f"map them to the main classes in external.{dataset} (label mapping), or leave "
            "those participants out",
        )
    return rows.sort_values("scan_id").reset_index(drop=True)


def check_packs(
    packs: Mapping[str, Pack], meta: Mapping[str, Any], model_path: Path, dataset: str
) -> None:
    """The external packs are the model's inputs, on its grid and affine.

    Raises
    ------
    ConfigError
        Other inputs (names or order) than ``model.pt`` records.
    InputFileError
        A pack on another grid shape or affine, naming the pack.
    """
    names = list(packs)
    if names != list(meta["inputs"]):
        raise ConfigError(
            f"{model_path}: the model reads inputs {list(meta['inputs'])}, the external "
            f"dataset {dataset!r} packs {names}. Fix: pack the external dataset with the "
            "model's train.inputs, in that order"
        )
    want = tuple(int(v) for v in meta["grid_shape"])
    affine = np.asarray(meta["affine"], float)
    for name, pack in packs.items():
        if pack.shape != want or not np.allclose(pack.affine, affine, atol=1e-4):
            raise InputFileError(
                pack.npy,
                f"external input {name!r} is on grid {list(pack.shape)} (affine "
                f"{np.round(pack.affine, 3).tolist()}), the model {model_path} was trained "
                f"on grid {list(want)} (affine {np.round(affine, 3).tolist()})",
                "preprocess the external dataset with the main run's preprocess.resolution "
                "and template, then pack it again",
            )


def check_packed(
    packs: Mapping[str, Pack], rows: pd.DataFrame, inputs_tsv: str | Path, dataset: str
) -> None:
    """Every usable external scan is in every pack (InputFileError naming the pack)."""
    for pack in packs.values():
        absent = sorted(set(rows["scan_id"]) - set(pack.index["scan_id"]))
        if absent:
            raise InputFileError(
                pack.npy,
                f"external scan(s) {absent[:5]} ({len(absent)} in all) of {inputs_tsv} "
                "are not packed",
                f"re-run the packing of external dataset {dataset!r}",
            )


def _external_covariates(
    harmonise: Any,
    rows: pd.DataFrame,
    participants_tsv: str | Path | None,
    tiv_tsv: str | Path | None,
    dataset: str,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Encoded covariates and sites of the external scans, with the fit's encoding."""
    meta = harmonise.meta
    if participants_tsv is None:
        raise ConfigError(
            f"external dataset {dataset!r}: the model was trained on harmonised inputs "
            f"({harmonise.method}), which needs the external participants' covariates. Fix: "
            "pass the external dataset's participants.tsv"
        )
    if TIV in covariate_names(meta["covariates"]) and tiv_tsv is None:
        raise ConfigError(
            f"external dataset {dataset!r}: {TIV!r} is a covariate of the harmonisation but "
            "no TIV table of the external scans was given. Fix: pass "
            f"results/external/{dataset}/tiv.tsv"
        )
    site_col = meta.get("site_column")
    values, _, site = covariates_of_rows(
        rows, participants_tsv, tiv_tsv, meta["covariates"], site_col
    )
    ids = list(rows["scan_id"])
    if site is not None:
        known = sorted({str(s) for ch in harmonise.params.values() for s in ch["sites"]})
        unseen = sorted({str(s) for s in site} - set(known))
        if unseen:
            raise DatasetError(
                f"external dataset {dataset!r}: site(s) {unseen} (column {site_col!r} of "
                f"{participants_tsv}) never occur in the training part that fold "
                f"{harmonise.fold}'s ComBat was fitted on (sites {known}); ComBat cannot "
                "remove the effect of a site it has no training data from. Fix: evaluate "
                "with confounds.method residualize or none, or add scans of that site to "
                "the main dataset"
            )
    try:
        c = encode_rows(values, meta, ids)
    except DatasetError as err:
        raise DatasetError(f"external dataset {dataset!r}: {err}") from None
    sites = {} if site is None else dict(zip(ids, site.astype(str), strict=True))
    return {s: c[i] for i, s in enumerate(ids)}, sites


def external_harmonisation(
    meta: Mapping[str, Any],
    confounds: Mapping[str, Any] | None,
    *,
    rows: pd.DataFrame,
    folds_tsv: str | Path | None,
    fold: int,
    model_path: Path,
    participants_tsv: str | Path | None,
    tiv_tsv: str | Path | None,
    dataset: str,
):
    """The fold's audited harmonisation, set up for the external scans (None: raw).

    Parameters
    ----------
    meta : mapping
        ``model.pt`` metadata (``confounds`` only for a harmonised model).
    confounds : mapping, optional
        ``{"npz", "json", "participants", "tiv"}`` of the fold (the main dataset's
        participants.tsv and TIV table); default the files ``model.pt`` records.
    rows : DataFrame
        :func:`external_rows`.
    folds_tsv : path
        The main folds table (the leakage audit of the fit).
    fold : int
    model_path : Path
    participants_tsv, tiv_tsv : path, optional
        The external participants.tsv and TIV table (``tiv`` a covariate).
    dataset : str

    Returns
    -------
    InputConfounds or None
        The fold's fitted parameters, with the external scans' covariates and sites.

    Raises
    ------
    InputFileError
        Confound files given for a raw model, or other parameters than it was trained with.
    LeakageError
        The fit used scans outside the fold's training part.
    DatasetError
        An external site (ComBat) or covariate level the fit never saw.
    """
    from brainlens.confounds.inputs import open_model_confounds

    recorded = meta.get("confounds")
    spec = confounds if confounds else (recorded or {}).get("files")
    if not spec:
        return None
    if (
        participants_tsv is not None
        and Path(spec["participants"]).resolve() == Path(participants_tsv).resolve()
    ):
        raise ConfigError(
            f"confounds: the participants table of the fold's spec is the external one "
            f"({participants_tsv}); it must be the main dataset's, whose covariates the fit "
            "encoded. Fix: pass the fold's spec as train_model gets it (cnn_spec) and the "
            "external participants.tsv on its own"
        )
    harmonise = open_model_confounds(
        meta,
        spec,
        model_path=model_path,
        folds_tsv=folds_tsv,
        fold=fold,
        action="evaluate a model",
    )
    covariates, sites = _external_covariates(harmonise, rows, participants_tsv, tiv_tsv, dataset)
    return dataclasses.replace(harmonise, covariates=covariates, sites=sites)


def external_metrics(predictions: pd.DataFrame, positive_class: str | None) -> dict[str, Any]:
    """Subject-level metrics (headline) plus ``scan_<metric>`` of external predictions.

    Parameters
    ----------
    predictions : DataFrame
        ``predictions.tsv`` of one fold's model on the external set.
    positive_class : str, optional
        The config's ``positive_class`` (None: the last of the class names).

    Returns
    -------
    dict
        :func:`brainlens.summary.subject_metrics` (``n`` = subjects, with ``roc`` and
        ``confusion_matrix``), ``scan_<metric>`` for :data:`~brainlens.metrics.SCALAR_METRICS`
        and ``scan_n``, ``level: "subject"``.
    """
    subj = subject_metrics(predictions, positive_class)
    return subj | scan_columns(predictions, positive_class) | {"level": "subject"}


def _predict(
    net: Any,
    meta: Mapping[str, Any],
    packs: Mapping[str, Pack],
    scan_ids: Sequence[str],
    harmonise: Any,
    *,
    batch_size: int,
    amp: bool,
    device: Any,
) -> np.ndarray:
    """Class probabilities (N, K) through the training's dataset, transform and predict."""
    from brainlens.training.dataset import PackedDataset
    from brainlens.training.loop import predict
    from brainlens.training.plan import _make_transform

    # model.pt records the resolved transform (None: the model takes the 3D grid), so
    # the registry default is not looked up again (custom_factory=True)
    _, transform = _make_transform(meta.get("transform"), meta["model"], True)
    data = PackedDataset(
        packs,
        list(scan_ids),
        transform=transform,
        preload="auto",
        device=device,
        confounds=harmonise,
    )
    return predict(net, data, batch_size=int(batch_size), amp=bool(amp) and device.type == "cuda")


def evaluate_external_fold(
    *,
    model_path: str | Path,
    packs: Mapping[str, tuple[str | Path, str | Path]],
    inputs_tsv: str | Path,
    out_predictions: str | Path,
    out_metrics: str | Path,
    dataset: str,
    batch_size: int,
    positive_class: str | None = None,
    device: str = "auto",
    amp: bool = True,
    deterministic: bool = True,
    num_threads: int | None = None,
    confounds: Mapping[str, Any] | None = None,
    folds_tsv: str | Path | None = None,
    participants_tsv: str | Path | None = None,
    tiv_tsv: str | Path | None = None,
    model_factory: Any | None = None,
) -> dict[str, Any]:
    """Predict every usable scan of an external dataset with one fold's model.

    Parameters
    ----------
    model_path : path
        ``results/train/<model>/fold-<k>/model.pt``.
    packs : mapping of str to (npy, index)
        The external packs (``results/external/<dataset>/pack/<input>.{npy,tsv}``) in
        the model's channel order (``train.inputs``).
    inputs_tsv : path
        ``results/external/<dataset>/inputs.tsv`` (labels mapped to the main classes).
    out_predictions, out_metrics : path
        ``predictions.tsv`` and ``metrics.json`` (written atomically).
    dataset : str
        The external dataset's name.
    batch_size : int
        Prediction batch size (``train.batch_size``).
    positive_class : str, optional
        The config's ``positive_class``.
    device, amp, deterministic, num_threads
        As in :func:`brainlens.training.train_fold` (``train.*``; threads: the job's).
    confounds : mapping, optional
        The fold's confound files as ``train_fold`` takes them (``train.confounds`` of
        the rule; default those ``model.pt`` records).
    folds_tsv : path, optional
        ``results/folds/folds.tsv``; needed for a harmonised model (the audit).
    participants_tsv, tiv_tsv : path, optional
        The external participants.tsv and TIV table; needed for a harmonised model
        (the TIV table when ``tiv`` is a covariate).
    model_factory : callable, optional
        As in ``train_fold`` (tests); default the registry.

    Returns
    -------
    dict
        The metrics as written to ``metrics.json``.

    Raises
    ------
    ConfigError, InputFileError, DatasetError, LeakageError
        Inputs, grid or affine other than the model's, labels outside its classes,
        scans missing from the packs, or a harmonisation that cannot be applied.
    """
    from brainlens.training import load_trained_model
    from brainlens.training.determinism import resolve_device, torch_settings
    from brainlens.training.outputs import write_metrics, write_predictions

    model_path = Path(model_path)
    dev = resolve_device(device)
    net, meta = load_trained_model(model_path, model_factory=model_factory, device=dev)
    names = [str(c) for c in meta["class_names"]]
    fold = int(meta["fold"])
    opened = open_packs(packs)
    check_packs(opened, meta, model_path, dataset)
    rows = external_rows(inputs_tsv, names, dataset)
    check_packed(opened, rows, inputs_tsv, dataset)
    harmonise = external_harmonisation(
        meta, confounds, rows=rows, folds_tsv=folds_tsv, fold=fold, model_path=model_path,
        participants_tsv=participants_tsv, tiv_tsv=tiv_tsv, dataset=dataset,
    )  # fmt: skip
    with torch_settings(dev, deterministic=deterministic, num_threads=num_threads):
        proba = _predict(
            net, meta, opened, rows["scan_id"], harmonise,
            batch_size=batch_size, amp=amp, device=dev,
        )  # fmt: skip
    write_predictions(Path(out_predictions), rows, proba, names)
    metrics = external_metrics(read_external_predictions(out_predictions), positive_class)
    space = "raw" if harmonise is None else f"harmonised ({harmonise.method})"
    metrics |= {"dataset": dataset, "model": meta["model"], "fold": fold}
    metrics |= {"n_subjects": int(rows["participant_id"].nunique()), "n_scans": len(rows)}
    metrics |= {"model_path": str(model_path), "input_space": space}
    log.info(
        "%s fold %d on %s: %d scans, balanced accuracy %.3f (subjects)",
        meta["model"], fold, dataset, len(rows), metrics["balanced_accuracy"],
    )  # fmt: skip
    return write_metrics(Path(out_metrics), metrics)
