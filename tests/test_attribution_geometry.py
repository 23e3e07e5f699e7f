"""CAM maps are placed by receptive-field geometry (issue 24, item 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brainlens.attribution import attribute
from brainlens.attribution._common import count_forward_passes, upsample
from brainlens.attribution.geometry import (
    LayerGeometry,
    layer_geometry,
    resample_layer_map,
)
from brainlens.errors import ModelError
from brainlens.models import build_model

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- analytic geometry


def analytic(layers: list[nn.Module]) -> tuple[float, float]:
    """Receptive-field centre (start, step) of a chain of conv/pool layers, per axis."""
    start, step = 0.0, 1.0
    for m in layers:
        if not isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.MaxPool2d | nn.MaxPool3d):
            continue
        k, s, p, d = (m.kernel_size, m.stride, m.padding, m.dilation)
        k, s, p, d = (v[0] if isinstance(v, tuple) else v for v in (k, s, p, d))
        start += step * (-p + d * (k - 1) / 2)
        step *= s
    return start, step


def conv(k: int, s: int = 1, p: int = 0, d: int = 1, dim: int = 3) -> nn.Module:
    cls = nn.Conv3d if dim == 3 else nn.Conv2d
    return cls(1, 1, k, stride=s, padding=p, dilation=d)


CASES = {
    "padded conv": ([conv(3, p=1)], (10, 11, 12)),
    "unpadded conv": ([conv(5)], (10, 11, 12)),
    "stride-2 conv": ([conv(3, s=2, p=1)], (10, 11, 12)),
    "dilated conv": ([conv(3, d=2)], (10, 11, 12)),
    "maxpool ceil_mode": ([conv(3), nn.MaxPool3d(2, ceil_mode=True)], (10, 11, 12)),
    "field larger than input": ([conv(3, p=1) for _ in range(6)], (8, 9, 10)),
    "valid stack": ([conv(5), conv(5), nn.MaxPool3d(2), conv(3), conv(3)], (20, 21, 22)),
    "2d": ([conv(3, dim=2), nn.MaxPool2d(2), conv(3, p=1, dim=2)], (20, 21)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_geometry_matches_analytic_receptive_field_centres(case: str) -> None:
    layers, spatial = CASES[case]
    model = nn.Sequential(*layers)
    geo = layer_geometry(model, model[-1], (1, *spatial))
    start, step = analytic(layers)
    assert geo.start == pytest.approx((start,) * len(spatial))
    assert geo.step == pytest.approx((step,) * len(spatial))
    assert all(geo.exact)
    with torch.no_grad():
        assert geo.layer_shape == tuple(model(torch.zeros(1, 1, *spatial)).shape[2:])


class StridedResidual(nn.Module):
    """conv(3, stride 2, pad 1) -> conv(3, pad 1), plus a 1x1 stride-2 shortcut: not a chain."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(3, s=2, p=1), nn.ReLU(), conv(3, p=1))
        self.short = conv(1, s=2)
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.short(x))


def test_geometry_of_a_residual_branch_is_measured_not_chained() -> None:
    model = StridedResidual()
    geo = layer_geometry(model, model.out, (1, 12, 12, 12))
    assert geo.axes == ((0.0, 2.0),) * 3  # chaining the three convs would give step 4


def test_geometry_of_rieke2018_third_conv_on_the_4mm_grid() -> None:
    model = build_model("rieke2018_3d", in_shape=(1, 46, 55, 46), n_classes=2)
    geo = layer_geometry(model, model.features[8], (1, 46, 55, 46))
    # valid 3^3 convs and pools 2, 3: position i sees voxels 6 i .. 6 i + 23
    assert geo.axes == ((11.5, 6.0),) * 3
    assert geo.layer_shape == (5, 7, 5)


def test_geometry_is_cached_per_model_layer_and_shape() -> None:
    model = nn.Sequential(conv(5), nn.ReLU())
    first = layer_geometry(model, model[1], (1, 9, 9, 9))
    with count_forward_passes(model) as counter:
        again = layer_geometry(model, model[1], (1, 9, 9, 9))
    assert again is first and counter.calls == 0


# ----------------------------------------------------------------------------- resampling


def test_resample_places_positions_at_their_centres_and_holds_edges() -> None:
    geo = LayerGeometry((2.0,), (2.0,), (3,), (10,), (True,))
    maps = torch.tensor([[[1.0, 3.0, 5.0]]])
    out = resample_layer_map(maps, geo, (10,))[0, 0].numpy()
    # centres 2, 4, 6: linear between, edge values held outside
    assert out == pytest.approx([1, 1, 1, 2, 3, 4, 5, 5, 5, 5])
    half = LayerGeometry((2.5,), (2.0,), (3,), (10,), (True,))
    out = resample_layer_map(maps, half, (10,))[0, 0].numpy()
    assert out == pytest.approx([1, 1, 1, 1.5, 2.5, 3.5, 4.5, 5, 5, 5])


def test_resample_with_identity_geometry_is_the_identity_in_2d() -> None:
    maps = torch.rand(2, 3, 5, 7)
    geo = LayerGeometry((0.0, 0.0), (1.0, 1.0), (5, 7), (5, 7), (True, True))
    assert torch.allclose(resample_layer_map(maps, geo, (5, 7)), maps)


def test_resample_names_the_spatial_axes_problem() -> None:
    geo = LayerGeometry((0.0,) * 3, (1.0,) * 3, (4, 4, 4), (4, 4, 4), (True,) * 3)
    with pytest.raises(ModelError, match="spatial axes"):
        resample_layer_map(torch.zeros(1, 2, 16), geo, (4, 4, 4))


# ----------------------------------------------------------------------------- impulse test


class ValidNet(nn.Module):
    """conv5 - conv5 - maxpool 2 - conv3 (no padding), ReLUs, GAP, linear; local positive response."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 2, 5),
            nn.ReLU(),
            nn.Conv3d(2, 2, 5),
            nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(2, 2, 3),
            nn.ReLU(),
        )
        for m in self.features:
            if isinstance(m, nn.Conv3d):
                nn.init.constant_(m.weight, 0.1)
                nn.init.zeros_(m.bias)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
            self.fc.bias.zero_()
        self.cam_layer = self.features[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3, 4)))


IMPULSE = (9, 12, 15)  # off-centre: 3 voxels from the first layer centre, 2 from the last


def impulse() -> torch.Tensor:
    x = torch.zeros(1, 1, 24, 24, 24)
    x[(0, 0, *IMPULSE)] = 1.0
    return x


def peak(m: np.ndarray) -> np.ndarray:
    """Centre of the voxels at the maximum (the interpolated maximum can be a plateau)."""
    return np.argwhere(m >= m.max() - 1e-6 * abs(m.max())).mean(axis=0)


@pytest.mark.parametrize("method", ["gradcam", "cam_ng2018"])
def test_cam_peak_lands_on_the_input_impulse(method: str) -> None:
    model = ValidNet()
    x = impulse()
    stride = layer_geometry(model, model.cam_layer, (1, 24, 24, 24)).step  # 2 voxels
    rel = attribute(model, x, method=method, target=1)
    assert rel.shape == (24, 24, 24)
    assert np.all(np.abs(peak(rel) - IMPULSE) <= stride)
    # the old placement (layer grid stretched over the input) misses by > 1 stride
    with torch.no_grad():
        layer_map = model.features(x).sum(dim=1, keepdim=True)
    old = upsample(layer_map, (24, 24, 24))[0, 0].numpy()
    assert np.any(np.abs(peak(old) - IMPULSE) > stride), "the check must catch the stretch"


def test_layer_maps_agree_with_gradcam_of_each_layer() -> None:
    model = ValidNet()
    x = impulse()
    maps = attribute(model, x, method="layer_maps", target=1, layers=["features.2"])
    single = attribute(model, x, method="gradcam", target=1, layer="features.2")
    assert np.allclose(maps["features.2"], single)
    assert np.all(np.abs(peak(single) - IMPULSE) <= 1.0)


# ----------------------------------------------------------------------------- registered models


@pytest.mark.parametrize(
    ("name", "in_shape"),
    [("rao_2d", (1, 40, 40)), ("ng2018_3d", (1, 20, 20, 20)), ("pif_3d", (1, 32, 32, 32))],
)
def test_registered_models_give_gradcam_maps_of_the_input_shape(
    name: str, in_shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_shape=in_shape, n_classes=2)
    x = torch.rand(1, *in_shape)
    rel = attribute(model, x, method="gradcam", target=0)
    assert rel.shape == in_shape[1:] and np.isfinite(rel).all()
