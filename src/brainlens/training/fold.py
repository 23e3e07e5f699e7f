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
    packs : mapping of str to (npy, index)
        Packed inputs in channel order (see :mod:`brainlens.packing`).
    folds_tsv : path
        Folds table from :func:`brainlens.folds.write_folds`; it is audited first.
    fold : int
        Fold (or repeat) index.
    out_dir : path
        Output folder (created; see :mod:`brainlens.training.outputs`): ``model.pt``,
        ``checkpoint.pt`` (``checkpoint-restart<r>.pt`` for further restarts),
        ``restarts.tsv``, ``history.tsv`` (of the kept restart; while training, the
        running restart's epochs so far, rewritten and logged after every epoch),
        ``learning_curve.png``, ``predictions.tsv``, ``metrics.json``.
    model : str
        Registry name (:data:`brainlens.models.MODELS`), or a name for ``model_factory``.
    model_options : mapping, optional
        Architecture options passed to the factory.
    epochs, batch_size, lr, optimizer, weight_decay : int, int, float, str, float
        Maximum epochs, mini-batch size, learning rate, "adam" or "adamw", decay.
    early_stopping : mapping, optional
        ``{"monitor": "val_loss", "mode": "auto", "patience": None, "min_delta": 0}``
        (see :func:`brainlens.training.loop.make_early_stopping`). The epoch with the
        best monitored validation value is selected even without patience.
    precise_bn : bool
        Recompute BatchNorm statistics on the training part after every epoch
        (:func:`brainlens.training.loop.recalibrate_batchnorm`).
    restarts : int
        Independently initialised trainings of this fold; the one with the best
        monitored validation value is kept and tested (see
        :mod:`brainlens.training.restart`); ``restarts.tsv`` lists them all.
    class_weights : bool or "sampler"
        True: cross-entropy weighted by n / (K * n_class) of the training part;
        "sampler": draw training samples with probability 1 / n_class (with replacement).
    augmentation : mapping, optional
        ``{"flip_axes": ["y"], "flip_prob": 0.5, "shift_voxels": 2}`` on the 3D grid
        (see :func:`brainlens.training.augment.make_augmenter`).
    lateralized : bool
        The task depends on brain side: a left-right flip raises ConfigError.
    transform : mapping, optional
        ``{"name": ..., **options}`` for :func:`brainlens.transforms.make_transform`
        (3D->2D for 2D models). None: the registry model's default (none for 3D).
    seed : int
        Seeds model init, sample order, augmentation and dropout.
    device, deterministic, num_threads : str, bool, int or None
        "auto" (CUDA if present), "cpu", "cuda:1", ...; deterministic algorithms; CPU
        threads (see :mod:`brainlens.training.determinism`; restored on return).
    amp : bool
        Mixed precision (bf16, else fp16 with a grad scaler); only on CUDA.
    progress : bool
        tqdm progress bar on stderr.
    class_names : sequence of str, optional
        Class order; default sorted labels of the folds table.
    preload : bool or "auto"
        Preload the train/val/test samples onto the device ("auto": on CUDA if they fit).
    resume : bool
        Continue from ``checkpoint.pt`` when present (it must come from the same
        settings: a different fingerprint raises ConfigError, see ``on_stale_checkpoint``).
    on_stale_checkpoint : {"error", "restart"}
        A checkpoint written with other settings: raise (default), or log a warning
        and start afresh (the workflow's choice: its run is being replaced).
    model_factory : callable, optional
        ``factory(name, *, in_shape, n_classes, **options) -> nn.Module``; default
        :func:`brainlens.models.build_model`.
    stop_after_epoch : int or (int, int), optional
        Test hook: raise :class:`TrainingInterrupted` after this epoch's checkpoint (of
        restart 0), or after epoch ``e`` of restart ``r`` for ``(r, e)``.
    confounds : mapping, optional
        In-fold confound removal of the inputs (``confounds.method`` with ``scope:
        all``): ``{"npz", "json", "participants", "tiv"}``, the fold's
        ``results/confounds/inputs/fold-<k>.npz`` + ``.json``, participants.tsv and the
        TIV table (when ``tiv`` is a covariate). Audited before the first epoch (a fit
        on any scan outside the training part is a LeakageError), then applied to every
        train, val and test sample (:mod:`brainlens.confounds.inputs`); ``model.pt``
        records the files and their SHA-256, which the attribution stage checks. None:
        the raw inputs.

    Returns
    -------
    dict
        The test metrics as written to ``metrics.json``.
    """
    plan = make_plan(**locals())  # first: locals() are exactly the keywords above
    with torch_settings(plan.device, deterministic=deterministic, num_threads=num_threads):
        runs = []
        for r in range(int(plan.restarts)):
            runs.append(run_restart(plan, r))
            log.info(
                "fold %s restart %d: best %s %.4g at epoch %s",
                fold, r, runs[-1].stopper.monitor, runs[-1].stopper.best,
                runs[-1].stopper.best_epoch,
            )  # fmt: skip
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
        return _test(plan, chosen)


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
