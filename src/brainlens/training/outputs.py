"""The files a trained fold leaves behind, each written atomically through :mod:`brainlens._io`.

- ``history.tsv``: one row per epoch of the kept restart (rewritten after every epoch
  while training, with the running restart's epochs so far);
- ``restarts.tsv``: every restart's selected epoch and value, and which one was kept;
- ``learning_curve.png``: losses and the monitored metric per epoch;
- ``model.pt``: the selected weights and the metadata needed to rebuild the model
  (:func:`load_trained_model` reads it);
- ``predictions.tsv`` and ``metrics.json``: the test part, read once the model is fixed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from brainlens._io import atomic_output, write_text_atomic
from brainlens.errors import InputFileError
from brainlens.metrics import to_jsonable
from brainlens.training.plan import ModelFactory, default_model_factory

if TYPE_CHECKING:
    from brainlens.training.restart import _Restart

__all__ = [
    "load_trained_model",
    "plot_learning_curve",
    "save_model",
    "write_history",
    "write_metrics",
    "write_predictions",
    "write_restarts",
]

FLOAT_FORMAT = "%.6g"


def history_frame(history: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """The epochs of one restart as a table; ``epoch`` as integers."""
    table = pd.DataFrame(history)
    table["epoch"] = table["epoch"].astype(int)
    return table


def write_history(path: Path, history: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """Write ``history.tsv`` (columns ``epoch, train_loss, val_*, lr, seconds``); return it."""
    table = history_frame(history)
    write_text_atomic(path, table.to_csv(sep="\t", index=False, float_format=FLOAT_FORMAT))
    return table


def write_restarts(path: Path, runs: Sequence[_Restart], chosen: _Restart) -> None:
    """Write ``restarts.tsv``: restart, best_epoch, best_<monitor>, epochs_run, selected."""
    table = pd.DataFrame(
        [
            {
                "restart": run.restart,
                "best_epoch": run.stopper.best_epoch,
                f"best_{run.stopper.monitor}": run.stopper.best,
                "epochs_run": run.state.epoch,
                "selected": run is chosen,
            }
            for run in runs
        ]
    )
    write_text_atomic(path, table.to_csv(sep="\t", index=False, float_format=FLOAT_FORMAT))


def plot_learning_curve(
    history: pd.DataFrame, monitor: str, best_epoch: int | None, out: Path
) -> None:
    """Losses (left) and the monitored metric (right; balanced accuracy for the loss) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(history["epoch"], history["train_loss"], label="train loss")
    axes[0].plot(history["epoch"], history["val_loss"], label="val loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    metric = monitor if monitor != "val_loss" else "val_balanced_accuracy"
    axes[1].plot(history["epoch"], history[metric], label=metric, color="C2")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel(metric)
    for ax in axes:
        if best_epoch is not None:
            ax.axvline(
                best_epoch, color="grey", ls="--", lw=1, label=f"selected (epoch {best_epoch})"
            )
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def save_model(path: Path, net: nn.Module, metadata: Mapping[str, Any]) -> None:
    """Write ``model.pt``: ``{"state_dict": CPU weights, "metadata": JSON-able dict}``."""
    obj = {
        "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
        "metadata": to_jsonable(metadata),
    }
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def write_predictions(
    path: Path, rows: pd.DataFrame, proba: np.ndarray, names: Sequence[str]
) -> None:
    """Write ``predictions.tsv``: scan_id, participant_id, session_id, label, pred, prob_<c>.

    Parameters
    ----------
    rows : DataFrame
        The test rows (``scan_id, participant_id, session_id, label``), in ``proba``'s order.
    proba : ndarray, shape (n_test, n_classes)
        Class probabilities in ``names`` order.
    """
    table = rows[["scan_id", "participant_id", "session_id", "label"]].copy()
    table["pred"] = [names[i] for i in proba.argmax(axis=1)]
    for i, c in enumerate(names):
        table[f"prob_{c}"] = proba[:, i]
    write_text_atomic(path, table.to_csv(sep="\t", index=False, float_format=FLOAT_FORMAT))


def write_metrics(path: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``metrics.json`` (indent 1); return the JSON-able metrics."""
    metrics = to_jsonable(dict(metrics))
    write_text_atomic(path, json.dumps(metrics, indent=1))
    return metrics


def load_trained_model(
    out_dir: str | Path,
    *,
    model_factory: ModelFactory | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the selected model of a fold, in eval mode.

    Parameters
    ----------
    out_dir : path
        A :func:`brainlens.training.train_fold` output folder (``model.pt`` inside),
        or ``model.pt``.
    model_factory : callable, optional
        As in ``train_fold``; default the registry.
    device : str or torch.device
        Where to put the model (loaded with CPU ``map_location`` first).

    Returns
    -------
    model : nn.Module
    metadata : dict
        ``model, model_options, in_shape, n_classes, class_names, inputs, transform,
        best_epoch, monitor, fold, seed, grid_shape, affine, random_labels, ...``
    """
    path = Path(out_dir)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise InputFileError(path, "trained model not found", "run the training step for this fold")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        meta = saved["metadata"]
        state = saved["state_dict"]
    except Exception as err:
        raise InputFileError(
            path, f"not a brainlens model file ({err})", "re-run training"
        ) from err
    factory = model_factory or default_model_factory()
    net = factory(
        meta["model"],
        in_shape=tuple(meta["in_shape"]),
        n_classes=int(meta["n_classes"]),
        **meta["model_options"],
    )
    net.load_state_dict(state)
    return net.to(device).eval(), meta
