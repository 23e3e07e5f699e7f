"""Everything one fold's training is resolved to before the first epoch: :class:`FoldPlan`.

:func:`make_plan` checks the arguments of :func:`brainlens.training.train_fold`, audits
the folds table, fixes the class order, opens the packs, resolves the device and the
3D->2D transform, opens the fold's in-fold confound removal after its leakage audit
(``confounds``, :func:`brainlens.confounds.inputs.open_input_confounds`), builds the
train and val datasets (never the test one: it is built
only after the model is fixed) and the class-weighted loss. Nothing here trains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from brainlens.errors import ConfigError, ModelError
from brainlens.folds import audit_folds, fold_part, read_folds
from brainlens.packing import Pack, open_packs
from brainlens.training.augment import Augmenter, make_augmenter
from brainlens.training.checkpoint import data_digest
from brainlens.training.dataset import PackedDataset
from brainlens.training.determinism import resolve_device
from brainlens.training.loop import make_early_stopping

__all__ = [
    "OPTIMIZERS",
    "FoldPlan",
    "ModelFactory",
    "default_model_factory",
    "make_plan",
]

OPTIMIZERS = ("adam", "adamw")
ModelFactory = Callable[..., nn.Module]


def default_model_factory() -> ModelFactory:
    """:func:`brainlens.models.build_model` (imported on use)."""
    from brainlens.models import build_model

    return build_model


@dataclass
class FoldPlan:
    """One fold's training, resolved from the arguments of ``train_fold``.

    Settings keep the values as passed (they enter the checkpoint fingerprint as
    given); see :func:`brainlens.training.train_fold` for their meaning.

    Attributes
    ----------
    folds : DataFrame
        The audited folds table.
    names : list of str
        Class order; label ``names[i]`` is class index ``i``.
    packs : dict of str to Pack
        Opened inputs in channel order; ``inputs`` their names.
    train_rows, val_rows : DataFrame
        The fold's train and val rows of ``folds`` with a ``scan_id`` column.
    train, val : PackedDataset
        Their datasets on ``device``.
    in_shape : tuple of int
        One model input without the batch axis: (C, X, Y, Z), or (C', H, W) after a
        3D->2D transform.
    loss_fn : nn.CrossEntropyLoss
        Weighted by n / (K * n_class) of the training part when ``class_weights`` is True.
    sample_weights : Tensor, shape (n_train,), or None
        Sampling probabilities 1 / n_class for ``class_weights="sampler"``.
    data_digest : str
        SHA-256 of the train and val maps (part of the checkpoint fingerprint), and of
        the confound parameters when ``confounds`` is set.
    confounds : InputConfounds or None
        The audited per-sample harmonisation of every dataset (train, val, test).
    stop_at : (int, int) or None
        ``(restart, epoch)`` of the ``stop_after_epoch`` test hook.
    """

    # settings, as passed
    fold: int
    out: Path
    model: str
    model_options: dict[str, Any]
    factory: ModelFactory
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float
    early_stopping: Mapping[str, Any] | None
    precise_bn: bool
    restarts: int
    class_weights: bool | str
    augmentation: Mapping[str, Any] | None
    augmenter: Augmenter | None
    lateralized: bool
    transform_cfg: dict[str, Any] | None
    transform_fn: Callable[[torch.Tensor], torch.Tensor] | None
    seed: int
    device: torch.device
    amp: bool
    progress: bool
    preload: bool | str
    resume: bool
    on_stale_checkpoint: str
    stop_at: tuple[int, int] | None
    # data
    folds: pd.DataFrame
    names: list[str]
    packs: dict[str, Pack]
    random_labels: bool
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    train: PackedDataset | None = None
    val: PackedDataset | None = None
    in_shape: tuple[int, ...] = ()
    loss_fn: nn.Module | None = None
    sample_weights: torch.Tensor | None = None
    data_digest: str = ""
    confounds: Any | None = None

    @property
    def inputs(self) -> list[str]:
        """Input (pack) names in channel order."""
        return list(self.packs)

    def rows(self, role: str) -> pd.DataFrame:
        """The fold's rows of ``role`` ("train", "val", "test") with a ``scan_id`` column."""
        return fold_part(self.folds, self.fold, role)

    def dataset(self, rows: pd.DataFrame) -> PackedDataset:
        """The labelled dataset of ``rows`` on the plan's device, with its transform."""
        code = {c: i for i, c in enumerate(self.names)}
        return PackedDataset(
            self.packs,
            list(rows["scan_id"]),
            [code[v] for v in rows["label"]],
            transform=self.transform_fn,
            preload=self.preload,
            device=self.device,
            confounds=self.confounds,
        )


def _check_args(a: Mapping[str, Any]) -> None:
    """ConfigError for a bad training setting among ``train_fold``'s keywords ``a``."""
    epochs, batch_size, lr = a["epochs"], a["batch_size"], a["lr"]
    if int(epochs) != epochs or epochs < 1:
        raise ConfigError(f"train.epochs: expected an integer >= 1, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"train.batch_size: expected an integer >= 1, got {batch_size!r}")
    if not lr > 0:
        raise ConfigError(f"train.lr: expected > 0, got {lr!r}")
    if a["optimizer"] not in OPTIMIZERS:
        raise ConfigError(
            f"train.optimizer: expected one of {list(OPTIMIZERS)}, got {a['optimizer']!r}"
        )
    if a["weight_decay"] < 0:
        raise ConfigError(f"train.weight_decay: expected >= 0, got {a['weight_decay']!r}")
    if a["class_weights"] not in (True, False, "sampler"):
        raise ConfigError(
            "train.class_weights: expected true (weighted loss), false or 'sampler', "
            f"got {a['class_weights']!r}"
        )
    restarts = a["restarts"]
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ConfigError(f"train.restarts: expected an integer >= 1, got {restarts!r}")
    if a["on_stale_checkpoint"] not in ("error", "restart"):
        raise ConfigError(
            f"on_stale_checkpoint: expected error or restart, got {a['on_stale_checkpoint']!r}"
        )


def _make_transform(spec: Mapping[str, Any] | None, model: str, custom_factory: bool):
    """Resolve the 3D->2D transform: (config dict or None, callable or None)."""
    if spec is None:
        if custom_factory:
            return None, None
        from brainlens.models import MODELS

        if model not in MODELS:
            raise ModelError(f"unknown model {model!r}: expected one of {sorted(MODELS)}")
        if MODELS[model].transform is None:
            return None, None
        spec = {"name": MODELS[model].transform, **dict(MODELS[model].transform_options)}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(
            f"transform: expected a mapping with a 'name' key and options, got {spec!r}"
        )
    opts = {k: v for k, v in spec.items() if k != "name"}
    from brainlens.transforms import make_transform

    fn = make_transform(spec["name"], **opts)

    def apply(x: torch.Tensor) -> torch.Tensor:
        # brainlens.transforms works on numpy (C, X, Y, Z) -> (C', H, W)
        out = fn(x.detach().cpu().numpy())
        return torch.as_tensor(np.ascontiguousarray(out), dtype=torch.float32).to(x.device)

    return dict(spec), apply


def _class_names(
    folds: pd.DataFrame, class_names: Sequence[str] | None, folds_tsv: str | Path
) -> list[str]:
    """``class_names`` as given, else the sorted labels; ConfigError if they miss a label."""
    names = (
        [str(c) for c in class_names]
        if class_names is not None
        else sorted(folds["label"].unique())
    )
    unknown = sorted(set(folds["label"]) - set(names))
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(
            f"class_names={names}: expected >= 2 unique names covering the labels "
            f"{sorted(folds['label'].unique())} of {folds_tsv}"
        )
    return names


def _stop_at(stop_after_epoch: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if stop_after_epoch is None:
        return None
    if isinstance(stop_after_epoch, int):
        return (0, int(stop_after_epoch))
    return tuple(int(v) for v in stop_after_epoch)  # type: ignore[return-value]


def _build_data(plan: FoldPlan) -> None:
    """Fill the train/val datasets, input shape, loss, sampling weights and data digest."""
    train = plan.dataset(plan.train_rows)
    val = plan.dataset(plan.val_rows)
    names = plan.names
    counts = torch.bincount(train.labels, minlength=len(names)).double()
    if (counts == 0).any():
        missing = [names[i] for i in range(len(names)) if counts[i] == 0]
        raise ConfigError(
            f"fold {plan.fold}: the training part has no sample of class(es) {missing}. "
            "Fix: regenerate the folds (stratified) or check class_names"
        )
    weights = (counts.sum() / (len(names) * counts)).float()
    plan.train, plan.val = train, val
    plan.in_shape = tuple(int(v) for v in train.batch([0]).shape[1:])
    plan.loss_fn = nn.CrossEntropyLoss(
        weight=weights.to(plan.device) if plan.class_weights is True else None
    )
    plan.sample_weights = (
        (1.0 / counts)[train.labels].double() if plan.class_weights == "sampler" else None
    )
    # what the model learns from: a checkpoint of the same settings and scans but of
    # other maps (the preprocessing re-ran) must not be resumed
    plan.data_digest = data_digest(plan.packs, list(train.scan_ids) + list(val.scan_ids))
    if plan.confounds is not None:  # harmonised inputs are other inputs
        plan.data_digest = f"{plan.data_digest}+confounds:{plan.confounds.sha256}"


#: ``train_fold`` keywords that a FoldPlan keeps as passed (the fingerprint reads them).
AS_PASSED = (
    "fold", "model", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
    "early_stopping", "precise_bn", "restarts", "class_weights", "augmentation",
    "lateralized", "seed", "progress", "preload", "resume", "on_stale_checkpoint",
)  # fmt: skip


def make_plan(**args: Any) -> FoldPlan:
    """Check and resolve the arguments of :func:`brainlens.training.train_fold`.

    Parameters
    ----------
    **args
        All keywords of ``train_fold`` (typed and documented there); ``deterministic``
        and ``num_threads`` are left to
        :func:`brainlens.training.determinism.torch_settings`.

    Returns
    -------
    FoldPlan
        With the train and val datasets built; ``out_dir`` is created.

    Raises
    ------
    ConfigError
        A bad setting, a fold not in the table, class names that miss a label, or a
        training part without a sample of some class.
    LeakageError
        ``confounds`` fitted on scans outside the fold's training part.
    """
    _check_args(args)
    augmenter = make_augmenter(args["augmentation"], lateralized=args["lateralized"])
    stopper = make_early_stopping(args["early_stopping"])
    if stopper.start_epoch > args["epochs"]:
        raise ConfigError(
            f"early_stopping.start_epoch={stopper.start_epoch} is after the last epoch "
            f"(epochs={args['epochs']}): no epoch could be selected; lower start_epoch or raise epochs"
        )
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    folds_tsv, fold = args["folds_tsv"], args["fold"]
    folds = read_folds(folds_tsv)
    audit_folds(folds)
    if fold not in set(folds["fold"]):
        raise ConfigError(f"fold={fold!r}: not in {folds_tsv} (folds {sorted(set(folds['fold']))})")
    names = _class_names(folds, args["class_names"], folds_tsv)
    custom_factory = args["model_factory"] is not None
    transform_cfg, transform_fn = _make_transform(args["transform"], args["model"], custom_factory)
    opened = open_packs(args["packs"])
    dev = resolve_device(args["device"])
    confounds = None
    if args["confounds"] is not None:  # the leakage audit runs here, before any epoch
        from brainlens.confounds.inputs import open_input_confounds

        first = next(iter(opened.values()))
        confounds = open_input_confounds(
            args["confounds"],
            folds_tsv=folds_tsv,
            fold=fold,
            channels=list(opened),
            grid_shape=first.shape,
        )
    plan = FoldPlan(
        **{k: args[k] for k in AS_PASSED},
        out=out,
        model_options=dict(args["model_options"] or {}),
        factory=args["model_factory"] or default_model_factory(),
        augmenter=augmenter,
        transform_cfg=transform_cfg,
        transform_fn=transform_fn,
        device=dev,
        amp=bool(args["amp"]) and dev.type == "cuda",
        stop_at=_stop_at(args["stop_after_epoch"]),
        folds=folds,
        names=names,
        packs=opened,
        random_labels=bool(folds.get("random_labels", pd.Series([False])).any()),
        train_rows=fold_part(folds, fold, "train"),
        val_rows=fold_part(folds, fold, "val"),
        confounds=confounds,
    )
    _build_data(plan)
    return plan
