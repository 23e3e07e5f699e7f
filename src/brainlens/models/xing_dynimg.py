"""Xing et al.: a 2D VGG11 backbone with a 1x1-conv attention block for dynamic images.

The 3D->2D step (dynamic image, or average/max pooling for the baselines) is a data transform
(:mod:`brainlens.transforms`); the model takes (C, H, W). The backbone is VGG11's feature
extractor without its last max pooling (as in the paper, which drops pooling to keep a 6x6 map
for 110x110 inputs) and without batch norm; its layers sit at the same ``features.<i>`` indices
as torchvision's ``vgg11``, so an ImageNet state dict saved from torchvision loads with
``pretrained=<path>`` (its ``classifier.*`` head is discarded).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from brainlens.errors import ModelError
from brainlens.models._layers import (
    check_positive_int,
    check_probability,
    conv_out,
    pool_out,
    prod,
    require_spatial,
)

# VGG11 "A" configuration in units of width/64, last max pooling removed ("M" = 2x2 max pool).
VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8)


class SpatialAttention2d(nn.Module):
    """Four 1x1 convs (ReLU, ReLU, ReLU, softmax over the H*W positions) give a mask S.

    forward: (N, C, H, W) -> (N, C, H, W) = input * S, with S of shape (N, 1, H, W) summing to 1
    over the positions. The mask of the last call is kept in ``last_mask`` (detached).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c1, c2, c3 = max(channels // 2, 1), max(channels // 4, 1), max(channels // 8, 1)
        self.score = nn.Sequential(
            nn.Conv2d(channels, c1, 1),
            nn.ReLU(inplace=False),
            nn.Conv2d(c1, c2, 1),
            nn.ReLU(inplace=False),
            nn.Conv2d(c2, c3, 1),
            nn.ReLU(inplace=False),
            nn.Conv2d(c3, 1, 1),
        )
        self.last_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weight each position of (N, C, H, W) by the attention mask."""
        s = self.score(x)
        mask = torch.softmax(s.flatten(1), dim=1).view_as(s)
        self.last_mask = mask.detach()
        return x * mask


class DynImgVGG11(nn.Module):
    """VGG11 features (no last pooling) -> [attention] -> FC 512 -> FC 64 -> output.

    Parameters
    ----------
    in_shape : tuple of int
        One 2D sample, (C, H, W); the paper used 3-channel 110x110 dynamic images.
    n_classes : int
        Number of output logits (the paper's last FC has 2 units).
    width : int
        Filters of the first conv (VGG11: 64; ImageNet weights need 64).
    attention : bool
        Use the attention block (the paper's "+ Att").
    dropout : float
        Dropout after FC 512 and FC 64 (paper: 0.5).

    Notes
    -----
    ``cam_layer`` is the ReLU after the last conv, (N, 8*width, H/16, W/16), before attention.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_classes: int,
        name: str,
        width: int = 64,
        attention: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        channels, *spatial = in_shape

        def axis(n: int) -> int:
            for item in VGG11:
                n = pool_out(n, 2) if item == "M" else conv_out(n, 3, 1, 1)
            return n

        out = require_spatial(name, spatial, axis)
        layers: list[nn.Module] = []
        prev = channels
        for item in VGG11:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(prev, width * item, 3, padding=1), nn.ReLU(inplace=False)]
                prev = width * item
        self.features = nn.Sequential(*layers)
        self.cam_layer = self.features[-1]
        self.attention = SpatialAttention2d(prev) if attention else None
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * prod(out), 512),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(512, 64),
            nn.ReLU(inplace=False),
            nn.Dropout(dropout),
            nn.Linear(64, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, H, W) images to logits (N, n_classes)."""
        h = self.features(x)
        if self.attention is not None:
            h = self.attention(h)
        return self.classifier(h)

    def load_backbone(self, path: str | Path, name: str) -> None:
        """Load VGG11 feature weights (keys ``features.<i>.weight/bias``) from a local file.

        ``classifier.*`` keys are ignored; any other missing, extra or mis-shaped key raises
        :class:`ModelError`.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelError(
                f"model {name!r}: pretrained weights file {str(path)!r} does not exist. Fix: "
                f"give the path of a local VGG11 state dict (torch.save of "
                f"torchvision.models.vgg11().state_dict()), or leave pretrained unset."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
            raise ModelError(
                f"model {name!r}: cannot read pretrained weights {str(path)!r}: {exc}. Fix: "
                f"save a plain state dict with torch.save(model.state_dict(), path)."
            ) from exc
        if not isinstance(state, dict):
            raise ModelError(
                f"model {name!r}: {str(path)!r} holds a {type(state).__name__}, expected a "
                f"state dict. Fix: save model.state_dict(), not the model."
            )
        ours = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        theirs = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        bad = [
            f"{k}: expected {tuple(ours[k].shape)}, got {tuple(theirs[k].shape)}"
            for k in sorted(set(ours) & set(theirs))
            if tuple(ours[k].shape) != tuple(theirs[k].shape)
        ]
        if missing or extra or bad:
            raise ModelError(
                f"model {name!r}: pretrained weights {str(path)!r} do not match the VGG11 "
                f"backbone: missing keys {missing[:6]}, unexpected keys {extra[:6]}, shape "
                f"mismatches {bad[:4]}. Fix: use torchvision-style VGG11 (no batch norm) weights "
                f"with width=64 and as many input channels as the file (ImageNet: 3; set the "
                f"transform's repeat_channels=3)."
            )
        self.features.load_state_dict({k.removeprefix("features."): v for k, v in theirs.items()})


def _make_builder(name: str):
    def build(
        *,
        in_shape: tuple[int, ...],
        n_classes: int,
        width: int = 64,
        attention: bool = True,
        dropout: float = 0.5,
        pretrained: str | Path | None = None,
    ) -> nn.Module:
        if not isinstance(attention, bool):
            raise ModelError(
                f"model {name!r}: option attention={attention!r} is invalid: expected True or "
                f"False."
            )
        model = DynImgVGG11(
            in_shape,
            n_classes,
            name,
            width=check_positive_int(name, "width", width),
            attention=attention,
            dropout=check_probability(name, "dropout", dropout),
        )
        if pretrained is not None:
            model.load_backbone(pretrained, name)
        return model

    build.__doc__ = f"Build :class:`DynImgVGG11` (registry name ``{name}``)."
    build.__name__ = f"build_{name}"
    return build


build_dynimg_vgg11_att = _make_builder("dynimg_vgg11_att")
build_avgpool_vgg11 = _make_builder("avgpool_vgg11")
build_maxpool_vgg11 = _make_builder("maxpool_vgg11")
