"""Resumable training: per-restart checkpoints, their fingerprint, and the RNG state.

After every epoch a restart's ``checkpoint.pt`` (``checkpoint-restart<r>.pt`` for
``r >= 1``) holds the model, optimizer, grad scaler, RNG states, history,
early-stopping record and best weights. It carries a fingerprint (SHA-256) of
everything that decides the training -- settings, built architecture, scans, labels
and the packed maps themselves -- and is resumed only under the same fingerprint;
otherwise it raises, or with ``on_stale_checkpoint="restart"`` is deleted with a
warning and the restart trains afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from brainlens._io import atomic_output
from brainlens.errors import ConfigError
from brainlens.metrics import to_jsonable
from brainlens.training.loop import EarlyStopping, LoopState

if TYPE_CHECKING:
    from brainlens.training.plan import FoldPlan

__all__ = [
    "CHECKPOINT_VERSION",
    "checkpoint_path",
    "data_digest",
    "fingerprint",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_VERSION = 1

log = logging.getLogger(__name__)


def data_digest(packs: Mapping[str, Any], scan_ids: Sequence[str]) -> str:
    """SHA-256 of the packed maps of ``scan_ids`` in every pack (name order, row order).

    Part of a checkpoint's fingerprint, so that maps re-made by the preprocessing (same
    scans, other values) start training afresh instead of resuming a model of the old
    maps.
    """
    h = hashlib.sha256()
    for name in sorted(packs):
        pack = packs[name]
        h.update(name.encode())
        for row in pack.rows(list(scan_ids)):
            h.update(np.ascontiguousarray(pack.array[int(row)]).tobytes())
    return h.hexdigest()


def checkpoint_path(out: Path, restart: int) -> Path:
    """``checkpoint.pt`` for restart 0 (the name of a single run), else ``checkpoint-restart<r>.pt``."""
    return out / ("checkpoint.pt" if restart == 0 else f"checkpoint-restart{restart}.pt")


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """torch's global CPU (and CUDA) RNG states and the data ``generator``'s state."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "data": generator.get_state(),
    }


def set_rng_state(
    state: Mapping[str, Any], generator: torch.Generator, device: torch.device
) -> None:
    """Put back a state from :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])


def fingerprint(plan: FoldPlan, restart: int, net: nn.Module, stopper: EarlyStopping) -> str:
    """SHA-256 of what decides restart ``restart`` of ``plan`` (``net`` freshly built)."""
    train, val = plan.train, plan.val
    spec = {
        "version": CHECKPOINT_VERSION,
        "model": plan.model,
        "options": plan.model_options,
        # the built layers: a new default in a model (e.g. ceil pooling) must not
        # resume an old checkpoint of another shape
        "architecture": [[k, list(v.shape)] for k, v in net.state_dict().items()],
        "batch_size": plan.batch_size,
        "lr": plan.lr,
        "optimizer": plan.optimizer,
        "weight_decay": plan.weight_decay,
        "early_stopping": stopper.state(),
        # only when on, so checkpoints made before the option resume
        **({"precise_bn": True} if plan.precise_bn else {}),
        **({"restart": restart} if restart else {}),
        "class_weights": plan.class_weights,
        "augmentation": plan.augmentation,
        "lateralized": plan.lateralized,
        "transform": plan.transform_cfg,
        "seed": plan.seed,
        "inputs": plan.inputs,
        "class_names": plan.names,
        "amp": plan.amp,
        "train": list(zip(train.scan_ids, train.labels.tolist(), strict=True)),
        "val": list(zip(val.scan_ids, val.labels.tolist(), strict=True)),
        "data": plan.data_digest,
    }
    text = json.dumps(to_jsonable(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_checkpoint(
    path: Path,
    fingerprint: str,
    *,
    resume: bool,
    on_stale: str,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    stopper: EarlyStopping,
    generator: torch.Generator,
    device: torch.device,
) -> LoopState:
    """Resume from ``path`` into ``net``, ``optimizer``, ... ; a fresh state if there is none.

    Returns
    -------
    LoopState
        The checkpoint's epoch, history and best weights (``stopper``, the RNGs,
        ``net``, ``optimizer`` and ``scaler`` are set in place), or an empty state
        when ``resume`` is off or ``path`` does not exist.

    Raises
    ------
    ConfigError
        ``path`` was written under another fingerprint and ``on_stale`` is "error"
        (with "restart" it is deleted, with a warning, and training starts afresh).
    """
    if resume and path.is_file() and on_stale == "restart":
        old = torch.load(path, map_location="cpu", weights_only=True)
        if old.get("fingerprint") != fingerprint:
            log.warning("%s: written with other settings or input maps; starting afresh", path)
            path.unlink()
    if not (resume and path.is_file()):
        return LoopState()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{path}: written with other settings, another folds table or "
            "other input maps than this run. Fix: delete it (or pass "
            "resume=False) to start afresh"
        )
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    for key, value in ckpt["early_stopping"].items():
        setattr(stopper, key, value)
    set_rng_state(ckpt["rng"], generator, device)
    return LoopState(
        epoch=int(ckpt["epoch"]), history=list(ckpt["history"]), best_state=ckpt["best_state"]
    )


def save_checkpoint(
    path: Path,
    fingerprint: str,
    *,
    state: LoopState,
    stopper: EarlyStopping,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    generator: torch.Generator,
    device: torch.device,
) -> None:
    """Write the checkpoint of the epoch just finished, atomically."""
    ckpt = {
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_state(generator, device),
        "history": state.history,
        "early_stopping": stopper.state(),
        "best_state": state.best_state,
    }
    with atomic_output(path) as tmp:
        torch.save(ckpt, tmp)
