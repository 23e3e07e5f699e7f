"""The model registry: names -> :class:`ModelSpec`, and :func:`build_model`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

from brainlens.errors import ModelError
from brainlens.models import eitel2019, korolev2017, ng2018, rao, rieke2018, xing_dynimg
from brainlens.models.recipes import RECIPES, Recipe


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: what the paper fixes about a model (architecture and input).

    Training settings are not here: they come from the config's ``train`` block, or from
    the paper with ``train.recipe: paper`` (:attr:`recipe`,
    :func:`brainlens.models.recipes.resolve_train_settings`).

    Attributes
    ----------
    builder : callable
        ``builder(*, in_shape, n_classes, **options) -> nn.Module``.
    ndim : {2, 3}
        Spatial dimensionality of the model input: (C, H, W) or (C, X, Y, Z).
    transform : str or None
        Name in :data:`brainlens.transforms.TRANSFORMS` that turns a (C, X, Y, Z) volume into
        this model's input; ``None`` for 3D models.
    citation : str
        One-line citation.
    notes : str
        Architecture details and deviations from the paper's network.
    recipe : Recipe
        The paper's training recipe, each value with its section (``None`` = not stated).
    transform_options : Mapping
        Default options for ``transform``.
    loss : str
        Loss on the logits (``"cross_entropy"``; softmax lives in the loss).
    """

    builder: Callable[..., nn.Module]
    ndim: Literal[2, 3]
    transform: str | None
    citation: str
    notes: str
    recipe: Recipe
    transform_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    loss: str = "cross_entropy"

    def default_options(self) -> dict[str, Any]:
        """Options accepted by :func:`build_model` for this model, with their defaults."""
        params = inspect.signature(self.builder).parameters
        return {
            k: p.default
            for k, p in params.items()
            if k not in ("in_shape", "n_classes") and p.kind is inspect.Parameter.KEYWORD_ONLY
        }


def _frozen(**kw: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(kw))


MODELS: dict[str, ModelSpec] = {
    "ng2018_3d": ModelSpec(
        builder=ng2018.build,
        recipe=RECIPES["ng2018_3d"],
        ndim=3,
        transform=None,
        citation="Ng et al. 2018, 3D CNN and class activation maps for migraine classification",
        notes="Softmax output replaced by logits. Glorot-uniform init.",
    ),
    "rieke2018_3d": ModelSpec(
        builder=rieke2018.build,
        recipe=RECIPES["rieke2018_3d"],
        ndim=3,
        transform=None,
        citation="Rieke et al. 2018, Visualizing convolutional networks for MRI-based "
        "diagnosis of Alzheimer's disease",
        notes="Valid convs; pool sizes (2, 3, 2, 3) inferred from the printed 5120-unit "
        "flatten (with pool_ceil=false, the poster's floor pooling; the default ceil pooling "
        "lets the model see the whole input); dropout 0.8 before FC 128. Needs >= 43 voxels "
        "per axis (78 with pool_ceil=false).",
    ),
    "eitel_baseline_3d": ModelSpec(
        builder=eitel2019.build_baseline,
        recipe=RECIPES["eitel_baseline_3d"],
        ndim=3,
        transform=None,
        citation="Eitel et al. 2019, Harnessing spatial MRI normalization: patch individual "
        "filter layers for CNNs (baseline)",
        notes="Filters and dropout were tuned per task and not reported: the builder's "
        "defaults are our choice. Needs >= 16 voxels per axis.",
    ),
    "pif_3d": ModelSpec(
        builder=eitel2019.build_pif,
        recipe=RECIPES["pif_3d"],
        ndim=3,
        transform=None,
        citation="Eitel et al. 2019, Harnessing spatial MRI normalization: patch individual "
        "filter layers for CNNs",
        notes="Filters and dropout not reported: the builder's defaults are our choice. "
        "Needs >= 16*grid voxels/axis.",
    ),
    "vgg3d": ModelSpec(
        builder=korolev2017.build_vgg3d,
        recipe=RECIPES["vgg3d"],
        ndim=3,
        transform=None,
        citation="Korolev et al. 2017, Residual and plain convolutional neural networks for 3D "
        "brain MRI classification (VoxCNN); settings of Xing et al.'s 3D baselines",
        notes="Same padding; no BN after FC 128. width=8 is Korolev's size.",
    ),
    "resnet3d": ModelSpec(
        builder=korolev2017.build_resnet3d,
        recipe=RECIPES["resnet3d"],
        ndim=3,
        transform=None,
        citation="Korolev et al. 2017, Residual and plain convolutional neural networks for 3D "
        "brain MRI classification (VoxResNet); settings of Xing et al.'s 3D baselines",
        notes="Global max pooling instead of a fixed 7^3 pool. width=32 is Korolev's size; "
        "use width=8 on CPU.",
    ),
    "rao_2d": ModelSpec(
        builder=rao.build_shallow,
        recipe=RECIPES["rao_2d"],
        ndim=2,
        transform="coronal_slices",
        transform_options=_frozen(count=1),
        citation="Rao, CNN lateralization of temporal lobe epilepsy from coronal MRI slices "
        "(replication of Gleichgerrcht et al. 2021)",
        notes="Exact Keras layer sizes (108,514 params at 1x160x160, 2 classes); pass "
        "size=160 to the transform for the report's 160x160 slices (recipe: paper does).",
    ),
    "rao_2d_deep": ModelSpec(
        builder=rao.build_deep,
        recipe=RECIPES["rao_2d_deep"],
        ndim=2,
        transform="coronal_slices",
        transform_options=_frozen(count=1),
        citation="Rao, CNN lateralization of temporal lobe epilepsy from coronal MRI slices "
        "(deeper model, 3 classes)",
        notes="Exact Keras layer sizes (20,891 params at 1x160x160, 3 classes); dropout "
        "rate not printed (0.5 ours). Needs >= 32 px.",
    ),
    "dynimg_vgg11_att": ModelSpec(
        builder=xing_dynimg.build_dynimg_vgg11_att,
        recipe=RECIPES["dynimg_vgg11_att"],
        ndim=2,
        transform="dynamic_image",
        transform_options=_frozen(axis="z"),
        citation="Xing et al., Dynamic image for 3D MRI image Alzheimer's disease "
        "classification (Dyn + VGG11 + Att)",
        notes="Paper fine-tuned ImageNet VGG11 weights on 3-channel images: pass "
        "pretrained=<local file> and repeat_channels=3 to the transform; default is "
        "random init. Attention softmax over positions. Needs >= 16 px.",
    ),
    "avgpool_vgg11": ModelSpec(
        builder=xing_dynimg.build_avgpool_vgg11,
        recipe=RECIPES["avgpool_vgg11"],
        ndim=2,
        transform="avg_pool",
        transform_options=_frozen(axis="z"),
        citation="Xing et al., Dynamic image for 3D MRI Alzheimer's disease classification "
        "(Avg. + VGG11 + Att baseline)",
        notes="Same network as dynimg_vgg11_att; the volume is averaged along the axis.",
    ),
    "maxpool_vgg11": ModelSpec(
        builder=xing_dynimg.build_maxpool_vgg11,
        recipe=RECIPES["maxpool_vgg11"],
        ndim=2,
        transform="max_pool",
        transform_options=_frozen(axis="z"),
        citation="Xing et al., Dynamic image for 3D MRI Alzheimer's disease classification "
        "(Max. + VGG11 + Att baseline)",
        notes="Same network as dynimg_vgg11_att; the volume is max-projected along the axis.",
    ),
}


def _check_in_shape(name: str, in_shape: object, ndim: int) -> tuple[int, ...]:
    want = "(C, H, W)" if ndim == 2 else "(C, X, Y, Z)"
    ok = (
        isinstance(in_shape, tuple | list | torch.Size)
        and len(in_shape) == ndim + 1
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in in_shape)
    )
    if not ok:
        raise ModelError(
            f"model {name!r}: in_shape={in_shape!r} is invalid: expected {ndim + 1} positive "
            f"integers {want} for one sample without the batch axis. Fix: pass e.g. "
            f"in_shape={(1, 91, 109, 91) if ndim == 3 else (1, 160, 160)}."
        )
    return tuple(int(v) for v in in_shape)


def build_model(
    name: str, *, in_shape: tuple[int, ...], n_classes: int, **options: Any
) -> nn.Module:
    """Build a registry model for one input shape.

    Parameters
    ----------
    name : str
        Key of :data:`MODELS`.
    in_shape : tuple of int
        One sample's shape without the batch axis: (C, X, Y, Z) for 3D models, (C, H, W) for
        2D models (the output of the spec's transform).
    n_classes : int
        Number of classes (>= 2); the model returns logits (N, n_classes).
    **options
        Architecture options; see ``MODELS[name].default_options()``.

    Returns
    -------
    torch.nn.Module
        The model, with attribute ``cam_layer`` (the module whose output is the last
        convolutional feature map).

    Raises
    ------
    ModelError
        Unknown name or option, invalid ``in_shape``/``n_classes``, or an input too small for
        the architecture (the message gives the minimum).
    """
    if name not in MODELS:
        raise ModelError(
            f"unknown model {name!r}: expected one of {sorted(MODELS)}. Fix: pick a name from "
            f"that list."
        )
    spec = MODELS[name]
    shape = _check_in_shape(name, in_shape, spec.ndim)
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ModelError(
            f"model {name!r}: n_classes={n_classes!r} is invalid: expected an integer >= 2. "
            f"Fix: pass the number of diagnostic groups."
        )
    allowed = spec.default_options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ModelError(
            f"model {name!r}: unknown option(s) {unknown}: expected a subset of "
            f"{sorted(allowed)}. Fix: remove or rename them."
        )
    model = spec.builder(in_shape=shape, n_classes=n_classes, **options)
    if not isinstance(getattr(model, "cam_layer", None), nn.Module):
        raise ModelError(f"model {name!r}: builder returned a model without a cam_layer module")
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Count parameters the way Keras prints them.

    Parameters
    ----------
    model : torch.nn.Module
        Any model.

    Returns
    -------
    trainable : int
        Sum of ``numel`` of parameters with ``requires_grad``.
    total : int
        ``trainable`` + frozen parameters + batch-norm ``running_mean`` and ``running_var``
        (not ``num_batches_tracked``).
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    stats = sum(
        b.numel()
        for n, b in model.named_buffers()
        if n.endswith("running_mean") or n.endswith("running_var")
    )
    return trainable, trainable + frozen + stats
