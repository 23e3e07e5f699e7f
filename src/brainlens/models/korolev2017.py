"""Korolev et al. (2017)-style 3D baselines: a VGG-like (VoxCNN) and a residual (VoxResNet) net.

These are the 3D baselines of Xing et al. Both take a ``width`` option (filters of the first
layer; later layers scale with it) so that they fit CPU budgets.
"""

from __future__ import annotations

import torch
from torch import nn

from brainlens.models._layers import (
    check_positive_int,
    check_probability,
    conv_out,
    pool_out,
    prod,
    require_spatial,
)

# VoxCNN: conv blocks as (number of convs, filter multiplier of width), each ended by max pooling.
VGG_BLOCKS = ((2, 1), (2, 2), (3, 4), (3, 8))


class VGG3D(nn.Module):
    """VGG-like 3D CNN: 2-2-3-3 convs (3x3x3, same padding, ReLU) with widths w, 2w, 4w, 8w.

    Each block ends with 2x2x2 max pooling; then dropout, FC 128, ReLU, dropout, FC 64, ReLU and
    the output layer. Korolev's batch norm after FC 128 is left out (it fails on a batch of one).

    Parameters
    ----------
    in_shape : tuple of int
        One sample, (C, X, Y, Z).
    n_classes : int
        Number of output logits.
    width : int
        Filters of the first block (Korolev: 8).
    dropout : float
        Dropout before the dense layers (Korolev: 0.7).

    Notes
    -----
    ``cam_layer`` is the ReLU after the last conv (before the last pooling).
    """

    def __init__(
        self, in_shape: tuple[int, ...], n_classes: int, width: int = 8, dropout: float = 0.7
    ) -> None:
        super().__init__()
        channels, *spatial = in_shape

        def axis(n: int) -> int:
            for _ in VGG_BLOCKS:
                n = pool_out(conv_out(n, 3, 1, 1), 2)
            return n

        out = require_spatial("vgg3d", spatial, axis)
        layers: list[nn.Module] = []
        prev = channels
        for n_conv, mult in VGG_BLOCKS:
            for _ in range(n_conv):
                layers += [nn.Conv3d(prev, width * mult, 3, padding=1), nn.ReLU(inplace=False)]
                prev = width * mult
            layers.append(nn.MaxPool3d(2))
        self.features = nn.Sequential(*layers)
        self.cam_layer = self.features[-2]
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(prev * prod(out), 128),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(128, 64),
            nn.ReLU(inplace=False),
            nn.Linear(64, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, X, Y, Z) volumes to logits (N, n_classes)."""
        return self.classifier(self.features(x))


class VoxRes(nn.Module):
    """Pre-activation residual unit: x + conv(ReLU(BN(conv(ReLU(BN(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, X, Y, Z) -> (N, C, X, Y, Z)."""
        return x + self.body(x)


def _bn_relu_down(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [
        nn.BatchNorm3d(in_ch),
        nn.ReLU(inplace=False),
        nn.Conv3d(in_ch, out_ch, 3, stride=2, padding=1),
    ]


class ResNet3D(nn.Module):
    """VoxResNet-style 3D CNN (Korolev et al.): 3 stride-2 stages with 2 residual units each.

    conv(w)-BN-ReLU-conv(w)-BN-ReLU-conv(2w, stride 2), 2 x VoxRes(2w), BN-ReLU-conv(2w,
    stride 2), 2 x VoxRes(2w), BN-ReLU-conv(4w, stride 2), 2 x VoxRes(4w), BN-ReLU, global
    max pooling (Korolev: a fixed 7x7x7 max pool), FC 128, ReLU, dropout, output layer.

    Parameters
    ----------
    in_shape : tuple of int
        One sample, (C, X, Y, Z).
    n_classes : int
        Number of output logits.
    width : int
        Filters of the first conv (Korolev: 32).
    dropout : float
        Dropout before the output layer.

    Notes
    -----
    ``cam_layer`` is the final ReLU (after the last residual unit), (N, 4w, ~X/8, ~Y/8, ~Z/8).
    """

    def __init__(
        self, in_shape: tuple[int, ...], n_classes: int, width: int = 32, dropout: float = 0.0
    ) -> None:
        super().__init__()
        channels, *spatial = in_shape
        require_spatial(
            "resnet3d",
            spatial,
            lambda n: conv_out(conv_out(conv_out(n, 3, 2, 1), 3, 2, 1), 3, 2, 1),
        )
        w = width
        self.features = nn.Sequential(
            nn.Conv3d(channels, w, 3, padding=1),
            nn.BatchNorm3d(w),
            nn.ReLU(inplace=False),
            nn.Conv3d(w, w, 3, padding=1),
            nn.BatchNorm3d(w),
            nn.ReLU(inplace=False),
            nn.Conv3d(w, 2 * w, 3, stride=2, padding=1),
            VoxRes(2 * w),
            VoxRes(2 * w),
            *_bn_relu_down(2 * w, 2 * w),
            VoxRes(2 * w),
            VoxRes(2 * w),
            *_bn_relu_down(2 * w, 4 * w),
            VoxRes(4 * w),
            VoxRes(4 * w),
            nn.BatchNorm3d(4 * w),
            nn.ReLU(inplace=False),
        )
        self.cam_layer = self.features[-1]
        self.classifier = nn.Sequential(
            nn.AdaptiveMaxPool3d(1),
            nn.Flatten(),
            nn.Linear(4 * w, 128),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(128, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, X, Y, Z) volumes to logits (N, n_classes)."""
        return self.classifier(self.features(x))


def build_vgg3d(
    *, in_shape: tuple[int, ...], n_classes: int, width: int = 8, dropout: float = 0.7
) -> nn.Module:
    """Build :class:`VGG3D` (registry name ``vgg3d``)."""
    return VGG3D(
        in_shape,
        n_classes,
        width=check_positive_int("vgg3d", "width", width),
        dropout=check_probability("vgg3d", "dropout", dropout),
    )


def build_resnet3d(
    *, in_shape: tuple[int, ...], n_classes: int, width: int = 32, dropout: float = 0.0
) -> nn.Module:
    """Build :class:`ResNet3D` (registry name ``resnet3d``)."""
    return ResNet3D(
        in_shape,
        n_classes,
        width=check_positive_int("resnet3d", "width", width),
        dropout=check_probability("resnet3d", "dropout", dropout),
    )
