"""Tests of brainlens.attribution.sanity: randomisation, deletion curve, ground-truth scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from torch import nn

from brainlens.attribution import METHODS, AttributionError, MethodSpec, attribute
from brainlens.attribution.sanity import (
    area_over_curve,
    deletion_curve,
    ground_truth_scores,
    layer_groups,
    parameter_layers,
    randomization_curves,
    ssim,
)

torch.set_num_threads(1)

SHAPE = (16, 16, 16)


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    target: int,
    seed: int,
    cascade: bool = True,
    mask: np.ndarray | None = None,
    **options: object,
) -> pd.DataFrame:
    """The cascade of :func:`randomization_curves` one module at a time, as
    ``step, layer, spearman (of |map|), ssim`` rows from step 1 (top layer random)."""
    df = randomization_curves(
        model,
        x,
        method=method,
        target=target,
        seed=seed,
        groups=layer_groups(model, "modules"),
        modes=("cascade",),
        every_step=cascade,
        mask=mask,
        **options,
    )
    df = df[df["step"] > 0].rename(columns={"spearman_abs": "spearman"})
    return df[["step", "layer", "spearman", "ssim"]].reset_index(drop=True)


def passes_randomization(df: pd.DataFrame, threshold: float = 0.5, require: str = "full") -> bool:
    """|Spearman| below ``threshold`` at the last step (``"full"``) or at every step."""
    rho = np.abs(df.sort_values("step")["spearman"].to_numpy(float))
    return bool(rho[-1] < threshold) if require == "full" else bool(np.all(rho < threshold))


def region_mask() -> np.ndarray:
    """A 6x6x6 cube R off-centre in a 16^3 volume."""
    m = np.zeros(SHAPE, bool)
    m[2:8, 8:14, 5:11] = True
    return m


class TrainedLikeNet(nn.Module):
    """Two convs and a dense head whose weights are non-zero only on region R.

    A "trained" model that looks at R only; randomising the head spreads its
    sensitivity over the whole volume.
    """

    def __init__(self, region: np.ndarray, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv3d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4 * region.size, 2)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=gen) * 0.2)
                conv.bias.zero_()
            # logit of class 1 ~ 0.25 x mean feature in R (~17) - 1: p(class 1) ~ 0.99
            w = torch.as_tensor(region, dtype=torch.float32).flatten().repeat(4)
            w *= 0.25 / w.sum()
            self.fc.weight.copy_(torch.stack([-w, w]))
            self.fc.bias.copy_(torch.tensor([1.0, -1.0]))
        self.cam_layer = self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).flatten(1))


def input_itself(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """A 'method' that ignores the model: the map is the input intensity."""
    return x[0].sum(0).detach().numpy()


def sample(seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.uniform(0.2, 1.0, size=SHAPE), dtype=torch.float32)[None, None]


@pytest.mark.parametrize(
    ("method", "options", "should_pass", "passes_every_step"),
    [
        ("gradients", {}, True, True),
        ("guided_backprop", {}, True, True),
        ("integrated_gradients", {"n_steps": 4}, True, True),
        # Grad-CAM and CAM barely react to a random head here (they follow conv2's features)
        ("gradcam", {}, True, False),
        ("cam_ng2018", {}, True, False),
        ("input_itself", {}, False, False),
    ],
)
def test_randomization_separates_model_dependent_maps_from_input_echoes(
    monkeypatch, method: str, options: dict, should_pass: bool, passes_every_step: bool
) -> None:
    monkeypatch.setitem(METHODS, "input_itself", MethodSpec(input_itself, "signed"))
    model = TrainedLikeNet(region_mask(), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    df = randomization_check(model, sample(1), method=method, target=1, seed=3, **options)
    assert list(df.columns) == ["step", "layer", "spearman", "ssim"]
    assert list(df["layer"]) == ["fc", "conv2", "conv1"]  # top-down cascade
    assert passes_randomization(df) is should_pass, df
    assert passes_randomization(df, require="every") is passes_every_step, df
    if passes_every_step:
        assert df["spearman"].abs().max() < 0.35, df
    if not should_pass:
        assert np.allclose(df["spearman"], 1.0) and np.allclose(df["ssim"], 1.0)
    # the trained model is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class LinearNet(nn.Module):
    """logits = W x + b over the flattened volume (re-initialisable)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(int(np.prod(SHAPE)), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def brain_and_sample() -> tuple[np.ndarray, torch.Tensor]:
    """A centred 8^3 'brain' (1/8 of the volume) and an input that is zero outside it."""
    brain = np.zeros(SHAPE, bool)
    brain[4:12, 4:12, 4:12] = True
    values = np.random.default_rng(0).uniform(0.2, 1.0, SHAPE)
    return brain, torch.as_tensor(np.where(brain, values, 0.0), dtype=torch.float32)[None, None]


@pytest.mark.parametrize(
    ("method", "options", "passes_all_voxels", "passes_in_brain"),
    [
        # x * w and patch effects are 0 outside the head for ANY weights: the shared
        # zeros alone give rho ~ 1 over all voxels, although the maps inside differ
        ("integrated_gradients", {"n_steps": 4}, False, True),
        ("occlusion", {"patch": 4, "stride": 4}, False, True),
        # the gradient of a linear model is its weights, everywhere: no shared zeros
        ("gradients", {}, True, True),
    ],
)
def test_randomization_inside_the_brain_mask_ignores_shared_zeros_outside(
    method: str, options: dict, passes_all_voxels: bool, passes_in_brain: bool
) -> None:
    torch.manual_seed(0)
    model = LinearNet()
    brain, x = brain_and_sample()
    kw = dict(method=method, target=1, seed=3, cascade=False, **options)
    everywhere = randomization_check(model, x, **kw)
    in_brain = randomization_check(model, x, mask=brain, **kw)
    assert passes_randomization(everywhere) is passes_all_voxels, everywhere
    assert passes_randomization(in_brain) is passes_in_brain, in_brain
    # a mask covering everything is the same as no mask
    full = randomization_check(model, x, mask=np.ones(SHAPE, bool), **kw)
    assert full["spearman"].iloc[-1] == pytest.approx(everywhere["spearman"].iloc[-1])


@pytest.mark.parametrize(
    ("mask", "error"),
    [(np.ones((4, 4, 4), bool), r"spatial shape \(16, 16, 16\)"), (np.zeros(SHAPE, bool), "empty")],
)
def test_randomization_mask_errors(mask: np.ndarray, error: str) -> None:
    _, x = brain_and_sample()
    with pytest.raises(AttributionError, match=error):
        randomization_check(LinearNet(), x, method="gradients", target=1, seed=0, mask=mask)


def test_randomization_without_cascade_equals_the_last_cascade_step() -> None:
    model = TrainedLikeNet(region_mask(), seed=0)
    x = sample(2)
    full = randomization_check(model, x, method="gradients", target=1, seed=7)
    last = randomization_check(model, x, method="gradients", target=1, seed=7, cascade=False)
    assert len(last) == 1 and last["layer"].iloc[0] == full["layer"].iloc[-1]
    pd.testing.assert_frame_equal(last.reset_index(drop=True), full.tail(1).reset_index(drop=True))
    assert passes_randomization(last) == passes_randomization(full)


def test_randomization_is_seeded_and_leaves_the_global_rng_alone() -> None:
    model = TrainedLikeNet(region_mask(), seed=0)
    x = sample(2)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = randomization_check(model, x, method="gradients", target=1, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = randomization_check(model, x, method="gradients", target=1, seed=7)
    c = randomization_check(model, x, method="gradients", target=1, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["spearman"], c["spearman"])


def test_ssim_identical_and_different() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((10, 10, 10))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 3 * a + 1) == pytest.approx(1.0)  # scale-free
    assert ssim(a, rng.random((10, 10, 10))) < 0.3


def test_parameter_layers_in_forward_order() -> None:
    assert parameter_layers(TrainedLikeNet(region_mask(), seed=0)) == ["conv1", "conv2", "fc"]


# ----------------------------------------------------------------------------- deletion


def test_deletion_drops_faster_for_the_true_map_than_for_a_random_map() -> None:
    region = region_mask()
    model = TrainedLikeNet(region, seed=0)
    x = sample(4)
    with torch.no_grad():
        assert torch.softmax(model(x), 1)[0, 1] > 0.9
    rng = np.random.default_rng(5)
    # the model sees R through two 3x3x3 convs: R dilated by 2 voxels (10^3 = 24% of voxels)
    support = ndimage.binary_dilation(region, np.ones((3, 3, 3)), iterations=2)
    truth = support + region + 0.01 * rng.random(SHAPE)
    f_true, s_true = deletion_curve(model, x, truth, target=1)
    f_rand, s_rand = deletion_curve(model, x, rng.random(SHAPE), target=1)
    assert f_true.shape == s_true.shape == (21,)
    assert f_true[0] == 0 and f_true[-1] == 1
    assert s_true[0] == pytest.approx(s_rand[0])
    # once the support is gone (step 5 = 25%) only the bias is left: p = sigmoid(-2)
    assert s_true[5] == pytest.approx(1 / (1 + np.exp(2)), abs=0.01)
    assert s_rand[5] > 0.9
    assert area_over_curve(f_true, s_true) > area_over_curve(f_rand, s_rand) + 0.2


def test_deletion_curve_batches_do_not_change_scores() -> None:
    model = TrainedLikeNet(region_mask(), seed=0)
    x = sample(6)
    rel = np.random.default_rng(7).random(SHAPE)
    _, a = deletion_curve(model, x, rel, target=1, steps=7, batch_size=3)
    _, b = deletion_curve(model, x, rel, target=1, steps=7, batch_size=8)
    assert np.allclose(a, b, atol=1e-6)


def test_deletion_curve_respects_the_mask() -> None:
    region = region_mask()
    model = TrainedLikeNet(region, seed=0)
    x = sample(8)
    support = ndimage.binary_dilation(region, np.ones((3, 3, 3)), iterations=2)
    # deleting only outside the model's support never changes the score ...
    _, s = deletion_curve(model, x, np.ones(SHAPE), target=1, steps=4, mask=~support)
    assert np.allclose(s, s[0], atol=1e-6)
    # ... deleting inside it does
    _, s = deletion_curve(model, x, np.ones(SHAPE), target=1, steps=4, mask=support)
    assert s[-1] < s[0] - 0.5


@pytest.mark.parametrize(
    ("fractions", "scores", "expected"),
    [
        ([0, 0.5, 1], [1, 1, 1], 0.0),
        ([0, 0.5, 1], [1, 0, 0], 0.75),
        ([0, 1], [0.8, 0.0], 0.4),
        ([0, 1], [0.2, 1.0], -0.4),
    ],
)
def test_area_over_curve(fractions, scores, expected) -> None:
    assert area_over_curve(np.array(fractions), np.array(scores)) == pytest.approx(expected)


def test_area_over_curve_rejects_unsorted() -> None:
    with pytest.raises(AttributionError, match="increasing"):
        area_over_curve(np.array([0, 1, 0.5]), np.array([1, 0, 0]))


# ----------------------------------------------------------------------------- ground truth


def three_regions() -> np.ndarray:
    lab = np.zeros((12, 12, 12), int)
    lab[1:11, 1:11, 1:4] = 1
    lab[1:11, 1:11, 4:8] = 2
    lab[1:11, 1:11, 8:11] = 3
    lab[1:11, 1:6, 8:11] = 4
    return lab


def _map(kind: str) -> np.ndarray:
    lab = three_regions()
    rel = np.zeros(lab.shape)
    if kind == "in_region":
        rel[lab == 2] = 1.0
        rel[5, 5, 5] = 2.0
    elif kind == "near_region":  # peak 2 voxels outside region 2, region 2 still hottest on average
        rel[lab == 2] = 1.0
        rel[5, 5, 9] = 5.0
    elif kind == "far_peak":
        rel[lab == 2] = 1.0
        rel[5, 5, 1] = 500.0
    elif kind == "other_region":
        rel[lab == 1] = 1.0
        rel[lab == 2] = 0.5
    elif kind == "constant":
        rel[:] = 1.0
    elif kind == "negative":
        rel[lab == 2] = -1.0
    return rel


@pytest.mark.parametrize(
    ("kind", "rank", "hit", "share"),
    [
        ("in_region", 1, True, 1.0),
        ("near_region", 1, True, 400 / 405),
        ("far_peak", 2, False, 400 / 900),
        ("other_region", 2, False, 200 / 500),
        ("constant", 4, False, 400 / 1000),
        ("negative", 4, False, float("nan")),
    ],
)
def test_ground_truth_scores(kind, rank, hit, share) -> None:
    out = ground_truth_scores(_map(kind), three_regions(), region_label=2)
    assert out["rank"] == rank
    assert out["n_regions"] == 4
    assert out["pointing_hit"] is hit
    if np.isnan(share):
        assert np.isnan(out["mass_share"])
    else:
        assert out["mass_share"] == pytest.approx(share)


def test_ground_truth_scores_brain_mask_and_errors() -> None:
    lab = three_regions()
    rel = _map("far_peak")
    mask = np.ones(lab.shape, bool)
    mask[:, :, 1] = False  # hides the far peak
    out = ground_truth_scores(rel, lab, region_label=2, brain_mask=mask)
    assert out["pointing_hit"] is True
    with pytest.raises(AttributionError, match="region_label 9"):
        ground_truth_scores(rel, lab, region_label=9)
    with pytest.raises(AttributionError, match="same grid"):
        ground_truth_scores(rel[:-1], lab, region_label=2)


def test_sanity_on_a_real_attribution_end_to_end() -> None:
    """gradients of the trained-like model put R first and hit it."""
    region = region_mask()
    lab = np.where(region, 2, 1)
    lab[:, :, :3] = 3
    rel = attribute(TrainedLikeNet(region, seed=0), sample(9), method="gradients", target=1)
    out = ground_truth_scores(rel, lab, region_label=2)
    assert out["rank"] == 1 and out["pointing_hit"] and out["mass_share"] > 0.5
