"""Ng et al. (2018): 3D CNN for migraine classification with class activation maps."""

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

NAME = "ng2018_3d"


def _axis(n: int) -> int:
    # conv1, conv2 (same padding), pool 2, conv3 (same), pool 2
    return pool_out(pool_out(conv_out(n, 3, 1, 1), 2), 2)


class Ng2018CNN3D(nn.Module):
    """Three 3x3x3 conv layers (20, 10, 5 filters), max pooling after conv 2 and 3, dense 300/100.

    Parameters
    ----------
    in_shape : tuple of int
        One sample, (C, X, Y, Z); the paper used (2, 121, 145, 121).
    n_classes : int
        Number of output logits.
    dropout : float
        Dropout before each dense layer (0 in the paper).

    Notes
    -----
    The paper's output layer has a softmax; here ``forward`` returns logits (N, n_classes).
    Weights use Glorot-uniform initialisation with zero biases (Keras defaults, as in the paper).
    ``cam_layer`` is the ReLU after conv 3 (before its pooling): (N, 5, X/2, Y/2, Z/2).
    """

    def __init__(self, in_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        channels, *spatial = in_shape
        out = require_spatial(NAME, spatial, _axis)
        self.features = nn.Sequential(
            nn.Conv3d(channels, 20, 3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv3d(20, 10, 3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool3d(2),
            nn.Conv3d(10, 5, 3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool3d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(5 * prod(out), 300),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(300, 100),
            nn.ReLU(inplace=False),
            nn.Linear(100, n_classes),
        )
        self.cam_layer = self.features[6]
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, X, Y, Z) volumes to logits (N, n_classes)."""
        return self.classifier(self.features(x))


def build(*, in_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0) -> nn.Module:
    """Build :class:`Ng2018CNN3D` (registry name ``ng2018_3d``)."""
    return Ng2018CNN3D(in_shape, n_classes, check_probability(NAME, "dropout", dropout))
