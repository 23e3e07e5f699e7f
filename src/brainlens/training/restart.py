"""One initialisation of a fold, trained to the end: :func:`run_restart`, :func:`select_restart`.

Restart ``r`` has its own seeds (restart 0 keeps those and the checkpoint name of a
single run), weights, sample order and augmentation. After every epoch it writes its
checkpoint and ``history.tsv`` (the epochs so far, so ``tail`` shows progress) and logs
one INFO line. The restart with the best monitored validation value is kept.

Why restarts: on small cohorts a run sometimes fits the training part through
nuisance features and never learns the effect; its validation loss then stays high,
which is what :func:`select_restart` reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from brainlens.errors import ModelError
from brainlens.training.checkpoint import (
    checkpoint_path,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from brainlens.training.loop import (
    EarlyStopping,
    LoopState,
    TrainingInterrupted,
    fit,
    make_early_stopping,
)
from brainlens.training.outputs import write_history
from brainlens.training.plan import FoldPlan

__all__ = ["restart_seeds", "run_restart", "select_restart"]

log = logging.getLogger(__name__)


@dataclass
class _Restart:
    """One trained initialisation of a fold: its model (best weights not yet loaded),
    loop state (history, best weights) and early-stopping record."""

    restart: int
    net: nn.Module
    state: LoopState
    stopper: EarlyStopping


def select_restart(runs: Sequence[_Restart]) -> _Restart:
    """The restart whose selected epoch has the best monitored validation value.

    Parameters
    ----------
    runs : sequence of _Restart
        Finished restarts of one fold, all monitoring the same validation value.

    Returns
    -------
    _Restart
        The one with the lowest (``mode="min"``) or highest (``"max"``) best value; ties
        go to the earliest restart, so ``restarts=1`` is a single run. Only validation
        values are compared: the test part is not read until the model is fixed.
    """
    if not runs:
        raise ModelError("select_restart: no finished restart to select from")
    sign = 1.0 if runs[0].stopper.mode == "min" else -1.0
    return min(runs, key=lambda run: (sign * float(run.stopper.best), run.restart))


def restart_seeds(seed: int, restart: int) -> tuple[int, int]:
    """(model-init seed, data seed) of ``restart``; restart 0 keeps a single run's seeds."""
    entropy = int(seed) if restart == 0 else [int(seed), restart]
    init_seed, data_seed = (int(s) for s in np.random.SeedSequence(entropy).generate_state(2))
    return init_seed, data_seed


def _log_epoch(plan: FoldPlan, restart: int, state: LoopState, stopper: EarlyStopping) -> None:
    """One INFO line: epoch, train and val loss, the monitored value, the selection so far."""
    row = state.history[-1]
    monitored = (
        "" if stopper.monitor == "val_loss" else f" {stopper.monitor} {row[stopper.monitor]:.4g}"
    )
    if stopper.best_epoch is None:
        marker = "none selected yet"
    elif stopper.best_epoch == state.epoch:
        marker = "* best so far"
    else:
        marker = f"best so far: epoch {stopper.best_epoch}"
    log.info(
        "fold %s restart %d epoch %d/%d: train_loss %.4g val_loss %.4g%s (%s)",
        plan.fold, restart, state.epoch, int(plan.epochs), row["train_loss"], row["val_loss"],
        monitored, marker,
    )  # fmt: skip


def run_restart(plan: FoldPlan, restart: int) -> _Restart:
    """Train one initialisation to the end (or resume it); keep its best epoch.

    Parameters
    ----------
    plan : FoldPlan
        The fold.
    restart : int
        0, 1, ...: picks the seeds and the checkpoint file.

    Returns
    -------
    _Restart
        The network (with its last weights; ``state.best_state`` holds the selected
        ones), loop state and early-stopping record.

    Raises
    ------
    TrainingInterrupted
        The ``stop_after_epoch`` hook, after that epoch's checkpoint and history.
    ModelError
        No epoch gave a finite monitored value.
    """
    # the order of the seeding and building below fixes the random numbers drawn:
    # keep it, or results (and resumed checkpoints) change
    init_seed, data_seed = restart_seeds(plan.seed, restart)
    generator = torch.Generator().manual_seed(data_seed)
    stopper = make_early_stopping(plan.early_stopping)
    torch.manual_seed(init_seed)
    net = plan.factory(
        plan.model, in_shape=plan.in_shape, n_classes=len(plan.names), **plan.model_options
    ).to(plan.device)
    opt_cls = torch.optim.Adam if plan.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(net.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    scaler = None
    if plan.amp and not torch.cuda.is_bf16_supported():
        scaler = torch.amp.GradScaler("cuda")

    fprint = fingerprint(plan, restart, net, stopper)
    ckpt_path = checkpoint_path(plan.out, restart)
    parts = dict(net=net, optimizer=opt, scaler=scaler, generator=generator, device=plan.device)
    state = load_checkpoint(
        ckpt_path,
        fprint,
        resume=plan.resume,
        on_stale=plan.on_stale_checkpoint,
        stopper=stopper,
        **parts,
    )

    def on_epoch_end(st: LoopState, es: EarlyStopping) -> None:
        save_checkpoint(ckpt_path, fprint, state=st, stopper=es, **parts)
        write_history(plan.out / "history.tsv", st.history)
        _log_epoch(plan, restart, st, es)
        if plan.stop_at is not None and (restart, st.epoch) >= plan.stop_at:
            raise TrainingInterrupted(
                f"stopped after epoch {st.epoch} of restart {restart} (stop_after_epoch)"
            )

    fit(
        net,
        plan.train,
        plan.val,
        state=state,
        stopper=stopper,
        epochs=int(plan.epochs),
        optimizer=opt,
        loss_fn=plan.loss_fn,
        batch_size=int(plan.batch_size),
        generator=generator,
        sample_weights=plan.sample_weights,
        augment=plan.augmenter,
        amp=plan.amp,
        scaler=scaler,
        class_names=plan.names,
        on_epoch_end=on_epoch_end,
        progress=plan.progress,
        precise_bn=bool(plan.precise_bn),
    )
    if state.best_state is None:
        raise ModelError(
            f"fold {plan.fold}: no epoch gave a finite {stopper.monitor} on the validation "
            "part. Fix: monitor val_loss, or check the val part has both classes"
        )
    return _Restart(restart, net, state, stopper)
