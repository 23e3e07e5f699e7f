"""In-fold confound removal of the CNN inputs (``confounds.scope: all``).

A tiny two-channel dataset in which age adds an intensity offset to every voxel (more
in one channel than the other) and patients are older than controls and carry a blob.
The fold's residualisation on age is fitted on its training rows
(:func:`brainlens.confounds.inputs.write_input_confounds`) and must reach every sample
the network sees (train, val, test), the attribution stage and the baselines.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import brainlens.attribution.fold as fold_module
import brainlens.training.plan as plan_module
from brainlens.attribution.baselines import read_baseline, write_fold_baseline
from brainlens.attribution.fold import attribute_fold, load_volumes
from brainlens.confounds.inputs import open_input_confounds, write_input_confounds
from brainlens.errors import InputFileError, LeakageError
from brainlens.folds import write_folds
from brainlens.packing import pack_volumes
from brainlens.training import load_trained_model, train_fold

torch.set_num_threads(1)
SIDE = 16
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
CHANNELS = {"gm_modulated": 0.05, "wm_modulated": 0.02}  # age offset per year and channel
BLOB = (slice(3, 7), slice(6, 10), slice(4, 8))


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cnn_confounds")
    rng = np.random.default_rng(4)
    n = 15
    ids = [f"sub-{i:02d}" for i in range(n)]
    label = np.where(np.arange(n) % 2, "patient", "control")
    age = np.round(62 + 6 * (label == "patient") + rng.normal(0, 5, n), 1)
    packs = {}
    for name, per_year in CHANNELS.items():
        paths = []
        for i, sid in enumerate(ids):
            v = rng.normal(0.5, 0.1, (SIDE,) * 3).astype(np.float32)
            v += per_year * (age[i] - 65)  # the covariate-driven offset, every voxel
            if label[i] == "patient":
                v[BLOB] += 1.0
            paths.append(root / f"{sid}_{name}.nii.gz")
            nib.save(nib.Nifti1Image(v, AFFINE), str(paths[-1]))
        npy, tsv = root / f"{name}.npy", root / f"{name}.tsv"
        pack_volumes(paths, scan_ids=ids, out_npy=npy, out_index=tsv, dtype="float32")
        packs[name] = (npy, tsv)
    table = pd.DataFrame({"participant_id": ids, "diagnosis": label, "age": age})
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    scans = table.rename(columns={"diagnosis": "label"}).assign(session_id="n/a")
    write_folds(
        scans[["participant_id", "session_id", "label"]],
        root / "folds.tsv",
        mode="kfold",
        n_folds=3,
        val_fraction=0.25,
        seed=1,
    )
    spec = {
        "npz": root / "fold-0.npz",
        "json": root / "fold-0.json",
        "participants": root / "participants.tsv",
    }
    write_input_confounds(
        packs=packs,
        folds_tsv=root / "folds.tsv",
        fold=0,
        out_npz=spec["npz"],
        out_json=spec["json"],
        participants_tsv=root / "participants.tsv",
        covariates=["age"],
        method="residualize",
    )
    folds = pd.read_csv(root / "folds.tsv", sep="\t")
    role = folds[folds["fold"] == 0].set_index("participant_id")["role"]
    return {
        "root": root,
        "packs": packs,
        "spec": spec,
        "age": dict(zip(ids, age, strict=True)),
        "role": role,
    }


def _train(stage: dict, out: Path, fold: int = 0, **kw) -> dict:
    root = stage["root"]
    return train_fold(
        packs=stage["packs"],
        folds_tsv=root / "folds.tsv",
        fold=fold,
        out_dir=out,
        model="eitel_baseline_3d",
        epochs=1,
        batch_size=4,
        lr=1e-3,
        seed=3,
        progress=False,
        device="cpu",
        **kw,
    )


@pytest.fixture(scope="module")
def harmonised(stage: dict) -> dict:
    """A model trained with the fold's residualisation, and every dataset it built."""
    built = []

    class Spy(plan_module.PackedDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan_module, "PackedDataset", Spy)
        metrics = _train(stage, stage["root"] / "harmonised", confounds=stage["spec"])
    return {"datasets": built, "metrics": metrics, "model": stage["root"] / "harmonised"}


def _age_slope(x: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """Per channel, the OLS slope of the mean intensity outside the blob on age."""
    outside = np.ones((SIDE,) * 3, bool)
    outside[BLOB] = False
    means = x[:, :, outside].mean(axis=-1)  # (N, C)
    a = ages - ages.mean()
    return (a[:, None] * (means - means.mean(axis=0))).sum(axis=0) / (a**2).sum()


def test_train_fold_harmonises_every_sample_it_sees(stage: dict, harmonised: dict) -> None:
    datasets = harmonised["datasets"]
    seen = [s for d in datasets for s in d.scan_ids]
    assert sorted(set(seen)) == sorted(stage["role"].index)  # train, val and test
    for d in datasets:
        assert d.confounds is not None and d.confounds.fold == 0
        x = d.batch(np.arange(len(d))).numpy()
        raw, _ = load_volumes(list(stage["packs"].values()), d.scan_ids)
        ages = np.array([stage["age"][s] for s in d.scan_ids])
        # the offset of 0.05 (gm) and 0.02 (wm) per year is in the raw maps ...
        np.testing.assert_allclose(_age_slope(raw, ages), list(CHANNELS.values()), atol=0.01)
        # ... and gone from what the network sees, in both channels
        assert np.all(np.abs(_age_slope(x, ages)) < 0.005), _age_slope(x, ages)
        # exactly the fold's transform: x - (age - mean training age) * beta
        params = np.load(stage["spec"]["npz"])
        meta = json.loads(Path(stage["spec"]["json"]).read_text())
        train_age = np.mean([stage["age"][s] for s in meta["fit_scan_ids"]])
        for c, name in enumerate(CHANNELS):
            beta = params[f"{name}__beta"].reshape((SIDE,) * 3)
            want = raw[:, c] - (ages - train_age)[:, None, None, None] * beta
            np.testing.assert_allclose(x[:, c], want, rtol=1e-4, atol=1e-4)
    _, meta = load_trained_model(harmonised["model"])
    assert meta["confounds"]["method"] == "residualize"
    assert harmonised["metrics"]["input_space"] == "harmonised (residualize)"


def test_the_fit_reads_only_training_rows(stage: dict) -> None:
    meta = json.loads(Path(stage["spec"]["json"]).read_text())
    assert meta["features"] == "inputs" and meta["channels"] == list(CHANNELS)
    assert {stage["role"][s] for s in meta["fit_scan_ids"]} == {"train"}
    assert meta["n_fit"] == int((stage["role"] == "train").sum())


def test_the_audit_stops_training_when_a_test_scan_was_fitted(stage: dict, tmp_path) -> None:
    meta = json.loads(Path(stage["spec"]["json"]).read_text())
    test_scan = stage["role"][stage["role"] == "test"].index[0]
    meta["fit_scan_ids"].append(test_scan)
    meta["n_fit"] += 1
    leaky = dict(stage["spec"], json=tmp_path / "leaky.json")
    leaky["json"].write_text(json.dumps(meta))
    with pytest.raises(LeakageError, match=rf"{test_scan} \(test\)"):
        _train(stage, tmp_path / "leaky", confounds=leaky)
    assert not (tmp_path / "leaky" / "history.tsv").exists()  # stopped before any epoch
    with pytest.raises(LeakageError, match="fold 0 used for fold 1"):
        _train(stage, tmp_path / "other", confounds=stage["spec"], fold=1)


def test_baselines_are_means_of_the_harmonised_training_inputs(stage: dict, tmp_path) -> None:
    root, packs = stage["root"], list(stage["packs"].values())
    kw = dict(packs=packs, folds_tsv=root / "folds.tsv", fold=0, kind="train_control_mean")
    raw = write_fold_baseline(
        **kw, control_class="control", out_npy=tmp_path / "r.npy", out_json=tmp_path / "r.json"
    )
    harm = write_fold_baseline(
        **kw,
        control_class="control",
        out_npy=tmp_path / "h.npy",
        out_json=tmp_path / "h.json",
        confounds=stage["spec"],
    )
    # the training controls are younger than the training part: their harmonised mean
    # is their raw mean minus (their mean age - the training mean age) * beta
    meta = json.loads(Path(stage["spec"]["json"]).read_text())
    ages = [stage["age"][s] for s in harm.scan_ids]
    shift = np.mean(ages) - np.mean([stage["age"][s] for s in meta["fit_scan_ids"]])
    assert shift < -1.0
    params = np.load(stage["spec"]["npz"])
    for c, name in enumerate(CHANNELS):
        beta = params[f"{name}__beta"].reshape((SIDE,) * 3)
        np.testing.assert_allclose(harm.array[c], raw.array[c] - shift * beta, atol=1e-4)
    assert np.abs(harm.array - raw.array).max() > 0.05
    side = json.loads((tmp_path / "h.json").read_text())
    assert side["input_space"] == "harmonised" and "input_space" not in json.loads(
        (tmp_path / "r.json").read_text()
    )
    assert read_baseline(tmp_path / "h.npy", tmp_path / "h.json").confounds["sha256"]


def test_attribute_fold_explains_the_harmonised_inputs(
    stage: dict, harmonised: dict, tmp_path, monkeypatch
) -> None:
    root, packs = stage["root"], list(stage["packs"].values())
    seen = []
    real = fold_module.attribute

    def spy(model, x, **kw):
        seen.append((x.detach().numpy().copy(), kw.get("baseline")))
        return real(model, x, **kw)

    monkeypatch.setattr(fold_module, "attribute", spy)
    base = dict(packs=packs, folds_tsv=root / "folds.tsv", fold=0, kind="train_mean")
    write_fold_baseline(**base, out_npy=tmp_path / "h.npy", out_json=tmp_path / "h.json",
                        confounds=stage["spec"])  # fmt: skip
    write_fold_baseline(**base, out_npy=tmp_path / "r.npy", out_json=tmp_path / "r.json")
    kw = dict(
        model_path=harmonised["model"] / "model.pt",
        packs=packs,
        folds_tsv=root / "folds.tsv",
        fold=0,
        method="integrated_gradients",
        options={"n_steps": 2},
        atlas_nii=None,
        seed=0,
    )
    table = attribute_fold(
        **kw,
        out_dir=tmp_path / "maps",
        out_table=tmp_path / "t.tsv",
        baseline_npy=tmp_path / "h.npy",
        baseline_json=tmp_path / "h.json",
    )
    ids = list(table["scan_id"])
    ic = open_input_confounds(stage["spec"], folds_tsv=root / "folds.tsv", fold=0)
    raw, _ = load_volumes(packs, ids)
    want = ic.apply_many(raw, ids)
    got = np.concatenate([x for x, _ in seen])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(got - raw).max() > 0.1
    np.testing.assert_allclose(seen[0][1].numpy()[0], np.load(tmp_path / "h.npy"), atol=1e-6)
    assert set(table["input_space"]) == {"harmonised (residualize)"}
    note = json.loads((tmp_path / "maps" / "input_space.json").read_text())
    assert "harmonised input" in note["note"]
    # a baseline of raw inputs for a harmonised model is refused
    with pytest.raises(InputFileError, match="raw inputs"):
        attribute_fold(
            **kw,
            out_dir=tmp_path / "m2",
            out_table=tmp_path / "t2.tsv",
            baseline_npy=tmp_path / "r.npy",
            baseline_json=tmp_path / "r.json",
        )


def test_without_confounds_train_fold_is_unchanged(stage: dict, tmp_path) -> None:
    """confounds=None is the raw path: same model, predictions and metrics as no keyword."""
    a = _train(stage, tmp_path / "a")
    b = _train(stage, tmp_path / "b", confounds=None)
    drop = {"seconds"}
    assert {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }
    assert "input_space" not in a
    wa, ma = load_trained_model(tmp_path / "a")
    wb, mb = load_trained_model(tmp_path / "b")
    for (ka, va), (kb, vb) in zip(wa.state_dict().items(), wb.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert "confounds" not in ma and ma == mb
    pa = pd.read_csv(tmp_path / "a" / "predictions.tsv", sep="\t")
    pd.testing.assert_frame_equal(pa, pd.read_csv(tmp_path / "b" / "predictions.tsv", sep="\t"))


@pytest.mark.workflow
def test_dry_run_fits_the_cnn_inputs_before_training_and_attribution(tmp_path: Path) -> None:
    import yaml
    from conftest import SMALL_CONFIG, planned_jobs, snakemake

    config = yaml.safe_load(SMALL_CONFIG.read_text())
    config |= {"covariates": ["age"], "confounds": {"method": "residualize", "scope": "all"}}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    out = snakemake(tmp_path, "-n", "--cores", "1", configfile=configfile).stdout
    jobs = planned_jobs(out)
    n_folds = jobs["train_model"]
    # inputs for the CNN, voxels and regions for the linear baselines
    assert jobs["fit_confounds"] == 3 * n_folds, jobs
    assert jobs["attribution_baseline_harmonised"] == n_folds, jobs
    assert "attribution_baseline" not in jobs, jobs
    blocks = out.split("\n\n")
    for rule in ("train_model", "attribute", "sanity_checks"):
        mine = [b for b in blocks if f"rule {rule}:" in b or f"localrule {rule}:" in b]
        assert mine, rule
        assert all("results/confounds/inputs/fold-" in b for b in mine), (rule, mine[0])
    attribute = [b for b in blocks if "rule attribute:" in b]
    assert any("results/attribution/baselines/harmonised/fold-" in b for b in attribute)


def test_report_says_maps_are_relevance_for_the_harmonised_input(tmp_path: Path) -> None:
    from brainlens.report.attribution import _explained

    row = {"target_class": ["a"], "label": ["a"], "baseline": ["train_mean"]}
    pd.DataFrame(row).to_csv(tmp_path / "raw.tsv", sep="\t", index=False)
    harm = row | {"input_space": ["harmonised (residualize)"]}
    pd.DataFrame(harm).to_csv(tmp_path / "harm.tsv", sep="\t", index=False)
    assert "harmonised input" in _explained({0: tmp_path / "harm.tsv"})
    assert "harmonised" not in _explained({0: tmp_path / "raw.tsv"})
