"""Rieke et al. (2018): 3D CNN for Alzheimer's disease used to compare visualisation methods."""

from __future__ import annotations

import torch
from torch import nn

from brainlens.models._layers import (
    check_bool,
    check_int_tuple,
    check_probability,
    conv_out,
    pool_out,
    prod,
    require_spatial,
)

NAME = "rieke2018_3d"
FILTERS = (8, 16, 32, 64)


class Rieke2018CNN3D(nn.Module):
    """Four valid 3x3x3 conv layers (8/16/32/64) each with BN, ReLU and max pooling; FC 128, 64.

    Parameters
    ----------
    in_shape : tuple of int
        One sample, (C, X, Y, Z).
    n_classes : int
        Number of output logits.
    pool_sizes : tuple of 4 int
        Pooling kernel (= stride) after each conv. Default (2, 3, 2, 3): the poster only says
        "pooling after each convolution"; these sizes reproduce its printed 5120-unit flatten
        for its 193x229x193 inputs.
    pool_ceil : bool
        Pool with ``ceil_mode`` (default True), so a last partial window covers the
        trailing positions. False is the poster's (Keras 'valid') floor pooling, which
        reproduces its parameter count but drops those positions: on the 2 mm MNI grid
        (91x109x91) the model would never see the last 13/31/13 voxels along x/y/z:
        the lateral right hemisphere beyond x = +66 mm, the prefrontal cortex in front
        of y = +30 mm and the vertex, 14 % of the brain mask
        (:func:`brainlens.models.field_of_view` shows it).
    dropout : float
        Dropout before the first FC layer (the poster: 0.8, PyTorch drop probability).
    dropout2 : float
        Dropout before the second FC layer (0 in the poster's code).

    Notes
    -----
    The poster used a softmax output; ``forward`` returns logits (N, n_classes).
    ``cam_layer`` is the ReLU after conv 4 (before its pooling).
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_classes: int,
        pool_sizes: tuple[int, ...] = (2, 3, 2, 3),
        pool_ceil: bool = True,
        dropout: float = 0.8,
        dropout2: float = 0.0,
    ) -> None:
        super().__init__()
        channels, *spatial = in_shape

        def axis(n: int) -> int:
            for p in pool_sizes:
                n = pool_out(conv_out(n, 3), p, ceil=pool_ceil)
            return n

        out = require_spatial(NAME, spatial, axis)
        layers: list[nn.Module] = []
        prev = channels
        for f, p in zip(FILTERS, pool_sizes, strict=True):
            layers += [
                nn.Conv3d(prev, f, 3),
                nn.BatchNorm3d(f),
                nn.ReLU(inplace=False),
                nn.MaxPool3d(p, ceil_mode=pool_ceil),
            ]
            prev = f
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(prev * prod(out), 128),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout2),
            nn.Linear(128, 64),
            nn.ReLU(inplace=False),
            nn.Linear(64, n_classes),
        )
        self.cam_layer = self.features[-2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, X, Y, Z) volumes to logits (N, n_classes)."""
        return self.classifier(self.features(x))


def build(
    *,
    in_shape: tuple[int, ...],
    n_classes: int,
    pool_sizes: tuple[int, ...] = (2, 3, 2, 3),
    pool_ceil: bool = True,
    dropout: float = 0.8,
    dropout2: float = 0.0,
) -> nn.Module:
    """Build :class:`Rieke2018CNN3D` (registry name ``rieke2018_3d``)."""
    return Rieke2018CNN3D(
        in_shape,
        n_classes,
        pool_sizes=check_int_tuple(NAME, "pool_sizes", pool_sizes, 4),
        pool_ceil=check_bool(NAME, "pool_ceil", pool_ceil),
        dropout=check_probability(NAME, "dropout", dropout),
        dropout2=check_probability(NAME, "dropout2", dropout2),
    )
