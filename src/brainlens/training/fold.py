"""Train, select and test one model on one fold: :func:`train_fold`.

Leakage is prevented structurally: the folds table is audited first; the train and
val datasets are built and handed to :func:`brainlens.training.loop.fit`, which
selects the epoch on the val part alone; the test dataset is built only after the
selected weights are fixed and written to ``model.pt``.

Class order: ``class_names`` if given, else the sorted unique labels of the whole
folds table (so all folds share one order). For two classes the second is the
positive class of sensitivity/PPV/AUC (see :mod:`brainlens.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from brainlens.errors import ConfigError, InputFileError, ModelError
from brainlens.folds import audit_folds, read_folds, scan_id
from brainlens.metrics import classification_metrics, to_jsonable
from brainlens.packing import PackedDataset, open_packs
from brainlens.training.augment import make_augmenter
from brainlens.training.loop import (
    EarlyStopping,
    LoopState,
    TrainingInterrupted,
    fit,
    make_early_stopping,
    predict,
)

OPTIMIZERS = ("adam", "adamw")
CHECKPOINT_VERSION = 1
ModelFactory = Callable[..., nn.Module]

log = logging.getLogger(__name__)


def _default_model_factory() -> ModelFactory:
    from brainlens.models import build_model

    return build_model


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


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r}: CUDA is not available here. Fix: use 'auto' or 'cpu'"
        )
    return dev


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)


def _role_table(folds: pd.DataFrame, fold: int, role: str) -> pd.DataFrame:
    part = folds[(folds["fold"] == fold) & (folds["role"] == role)].copy()
    part["scan_id"] = [
        scan_id(p, s) for p, s in zip(part["participant_id"], part["session_id"], strict=True)
    ]
    return part.reset_index(drop=True)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "data": generator.get_state(),
    }


def _set_rng_state(
    state: Mapping[str, Any], generator: torch.Generator, device: torch.device
) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])


def _plot_learning_curve(
    history: pd.DataFrame, monitor: str, best_epoch: int | None, out: Path
) -> None:
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
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)


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


def _check_args(epochs, batch_size, lr, optimizer, weight_decay, class_weights) -> None:
    if int(epochs) != epochs or epochs < 1:
        raise ConfigError(f"train.epochs: expected an integer >= 1, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"train.batch_size: expected an integer >= 1, got {batch_size!r}")
    if not lr > 0:
        raise ConfigError(f"train.lr: expected > 0, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: expected one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if weight_decay < 0:
        raise ConfigError(f"train.weight_decay: expected >= 0, got {weight_decay!r}")
    if class_weights not in (True, False, "sampler"):
        raise ConfigError(
            f"train.class_weights: expected true (weighted loss), false or 'sampler', got {class_weights!r}"
        )


def _data_digest(packs: Mapping[str, Any], scan_ids: Sequence[str]) -> str:
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
        Output folder (created): ``model.pt``, ``checkpoint.pt`` (``checkpoint-restart<r>.pt``
        for further restarts), ``restarts.tsv``, ``history.tsv`` (of the kept restart),
        ``learning_curve.png``, ``predictions.tsv``, ``metrics.json``.
    model : str
        Registry name (:data:`brainlens.models.MODELS`), or a name for ``model_factory``.
    model_options : mapping, optional
        Architecture options passed to the factory.
    epochs, batch_size, lr : int, int, float
        Maximum epochs, mini-batch size, learning rate.
    optimizer : {"adam", "adamw"}
    weight_decay : float
    early_stopping : mapping, optional
        ``{"monitor": "val_loss", "mode": "auto", "patience": None, "min_delta": 0}``
        (see :func:`brainlens.training.loop.make_early_stopping`). The epoch with the
        best monitored validation value is selected even without patience.
    precise_bn : bool
        Recompute BatchNorm statistics on the training part after every epoch
        (:func:`brainlens.training.loop.recalibrate_batchnorm`), so validation and
        test see the network that was trained, not a trailing running average.
    restarts : int
        Independently initialised trainings of this fold (own weights, sample order and
        augmentation; restart 0 is the single run of ``restarts=1``). The restart whose
        selected epoch has the best monitored validation value is kept and tested;
        ``restarts.tsv`` lists them all. On small cohorts a run sometimes fits the
        training part through nuisance features and never learns the effect; its
        validation loss then stays high, which is what this selection reads.
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
    device : str
        "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    deterministic : bool
        ``torch.use_deterministic_algorithms(True)`` (on CUDA with ``warn_only``, and
        cuDNN deterministic); settings are restored on return.
    amp : bool
        Mixed precision (bf16, else fp16 with a grad scaler); only on CUDA.
    num_threads : int, optional
        CPU threads for torch during this call.
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
        What to do with a checkpoint written with other settings: raise (default), or
        log a warning and start afresh (the workflow's choice: a changed config means
        the old checkpoint belongs to a run that is being replaced).
    model_factory : callable, optional
        ``factory(name, *, in_shape, n_classes, **options) -> nn.Module``; default
        :func:`brainlens.models.build_model`.
    stop_after_epoch : int or (int, int), optional
        Test hook: raise :class:`TrainingInterrupted` after this epoch's checkpoint (of
        restart 0), or after epoch ``e`` of restart ``r`` for ``(r, e)``.

    Returns
    -------
    dict
        The test metrics as written to ``metrics.json``.
    """
    _check_args(epochs, batch_size, lr, optimizer, weight_decay, class_weights)
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ConfigError(f"train.restarts: expected an integer >= 1, got {restarts!r}")
    augmenter = make_augmenter(augmentation, lateralized=lateralized)
    stopper = make_early_stopping(early_stopping)
    if stopper.start_epoch > epochs:
        raise ConfigError(
            f"early_stopping.start_epoch={stopper.start_epoch} is after the last epoch "
            f"(epochs={epochs}): no epoch could be selected; lower start_epoch or raise epochs"
        )
    model_options = dict(model_options or {})
    custom_factory = model_factory is not None
    factory = model_factory or _default_model_factory()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    folds = read_folds(folds_tsv)
    audit_folds(folds)
    if fold not in set(folds["fold"]):
        raise ConfigError(f"fold={fold!r}: not in {folds_tsv} (folds {sorted(set(folds['fold']))})")
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
    code = {c: i for i, c in enumerate(names)}
    train_rows = _role_table(folds, fold, "train")
    val_rows = _role_table(folds, fold, "val")
    random_labels = bool(folds.get("random_labels", pd.Series([False])).any())
    transform_cfg, transform_fn = _make_transform(transform, model, custom_factory)
    opened = open_packs(packs)
    input_names = list(opened)

    dev = _resolve_device(device)
    use_amp = bool(amp) and dev.type == "cuda"
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.get_num_threads(),
    )
    try:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        if dev.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = bool(deterministic)
            torch.backends.cudnn.benchmark = not deterministic
            torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
        else:
            torch.use_deterministic_algorithms(bool(deterministic))

        def dataset(rows: pd.DataFrame) -> PackedDataset:
            return PackedDataset(
                opened,
                list(rows["scan_id"]),
                [code[v] for v in rows["label"]],
                transform=transform_fn,
                preload=preload,
                device=dev,
            )

        train = dataset(train_rows)
        val = dataset(val_rows)
        in_shape = tuple(int(v) for v in train.batch([0]).shape[1:])

        counts = torch.bincount(train.labels, minlength=len(names)).double()
        if (counts == 0).any():
            missing = [names[i] for i in range(len(names)) if counts[i] == 0]
            raise ConfigError(
                f"fold {fold}: the training part has no sample of class(es) {missing}. "
                "Fix: regenerate the folds (stratified) or check class_names"
            )
        weights = (counts.sum() / (len(names) * counts)).float()
        loss_fn = nn.CrossEntropyLoss(weight=weights.to(dev) if class_weights is True else None)
        sample_weights = (
            (1.0 / counts)[train.labels].double() if class_weights == "sampler" else None
        )
        if on_stale_checkpoint not in ("error", "restart"):
            raise ConfigError(
                f"on_stale_checkpoint: expected error or restart, got {on_stale_checkpoint!r}"
            )

        # what the model learns from: a checkpoint of the same settings and scans but of
        # other maps (the preprocessing re-ran) must not be resumed
        data_digest = _data_digest(opened, list(train.scan_ids) + list(val.scan_ids))

        def run_restart(restart: int) -> _Restart:
            """Train one initialisation to the end (or resume it); keep its best epoch."""
            # restart 0 keeps the seeds and checkpoint name of a single run
            entropy = int(seed) if restart == 0 else [int(seed), restart]
            init_seed, data_seed = (
                int(s) for s in np.random.SeedSequence(entropy).generate_state(2)
            )
            generator = torch.Generator().manual_seed(data_seed)
            stopper = make_early_stopping(early_stopping)
            torch.manual_seed(init_seed)
            net = factory(model, in_shape=in_shape, n_classes=len(names), **model_options).to(dev)
            opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
            opt = opt_cls(net.parameters(), lr=lr, weight_decay=weight_decay)
            scaler = None
            if use_amp and not torch.cuda.is_bf16_supported():
                scaler = torch.amp.GradScaler("cuda")

            fingerprint = hashlib.sha256(
                json.dumps(
                    to_jsonable(
                        {
                            "version": CHECKPOINT_VERSION,
                            "model": model,
                            "options": model_options,
                            # the built layers: a new default in a model (e.g. ceil
                            # pooling) must not resume an old checkpoint of another shape
                            "architecture": [
                                [k, list(v.shape)] for k, v in net.state_dict().items()
                            ],
                            "batch_size": batch_size,
                            "lr": lr,
                            "optimizer": optimizer,
                            "weight_decay": weight_decay,
                            "early_stopping": stopper.state(),
                            # only when on, so checkpoints made before the option resume
                            **({"precise_bn": True} if precise_bn else {}),
                            **({"restart": restart} if restart else {}),
                            "class_weights": class_weights,
                            "augmentation": augmentation,
                            "lateralized": lateralized,
                            "transform": transform_cfg,
                            "seed": seed,
                            "inputs": input_names,
                            "class_names": names,
                            "amp": use_amp,
                            "train": list(zip(train.scan_ids, train.labels.tolist(), strict=True)),
                            "val": list(zip(val.scan_ids, val.labels.tolist(), strict=True)),
                            "data": data_digest,
                        }
                    ),
                    sort_keys=True,
                    default=str,
                ).encode()
            ).hexdigest()

            state = LoopState()
            ckpt_path = out / (
                "checkpoint.pt" if restart == 0 else f"checkpoint-restart{restart}.pt"
            )
            if resume and ckpt_path.is_file() and on_stale_checkpoint == "restart":
                old = torch.load(ckpt_path, map_location="cpu", weights_only=True)
                if old.get("fingerprint") != fingerprint:
                    log.warning(
                        "%s: written with other settings or input maps; starting afresh",
                        ckpt_path,
                    )
                    ckpt_path.unlink()
            if resume and ckpt_path.is_file():
                ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
                if ckpt.get("fingerprint") != fingerprint:
                    raise ConfigError(
                        f"{ckpt_path}: written with other settings, another folds table or "
                        "other input maps than this run. Fix: delete it (or pass "
                        "resume=False) to start afresh"
                    )
                net.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
                if scaler is not None and ckpt.get("scaler"):
                    scaler.load_state_dict(ckpt["scaler"])
                state = LoopState(
                    epoch=int(ckpt["epoch"]),
                    history=list(ckpt["history"]),
                    best_state=ckpt["best_state"],
                )
                for key, value in ckpt["early_stopping"].items():
                    setattr(stopper, key, value)
                _set_rng_state(ckpt["rng"], generator, dev)

            def on_epoch_end(st: LoopState, es: EarlyStopping) -> None:
                _atomic_torch_save(
                    {
                        "fingerprint": fingerprint,
                        "epoch": st.epoch,
                        "model": net.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else {},
                        "rng": _rng_state(generator, dev),
                        "history": st.history,
                        "early_stopping": es.state(),
                        "best_state": st.best_state,
                    },
                    ckpt_path,
                )
                if stop_at is not None and (restart, st.epoch) >= stop_at:
                    raise TrainingInterrupted(
                        f"stopped after epoch {st.epoch} of restart {restart} (stop_after_epoch)"
                    )

            fit(
                net,
                train,
                val,
                state=state,
                stopper=stopper,
                epochs=int(epochs),
                optimizer=opt,
                loss_fn=loss_fn,
                batch_size=int(batch_size),
                generator=generator,
                sample_weights=sample_weights,
                augment=augmenter,
                amp=use_amp,
                scaler=scaler,
                class_names=names,
                on_epoch_end=on_epoch_end,
                progress=progress,
                precise_bn=bool(precise_bn),
            )
            if state.best_state is None:
                raise ModelError(
                    f"fold {fold}: no epoch gave a finite {stopper.monitor} on the validation "
                    "part. Fix: monitor val_loss, or check the val part has both classes"
                )
            return _Restart(restart, net, state, stopper)

        stop_at = (
            None
            if stop_after_epoch is None
            else (0, int(stop_after_epoch))
            if isinstance(stop_after_epoch, int)
            else tuple(int(v) for v in stop_after_epoch)
        )
        runs = []
        for r in range(int(restarts)):
            runs.append(run_restart(r))
            log.info(
                "fold %s restart %d: best %s %.4g at epoch %s",
                fold, r, runs[-1].stopper.monitor, runs[-1].stopper.best,
                runs[-1].stopper.best_epoch,
            )  # fmt: skip
        chosen = select_restart(runs)
        net, state, stopper = chosen.net, chosen.state, chosen.stopper
        _atomic_write_text(
            out / "restarts.tsv",
            pd.DataFrame(
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
            ).to_csv(sep="\t", index=False, float_format="%.6g"),
        )
        history = pd.DataFrame(state.history)
        history["epoch"] = history["epoch"].astype(int)
        _atomic_write_text(
            out / "history.tsv", history.to_csv(sep="\t", index=False, float_format="%.6g")
        )
        _plot_learning_curve(
            history, stopper.monitor, stopper.best_epoch, out / "learning_curve.png"
        )

        # The model is fixed here; only now is the test part read.
        net.load_state_dict(state.best_state)
        metadata = {
            "model": model,
            "model_options": model_options,
            "in_shape": list(in_shape),
            "n_classes": len(names),
            "class_names": names,
            "inputs": input_names,
            "transform": transform_cfg,
            "best_epoch": stopper.best_epoch,
            "monitor": stopper.monitor,
            "best_value": stopper.best,
            "restart": chosen.restart,
            "restarts": int(restarts),
            "fold": int(fold),
            "seed": int(seed),
            "grid_shape": list(train.grid_shape),
            "affine": np.asarray(train.affine).tolist(),
            "random_labels": random_labels,
            "lateralized": bool(lateralized),
            "torch_version": str(torch.__version__),
        }
        _atomic_torch_save(
            {
                "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                "metadata": to_jsonable(metadata),
            },
            out / "model.pt",
        )
        test_rows = _role_table(folds, fold, "test")
        test = dataset(test_rows)
        proba = predict(net, test, batch_size=int(batch_size), amp=use_amp)
        pred = proba.argmax(axis=1)
        table = test_rows[["scan_id", "participant_id", "session_id", "label"]].copy()
        table["pred"] = [names[i] for i in pred]
        for i, c in enumerate(names):
            table[f"prob_{c}"] = proba[:, i]
        _atomic_write_text(
            out / "predictions.tsv", table.to_csv(sep="\t", index=False, float_format="%.6g")
        )
        metrics = classification_metrics(test.labels.numpy(), proba, names)
        metrics.update(
            fold=int(fold),
            model=model,
            best_epoch=stopper.best_epoch,
            restart=chosen.restart,
            restarts=int(restarts),
            epochs_run=int(state.epoch),
            stopped_early=bool(stopper.stopped),
            monitor=stopper.monitor,
            best_val=stopper.best,
            n_train=len(train),
            n_val=len(val),
            n_test=len(test),
            random_labels=random_labels,
            device=str(dev),
        )
        metrics = to_jsonable(metrics)
        _atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
        return metrics
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic = saved[2]
        torch.backends.cudnn.benchmark = saved[3]
        torch.set_num_threads(saved[4])


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
        A :func:`train_fold` output folder (``model.pt`` inside), or ``model.pt``.
    model_factory : callable, optional
        As in :func:`train_fold`; default the registry.
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
    factory = model_factory or _default_model_factory()
    net = factory(
        meta["model"],
        in_shape=tuple(meta["in_shape"]),
        n_classes=int(meta["n_classes"]),
        **meta["model_options"],
    )
    net.load_state_dict(state)
    return net.to(device).eval(), meta
