"""Tests of brainlens.attribution: methods, Grad-CAM axes, CAM sign, NIfTI output, scans."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from brainlens.attribution import (
    METHODS,
    AttributionError,
    attribute,
    mean_maps,
    save_map,
)
from brainlens.errors import ConfigError, ModelError

torch.set_num_threads(1)

SHAPE = (20, 20, 20)
BORDER = 2  # background (label 0) border
R_LABEL = 6  # the region the model looks at


# ----------------------------------------------------------------------------- fixtures


def octant_atlas() -> np.ndarray:
    """(20, 20, 20) atlas: label 0 border, labels 1..8 = octants of the 16^3 interior."""
    labels = np.zeros(SHAPE, dtype=np.int16)
    half = (SHAPE[0] - 2 * BORDER) // 2
    for i in range(2):
        for j in range(2):
            for k in range(2):
                sl = tuple(slice(BORDER + a * half, BORDER + (a + 1) * half) for a in (i, j, k))
                labels[sl] = 1 + i * 4 + j * 2 + k
    return labels


class Gate(nn.Module):
    """Multiplies a feature map by a fixed spatial mask (the model's region of interest)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.mask


class RegionNet(nn.Module):
    """Conv -> ReLU -> avgpool(2) -> gate(region R) -> GAP -> linear: depends only on R."""

    def __init__(self, region: np.ndarray) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[0] = 1.0 / 27
            self.conv.weight[1] = 0.5 / 27
            self.conv.bias.zero_()
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool3d(2)
        small = torch.as_tensor(region[::2, ::2, ::2], dtype=torch.float32)
        self.gate = Gate(small[None, None])
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-20.0, -20.0], [20.0, 20.0]]))
            self.fc.bias.copy_(torch.tensor([0.5, -0.5]))

    @property
    def cam_layer(self) -> nn.Module:
        return self.gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.gate(self.pool(self.relu(self.conv(x))))
        return self.fc(self.gap(f).flatten(1))


def brain_input(labels: np.ndarray, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.5, 1.5, size=labels.shape) * (labels > 0)
    return torch.as_tensor(vol, dtype=torch.float32)[None, None]


def region_means(rel: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    return {int(r): float(rel[labels == r].mean()) for r in np.unique(labels) if r != 0}


# ----------------------------------------------------------------------------- (a) known region

ALL_METHODS = [
    ("gradients", {}),
    ("guided_backprop", {}),
    ("integrated_gradients", {"n_steps": 8, "internal_batch_size": 4}),
    ("occlusion", {"patch": 4, "stride": 4, "batch_size": 16}),
    ("occlusion", {"patch": 4, "stride": 4, "output": "probability", "batch_size": 16}),
    ("region_occlusion", {"batch_size": 4}),
    ("gradcam", {}),
    ("cam_ng2018", {}),
]


@pytest.mark.parametrize(("method", "options"), ALL_METHODS)
def test_every_method_ranks_the_decisive_region_first(method: str, options: dict) -> None:
    labels = octant_atlas()
    model = RegionNet(labels == R_LABEL)
    x = brain_input(labels, seed=1)
    if method == "region_occlusion":
        options = {**options, "atlas_labels": labels}
    rel = attribute(model, x, method=method, target=1, **options)
    assert rel.shape == SHAPE
    assert rel.dtype == np.float32
    means = region_means(rel, labels)
    ranked = sorted(means, key=means.get, reverse=True)
    assert ranked[0] == R_LABEL, means
    # R stands out clearly, not by a rounding error
    others = max(v for k, v in means.items() if k != R_LABEL)
    assert means[R_LABEL] > 2 * others + 1e-6, means


def test_registry_holds_the_promised_methods() -> None:
    assert set(METHODS) >= {
        "gradients",
        "guided_backprop",
        "integrated_gradients",
        "occlusion",
        "region_occlusion",
        "gradcam",
        "cam_ng2018",
        "layer_maps",
    }


def test_integrated_gradients_is_complete() -> None:
    """IG keeps its sign: the map sums to logit(x) - logit(0)."""
    labels = octant_atlas()
    model = RegionNet(labels == R_LABEL)
    x = brain_input(labels, seed=2)
    rel = attribute(model, x, method="integrated_gradients", target=1, n_steps=16)
    with torch.no_grad():
        delta = float(model(x)[0, 1] - model(torch.zeros_like(x))[0, 1])
    assert rel.sum() == pytest.approx(delta, rel=1e-3)


def test_region_occlusion_paints_one_value_per_region_and_zero_background() -> None:
    labels = octant_atlas()
    model = RegionNet(labels == R_LABEL)
    x = brain_input(labels, seed=3)
    rel = attribute(model, x, method="region_occlusion", target=1, atlas_labels=labels)
    for r in np.unique(labels):
        assert np.unique(rel[labels == r]).size == 1
    assert np.all(rel[labels == 0] == 0)
    with torch.no_grad():
        full = float(model(x)[0, 1])
        x_occ = x.clone()
        x_occ[0, 0][torch.as_tensor(labels == R_LABEL)] = 0
        drop = full - float(model(x_occ)[0, 1])
    assert rel[labels == R_LABEL][0] == pytest.approx(drop, rel=1e-5)


@pytest.mark.parametrize("scale", [1, 1000])  # AAL-like sparse label values work too
def test_region_occlusion_of_a_linear_model_is_exact(scale: int) -> None:
    """Sum model on an all-ones input: each region's drop = its voxel count; background 0."""
    labels = octant_atlas().astype(np.int32) * scale
    model = nn.Sequential(nn.Flatten(), nn.Linear(labels.size, 2, bias=False))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    x = torch.ones(1, 1, *SHAPE)
    rel = attribute(
        model, x, method="region_occlusion", target=0, atlas_labels=labels, batch_size=3
    )
    for r in np.unique(labels):
        expected = 0.0 if r == 0 else float((labels == r).sum())
        assert np.all(rel[labels == r] == expected), r


# ----------------------------------------------------------------------------- (b) Grad-CAM 3D

GC_SHAPE = (12, 14, 16)
P = (3, 4, 11)  # where the true Grad-CAM must peak
Q = (8, 10, 4)  # where the two-axis-averaged (buggy) Grad-CAM peaks instead


def blob(center: tuple[int, int, int], sigma: float = 1.5) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in GC_SHAPE], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grids, center, strict=True))
    return torch.exp(-d2 / (2 * sigma**2))


class DenseHeadNet(nn.Module):
    """1x1x1 identity conv (cam layer) -> ReLU -> flatten -> fixed dense weights.

    The dense weights of channel 0 are +1 for z < 8 and -0.5 for z >= 8 (mean +0.25);
    channel 1: +0.5 for z < 8 and -1 for z >= 8 (mean -0.25). True Grad-CAM is
    relu(0.25 A0 - 0.25 A1), peaking at the blob of channel 0 (P). Per-z weights
    (averaging over x and y only) instead favour the blob of channel 1 (Q).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 1.0
            self.conv.bias.zero_()
        self.relu = nn.ReLU()
        z = torch.arange(GC_SHAPE[2])
        h0 = torch.where(z < 8, 1.0, -0.5)
        h1 = torch.where(z < 8, 0.5, -1.0)
        g = torch.stack([h0.expand(GC_SHAPE), h1.expand(GC_SHAPE)]).flatten()
        self.fc = nn.Linear(g.numel(), 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([-g, g]))
        self.cam_layer = self.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


def gradcam_two_axis_bug(model: DenseHeadNet, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM with gradients averaged over two spatial axes only (the ClinicaDL bug)."""
    acts = model.conv(x)
    acts.retain_grad()
    model.fc(model.relu(acts).flatten(1))[0, target].backward()
    weights = acts.grad.mean(dim=(2, 3), keepdim=True)  # BUG: z is not averaged
    return torch.relu((weights * acts).sum(1))[0].detach().numpy()


def gradcam_reference(model: DenseHeadNet, x: torch.Tensor, target: int) -> np.ndarray:
    acts = model.conv(x)
    acts.retain_grad()
    model.fc(model.relu(acts).flatten(1))[0, target].backward()
    weights = acts.grad.mean(dim=(2, 3, 4), keepdim=True)
    return torch.relu((weights * acts).sum(1))[0].detach().numpy()


def is_true_3d_map(m: np.ndarray, peak: tuple[int, int, int]) -> bool:
    """Peaks at ``peak`` and varies along each axis through it."""
    if tuple(int(i) for i in np.unravel_index(np.argmax(m), m.shape)) != peak:
        return False
    for axis in range(3):
        line = np.moveaxis(m, axis, 0)[(slice(None), *[p for a, p in enumerate(peak) if a != axis])]
        if line.max() - line.min() < 0.5 * m.max():
            return False
    return True


def test_gradcam_pools_gradients_over_all_three_axes() -> None:
    model = DenseHeadNet()
    x = torch.stack([blob(P), blob(Q)])[None]
    ours = attribute(model, x, method="gradcam", target=1)
    assert np.allclose(ours, gradcam_reference(model, x, 1), atol=1e-6)
    assert is_true_3d_map(ours, P)
    buggy = gradcam_two_axis_bug(model, x, 1)
    assert not is_true_3d_map(buggy, P), "the check must catch the two-axis bug"


def test_gradcam_upsamples_trilinearly_to_the_input_grid() -> None:
    labels = octant_atlas()
    model = RegionNet(labels == R_LABEL)
    x = brain_input(labels, seed=4)
    rel = attribute(model, x, method="gradcam", target=1)
    assert rel.shape == SHAPE
    assert rel[labels == R_LABEL].min() > 0
    # R = x 10..17, y 2..9, z 10..17, aligned with the 2x pooled grid. Nearest-neighbour
    # upsampling would leave x = 9 at 0; trilinear spills a quarter of the edge value there.
    assert labels[10, 5, 14] == R_LABEL and labels[9, 5, 14] != R_LABEL
    assert 0 < rel[9, 5, 14] < rel[10, 5, 14]
    assert rel[7, 5, 14] == 0


# ----------------------------------------------------------------------------- (c) CAM sign


class IdentityCamNet(nn.Module):
    """cam layer = 1x1x1 conv (identity) of the input; dense head."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(-0.2)  # some channel-sum values are negative
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * int(np.prod(shape)), 2)
        self.cam_layer = self.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("hot", [(2, 3, 4), (10, 5, 1), (6, 11, 9)])
def test_cam_ng2018_keeps_the_hot_region_hot(hot: tuple[int, int, int]) -> None:
    shape = (12, 14, 10)
    vol = torch.full(shape, 0.05)
    sl = tuple(slice(h, h + 2) for h in hot)
    vol[sl] = 1.0
    model = IdentityCamNet(shape)
    rel = attribute(model, vol[None, None], method="cam_ng2018", target=0)
    assert rel.max() == pytest.approx(1.0) and rel.min() == pytest.approx(0.0)
    assert np.all(rel[sl] == pytest.approx(1.0))
    cold = np.ones(shape, bool)
    cold[sl] = False
    assert rel[cold].max() < 0.1
    # class-invariant
    rel1 = attribute(model, vol[None, None], method="cam_ng2018", target=1)
    assert np.array_equal(rel, rel1)


# ----------------------------------------------------------------------------- 2D layer maps


class SliceNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        self.cam_layer = self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc(f.mean(dim=(2, 3)))


@pytest.mark.parametrize("kind", ["gradcam", "activation"])
def test_layer_maps_of_a_2d_model(kind: str) -> None:
    torch.manual_seed(0)
    model = SliceNet()
    x = torch.rand(1, 1, 16, 18)
    maps = attribute(model, x, method="layer_maps", target=1, kind=kind)
    assert list(maps) == ["conv1", "conv2"]
    for m in maps.values():
        assert m.shape == (16, 18)
        assert np.all(m >= 0)
    two_d = attribute(model, x, method="gradcam", target=1)
    if kind == "gradcam":
        assert np.allclose(maps["conv2"], two_d, atol=1e-6)


def test_labelled_method_keys_configure_per_layer_maps() -> None:
    """``gradcam@<label>`` with a ``layer`` option is that layer's map (layer_maps' entry)."""
    torch.manual_seed(0)
    model = SliceNet()
    x = torch.rand(1, 1, 16, 18)
    maps = attribute(model, x, method="layer_maps", target=1)
    first = attribute(model, x, method="gradcam@first", target=1, layer="conv1")
    assert first.max() > 0
    np.testing.assert_allclose(first, maps["conv1"], rtol=1e-5, atol=0)
    assert not np.allclose(first, maps["conv2"], rtol=1e-2, atol=0)


@pytest.mark.parametrize(
    ("key", "base"),
    [
        ("gradcam", "gradcam"),
        ("gradcam@conv1", "gradcam"),
        ("occlusion@p8-fine_2", "occlusion"),
        ("gradcam@", None),
        ("gradcam@a.b", None),
        ("Gradcam", None),
        ("nope@x", None),
        ("@x", None),
    ],
)
def test_method_base(key: str, base: str | None) -> None:
    from brainlens.attribution import method_base

    if base is None:
        with pytest.raises(ConfigError, match="@<label>"):
            method_base(key)
    else:
        assert method_base(key) == base


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "nope", "target": 1}, ConfigError, "expected one of"),
        ({"method": "gradients", "target": 1, "n_steps": 3}, ConfigError, "unknown option"),
        ({"method": "gradients", "target": 2}, ConfigError, r"\[0, 1\]"),
        ({"method": "integrated_gradients", "target": 1, "n_steps": 0}, ConfigError, "n_steps"),
        ({"method": "occlusion", "target": 1, "patch": (2, 2)}, ConfigError, "patch"),
        ({"method": "occlusion", "target": 1, "output": "prob"}, ConfigError, "output"),
        ({"method": "region_occlusion", "target": 1}, ConfigError, "atlas_labels"),
        (
            {"method": "region_occlusion", "target": 1, "atlas_labels": np.zeros((4, 4, 4), int)},
            AttributionError,
            "expected shape",
        ),
        ({"method": "gradcam", "target": 1, "layer": "nope"}, ConfigError, "no submodule"),
    ],
)
def test_attribute_rejects_bad_requests(kwargs: dict, error: type, match: str) -> None:
    labels = octant_atlas()
    model = RegionNet(labels == R_LABEL)
    with pytest.raises(error, match=match):
        attribute(model, brain_input(labels, seed=5), **kwargs)


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(2, 1, 8, 8, 8),
        torch.zeros(8, 8, 8),
        torch.zeros(1, 1, 8, 8, 8, dtype=torch.int64),
    ],
)
def test_attribute_rejects_bad_samples(x: torch.Tensor) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(512, 2))
    with pytest.raises(AttributionError, match="sample x"):
        attribute(model, x, method="gradients", target=0)


def test_float64_input_is_cast_to_the_model_dtype() -> None:
    labels = octant_atlas()
    model = RegionNet(labels == R_LABEL)
    x = brain_input(labels, seed=8)
    a = attribute(model, x, method="gradients", target=1)
    b = attribute(model, x.double(), method="gradients", target=1)
    assert np.array_equal(a, b)


def test_cam_methods_need_a_cam_layer() -> None:
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 216, 2))
    with pytest.raises(ModelError, match="cam_layer"):
        attribute(model, torch.rand(1, 1, 8, 8, 8), method="gradcam", target=0)


# ----------------------------------------------------------------------------- (f) maps

MNI_LIKE = np.array([[2.0, 0, 0, -90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def test_save_map_writes_float32_and_the_given_affine(tmp_path) -> None:
    rel = np.random.default_rng(0).normal(size=(6, 7, 8))
    path = save_map(rel, MNI_LIKE, tmp_path / "sub" / "m.nii.gz")
    img = nib.load(path)
    assert np.allclose(img.affine, MNI_LIKE)
    assert img.get_data_dtype() == np.float32
    assert np.allclose(img.get_fdata(), rel.astype(np.float32))


@pytest.mark.parametrize(
    ("rel", "affine", "match"),
    [
        (np.zeros((4, 4, 4)), None, "no affine"),
        (np.zeros((4, 4, 4)), np.eye(4), "identity"),
        (np.zeros((4, 4, 4)), np.eye(3), r"\(4, 4\)"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4)), "singular"),
        (np.zeros((4, 4)), MNI_LIKE, r"\(X, Y, Z\)"),
        (np.full((4, 4, 4), np.nan), MNI_LIKE, "NaN"),
    ],
)
def test_save_map_refuses_bad_input(tmp_path, rel, affine, match) -> None:
    with pytest.raises(AttributionError, match=match):
        save_map(rel, affine, tmp_path / "m.nii.gz")
    assert not (tmp_path / "m.nii.gz").exists()


def test_save_map_identity_allowed_on_request(tmp_path) -> None:
    path = save_map(np.ones((3, 3, 3)), np.eye(4), tmp_path / "m.nii", allow_identity=True)
    assert np.allclose(nib.load(path).affine, np.eye(4))


def test_mean_maps_groups_by_label() -> None:
    maps = [np.full((2, 2, 2), v) for v in (1.0, 3.0, 10.0)]
    out = mean_maps(maps, ["AD", "AD", "CN"])
    assert list(out) == ["AD", "CN"]
    assert np.all(out["AD"] == 2.0) and np.all(out["CN"] == 10.0)
    with pytest.raises(AttributionError, match="labels"):
        mean_maps(maps, ["AD"])
    with pytest.raises(AttributionError, match="shape"):
        mean_maps([np.zeros((2, 2, 2)), np.zeros((2, 2, 3))], [0, 0])
