"""Eitel et al. (2019): patch individual filter (PIF) layers, and their plain 3D CNN baseline.

Both models share a trunk of four Conv-BN-ReLU blocks (3x3x3, same padding), each followed by
2x2x2 max pooling. The baseline classifies the trunk's output with dropout and one dense layer
(the paper's "simple 5-layer CNN"); ``pif_3d`` inserts a PIF layer in between: the feature maps
are split into a grid of patches, each patch position gets its own Conv-BN-ReLU block (weights
shared within a patch, not across patches; zero padding at patch borders), and the outputs are
reassembled in the same order.
"""

from __future__ import annotations

import torch
from torch import nn

from brainlens.errors import ModelError
from brainlens.models._layers import (
    check_int_tuple,
    check_positive_int,
    check_probability,
    conv_bn_relu_3d,
    conv_out,
    pool_out,
    prod,
    require_spatial,
)

FILTERS = (8, 16, 32, 64)


def _trunk_axis(n: int, blocks: int) -> int:
    for _ in range(blocks):
        n = pool_out(conv_out(n, 3, 1, 1), 2)
    return n


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``parts`` contiguous, nearly equal pieces (like np.array_split)."""
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class PatchIndividualFilter3d(nn.Module):
    """Split a (N, C, X, Y, Z) feature map into a grid of patches, one Conv-BN-ReLU per patch.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels before and after the layer.
    feature_shape : tuple of 3 int
        The spatial shape the layer is built for; other shapes raise :class:`ModelError`.
    grid : tuple of 3 int
        Number of patches along X, Y, Z; patches are contiguous and nearly equal in size.

    Returns (forward)
    -----------------
    torch.Tensor
        (N, out_channels, X, Y, Z): the patches' outputs reassembled in place.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_shape: tuple[int, int, int],
        grid: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.feature_shape = tuple(feature_shape)
        self.grid = tuple(grid)
        self.bounds = [_split(n, g) for n, g in zip(feature_shape, grid, strict=True)]
        self.blocks = nn.ModuleList(
            conv_bn_relu_3d(in_channels, out_channels) for _ in range(prod(grid))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply each patch's own block and reassemble: (N, C, X, Y, Z) -> (N, C', X, Y, Z)."""
        if tuple(x.shape[2:]) != self.feature_shape:
            raise ModelError(
                f"PIF layer: expected feature maps of spatial shape {self.feature_shape}, got "
                f"{tuple(x.shape[2:])}. Fix: feed inputs of the in_shape the model was built for."
            )
        blocks = iter(self.blocks)
        slabs = []
        for x0, x1 in self.bounds[0]:
            rows = []
            for y0, y1 in self.bounds[1]:
                cols = [next(blocks)(x[:, :, x0:x1, y0:y1, z0:z1]) for z0, z1 in self.bounds[2]]
                rows.append(torch.cat(cols, dim=4))
            slabs.append(torch.cat(rows, dim=3))
        return torch.cat(slabs, dim=2)


class Eitel2019CNN3D(nn.Module):
    """Four Conv-BN-ReLU-MaxPool blocks, optionally a PIF layer, then dropout and a dense layer.

    Parameters
    ----------
    in_shape : tuple of int
        One sample, (C, X, Y, Z).
    n_classes : int
        Number of output logits.
    filters : tuple of 4 int
        Filters of the four trunk blocks.
    pif_grid : tuple of 3 int or None
        Patch grid of the PIF layer; ``None`` builds the plain baseline.
    pif_filters : int
        Filters of each patch's conv block.
    dropout : float
        Dropout before the dense layer.

    Notes
    -----
    ``cam_layer``: the PIF layer (pif) or the ReLU of block 4 before its pooling (baseline).
    """

    def __init__(
        self,
        name: str,
        in_shape: tuple[int, ...],
        n_classes: int,
        filters: tuple[int, ...],
        pif_grid: tuple[int, int, int] | None,
        pif_filters: int,
        dropout: float,
    ) -> None:
        super().__init__()
        channels, *spatial = in_shape
        needed = 1 if pif_grid is None else pif_grid
        out = require_spatial(name, spatial, lambda n: _trunk_axis(n, 4), needed)
        blocks: list[nn.Module] = []
        prev = channels
        for f in filters:
            blocks += [conv_bn_relu_3d(prev, f), nn.MaxPool3d(2)]
            prev = f
        self.features = nn.Sequential(*blocks)
        if pif_grid is None:
            self.pif = None
            self.cam_layer = self.features[-2][2]
        else:
            self.pif = PatchIndividualFilter3d(prev, pif_filters, out, pif_grid)
            prev = pif_filters
            self.cam_layer = self.pif
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(prev * prod(out), n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, X, Y, Z) volumes to logits (N, n_classes)."""
        h = self.features(x)
        if self.pif is not None:
            h = self.pif(h)
        return self.classifier(h)


def build_baseline(
    *,
    in_shape: tuple[int, ...],
    n_classes: int,
    filters: tuple[int, ...] = FILTERS,
    dropout: float = 0.4,
) -> nn.Module:
    """Build the plain baseline (registry name ``eitel_baseline_3d``)."""
    name = "eitel_baseline_3d"
    return Eitel2019CNN3D(
        name,
        in_shape,
        n_classes,
        check_int_tuple(name, "filters", filters, 4),
        None,
        1,
        check_probability(name, "dropout", dropout),
    )


def build_pif(
    *,
    in_shape: tuple[int, ...],
    n_classes: int,
    filters: tuple[int, ...] = FILTERS,
    grid: tuple[int, ...] = (2, 2, 2),
    pif_filters: int = 64,
    dropout: float = 0.4,
) -> nn.Module:
    """Build the PIF model (registry name ``pif_3d``)."""
    name = "pif_3d"
    return Eitel2019CNN3D(
        name,
        in_shape,
        n_classes,
        check_int_tuple(name, "filters", filters, 4),
        check_int_tuple(name, "grid", grid, 3),
        check_positive_int(name, "pif_filters", pif_filters),
        check_probability(name, "dropout", dropout),
    )
