"""Sanity checks at the Adebayo et al. (2018) standard: cascading and independent
randomisation over scans of every class, bootstrap intervals, deletion and insertion
against random order inside a mask with a baseline, and the workflow stage."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from torch import nn

from brainlens.attribution import METHODS, AttributionError, MethodSpec, attribute
from brainlens.attribution.checks import method_settings, run_sanity_checks, select_scans
from brainlens.attribution.sanity import (
    bootstrap_mean,
    curve_gap,
    deletion_curve,
    insertion_curve,
    layer_groups,
    random_order,
    randomization_curves,
    summarize_sanity,
)
from brainlens.errors import ConfigError, InputFileError

torch.set_num_threads(1)
SHAPE = (12, 12, 12)


def region() -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[2:6, 6:10, 3:7] = True
    return m


class ToyNet(nn.Module):
    """conv -> BN -> ReLU -> dense head that reads region R only (a "trained" model)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm3d(2)
        self.fc = nn.Linear(2 * int(np.prod(SHAPE)), 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(self.conv.weight.shape, generator=gen) * 0.2)
            self.conv.bias.zero_()
            w = torch.as_tensor(region(), dtype=torch.float32).flatten().repeat(2)
            w *= 2.0 / w.sum()
            self.fc.weight.copy_(torch.stack([-w, w]))
            self.fc.bias.copy_(torch.tensor([0.5, -0.5]))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def sample(seed: int) -> torch.Tensor:
    v = np.random.default_rng(seed).uniform(0.2, 1.0, SHAPE)
    return torch.as_tensor(v, dtype=torch.float32)[None, None]


def edges(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """A 'method' that ignores the model: the input's gradient magnitude (an edge map)."""
    return ndimage.generic_gradient_magnitude(x[0, 0].detach().numpy(), ndimage.sobel)


# ----------------------------------------------------------------------------- randomisation


def test_layer_groups_merge_norms_into_blocks() -> None:
    model = ToyNet()
    assert layer_groups(model, "modules") == [["conv"], ["bn"], ["fc"]]
    assert layer_groups(model, "blocks") == [["conv", "bn"], ["fc"]]
    with pytest.raises(ConfigError, match="attribution.sanity.layers"):
        layer_groups(model, "all")


def test_cascade_and_independent_steps() -> None:
    model = ToyNet()
    groups = layer_groups(model, "modules")
    df = randomization_curves(model, sample(1), method="gradients", target=1, seed=3, groups=groups)
    for mode in ("cascade", "independent"):
        d = df[df["mode"] == mode]
        assert list(d["step"]) == list(range(len(groups) + 1))
        assert d["spearman_abs"].iloc[0] == 1.0 and d["spearman_signed"].iloc[0] == 1.0
    cas, ind = df[df["mode"] == "cascade"], df[df["mode"] == "independent"]
    assert list(cas["layer"]) == ["", "fc", "bn", "conv"]  # top-down
    # both modes randomise the top group with the same seed at step 1
    assert cas["spearman_abs"].iloc[1] == ind["spearman_abs"].iloc[1]
    # only step 0 and full randomisation when every_step is False
    last = randomization_curves(
        model, sample(1), method="gradients", target=1, seed=3, groups=groups, every_step=False
    )
    assert list(last["step"]) == [0, 3]
    assert last["spearman_abs"].iloc[-1] == pytest.approx(cas["spearman_abs"].iloc[-1])


def _verdict(method: str, n_scans: int = 4) -> bool:
    model = ToyNet()
    frames = []
    for i in range(n_scans):
        d = randomization_curves(model, sample(i), method=method, target=1, seed=5)
        frames.append(d.assign(scan_id=f"s{i}"))
    summary = summarize_sanity(
        pd.DataFrame({"label": ["a"] * n_scans}),
        pd.concat(frames),
        method=method,
        threshold=0.5,
        n_resamples=200,
    )
    rows = summary[summary["passes"].notna()]
    assert set(rows["statistic"]) == {"spearman_abs", "spearman_signed"}
    return bool(rows["passes"].all())


def test_a_method_that_ignores_the_weights_fails_and_gradients_pass(monkeypatch) -> None:
    monkeypatch.setitem(METHODS, "edges", MethodSpec(edges, "absolute"))
    assert _verdict("edges") is False
    assert _verdict("gradients") is True


def test_bootstrap_interval_contains_the_mean_and_is_seeded() -> None:
    v = np.random.default_rng(0).normal(0.3, 0.2, 20)
    mean, lo, hi = bootstrap_mean(v, n_resamples=500, seed=1)
    assert lo < mean < hi and mean == pytest.approx(v.mean())
    assert bootstrap_mean(v, n_resamples=500, seed=1) == (mean, lo, hi)
    assert bootstrap_mean(v, n_resamples=500, seed=2) != (mean, lo, hi)
    assert bootstrap_mean([0.4], n_resamples=10) == (0.4, 0.4, 0.4)
    assert np.isnan(bootstrap_mean([np.nan])[0])
    with pytest.raises(ConfigError, match="bootstrap"):
        bootstrap_mean(v, n_resamples=0)


def test_bootstrap_over_folds_is_wider_when_folds_differ() -> None:
    """Scans explained by one fold's model share it: when the folds' models disagree,
    the two-stage (folds, then scans) interval is wider than the scan-level one."""
    rng = np.random.default_rng(0)
    fold_effect = np.repeat([-0.3, 0.0, 0.1, 0.2, 0.5], 4)
    v = fold_effect + rng.normal(0, 0.02, 20)
    folds = np.repeat(np.arange(5), 4)
    _, lo_scans, hi_scans = bootstrap_mean(v, n_resamples=2000, seed=1)
    mean, lo, hi = bootstrap_mean(v, n_resamples=2000, seed=1, groups=folds)
    assert mean == pytest.approx(v.mean()) and lo < mean < hi
    assert hi - lo > 1.5 * (hi_scans - lo_scans)
    # one fold: the same as the scan-level bootstrap
    same = bootstrap_mean(v, n_resamples=200, seed=1, groups=np.zeros(20))
    assert same == bootstrap_mean(v, n_resamples=200, seed=1)
    with pytest.raises(AttributionError, match="groups"):
        bootstrap_mean(v, groups=folds[:-1])


# ----------------------------------------------------------------------------- faithfulness


class Recorder(nn.Module):
    """Wraps a model and keeps every batch it is given."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


@pytest.mark.parametrize("curve", [deletion_curve, insertion_curve])
def test_perturbation_with_a_baseline_never_touches_voxels_outside_the_mask(curve) -> None:
    model = Recorder(ToyNet())
    x = sample(2)
    mask = np.zeros(SHAPE, bool)
    mask[3:9, 3:9, 3:9] = True
    baseline = np.full((1, *SHAPE), -7.0, np.float32)
    rel = np.random.default_rng(0).random(SHAPE)
    fr, scores = curve(model, x, rel, target=1, steps=4, baseline=baseline, mask=mask)
    assert fr.shape == scores.shape == (5,)
    batches = torch.cat(model.seen[1:])  # the first pass is the target check
    assert len(batches) == 5
    outside = torch.as_tensor(~mask)
    assert torch.equal(batches[:, 0][:, outside], x[0, 0][outside].expand(5, -1))
    inside = batches[:, 0][:, torch.as_tensor(mask)]
    replaced = (inside == -7.0).float().mean(1).numpy()
    expected = fr if curve is deletion_curve else 1 - fr
    np.testing.assert_allclose(replaced, expected, atol=0.01)


def _areas(relevance_of, n_scans: int = 6) -> pd.DataFrame:
    model = ToyNet()
    rows = []
    for i in range(n_scans):
        x = sample(10 + i)
        rel = relevance_of(i)
        row = {"label": "a"}
        for kind, func in (("deletion", deletion_curve), ("insertion", insertion_curve)):
            fr, s = func(model, x, rel, target=1, steps=10, baseline=0.0)
            _, r = func(model, x, random_order(SHAPE, 100 + i), target=1, steps=10, baseline=0.0)
            row[f"{kind}_area"] = curve_gap(fr, s, r, kind=kind)
        rows.append(row)
    per_scan = pd.DataFrame(rows)
    return summarize_sanity(per_scan, pd.DataFrame(), method="m", n_resamples=500)


def test_a_random_map_is_not_faithful_while_the_true_relevance_is() -> None:
    support = ndimage.binary_dilation(region(), np.ones((3, 3, 3)))
    truth = _areas(lambda i: support + 0.01 * random_order(SHAPE, i))
    assert truth["passes"].all() and (truth["ci_low"] > 0.05).all(), truth
    noise = _areas(lambda i: random_order(SHAPE, 50 + i))
    assert not noise["passes"].any(), noise
    assert (noise["mean"].abs() < 0.1).all(), noise


def test_curve_gap_sign_convention() -> None:
    f = np.array([0.0, 0.5, 1.0])
    fast, slow = np.array([1.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])
    assert curve_gap(f, fast, slow, kind="deletion") == pytest.approx(0.5)
    assert curve_gap(f, slow, fast, kind="insertion") == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        curve_gap(f, fast, slow, kind="other")


# ----------------------------------------------------------------------------- scan selection


def _table(fold: int, n_per_class: int) -> pd.DataFrame:
    rows = [
        {"fold": fold, "scan_id": f"f{fold}-{lab}{i}", "label": lab, "target": t, "path": "x"}
        for t, lab in enumerate(["AD", "CN"])
        for i in range(n_per_class)
    ]
    return pd.DataFrame(rows)


def test_scan_selection_draws_n_per_class_across_folds() -> None:
    tables = [_table(f, 3) for f in range(5)]
    chosen, counts = select_scans(tables, per_class=10, seed=0)
    assert counts == {"AD": 10, "CN": 10}
    assert chosen.groupby("label")["fold"].nunique().eq(5).all()  # spread over all folds
    assert not chosen["scan_id"].duplicated().any()
    again, _ = select_scans(tables, per_class=10, seed=0)
    pd.testing.assert_frame_equal(chosen, again)
    other, _ = select_scans(tables, per_class=10, seed=1)
    assert set(other["scan_id"]) != set(chosen["scan_id"])
    few, counts = select_scans([_table(0, 2)], per_class=10, seed=0)
    assert counts == {"AD": 2, "CN": 2} and len(few) == 4
    # a scan tested in several folds (repeated splits) is drawn once
    dup, counts = select_scans([_table(0, 2), _table(0, 2)], per_class=10, seed=0)
    assert counts == {"AD": 2, "CN": 2}


def test_method_settings_apply_overrides() -> None:
    cfg = {"scans_per_class": 10, "cascade": True, "overrides": {"occlusion": {"cascade": False}}}
    assert method_settings(cfg, "occlusion@p4")["cascade"] is False
    assert method_settings(cfg, "gradients") == {"scans_per_class": 10, "cascade": True}
    with pytest.raises(ConfigError, match="overrides.occlusion"):
        method_settings({"overrides": {"occlusion": {"steps": 3}}}, "occlusion")


# ----------------------------------------------------------------------------- the stage

SIDE = 16
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from brainlens.attribution.baselines import write_fold_baseline
    from brainlens.attribution.fold import attribute_fold
    from brainlens.folds import write_folds
    from brainlens.packing import pack_volumes
    from brainlens.templates import template_paths
    from brainlens.training import train_fold

    root = tmp_path_factory.mktemp("sanity_stage")
    rng = np.random.default_rng(0)
    rows, paths, ids = [], [], []
    for i in range(12):
        label = "patient" if i % 2 else "control"
        v = rng.normal(0, 0.2, (SIDE,) * 3).astype(np.float32)
        if label == "patient":
            v[3:7, 6:10, 4:8] += 2.0
        nib.save(nib.Nifti1Image(v, AFFINE), str(root / f"sub-{i:02d}.nii.gz"))
        rows.append({"participant_id": f"sub-{i:02d}", "session_id": "n/a", "label": label})
        paths.append(root / f"sub-{i:02d}.nii.gz")
        ids.append(f"sub-{i:02d}")
    packs = [(root / "gm.npy", root / "gm.tsv")]
    pack_volumes(paths, scan_ids=ids, out_npy=packs[0][0], out_index=packs[0][1])
    folds = root / "folds.tsv"
    write_folds(pd.DataFrame(rows), folds, mode="kfold", n_folds=3, val_fraction=0.25, seed=1)
    brain = np.zeros((SIDE,) * 3, np.uint8)
    brain[2:14, 2:14, 2:14] = 1
    templates = root / "templates"
    templates.mkdir()
    nib.save(nib.Nifti1Image(brain, AFFINE), str(template_paths(templates, 2.0)["brain_mask"]))
    out = {"root": root, "packs": packs, "folds": folds, "templates": templates}
    out |= {"models": [], "tables": [], "baselines": []}
    for fold in (0, 1):
        d = root / f"fold-{fold}"
        train_fold(
            packs={"gm": packs[0]},
            folds_tsv=folds,
            fold=fold,
            out_dir=d,
            model="eitel_baseline_3d",
            epochs=1,
            batch_size=4,
            lr=1e-3,
            seed=2,
            progress=False,
            device="cpu",
        )
        attribute_fold(
            model_path=d / "model.pt",
            packs=packs,
            folds_tsv=folds,
            fold=fold,
            method="gradients",
            options={},
            atlas_nii=None,
            out_dir=d / "maps",
            out_table=d / "maps.tsv",
            seed=3,
        )
        base = (d / "baseline.npy", d / "baseline.json")
        write_fold_baseline(
            packs=packs, folds_tsv=folds, fold=fold, kind="train_mean", out_npy=base[0],
            out_json=base[1],
        )  # fmt: skip
        out["models"].append(d / "model.pt")
        out["tables"].append(d / "maps.tsv")
        out["baselines"].append(base)
    return out


def _run(stage: dict, tmp_path: Path, **kw) -> pd.DataFrame:
    args = {
        "model_paths": stage["models"],
        "attribution_tables": stage["tables"],
        "packs": stage["packs"],
        "method": "gradients",
        "options": {},
        "atlas_nii": None,
        "ground_truth": None,
        "out_table": tmp_path / "sanity.tsv",
        "out_cascade": tmp_path / "cascade.tsv",
        "out_deletion": tmp_path / "deletion.tsv",
        "out_summary": tmp_path / "summary.tsv",
        "seed": 4,
        "settings": {"scans_per_class": 3, "bootstrap": 100, "deletion_steps": 4},
        "baselines": stage["baselines"],
        "folds_tsv": stage["folds"],
        "templates_dir": stage["templates"],
        "resolution": 2.0,
    }
    return run_sanity_checks(**(args | kw))


def test_stage_writes_all_tables_over_folds(stage: dict, tmp_path: Path) -> None:
    out = _run(stage, tmp_path)
    # 2 test folds x 4 test scans, 2 explained per class and fold: 3 per class asked
    assert out.groupby("label").size().to_dict() == {"control": 3, "patient": 3}
    assert out["fold"].nunique() == 2
    assert (out["randomization_domain"] == "brain_mask_in_view").all()
    assert (out["baseline_kind"] == "train_mean").all()
    assert out["spearman_abs_random"].between(-1, 1).all()
    cascade = pd.read_csv(tmp_path / "cascade.tsv", sep="\t")
    from brainlens.training import load_trained_model

    n_groups = len(layer_groups(load_trained_model(stage["models"][0].parent)[0]))
    assert set(cascade["mode"]) == {"cascade", "independent"}
    assert cascade.groupby(["scan_id", "mode"]).size().eq(n_groups + 1).all()
    curves = pd.read_csv(tmp_path / "deletion.tsv", sep="\t")
    assert set(zip(curves["curve"], curves["order"], strict=True)) == {
        (c, o) for c in ("deletion", "insertion") for o in ("relevance", "random")
    }
    assert len(curves) == 6 * 4 * 5
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    verdicts = summary[summary["passes"].notna()]
    assert set(verdicts["statistic"]) == {
        "spearman_abs",
        "spearman_signed",
        "deletion_area",
        "insertion_area",
        "map_positions",
    }
    # gradients are voxel-wise: the map's grid is the 16^3 input
    grid = summary[summary["statistic"] == "map_positions"].iloc[0]
    assert grid["layer"] == "16x16x16" and grid["mean"] == 16 and grid["passes"]
    assert (out["map_grid"] == "16x16x16").all()
    assert (summary["ci_low"] <= summary["mean"]).all()
    assert (summary["mean"] <= summary["ci_high"]).all()


def test_stage_compares_maps_only_where_the_model_sees(
    stage: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import brainlens.attribution.checks as checks_mod

    def half_view(model, in_shape):  # the model "sees" x < 8 only
        seen = np.zeros(in_shape[1:], bool)
        seen[:8] = True
        return seen

    masks = []
    real = checks_mod.randomization_curves

    def spy(*args, **kwargs):
        masks.append(kwargs["mask"])
        return real(*args, **kwargs)

    monkeypatch.setattr(checks_mod, "field_of_view_mask", half_view)
    monkeypatch.setattr(checks_mod, "randomization_curves", spy)
    out = _run(stage, tmp_path, settings={"scans_per_class": 1, "cascade": False})
    assert out["field_of_view_brain_share"].tolist() == [0.5, 0.5]  # x 2..7 of 2..13
    expected = np.zeros((SIDE,) * 3, bool)
    expected[2:8, 2:14, 2:14] = True
    assert all(np.array_equal(m, expected) for m in masks) and len(masks) == 2


def test_stage_refuses_a_brain_mask_on_another_grid(stage: dict, tmp_path: Path) -> None:
    from brainlens.templates import template_paths

    templates = tmp_path / "templates"
    templates.mkdir()
    mask = template_paths(templates, 2.0)["brain_mask"]
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), AFFINE), str(mask))
    atlas = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((SIDE,) * 3, np.int16), AFFINE), str(atlas))
    with pytest.raises(InputFileError, match=r"shape \(8, 8, 8\), expected the atlas grid"):
        _run(stage, tmp_path, templates_dir=templates, atlas_nii=atlas)
    assert not (tmp_path / "sanity.tsv").exists()


def test_stage_scores_the_planted_region(stage: dict, tmp_path: Path) -> None:
    atlas = np.zeros((SIDE,) * 3, np.int16)
    atlas[:8, :8] = 1
    atlas[8:, :8] = 2
    atlas[:, 8:] = 3
    nib.save(nib.Nifti1Image(atlas, AFFINE), str(tmp_path / "atlas.nii.gz"))
    (tmp_path / "gt.json").write_text(json.dumps({"label": 1, "positive_class": "patient"}))
    out = _run(
        stage,
        tmp_path,
        atlas_nii=tmp_path / "atlas.nii.gz",
        ground_truth=tmp_path / "gt.json",
        settings={"scans_per_class": 1, "cascade": False, "independent": False},
    )
    assert out["gt_rank"].between(1, 3).all()


def test_region_attribution_is_rebuilt_identically(stage: dict) -> None:
    """The stage recomputes the reference map: for gradients it equals the saved map."""
    from brainlens.attribution.fold import load_volumes
    from brainlens.training import load_trained_model

    model, _ = load_trained_model(stage["models"][0].parent)
    table = pd.read_csv(stage["tables"][0], sep="\t")
    rec = table.iloc[0]
    volume, _ = load_volumes(stage["packs"], [rec["scan_id"]])
    rel = attribute(model, torch.from_numpy(volume), method="gradients", target=int(rec["target"]))
    saved = np.asanyarray(nib.load(rec["path"]).dataobj)
    np.testing.assert_allclose(rel, saved, rtol=1e-4, atol=1e-6)


def test_report_shows_cascade_curves_areas_and_verdicts(stage: dict, tmp_path: Path) -> None:
    from brainlens.report.meaning import meaning_section
    from brainlens.report.plots import FigureWriter

    _run(stage, tmp_path)
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    # a second "method" that fails everything: high correlation, no gain over random order
    bad = summary.copy()
    bad["method"] = "edges"
    is_rand = bad["statistic"].str.startswith("spearman")
    bad.loc[is_rand, ["mean", "ci_low", "ci_high"]] = 0.9
    bad.loc[~is_rand, ["mean", "ci_low", "ci_high"]] = [0.0, -0.1, 0.1]
    bad.loc[bad["passes"].notna(), "passes"] = False
    bad.to_csv(tmp_path / "bad_summary.tsv", sep="\t", index=False)
    key = ("m", "gradients"), ("m", "edges")
    writer = FigureWriter(tmp_path / "figures", tmp_path)
    sec, checks = meaning_section(
        ["m"],
        ["gradients", "edges"],
        {key[0]: tmp_path / "sanity.tsv", key[1]: tmp_path / "sanity.tsv"},
        {key[0]: tmp_path / "deletion.tsv"},
        None,
        writer,
        {key[0]: tmp_path / "summary.tsv", key[1]: tmp_path / "bad_summary.tsv"},
    )
    html = sec.children[0].body
    names = {p.name for p in writer.written}
    assert {"cascade_m.png", "curves_m.png"} <= names, names
    assert "Spearman |map|, full randomisation" in html and "insertion area vs random" in html
    assert "fewer than 10 per class" in html  # 3 per class were checked
    assert checks[key[1]].fails and checks[key[1]].not_faithful
    assert "<code>edges</code>" in html.split("Not faithful:</b>")[1].split("</div>")[0]
    assert checks[key[0]].verdict.per_class == {"control": 3, "patient": 3}


@pytest.mark.parametrize("key", ["scans_per_fold", "max_folds"])
def test_removed_sanity_keys_name_the_new_one(key: str) -> None:
    import yaml

    from brainlens.config import check_config, validate_config

    tests = Path(__file__).parent
    config = yaml.safe_load((tests / "data" / "config_small.yaml").read_text())
    validate_config(config, tests.parent / "workflow" / "schemas" / "config.schema.yaml")
    check_config(config)
    config["attribution"]["sanity"][key] = 1
    with pytest.raises(ConfigError, match=rf"attribution.sanity.{key}: removed.*scans_per_class"):
        check_config(config)


def test_data_randomisation_against_a_random_label_run(stage: dict, tmp_path: Path) -> None:
    from brainlens.folds import read_folds, write_folds
    from brainlens.training import train_fold

    # the same folds, labels shuffled within each part (what folds.random_labels does)
    folds = read_folds(stage["folds"])
    scans = folds[folds["fold"] == 0][["participant_id", "session_id", "label"]]
    shuffled = tmp_path / "folds.tsv"
    write_folds(scans, shuffled, mode="kfold", n_folds=3, val_fraction=0.25, seed=1,
                random_labels=True)  # fmt: skip
    models = []
    for fold in (0, 1):
        d = tmp_path / f"rl-{fold}"
        train_fold(
            packs={"gm": stage["packs"][0]},
            folds_tsv=shuffled,
            fold=fold,
            out_dir=d,
            model="eitel_baseline_3d",
            epochs=1,
            batch_size=4,
            lr=1e-3,
            seed=2,
            progress=False,
            device="cpu",
        )
        models.append(d / "model.pt")
    settings = {"scans_per_class": 1, "cascade": False, "bootstrap": 50, "deletion_steps": 2}
    out = _run(stage, tmp_path, settings=settings, random_label_models=models)
    assert out["spearman_abs_random_labels"].between(-1, 1).all()
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    rows = summary[summary["statistic"].str.endswith("_random_labels")]
    assert len(rows) == 2 and rows["passes"].notna().all()
    from brainlens.report.sanity import read_verdict, verdict_table

    verdict = read_verdict(summary, out)
    assert isinstance(verdict.data_randomization, bool)
    assert "data randomisation" in verdict_table({"gradients": verdict})
    # the real run's own models are refused as a "random-label run"
    with pytest.raises(InputFileError, match="not trained with random labels"):
        _run(stage, tmp_path, settings=settings, random_label_models=stage["models"])


# ----------------------------------------------------------------------------- map grid


class StridedNet(nn.Module):
    """Two stride-2 valid convolutions: a 12^3 input gives a 5^3 then a 2^3 layer grid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 2, 3, stride=2)
        self.conv2 = nn.Conv3d(2, 2, 3, stride=2)
        self.fc = nn.Linear(2 * 8, 2)
        self.cam_layer = self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


@pytest.mark.parametrize(
    ("method", "options", "grid"),
    [
        ("gradcam", {}, (2, 2, 2)),
        ("gradcam@c1", {"layer": "conv1"}, (5, 5, 5)),
        ("cam_ng2018", {}, (2, 2, 2)),
        ("occlusion", {"patch": 4, "stride": 4}, (3, 3, 3)),
        ("occlusion", {"patch": 5, "stride": 3}, (4, 4, 4)),  # the last patch is cut
        ("occlusion", {"patch": (12, 4, 4)}, (1, 3, 3)),
        ("gradients", {}, (12, 12, 12)),
    ],
)
def test_map_grid_is_the_grid_the_map_is_computed_on(method, options, grid) -> None:
    from brainlens.attribution.methods import map_grid

    model = StridedNet().eval()
    x = sample(0)
    assert map_grid(model, x, method=method, **options) == grid
    if method == "occlusion":  # captum evaluates one occluded copy per patch position
        from brainlens.attribution import count_forward_passes

        with count_forward_passes(model) as counter:
            attribute(model, x, method=method, target=1, **options)
        # + the target check of attribute() + captum's unoccluded input
        assert counter.samples == 2 + int(np.prod(grid))


def test_a_map_too_coarse_to_localise_is_not_testable(stage: dict, tmp_path: Path) -> None:
    """With more positions required than the 16^3 grid has, the verdict flips from
    passes/fails to "not testable" and the method counts as failing in the report."""
    from brainlens.report.meaning import MethodCheck
    from brainlens.report.sanity import read_verdict, verdict_table

    settings = {"scans_per_class": 3, "bootstrap": 100, "deletion_steps": 4}
    out = _run(stage, tmp_path, settings=settings | {"min_map_positions": 17})
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    row = summary[summary["statistic"] == "map_positions"].iloc[0]
    assert not row["passes"] and row["min_map_positions"] == 17
    verdict = read_verdict(summary, out)
    assert verdict.localizes is False and verdict.map_grid == "16x16x16"
    assert verdict.randomization is None and verdict.interpretable is False
    assert MethodCheck("m", "gradients", verdict=verdict).fails
    html = verdict_table({"gradients": verdict})
    assert "not testable: 16x16x16 grid too coarse" in html and "fewer than 17 positions" in html
    # the same data with the default rule: the grid localises and the verdict stands
    _run(stage, tmp_path)
    ok = read_verdict(pd.read_csv(tmp_path / "summary.tsv", sep="\t"), out)
    assert ok.localizes is True and ok.randomization is not None
    assert MethodCheck("m", "gradients", verdict=ok).fails is (not ok.randomization)
