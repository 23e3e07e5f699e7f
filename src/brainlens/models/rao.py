"""The two coronal-slice 2D CNNs of the temporal-lobe-epilepsy lateralization report (Rao).

Both follow the printed Keras models: Conv2D(3x3, same padding, ReLU) -> BatchNormalization ->
MaxPooling2D(2), a flatten and one dense output layer. At a 1x160x160 input:

* ``rao_2d`` (replicated model; 2 classes): 108,514 parameters, 108,402 trainable;
* ``rao_2d_deep`` (the deeper model for 3 classes): 20,891 parameters, 20,667 trainable;

counting batch-norm moving statistics as Keras does (see
:func:`brainlens.models.count_parameters`).
"""

from __future__ import annotations

import torch
from torch import nn

from brainlens.models._layers import (
    check_probability,
    conv_out,
    glorot_init,
    pool_out,
    prod,
    require_spatial,
)

# (filters, pool after this conv?)
SHALLOW = ((8, True), (16, True), (32, False))
DEEP = ((8, True), (8, True), (16, True), (16, True), (32, True), (32, False))


class RaoCNN2D(nn.Module):
    """Conv(3x3, same)-ReLU-BN[-MaxPool 2] blocks, flatten, [dropout], dense.

    Parameters
    ----------
    name : str
        Registry name (for messages).
    in_shape : tuple of int
        One sample, (C, H, W); the report used (1, 160, 160) coronal slices.
    n_classes : int
        Number of output logits (the report: 2 for the replication, 3 for lateralization).
    layers : tuple of (int, bool)
        Filters of each conv and whether it is followed by 2x2 max pooling.
    dropout : float
        Dropout after the flatten (the deep model has a Dropout layer; its rate is not
        printed).

    Notes
    -----
    The Keras models end in a softmax; ``forward`` returns logits (N, n_classes). Batch norm
    uses the Keras defaults (epsilon 1e-3, momentum 0.99, i.e. PyTorch momentum 0.01);
    Glorot-uniform init. ``cam_layer`` is the ReLU after the last conv, (N, 32, H', W').
    """

    def __init__(
        self,
        name: str,
        in_shape: tuple[int, ...],
        n_classes: int,
        layers: tuple[tuple[int, bool], ...],
        dropout: float,
    ) -> None:
        super().__init__()
        channels, *spatial = in_shape

        def axis(n: int) -> int:
            for _, pool in layers:
                n = conv_out(n, 3, 1, 1)
                n = pool_out(n, 2) if pool else n
            return n

        out = require_spatial(name, spatial, axis)
        modules: list[nn.Module] = []
        prev = channels
        for filters, pool in layers:
            modules += [
                nn.Conv2d(prev, filters, 3, padding=1),
                nn.ReLU(inplace=False),
                nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01),
            ]
            if pool:
                modules.append(nn.MaxPool2d(2))
            prev = filters
        self.features = nn.Sequential(*modules)
        self.cam_layer = self.features[-2]
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(prev * prod(out), n_classes)
        )
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, H, W) slices to logits (N, n_classes)."""
        return self.classifier(self.features(x))


def build_shallow(*, in_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0) -> nn.Module:
    """Build the replicated 3-conv model (registry name ``rao_2d``)."""
    return RaoCNN2D(
        "rao_2d", in_shape, n_classes, SHALLOW, check_probability("rao_2d", "dropout", dropout)
    )


def build_deep(*, in_shape: tuple[int, ...], n_classes: int, dropout: float = 0.5) -> nn.Module:
    """Build the deeper 6-conv model (registry name ``rao_2d_deep``)."""
    return RaoCNN2D(
        "rao_2d_deep",
        in_shape,
        n_classes,
        DEEP,
        check_probability("rao_2d_deep", "dropout", dropout),
    )
