"""Tests of the model registry: every model builds, trains one step, and fails clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from brainlens.errors import ModelError
from brainlens.grid import mni_grid
from brainlens.models import (
    MODELS,
    build_model,
    count_parameters,
    field_of_view,
    field_of_view_mask,
)
from brainlens.models._layers import pool_out
from brainlens.transforms import TRANSFORMS, make_transform, output_shape

torch.set_num_threads(1)

# name -> (tiny in_shape, options); odd, non-cubic shapes catch shape-arithmetic slips.
TINY: dict[str, tuple[tuple[int, ...], dict]] = {
    "ng2018_3d": ((1, 9, 10, 11), {}),
    "rieke2018_3d": ((2, 9, 10, 11), {"pool_sizes": (1, 1, 1, 1)}),
    "eitel_baseline_3d": ((1, 16, 17, 18), {"filters": (2, 2, 4, 4)}),
    "pif_3d": ((1, 32, 33, 16), {"filters": (2, 2, 4, 4), "grid": (2, 2, 1), "pif_filters": 4}),
    "vgg3d": ((1, 16, 17, 18), {"width": 2}),
    "resnet3d": ((1, 5, 6, 7), {"width": 2}),
    "rao_2d": ((1, 5, 7), {}),
    "rao_2d_deep": ((1, 32, 33), {}),
    "dynimg_vgg11_att": ((1, 16, 17), {"width": 2}),
    "avgpool_vgg11": ((3, 17, 16), {"width": 2, "attention": False}),
    "maxpool_vgg11": ((1, 16, 16), {"width": 1}),
}

# name -> (an in_shape one voxel too small along axis 0, options)
TOO_SMALL: dict[str, tuple[tuple[int, ...], dict]] = {
    "ng2018_3d": ((1, 3, 8, 8), {}),
    "rieke2018_3d": ((1, 77, 90, 90), {"pool_ceil": False}),
    "eitel_baseline_3d": ((1, 15, 16, 16), {}),
    "pif_3d": ((1, 31, 32, 32), {}),
    "vgg3d": ((1, 15, 16, 16), {}),
    "rao_2d": ((1, 3, 160), {}),
    "rao_2d_deep": ((1, 31, 160), {}),
    "dynimg_vgg11_att": ((1, 15, 16), {"width": 1}),
}


def test_tables_cover_registry() -> None:
    assert set(TINY) == set(MODELS)


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", sorted(TINY))
def test_one_training_step(name: str, n_classes: int, deterministic: None) -> None:
    # seeded here: with the global RNG state left by earlier tests, a tiny batch of 2
    # can leave the first layer of rao_2d with an exactly zero gradient (a flaky failure)
    torch.manual_seed(0)
    in_shape, options = TINY[name]
    model = build_model(name, in_shape=in_shape, n_classes=n_classes, **options)
    model.train()
    x = torch.randn(2, *in_shape)
    y = torch.arange(2) % n_classes
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    logits = model(x)
    assert logits.shape == (2, n_classes)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    # gradients reach the input layer and the output layer (conv biases before batch norm
    # may legitimately get exactly zero gradient, so not every tensor must change)
    assert changed[0] and changed[-1] and sum(changed) > len(changed) // 2
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, n_classes)


@pytest.mark.parametrize("name", sorted(TINY))
def test_cam_layer_output_is_spatial(name: str) -> None:
    in_shape, options = TINY[name]
    model = build_model(name, in_shape=in_shape, n_classes=2, **options)
    seen = []
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, *in_shape))
    handle.remove()
    ndim = MODELS[name].ndim
    assert len(seen) == 1, "cam_layer must run exactly once per forward"
    assert len(seen[0]) == 2 + ndim and all(s >= 1 for s in seen[0][2:])


@pytest.mark.parametrize("name", sorted(TINY))
def test_relus_are_modules_not_inplace(name: str) -> None:
    in_shape, options = TINY[name]
    model = build_model(name, in_shape=in_shape, n_classes=2, **options)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    # each ReLU module runs once per forward (guided-backprop hooks rely on it)
    calls = {id(m): 0 for m in relus}
    handles = [
        m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls[id(mod)] + 1))
        for m in relus
    ]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, *in_shape))
    for h in handles:
        h.remove()
    assert set(calls.values()) == {1}


@pytest.mark.parametrize("name", sorted(TOO_SMALL))
def test_too_small_input_names_minimum(name: str) -> None:
    in_shape, options = TOO_SMALL[name]
    with pytest.raises(ModelError, match=rf"{name}.*expected at least {in_shape[1] + 1} voxels"):
        build_model(name, in_shape=in_shape, n_classes=2, **options)
    bigger = (in_shape[0], in_shape[1] + 1, *in_shape[2:])
    build_model(name, in_shape=bigger, n_classes=2, **options)


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("nope", {"in_shape": (1, 8, 8, 8), "n_classes": 2}, r"unknown model 'nope'.*ng2018_3d"),
        ("ng2018_3d", {"in_shape": (1, 8, 8, 8), "n_classes": 2, "widht": 3}, r"'widht'.*dropout"),
        (
            "ng2018_3d",
            {"in_shape": (8, 8, 8), "n_classes": 2},
            r"in_shape=\(8, 8, 8\).*\(C, X, Y, Z\)",
        ),
        ("ng2018_3d", {"in_shape": (1, 8, 8, 8), "n_classes": 1}, r"n_classes=1"),
        ("vgg3d", {"in_shape": (1, 16, 16, 16), "n_classes": 2, "width": 0}, r"width=0"),
        ("pif_3d", {"in_shape": (1, 32, 32, 32), "n_classes": 2, "grid": (2, 2)}, r"grid="),
    ],
)
def test_bad_arguments_raise_model_error(name: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern):
        build_model(name, **kwargs)


def test_spec_default_options_and_settings() -> None:
    for name, spec in MODELS.items():
        assert spec.ndim in (2, 3), name
        # training settings live in the config or the paper's recipe, not in the spec
        assert not {"lr", "batch_size", "epochs", "optimizer", "weight_decay"} & set(vars(spec)), (
            name
        )
        assert (spec.transform is None) == (spec.ndim == 3), name
        if spec.transform is not None:
            assert spec.transform in TRANSFORMS, name
            make_transform(spec.transform, **spec.transform_options)
        assert "in_shape" not in spec.default_options()
    ng, rieke = MODELS["ng2018_3d"].recipe, MODELS["rieke2018_3d"].recipe
    assert (ng.batch_size, ng.epochs, ng.lr) == (2, 50, 1e-4)
    assert (rieke.batch_size, rieke.epochs, rieke.dropout) == (5, 20, 0.8)


@pytest.mark.parametrize(
    ("name", "in_shape", "n_classes", "trainable", "total"),
    [
        # Rieke's printed flatten: 64 * 4 * 5 * 4 = 5120 units for 193 x 229 x 193 inputs.
        (
            "rieke2018_3d",
            (1, 193, 229, 193),
            2,
            5120 * 128
            + 128
            + 128 * 64
            + 64
            + 64 * 2
            + 2
            + (27 * 8 + 8)
            + (27 * 8 * 16 + 16)
            + (27 * 16 * 32 + 32)
            + (27 * 32 * 64 + 64)
            + 2 * (8 + 16 + 32 + 64),
            None,
        ),
        # Ng: 5 maps of 30 x 36 x 30 after two poolings of the paper's (2, 121, 145, 121).
        (
            "ng2018_3d",
            (2, 121, 145, 121),
            2,
            (27 * 2 * 20 + 20)
            + (27 * 20 * 10 + 10)
            + (27 * 10 * 5 + 5)
            + 5 * 30 * 36 * 30 * 300
            + 300
            + 300 * 100
            + 100
            + 100 * 2
            + 2,
            None,
        ),
    ],
)
def test_parameter_counts_match_papers(
    name: str, in_shape: tuple, n_classes: int, trainable: int, total: int | None
) -> None:
    # the poster's Keras pooling is floor ('valid'); brainlens pools with ceil by default
    options = {"pool_ceil": False} if name == "rieke2018_3d" else {}
    got_trainable, got_total = count_parameters(
        build_model(name, in_shape=in_shape, n_classes=n_classes, **options)
    )
    assert got_trainable == trainable
    if total is not None:
        assert got_total == total


@pytest.mark.parametrize(
    ("name", "n_classes", "trainable", "total"),
    [
        ("rao_2d", 2, 108_402, 108_514),
        ("rao_2d_deep", 3, 20_667, 20_891),
    ],
)
def test_rao_keras_parameter_counts(name: str, n_classes: int, trainable: int, total: int) -> None:
    model = build_model(name, in_shape=(1, 160, 160), n_classes=n_classes)
    assert count_parameters(model) == (trainable, total)


def test_pretrained_backbone_roundtrip_and_errors(tmp_path) -> None:
    source = build_model("dynimg_vgg11_att", in_shape=(1, 16, 16), n_classes=2, width=1)
    state = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(3, 3)  # an ImageNet head is ignored
    good = tmp_path / "vgg11.pt"
    torch.save(state, good)
    model = build_model(
        "dynimg_vgg11_att", in_shape=(1, 16, 16), n_classes=2, width=1, pretrained=str(good)
    )
    assert torch.equal(model.features[18].weight, source.features[18].weight)

    with pytest.raises(ModelError, match=r"does not exist"):
        build_model(
            "dynimg_vgg11_att",
            in_shape=(1, 16, 16),
            n_classes=2,
            width=1,
            pretrained=str(tmp_path / "missing.pt"),
        )
    with pytest.raises(ModelError, match=r"features.0.weight: expected \(2, 1, 3, 3\)"):
        build_model(
            "dynimg_vgg11_att", in_shape=(1, 16, 16), n_classes=2, width=2, pretrained=str(good)
        )
    del state["features.18.bias"]
    state["features.21.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match=r"missing keys \['features.18.bias'\].*features.21"):
        build_model(
            "dynimg_vgg11_att",
            in_shape=(1, 16, 16),
            n_classes=2,
            width=1,
            pretrained=str(tmp_path / "bad.pt"),
        )


def test_attention_mask_is_a_distribution_over_positions() -> None:
    model = build_model("dynimg_vgg11_att", in_shape=(1, 32, 48), n_classes=2, width=1)
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 48))
    mask = model.attention.last_mask
    assert mask.shape == (2, 1, 2, 3)
    assert torch.allclose(mask.sum(dim=(1, 2, 3)), torch.ones(2))


# --------------------------------------------------------------------------- field of view


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 3), (3, 2), (2, 1)])
def test_pool_out_matches_torch(kernel: int, stride: int, ceil: bool) -> None:
    for n in range(1, 20):
        expected = 0
        if n >= kernel or ceil:
            try:
                pool = nn.MaxPool1d(kernel, stride, ceil_mode=ceil)
                expected = pool(torch.zeros(1, 1, n)).shape[-1]
            except RuntimeError:  # output size too small
                expected = 0
        assert pool_out(n, kernel, stride, ceil=ceil) == expected, (n, kernel, stride, ceil)


def _slab_sweep(model: nn.Module, in_shape: tuple[int, ...]) -> list[list[int]]:
    """Brute force: which single slabs of NaN reach the output, per axis."""
    seen = []
    model.eval()
    for axis, n in enumerate(in_shape[1:]):
        hits = []
        for i in range(n):
            x = torch.zeros((1, *in_shape))
            index = [slice(None)] * (len(in_shape) + 1)
            index[2 + axis] = i
            x[tuple(index)] = float("nan")
            with torch.no_grad():
                if torch.isnan(model(x)).any():
                    hits.append(i)
        seen.append(hits)
    return seen


@pytest.mark.parametrize(
    ("in_shape", "options", "expected"),
    [
        # valid convs, floor pooling 2 then 3: 37 -> 35 -> 17 (one dropped) -> 15 -> 5 ...
        ((1, 37, 40, 36), {"pool_sizes": (2, 3, 1, 1), "pool_ceil": False}, None),
        ((1, 37, 40, 36), {"pool_sizes": (2, 3, 1, 1)}, ((0, 37), (0, 40), (0, 36))),
        ((2, 9, 10, 11), {"pool_sizes": (1, 1, 1, 1)}, ((0, 9), (0, 10), (0, 11))),
    ],
)
def test_field_of_view_matches_brute_force(in_shape, options, expected) -> None:
    model = build_model("rieke2018_3d", in_shape=in_shape, n_classes=2, dropout=0.0, **options)
    got = field_of_view(model, in_shape)
    sweep = _slab_sweep(model, in_shape)
    assert got == tuple((hits[0], hits[-1] + 1) for hits in sweep)
    assert all(hits == list(range(hits[0], hits[-1] + 1)) for hits in sweep)  # no gaps
    if expected is not None:
        assert got == expected
    if options.get("pool_ceil") is False:
        assert any(stop < n for (_, stop), n in zip(got, in_shape[1:], strict=True))
    mask = field_of_view_mask(model, in_shape)
    assert mask.shape == in_shape[1:]
    assert mask.sum() == np.prod([b - a for a, b in got])


def test_rieke_floor_pooling_is_blind_to_the_front_of_the_2mm_grid() -> None:
    in_shape = (1, 91, 109, 91)
    floor = build_model("rieke2018_3d", in_shape=in_shape, n_classes=2, pool_ceil=False)
    assert field_of_view(floor, in_shape) == ((0, 78), (0, 78), (0, 78))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_sees_the_whole_2mm_grid(name: str) -> None:
    """Default options on the default analysis grid: no voxel is outside the model's view."""
    spec = MODELS[name]
    in_shape = (1, 91, 109, 91)
    if spec.transform is not None:  # 2D models: the shape their transform gives
        in_shape = output_shape(spec.transform, in_shape, **spec.transform_options)
    model = build_model(name, in_shape=in_shape, n_classes=2)
    assert field_of_view(model, in_shape) == tuple((0, n) for n in in_shape[1:])


def _demo_config() -> dict:
    """The settings the workflow runs without a bids_dir (config/demo.yaml)."""
    return yaml.safe_load((Path(__file__).parents[1] / "config" / "demo.yaml").read_text())


def test_the_default_config_model_sees_the_whole_default_grid() -> None:
    """The demo config's model(s), with its options, on its analysis grid."""
    cfg = _demo_config()
    shape, _ = mni_grid(cfg["preprocess"]["resolution"])
    names = cfg["train"]["model"]
    for name in [names] if isinstance(names, str) else names:
        in_shape = (len(cfg["train"]["inputs"]), *shape)
        model = build_model(name, in_shape=in_shape, n_classes=2, **cfg["train"]["model_options"])
        assert field_of_view(model, in_shape) == tuple((0, n) for n in shape), name


def test_layers_named_in_the_default_config_exist() -> None:
    """A ``layer`` option in the demo config names a submodule of that model on its grid."""
    cfg = _demo_config()
    shape, _ = mni_grid(cfg["preprocess"]["resolution"])
    in_shape = (len(cfg["train"]["inputs"]), *shape)
    per_model = cfg["attribution"].get("model_methods") or {}
    for name, methods in per_model.items():
        modules = dict(
            build_model(
                name, in_shape=in_shape, n_classes=2, **cfg["train"]["model_options"]
            ).named_modules()
        )
        for key, options in methods.items():
            if "layer" in (options or {}):
                assert options["layer"] in modules, (name, key, options["layer"])


def test_field_of_view_refuses_a_model_blind_to_its_input() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias.expand(x.shape[0], 2) + 0 * torch.nan_to_num(x).sum()

    with pytest.raises(ModelError, match=r"no input voxel reaches the output of Constant"):
        field_of_view(Constant(), (1, 4, 5, 6))
