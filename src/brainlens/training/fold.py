"""Train, select and test one model on one fold: :func:`train_fold`.

Leakage is prevented structurally: the folds table is audited first
(:func:`brainlens.training.plan.make_plan`); the train and val datasets are built and
handed to :func:`brainlens.training.loop.fit` (:func:`brainlens.training.restart.run_restart`),
which selects the epoch on the val part alone; the test dataset is built only after
the selected weights are fixed and written to ``model.pt``.

Class order: ``class_names`` if given, else the sorted unique labels of the whole
folds table (so all folds share one order). For two classes the second is the
positive class of sensitivity/PPV/AUC (see :mod:`brainlens.metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainlens.metrics import classification_metrics
from brainlens.training.determinism import torch_settings
from brainlens.training.loop import predict
from brainlens.training.outputs import (
    plot_learning_curve,
    save_model,
    write_history,
    write_metrics,
    write_predictions,
    write_restarts,
)
from brainlens.training.plan import FoldPlan, ModelFactory, make_plan
from brainlens.training.restart import _Restart, run_restart, select_restart

__all__ = ["train_fold"]

log = logging.getLogger(__name__)


def train_fold(
    *,
    packs: Mapping[str, tuple[str | Path, str | Path]],
    folds_tsv: str | Path,
    fold: int,
    out_dir: str | Path,
    model: str,
    model_options: Mapping[str, Any] | None = None,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    early_stopping: Mapping[str, Any] | None = None,
    precise_bn: bool = False,
    restarts: int = 1,
    class_weights: bool | str = False,
    augmentation: Mapping[str, Any] | None = None,
    lateralized: bool = False,
    transform: Mapping[str, Any] | None = None,
    seed: int,
    device: str = "auto",
    deterministic: bool = True,
    amp: bool = True,
    num_threads: int | None = None,
    progress: bool = True,
    class_names: Sequence[str] | None = None,
    preload: bool | str = "auto",
    resume: bool = True,
    on_stale_checkpoint: str = "error",
    model_factory: ModelFactory | None = None,
    stop_after_epoch: int | tuple[int, int] | None = None,
    confounds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one model on one fold, select it on val, test it once.

    Parameters
    ----------
    packs, folds_tsv, fold : mapping of str to (npy, index), path, int
        Packed inputs in channel order (:mod:`brainlens.packing`); the folds table of
        :func:`brainlens.folds.write_folds` (audited first); the fold (or repeat) index.
    out_dir : path
        Output folder (created; :mod:`brainlens.training.outputs`): ``model.pt``,
        ``checkpoint.pt`` (``checkpoint-restart<r>.pt``), ``restarts.tsv``, ``history.tsv``
        (the kept restart's; while training, the running one's epochs, rewritten after
        each), ``learning_curve.png``, ``predictions.tsv``, ``metrics.json``.
    model, model_options, model_factory : str, mapping, callable
        Registry name (:data:`brainlens.models.MODELS`) or a name for ``model_factory``
        (``factory(name, *, in_shape, n_classes, **options) -> nn.Module``; default
        :func:`brainlens.models.build_model`), and the architecture options passed to it.
    epochs, batch_size, lr, optimizer, weight_decay, early_stopping
        Maximum epochs, mini-batch size, learning rate, "adam" or "adamw", decay, and
        ``{"monitor": "val_loss", "mode": "auto", "patience": None, "min_delta": 0}``
        (:func:`brainlens.training.loop.make_early_stopping`); the epoch with the best
        monitored validation value is selected even without patience.
    precise_bn, restarts : bool, int
        Recompute BatchNorm statistics on the training part after every epoch
        (:func:`brainlens.training.loop.recalibrate_batchnorm`). Independently initialised
        trainings of this fold: the one with the best monitored validation value is kept
        and tested (:mod:`brainlens.training.restart`), ``restarts.tsv`` lists them all.
    class_weights, class_names : bool or "sampler", sequence of str or None
        True: cross-entropy weighted by n / (K * n_class) of the training part; "sampler":
        draw training samples with probability 1 / n_class (with replacement). The class
        order; default the sorted labels of the folds table.
    augmentation, lateralized : mapping, bool
        ``{"flip_axes": ["y"], "flip_prob": 0.5, "shift_voxels": 2}`` on the 3D grid
        (:func:`brainlens.training.augment.make_augmenter`); with ``lateralized`` (the
        task depends on brain side) a left-right flip raises ConfigError.
    transform, seed : mapping or None, int
        ``{"name": ..., **options}`` for :func:`brainlens.transforms.make_transform`
        (3D->2D for 2D models; None: the model's default, none for 3D). The seed of model
        init, sample order, augmentation and dropout.
    device, deterministic, num_threads, amp, progress, preload
        "auto" (CUDA if present), "cpu", "cuda:1", ...; deterministic algorithms; CPU
        threads (:mod:`brainlens.training.determinism`; restored on return); mixed
        precision on CUDA (bf16, else fp16 with a grad scaler); a tqdm bar on stderr;
        preload the samples onto the device (True, False or "auto": on CUDA if they fit).
    resume, on_stale_checkpoint : bool, {"error", "restart"}
        Continue from ``checkpoint.pt`` when present; one written with other settings
        (another fingerprint) raises ConfigError ("error"), or is replaced after a
        warning ("restart": the workflow's choice, its run is being replaced).
    stop_after_epoch : int or (int, int), optional
        Test hook: raise :class:`TrainingInterrupted` after this epoch's checkpoint (of
        restart 0), or after epoch ``e`` of restart ``r`` for ``(r, e)``.
    confounds : mapping, optional
        In-fold confound removal of the inputs (``confounds.scope: all``): the fold's
        ``{"npz", "json", "participants", "tiv"}`` (:mod:`brainlens.confounds.inputs`),
        audited before the first epoch (a fit on any scan outside the training part is a
        LeakageError), applied to every sample, recorded in ``model.pt`` with SHA-256.
        None: the raw inputs.

    Returns
    -------
    dict
        The test metrics as written to ``metrics.json``.
    """
    plan = make_plan(**locals())  # first: locals() are exactly the keywords above
    with torch_settings(plan.device, deterministic=deterministic, num_threads=num_threads):
        runs = [_run_logged(plan, r) for r in range(int(plan.restarts))]
        return _test(plan, _keep_best(plan, runs))


def _run_logged(plan: FoldPlan, restart: int) -> _Restart:
    """:func:`~brainlens.training.restart.run_restart`, logging its best epoch."""
    run = run_restart(plan, restart)
    log.info(
        "fold %s restart %d: best %s %.4g at epoch %s",
        plan.fold, restart, run.stopper.monitor, run.stopper.best, run.stopper.best_epoch,
    )  # fmt: skip
    return run


def _keep_best(plan: FoldPlan, runs: list[_Restart]) -> _Restart:
    """Select the restart to keep, write ``restarts.tsv``, its ``history.tsv`` and
    learning curve, and fix its best weights in ``model.pt``."""
    chosen = select_restart(runs)
    write_restarts(plan.out / "restarts.tsv", runs, chosen)
    history = write_history(plan.out / "history.tsv", chosen.state.history)
    plot_learning_curve(
        history, chosen.stopper.monitor, chosen.stopper.best_epoch,
        plan.out / "learning_curve.png",
    )  # fmt: skip
    # The model is fixed here; only now is the test part read.
    chosen.net.load_state_dict(chosen.state.best_state)
    save_model(plan.out / "model.pt", chosen.net, _model_metadata(plan, chosen))
    return chosen


def _model_metadata(plan: FoldPlan, chosen: _Restart) -> dict[str, Any]:
    """What ``model.pt`` records besides the weights (see :func:`load_trained_model`)."""
    return {
        "model": plan.model,
        "model_options": plan.model_options,
        "in_shape": list(plan.in_shape),
        "n_classes": len(plan.names),
        "class_names": plan.names,
        "inputs": plan.inputs,
        "transform": plan.transform_cfg,
        "best_epoch": chosen.stopper.best_epoch,
        "monitor": chosen.stopper.monitor,
        "best_value": chosen.stopper.best,
        "restart": chosen.restart,
        "restarts": int(plan.restarts),
        "fold": int(plan.fold),
        "seed": int(plan.seed),
        "grid_shape": list(plan.train.grid_shape),
        "affine": np.asarray(plan.train.affine).tolist(),
        "random_labels": plan.random_labels,
        "lateralized": bool(plan.lateralized),
        "torch_version": str(torch.__version__),
        # only when harmonised, so model.pt of a raw run stays as it was
        **({"confounds": plan.confounds.record()} if plan.confounds is not None else {}),
    }


def _test(plan: FoldPlan, chosen: _Restart) -> dict[str, Any]:
    """Build the test part, predict it once, write predictions.tsv and metrics.json."""
    test_rows = plan.rows("test")
    test = plan.dataset(test_rows)
    proba = predict(chosen.net, test, batch_size=int(plan.batch_size), amp=plan.amp)
    write_predictions(plan.out / "predictions.tsv", test_rows, proba, plan.names)
    stopper = chosen.stopper
    metrics = classification_metrics(test.labels.numpy(), proba, plan.names)
    metrics.update(
        fold=int(plan.fold),
        model=plan.model,
        best_epoch=stopper.best_epoch,
        restart=chosen.restart,
        restarts=int(plan.restarts),
        epochs_run=int(chosen.state.epoch),
        stopped_early=bool(stopper.stopped),
        monitor=stopper.monitor,
        best_val=stopper.best,
        n_train=len(plan.train),
        n_val=len(plan.val),
        n_test=len(test),
        random_labels=plan.random_labels,
        device=str(plan.device),
        **({"input_space": f"harmonised ({plan.confounds.method})"} if plan.confounds else {}),
    )
    return write_metrics(plan.out / "metrics.json", metrics)
