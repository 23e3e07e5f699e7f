"""The training loop: epochs over the train part, model selection on the val part.

:func:`fit` is given the train and validation datasets only; the test part does not
exist while a model is being selected (see :mod:`brainlens.training.fold` and
:mod:`brainlens.training.restart`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from brainlens.errors import ConfigError
from brainlens.metrics import classification_metrics
from brainlens.training.augment import Augmenter
from brainlens.training.dataset import PackedDataset

#: Validation columns of the history that early stopping may monitor.
MONITORS = ("val_loss", "val_accuracy", "val_balanced_accuracy", "val_roc_auc")
ES_KEYS = ("monitor", "mode", "patience", "min_delta", "start_epoch")


class TrainingInterrupted(RuntimeError):
    """Raised by the ``stop_after_epoch`` hook, after the checkpoint was written."""


@dataclass
class EarlyStopping:
    """Tracks the monitored validation value; decides the best epoch and stopping.

    Attributes
    ----------
    monitor : str
        One of :data:`MONITORS`.
    mode : {"min", "max"}
        Whether smaller or larger is better.
    patience : int or None
        Stop after this many epochs without improvement; ``None``: never stop early
        (the best epoch is still selected).
    min_delta : float
        The smallest change that counts as an improvement.
    start_epoch : int
        The first epoch (1-based) that may be selected and that counts towards
        ``patience`` (Keras' ``start_from_epoch``): on small datasets the untrained
        network's validation loss (about ln 2) is often the lowest of the first
        epochs, and selecting it would mean selecting no learning at all.
    """

    monitor: str = "val_loss"
    mode: str = "min"
    patience: int | None = None
    min_delta: float = 0.0
    start_epoch: int = 1
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, epoch: int, value: float) -> bool:
        """Record one epoch's value; return True if it is the new best."""
        improved = False
        if epoch < self.start_epoch:
            return False
        if not math.isnan(value):
            if self.best is None:
                improved = True
            elif self.mode == "min":
                improved = value < self.best - self.min_delta
            else:
                improved = value > self.best + self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
            if self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped = True
        return improved

    def state(self) -> dict[str, Any]:
        """Plain-dict state for the checkpoint."""
        return asdict(self)


def make_early_stopping(cfg: Mapping[str, Any] | None) -> EarlyStopping:
    """Validate an ``early_stopping`` config.

    Parameters
    ----------
    cfg : mapping or None
        ``{"monitor": "val_loss", "mode": "auto", "patience": 10, "min_delta": 0.0,
        "start_epoch": 1}``; all optional. ``mode`` "auto" is "min" for the loss, "max"
        otherwise. ``patience`` None (default) never stops early. Epochs before
        ``start_epoch`` are neither selected nor counted towards ``patience``.

    Returns
    -------
    EarlyStopping
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(ES_KEYS))
    if unknown:
        raise ConfigError(
            f"early_stopping: unknown key(s) {unknown}; expected among {list(ES_KEYS)}"
        )
    monitor = cfg.get("monitor", "val_loss")
    if monitor not in MONITORS:
        raise ConfigError(
            f"early_stopping.monitor: expected one of {list(MONITORS)} (validation part only), "
            f"got {monitor!r}"
        )
    mode = cfg.get("mode", "auto")
    if mode == "auto":
        mode = "min" if monitor == "val_loss" else "max"
    if mode not in ("min", "max"):
        raise ConfigError(f"early_stopping.mode: expected 'min', 'max' or 'auto', got {mode!r}")
    patience = cfg.get("patience")
    if patience is not None and (int(patience) != patience or patience < 1):
        raise ConfigError(
            f"early_stopping.patience: expected an integer >= 1 or null, got {patience!r}"
        )
    min_delta = float(cfg.get("min_delta", 0.0))
    if min_delta < 0:
        raise ConfigError(f"early_stopping.min_delta: expected >= 0, got {min_delta}")
    start_epoch = cfg.get("start_epoch", 1)
    if isinstance(start_epoch, bool) or int(start_epoch) != start_epoch or start_epoch < 1:
        raise ConfigError(
            f"early_stopping.start_epoch: expected an integer >= 1, got {start_epoch!r}"
        )
    return EarlyStopping(
        monitor, mode, None if patience is None else int(patience), min_delta, int(start_epoch)
    )


@dataclass
class LoopState:
    """Everything that changes during training (saved in the checkpoint)."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None


def _batches(n: int, batch_size: int, order: torch.Tensor) -> list[torch.Tensor]:
    """Chunks of ``order``; a trailing batch of one sample is dropped (BatchNorm needs 2)."""
    chunks = list(order.split(batch_size))
    if n > 1 and len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks = chunks[:-1]
    return chunks


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def train_epoch(
    model: nn.Module,
    data: PackedDataset,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batch_size: int,
    generator: torch.Generator,
    sample_weights: torch.Tensor | None,
    augment: Augmenter | None,
    amp: bool,
    scaler: torch.amp.GradScaler | None,
) -> float:
    """One epoch over ``data``; returns the mean training loss.

    The order (a permutation, or a weighted draw with replacement when
    ``sample_weights`` (shape (N,)) is given) and the augmentation come from
    ``generator`` only.
    """
    model.train()
    n = len(data)
    if sample_weights is not None:
        order = torch.multinomial(sample_weights, n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    aug = None if augment is None else (lambda x: augment(x, generator))
    total, count = 0.0, 0
    for idx in _batches(n, batch_size, order):
        x = data.batch(idx, augment=aug)
        y = data.targets(idx)
        with _autocast(data.device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()}; lower the learning rate or check the inputs"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total / max(count, 1)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, data: PackedDataset, *, batch_size: int, amp: bool
) -> int:
    """Replace BatchNorm running statistics by their average over ``data``.

    With small batches (2-8 volumes) and a few steps per epoch, the running mean and
    variance (an exponential average with momentum 0.1) trail weights that move fast,
    so the eval-mode network is offset from the one just trained: validation AUC
    stays at 1 while its balanced accuracy swings between 0.5 and 1 from epoch to
    epoch. Recomputing the statistics on the training part, un-augmented, after each
    epoch ("precise BN", Wu & Johnson 2021) removes that offset. Only the BatchNorm
    layers run in training mode (dropout stays off); nothing random is drawn.

    Parameters
    ----------
    model : nn.Module
    data : PackedDataset
        The training part.
    batch_size : int
        Volumes per forward pass; each batch's mean and variance are averaged
        with equal weight (PyTorch's cumulative average, ``momentum=None``).
    amp : bool

    Returns
    -------
    int
        Number of BatchNorm layers recalibrated (0: the model has none).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(data) == 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for idx in _batches(len(data), batch_size, torch.arange(len(data))):
            with _autocast(data.device, amp):
                model(data.batch(idx))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


@torch.no_grad()
def predict(model: nn.Module, data: PackedDataset, *, batch_size: int, amp: bool) -> np.ndarray:
    """Class probabilities of every sample, shape (N, K), float64, in dataset order."""
    model.eval()
    out = []
    for idx in torch.arange(len(data)).split(batch_size):
        with _autocast(data.device, amp):
            logits = model(data.batch(idx))
        out.append(torch.softmax(logits.float(), dim=1).cpu().double())
    return torch.cat(out).numpy()


def evaluate(
    model: nn.Module,
    data: PackedDataset,
    *,
    loss_fn: nn.Module,
    batch_size: int,
    amp: bool,
    class_names: list[str],
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data`` (``val_*`` keys)."""
    proba = predict(model, data, batch_size=batch_size, amp=amp)
    y = data.labels
    weight = getattr(loss_fn, "weight", None)
    logp = torch.log(torch.from_numpy(proba).clamp_min(1e-12)).float()
    loss = float(
        nn.functional.cross_entropy(logp, y, weight=None if weight is None else weight.cpu())
    )
    m = classification_metrics(y.numpy(), proba, class_names)
    return {
        "val_loss": loss,
        "val_accuracy": m["accuracy"],
        "val_balanced_accuracy": m["balanced_accuracy"],
        "val_roc_auc": m["roc_auc"],
    }


def fit(
    model: nn.Module,
    train: PackedDataset,
    val: PackedDataset,
    *,
    state: LoopState,
    stopper: EarlyStopping,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batch_size: int,
    generator: torch.Generator,
    sample_weights: torch.Tensor | None,
    augment: Augmenter | None,
    amp: bool,
    scaler: torch.amp.GradScaler | None,
    class_names: list[str],
    on_epoch_end: Callable[[LoopState, EarlyStopping], None],
    progress: bool = True,
    precise_bn: bool = False,
) -> None:
    """Train from ``state.epoch`` to ``epochs`` (or early stop); keeps the best weights.

    Only ``train`` and ``val`` are seen here: the best epoch and early stopping read
    the validation part alone. ``on_epoch_end`` runs after each epoch (checkpointing).
    ``precise_bn``: after each epoch, BatchNorm statistics are recomputed on the
    training part (:func:`recalibrate_batchnorm`) before validation.
    """
    bar = tqdm(total=epochs, initial=state.epoch, desc="epochs", disable=not progress, leave=False)
    try:
        while state.epoch < epochs and not stopper.stopped:
            t0 = time.perf_counter()
            train_loss = train_epoch(
                model,
                train,
                optimizer=optimizer,
                loss_fn=loss_fn,
                batch_size=batch_size,
                generator=generator,
                sample_weights=sample_weights,
                augment=augment,
                amp=amp,
                scaler=scaler,
            )
            if precise_bn:
                recalibrate_batchnorm(model, train, batch_size=batch_size, amp=amp)
            row = {"epoch": state.epoch + 1, "train_loss": train_loss}
            row.update(
                evaluate(
                    model,
                    val,
                    loss_fn=loss_fn,
                    batch_size=batch_size,
                    amp=amp,
                    class_names=class_names,
                )
            )
            row["lr"] = float(optimizer.param_groups[0]["lr"])
            row["seconds"] = time.perf_counter() - t0
            state.epoch += 1
            state.history.append({k: float(v) for k, v in row.items()})
            if stopper.update(state.epoch, row[stopper.monitor]):
                state.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
            bar.update(1)
            bar.set_postfix(
                train_loss=f"{train_loss:.3f}",
                val_loss=f"{row['val_loss']:.3f}",
                best=stopper.best_epoch,
            )
            on_epoch_end(state, stopper)
    finally:
        bar.close()
