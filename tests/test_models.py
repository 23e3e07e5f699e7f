"""Tests of the model registry: every model builds, trains one step, and fails clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainlens.errors import ModelError
from brainlens.models import MODELS, build_model, count_parameters
from brainlens.transforms import TRANSFORMS, make_transform

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
    "rieke2018_3d": ((1, 77, 90, 90), {}),
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
    in_shape, options = TINY[name]
    model = build_model(name, in_shape=in_shape, n_classes=n_classes, **options)
    model.train()
    x = torch.randn(2, *in_shape)
    y = torch.arange(2) % n_classes
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=MODELS[name].lr)
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
        assert spec.lr > 0 and spec.batch_size >= 1 and spec.epochs >= 1, name
        assert (spec.transform is None) == (spec.ndim == 3), name
        if spec.transform is not None:
            assert spec.transform in TRANSFORMS, name
            make_transform(spec.transform, **spec.transform_options)
        assert "in_shape" not in spec.default_options()
    assert MODELS["ng2018_3d"].batch_size == 2 and MODELS["ng2018_3d"].epochs == 50
    assert MODELS["rieke2018_3d"].batch_size == 5 and MODELS["rieke2018_3d"].epochs == 20


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
    got_trainable, got_total = count_parameters(
        build_model(name, in_shape=in_shape, n_classes=n_classes)
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
