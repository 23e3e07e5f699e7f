"""Tests of brainlens.training: one fold end to end on a tiny learnable toy task (CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import brainlens.training.plan as plan_module
import brainlens.training.restart as restart_module
from brainlens.errors import ConfigError, ModelError
from brainlens.folds import write_folds
from brainlens.packing import pack_volumes
from brainlens.training import (
    TrainingInterrupted,
    load_trained_model,
    make_augmenter,
    make_early_stopping,
    select_restart,
    train_fold,
)
from brainlens.training.dataset import PackedDataset
from brainlens.training.loop import EarlyStopping, recalibrate_batchnorm

torch.set_num_threads(1)
SIDE = 8


class Tiny(nn.Module):
    """Conv -> ReLU -> dropout -> global average pool -> linear (logits)."""

    def __init__(self, *, in_shape, n_classes, width=4, dropout=0.2):
        super().__init__()
        self.conv = nn.Conv3d(in_shape[0], width, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, n_classes)
        self.cam_layer = self.conv

    def forward(self, x):
        h = self.drop(torch.relu(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3, 4)))


def tiny_factory(name, *, in_shape, n_classes, **options):
    assert name == "tiny"
    return Tiny(in_shape=in_shape, n_classes=n_classes, **options)


def make_data(root, n_subjects=24, seed=0, sessions=False):
    """Class 'patient' has a bright 3x3x3 blob near one corner; controls do not."""
    rng = np.random.default_rng(seed)
    rows, paths, ids = [], [], []
    vol_dir = root / "vols"
    vol_dir.mkdir(parents=True)
    for i in range(n_subjects):
        label = "patient" if i % 2 else "control"
        for s in range(2 if (sessions and i % 3 == 0) else 1):
            v = rng.normal(0, 0.3, (SIDE,) * 3).astype(np.float32)
            if label == "patient":
                v[1:4, 1:4, 1:4] += 2.0
            pid, ses = f"sub-{i:02d}", (f"ses-{s + 1}" if sessions else "n/a")
            sid = pid if ses == "n/a" else f"{pid}_{ses}"
            p = vol_dir / f"{sid}.nii"
            nib.save(nib.Nifti1Image(v, np.eye(4)), p)
            rows.append({"participant_id": pid, "session_id": ses, "label": label})
            paths.append(p)
            ids.append(sid)
    pack_volumes(paths, scan_ids=ids, out_npy=root / "gm.npy", out_index=root / "gm.tsv")
    scans = pd.DataFrame(rows)
    return scans, {"gm": (root / "gm.npy", root / "gm.tsv")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    scans, packs = make_data(root, sessions=True)
    folds_tsv = root / "folds.tsv"
    write_folds(scans, folds_tsv, mode="kfold", n_folds=3, val_fraction=0.25, seed=1)
    return scans, packs, folds_tsv


def run(data, out, **kw):
    scans, packs, folds_tsv = data
    opts = dict(
        packs=packs,
        folds_tsv=folds_tsv,
        fold=0,
        out_dir=out,
        model="tiny",
        model_options={"width": 4},
        epochs=4,
        batch_size=4,
        lr=0.02,
        seed=123,
        progress=False,
        model_factory=tiny_factory,
        device="cpu",
    )
    opts.update(kw)
    return train_fold(**opts)


def test_outputs_and_reload(data, tmp_path):
    m = run(data, tmp_path / "f0", augmentation={"flip_axes": ["y"], "shift_voxels": 1})
    out = tmp_path / "f0"
    for name in [
        "model.pt",
        "checkpoint.pt",
        "history.tsv",
        "learning_curve.png",
        "predictions.tsv",
        "metrics.json",
    ]:
        assert (out / name).is_file(), name
    hist = pd.read_csv(out / "history.tsv", sep="\t")
    assert list(hist.columns) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_balanced_accuracy",
        "val_roc_auc",
        "lr",
        "seconds",
    ]
    assert list(hist["epoch"]) == [1, 2, 3, 4]
    pred = pd.read_csv(out / "predictions.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(pred.columns) == [
        "scan_id",
        "participant_id",
        "session_id",
        "label",
        "pred",
        "prob_control",
        "prob_patient",
    ]
    folds = pd.read_csv(data[2], sep="\t", dtype=str, keep_default_na=False)
    test = folds[(folds.fold == "0") & (folds.role == "test")]
    assert len(pred) == len(test) == m["n_test"]
    assert set(pred["participant_id"]) == set(test["participant_id"])
    assert (
        json.loads((out / "metrics.json").read_text())["balanced_accuracy"]
        == m["balanced_accuracy"]
    )
    assert m["best_epoch"] == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    net, meta = load_trained_model(out, model_factory=tiny_factory)
    assert meta["class_names"] == ["control", "patient"] and meta["in_shape"] == [
        1,
        SIDE,
        SIDE,
        SIDE,
    ]
    assert meta["inputs"] == ["gm"] and meta["best_epoch"] == m["best_epoch"]
    assert not net.training
    x = torch.from_numpy(np.load(data[1]["gm"][0])[:2].astype(np.float32))[:, None]
    assert torch.isfinite(net(x)).all()


def test_resume_after_kill_gives_same_result(data, tmp_path):
    full = run(data, tmp_path / "full", epochs=5)
    with pytest.raises(TrainingInterrupted):
        run(data, tmp_path / "killed", epochs=5, stop_after_epoch=2)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    ckpt = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    resumed = run(data, tmp_path / "killed", epochs=5)
    assert resumed == full
    _assert_history_continued(tmp_path / "killed", ckpt["history"])
    h_full = pd.read_csv(tmp_path / "full" / "history.tsv", sep="\t").drop(columns="seconds")
    h_res = pd.read_csv(tmp_path / "killed" / "history.tsv", sep="\t").drop(columns="seconds")
    pd.testing.assert_frame_equal(h_full, h_res)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_history_and_a_log_line_after_every_epoch(data, tmp_path, caplog):
    """Progress is visible while training: history.tsv so far, one INFO line per epoch."""
    out = tmp_path / "killed"
    with caplog.at_level("INFO", logger="brainlens.training"):
        with pytest.raises(TrainingInterrupted):
            run(data, out, epochs=5, stop_after_epoch=3)
    hist = pd.read_csv(out / "history.tsv", sep="\t")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert list(hist["epoch"]) == [1, 2, 3]
    assert np.allclose(hist["val_loss"], [h["val_loss"] for h in ckpt["history"]], rtol=1e-5)
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == [
        f"fold 0 restart 0 epoch {e}/5" for e in (1, 2, 3)
    ]
    best = ckpt["early_stopping"]["best_epoch"]
    assert "* best so far" in lines[best - 1]
    assert f"val_loss {hist['val_loss'][2]:.4g}" in lines[2]
    # resumed to the end, history.tsv is the whole run's, as in an uninterrupted one
    assert run(data, out, epochs=5)["epochs_run"] == 5
    assert list(pd.read_csv(out / "history.tsv", sep="\t")["epoch"]) == [1, 2, 3, 4, 5]


def test_resume_refuses_other_settings(data, tmp_path):
    with pytest.raises(TrainingInterrupted):
        run(data, tmp_path / "x", stop_after_epoch=1)
    with pytest.raises(ConfigError, match="other settings"):
        run(data, tmp_path / "x", lr=0.5)
    run(data, tmp_path / "x", lr=0.5, resume=False)


def test_resume_refuses_a_checkpoint_of_another_architecture(data, tmp_path):
    """Same config, but the model's default changed (e.g. after an upgrade)."""

    def wider(name, *, in_shape, n_classes, width=4, **options):
        return tiny_factory(name, in_shape=in_shape, n_classes=n_classes, width=6, **options)

    with pytest.raises(TrainingInterrupted):
        run(data, tmp_path / "x", stop_after_epoch=1, model_options={})
    with pytest.raises(ConfigError, match="other settings"):
        run(data, tmp_path / "x", model_options={}, model_factory=wider)


def test_stale_checkpoint_restarts_when_asked(data, tmp_path):
    with pytest.raises(TrainingInterrupted):
        run(data, tmp_path / "x", stop_after_epoch=1)
    fresh = run(data, tmp_path / "fresh", lr=0.5)
    restarted = run(data, tmp_path / "x", lr=0.5, on_stale_checkpoint="restart")
    assert restarted == fresh


def test_a_checkpoint_of_other_input_maps_is_not_resumed(data, tmp_path):
    """Same settings and scans, other maps (the preprocessing re-ran): train afresh."""
    import shutil

    scans, packs, folds_tsv = data
    npy, tsv = packs["gm"]
    copy = {"gm": (tmp_path / "gm.npy", tmp_path / "gm.tsv")}
    shutil.copyfile(npy, copy["gm"][0])
    shutil.copyfile(tsv, copy["gm"][1])
    shutil.copyfile(Path(npy).with_suffix(".json"), tmp_path / "gm.json")
    mine = (scans, copy, folds_tsv)
    first = run(mine, tmp_path / "x")
    assert run(mine, tmp_path / "x") == first  # unchanged maps: the finished run resumes
    arr = np.load(copy["gm"][0], mmap_mode="r+")
    arr[:] = arr[:, ::-1]  # new maps for the same scans
    arr.flush()
    del arr
    with pytest.raises(ConfigError, match="other input maps"):
        run(mine, tmp_path / "x")
    fresh = run(mine, tmp_path / "fresh")
    assert fresh != first
    assert run(mine, tmp_path / "x", on_stale_checkpoint="restart") == fresh


class TinyBN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> dropout -> global average pool -> linear."""

    def __init__(self, *, in_shape, n_classes, width=3):
        super().__init__()
        self.conv = nn.Conv3d(in_shape[0], width, 3, padding=1)
        self.bn = nn.BatchNorm3d(width)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("batch_size", [24, 5])
def test_recalibrate_batchnorm_uses_the_training_part(data, batch_size):
    _, packs, _ = data
    ids = pd.read_csv(packs["gm"][1], sep="\t")["scan_id"].tolist()
    ds = PackedDataset(packs, ids)
    net = TinyBN(in_shape=(1, SIDE, SIDE, SIDE), n_classes=2)
    net.bn.running_mean.fill_(5.0)  # stale statistics, far from the data's
    net.bn.running_var.fill_(9.0)
    net.train(False)
    assert recalibrate_batchnorm(net, ds, batch_size=batch_size, amp=False) == 1
    with torch.no_grad():
        batches = [net.conv(ds.batch(i)) for i in torch.arange(len(ds)).split(batch_size)]
    if batch_size >= len(ds):  # one batch: the exact mean and unbiased variance
        h = batches[0].transpose(0, 1).reshape(3, -1)
        want_mean, want_var = h.mean(1), h.var(1, unbiased=True)
    else:  # each batch's statistics weigh equally (cumulative average)
        hs = [b.transpose(0, 1).reshape(3, -1) for b in batches]
        want_mean = torch.stack([h.mean(1) for h in hs]).mean(0)
        want_var = torch.stack([h.var(1, unbiased=True) for h in hs]).mean(0)
    torch.testing.assert_close(net.bn.running_mean, want_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net.bn.running_var, want_var, rtol=1e-4, atol=1e-5)
    # the model's mode and the layer's momentum are as before
    assert not net.training and not net.bn.training and net.bn.momentum == 0.1


def test_recalibrate_batchnorm_without_batchnorm_changes_nothing(data):
    _, packs, _ = data
    ids = pd.read_csv(packs["gm"][1], sep="\t")["scan_id"].tolist()
    net = Tiny(in_shape=(1, SIDE, SIDE, SIDE), n_classes=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, PackedDataset(packs, ids), batch_size=4, amp=False) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_precise_bn_changes_training_and_is_part_of_the_checkpoint(data, tmp_path):
    def bn_factory(name, *, in_shape, n_classes, **options):
        return TinyBN(in_shape=in_shape, n_classes=n_classes)

    kw = dict(model_factory=bn_factory, model_options={}, epochs=3)
    plain = run(data, tmp_path / "plain", **kw)
    precise = run(data, tmp_path / "precise", precise_bn=True, **kw)
    assert precise == run(data, tmp_path / "again", precise_bn=True, **kw)  # deterministic
    hp, hq = (pd.read_csv(tmp_path / d / "history.tsv", sep="\t") for d in ("plain", "precise"))
    assert np.allclose(hp["train_loss"].iloc[0], hq["train_loss"].iloc[0])  # same first epoch
    assert not np.allclose(hp["val_loss"], hq["val_loss"])  # other statistics at validation
    assert plain != precise
    with pytest.raises(TrainingInterrupted):
        run(data, tmp_path / "x", stop_after_epoch=1, **kw)
    with pytest.raises(ConfigError, match="other settings"):
        run(data, tmp_path / "x", precise_bn=True, **kw)


def test_same_seed_same_result_other_seed_differs(data, tmp_path):
    a = run(data, tmp_path / "a", epochs=2)
    b = run(data, tmp_path / "b", epochs=2)
    run(data, tmp_path / "c", epochs=2, seed=124)
    assert a == b
    ha, hc = (pd.read_csv(tmp_path / d / "history.tsv", sep="\t") for d in "ac")
    assert not np.allclose(ha["train_loss"], hc["train_loss"])


def test_test_part_is_read_only_after_model_is_fixed(data, tmp_path, monkeypatch):
    events = []
    # every dataset (train, val, test) is built by FoldPlan.dataset; fit runs per restart
    real_dataset, real_fit = plan_module.PackedDataset, restart_module.fit

    def spy_dataset(packs, scan_ids, *a, **k):
        events.append(("dataset", frozenset(scan_ids)))
        return real_dataset(packs, scan_ids, *a, **k)

    def spy_fit(model, train, val, **k):
        events.append(("fit", None))
        real_fit(model, train, val, **k)
        events.append(("fit done", None))

    monkeypatch.setattr(plan_module, "PackedDataset", spy_dataset)
    monkeypatch.setattr(restart_module, "fit", spy_fit)
    run(data, tmp_path / "spy", epochs=2)
    folds = pd.read_csv(data[2], sep="\t", dtype=str, keep_default_na=False)
    f0 = folds[folds.fold == "0"]
    test_ids = {
        p if s == "n/a" else f"{p}_{s}"
        for p, s in f0.loc[f0.role == "test", ["participant_id", "session_id"]].itertuples(
            index=False
        )
    }
    done = [e[0] for e in events].index("fit done")
    before = set().union(*[e[1] for e in events[:done] if e[0] == "dataset"])
    after = [e[1] for e in events[done:] if e[0] == "dataset"]
    assert not before & test_ids  # the test part did not exist during fitting
    assert after == [frozenset(test_ids)]


def test_test_labels_do_not_change_selection(data, tmp_path):
    scans, packs, folds_tsv = data
    folds = pd.read_csv(folds_tsv, sep="\t", dtype=str, keep_default_na=False)
    flipped = folds.copy()
    test = (flipped.fold == "0") & (flipped.role == "test")
    flipped.loc[test, "label"] = flipped.loc[test, "label"].map(
        {"control": "patient", "patient": "control"}
    )
    other = tmp_path / "flipped.tsv"
    flipped.to_csv(other, sep="\t", index=False)
    a = run(data, tmp_path / "a", epochs=3)
    b = run((scans, packs, other), tmp_path / "b", epochs=3)
    ha = pd.read_csv(tmp_path / "a" / "history.tsv", sep="\t").drop(columns="seconds")
    hb = pd.read_csv(tmp_path / "b" / "history.tsv", sep="\t").drop(columns="seconds")
    pd.testing.assert_frame_equal(ha, hb)
    assert a["best_epoch"] == b["best_epoch"]
    assert a["balanced_accuracy"] == pytest.approx(1 - b["balanced_accuracy"])


def test_random_labels_give_chance_and_true_labels_learn(tmp_path):
    scans, packs = make_data(tmp_path, n_subjects=40, seed=3)
    results = {}
    for random_labels in (False, True):
        folds_tsv = tmp_path / f"folds_{random_labels}.tsv"
        write_folds(
            scans,
            folds_tsv,
            mode="kfold",
            n_folds=4,
            val_fraction=0.2,
            seed=5,
            random_labels=random_labels,
        )
        bacc = []
        for k in range(4):
            m = run(
                (scans, packs, folds_tsv),
                tmp_path / f"{random_labels}_{k}",
                fold=k,
                epochs=8,
                lr=0.05,
                model_options={"width": 4, "dropout": 0.0},
            )
            assert m["random_labels"] is random_labels
            bacc.append(m["balanced_accuracy"])
        results[random_labels] = float(np.mean(bacc))
    assert results[False] >= 0.85, results
    assert abs(results[True] - 0.5) <= 0.2, results


def test_early_stopping_patience(data, tmp_path):
    m = run(
        data,
        tmp_path / "es",
        epochs=6,
        early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 1e9},
    )
    assert m["stopped_early"] and m["epochs_run"] == 2 and m["best_epoch"] == 1


def test_early_stopping_start_epoch(data, tmp_path):
    # min_delta so large that nothing after the first eligible epoch improves:
    # epoch 3 is selected, patience counts from there, epochs 1-2 are never chosen
    m = run(
        data,
        tmp_path / "es3",
        epochs=8,
        early_stopping={"monitor": "val_loss", "patience": 2, "min_delta": 1e9, "start_epoch": 3},
    )
    assert m["best_epoch"] == 3 and m["stopped_early"] and m["epochs_run"] == 5


def test_early_stopping_start_epoch_after_last_epoch(data, tmp_path):
    with pytest.raises(ConfigError, match="start_epoch=5 is after the last epoch"):
        run(data, tmp_path / "late", epochs=4, early_stopping={"start_epoch": 5})
    assert not (tmp_path / "late" / "checkpoint.pt").exists()


@pytest.mark.parametrize("class_weights", [True, "sampler"])
def test_class_weight_modes_run(data, tmp_path, class_weights):
    m = run(data, tmp_path / "cw", epochs=1, class_weights=class_weights)
    assert m["n_train"] > 0 and 0 <= m["accuracy"] <= 1


@pytest.mark.parametrize(
    "aug, lateralized, error",
    [
        ({"flip_axes": ["x"]}, True, "lateralized"),
        ({"flip_axes": [0, 2]}, True, "lateralized"),
        ({"flip_axes": [0]}, False, None),
        ({"flip_axes": ["y", 2], "shift_voxels": 2}, True, None),
        ({"shift_voxels": {"z": 1}}, True, None),
        ({"flip_axes": ["q"]}, False, "unknown axis"),
        ({"flip_axes": [3]}, False, "unknown axis"),
        ({"flip_axes": "x"}, False, "list of axes"),
        ({"flip_axes": ["y"], "flip_prob": 1.5}, False, r"\[0, 1\]"),
        ({"shift_voxels": -1}, False, ">= 0"),
        ({"shift_voxels": {"w": 1}}, False, "unknown axis"),
        ({"rotate": 10}, False, "unknown key"),
    ],
)
def test_augmentation_config(aug, lateralized, error):
    if error:
        with pytest.raises(ConfigError, match=error):
            make_augmenter(aug, lateralized=lateralized)
    else:
        assert make_augmenter(aug, lateralized=lateralized) is not None


def test_lateralized_flip_refused_by_train_fold(data, tmp_path):
    with pytest.raises(ConfigError, match="lateralized"):
        run(data, tmp_path / "lat", augmentation={"flip_axes": ["x"]}, lateralized=True)
    assert not (tmp_path / "lat" / "checkpoint.pt").exists()


def test_augmenter_flips_and_shifts():
    x = torch.arange(2 * 1 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4, 4)
    flip_all = make_augmenter({"flip_axes": [0], "flip_prob": 1.0}, lateralized=False)
    assert torch.equal(flip_all(x, torch.Generator().manual_seed(0)), x.flip(2))
    shift = make_augmenter({"shift_voxels": {"y": 1}}, lateralized=False)
    y = shift(x, torch.Generator().manual_seed(0))
    for i in range(2):
        same = torch.equal(y[i], x[i])
        up = torch.equal(y[i, :, :, 1:], x[i, :, :, :-1]) and (y[i, :, :, 0] == 0).all()
        down = torch.equal(y[i, :, :, :-1], x[i, :, :, 1:]) and (y[i, :, :, -1] == 0).all()
        assert same or up or down
    a = shift(x, torch.Generator().manual_seed(7))
    b = shift(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "cfg, error",
    [
        ({"monitor": "test_loss"}, "validation part only"),
        ({"patience": 0}, "patience"),
        ({"min_delta": -1}, "min_delta"),
        ({"mode": "up"}, "mode"),
        ({"wait": 3}, "unknown key"),
        ({"start_epoch": 0}, "start_epoch"),
        ({"start_epoch": 2.5}, "start_epoch"),
    ],
)
def test_early_stopping_config_errors(cfg, error):
    with pytest.raises(ConfigError, match=error):
        make_early_stopping(cfg)


@pytest.mark.parametrize(
    "kw, error",
    [
        (dict(optimizer="sgd"), "optimizer"),
        (dict(class_weights="balanced"), "class_weights"),
        (dict(epochs=0), "epochs"),
        (dict(fold=7), "fold=7"),
        (dict(class_names=["control"]), "class_names"),
        (dict(restarts=0), "train.restarts"),
        (dict(restarts=1.5), "train.restarts"),
        (dict(restarts=True), "train.restarts"),
    ],
)
def test_train_fold_config_errors(data, tmp_path, kw, error):
    with pytest.raises(ConfigError, match=error):
        run(data, tmp_path / "bad", **kw)


@pytest.fixture(scope="module")
def grid16(tmp_path_factory):
    """12 random 16^3 volumes (registry models need >= 16 voxels per axis), a holdout split."""
    root = tmp_path_factory.mktemp("g16")
    rng = np.random.default_rng(0)
    paths, ids, rows = [], [], []
    for i in range(12):
        p = root / f"s{i}.nii"
        nib.save(nib.Nifti1Image(rng.normal(size=(16, 16, 16)).astype(np.float32), np.eye(4)), p)
        paths.append(p)
        ids.append(f"sub-{i:02d}")
        rows.append({"participant_id": ids[-1], "label": "ab"[i % 2]})
    pack_volumes(paths, scan_ids=ids, out_npy=root / "g.npy", out_index=root / "g.tsv")
    write_folds(
        pd.DataFrame(rows),
        root / "folds.tsv",
        mode="holdout",
        val_fraction=0.25,
        test_fraction=0.25,
        seed=0,
    )
    return {"gm": (root / "g.npy", root / "g.tsv")}, root / "folds.tsv"


@pytest.mark.parametrize(
    "name, options, transform, x_shape",
    [
        ("eitel_baseline_3d", {}, None, (1, 1, 16, 16, 16)),
        ("rao_2d", {}, None, (1, 1, 16, 16)),  # registry default: one coronal slice
        ("rao_2d", {}, {"name": "avg_pool", "axis": "z"}, (1, 1, 16, 16)),
    ],
)
def test_registry_models_train(grid16, tmp_path, name, options, transform, x_shape):
    """The default factory (brainlens.models) and transforms, one epoch on 16^3."""
    packs, folds_tsv = grid16
    m = train_fold(
        packs=packs,
        folds_tsv=folds_tsv,
        fold=0,
        out_dir=tmp_path / "out",
        model=name,
        model_options=options,
        epochs=1,
        batch_size=2,
        lr=1e-3,
        seed=1,
        transform=transform,
        progress=False,
    )
    assert m["n_test"] == 3
    net, meta = load_trained_model(tmp_path / "out")
    assert meta["model"] == name and meta["in_shape"] == list(x_shape[1:])
    assert (meta["transform"] is None) == (name.endswith("3d"))
    assert net(torch.zeros(x_shape)).shape == (1, 2)


CHILD = """
import sys, time, torch
from torch import nn
from brainlens.training import train_fold
torch.set_num_threads(1)

class Tiny(nn.Module):  # same layers as the test's Tiny, but slow, so it can be killed
    def __init__(self, *, in_shape, n_classes, width=4, dropout=0.2):
        super().__init__()
        self.conv = nn.Conv3d(in_shape[0], width, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, n_classes)
        self.cam_layer = self.conv
    def forward(self, x):
        time.sleep(0.05)
        return self.fc(self.drop(torch.relu(self.conv(x))).mean(dim=(2, 3, 4)))

npy, tsv, folds, out = sys.argv[1:5]
train_fold(packs={"gm": (npy, tsv)}, folds_tsv=folds, fold=0, out_dir=out, model="tiny",
           model_options={"width": 4}, epochs=6, batch_size=4, lr=0.02, seed=123, progress=False,
           device="cpu", model_factory=lambda n, **k: Tiny(**k))
"""


@pytest.mark.slow
def test_sigkilled_process_resumes_to_same_result(data, tmp_path):
    import subprocess
    import sys
    import time

    scans, packs, folds_tsv = data
    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, packs["gm"]), str(folds_tsv), str(out)],
        stderr=subprocess.PIPE,
    )
    ckpt = out / "checkpoint.pt"
    deadline = time.monotonic() + 600  # a deadline, not a timing: the machine may be busy
    try:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                pytest.fail(f"child ended before the kill: {child.stderr.read().decode()[-2000:]}")
            if ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] >= 2:
                break
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint after 600 s")
    finally:
        child.kill()
        child.wait()
    assert not (out / "metrics.json").exists()
    saved = torch.load(ckpt, weights_only=True)
    assert 2 <= saved["epoch"] < 6
    resumed = run(data, out, epochs=6)
    full = run(data, tmp_path / "full", epochs=6)
    assert resumed == full
    _assert_history_continued(out, saved["history"])


def _assert_history_continued(out, saved_history):
    """The epochs done before the kill were taken over from the checkpoint, not re-run."""
    hist = pd.read_csv(out / "history.tsv", sep="\t")
    before = [h["seconds"] for h in saved_history]
    assert np.allclose(hist["seconds"][: len(before)], before, rtol=1e-5)


def test_several_inputs_become_channels(data, tmp_path):
    scans, packs, folds_tsv = data
    two = {"gm": packs["gm"], "t1w": packs["gm"]}
    run((scans, two, folds_tsv), tmp_path / "two", epochs=1)
    net, meta = load_trained_model(tmp_path / "two", model_factory=tiny_factory)
    assert meta["inputs"] == ["gm", "t1w"] and meta["in_shape"][0] == 2
    assert net.conv.in_channels == 2


def _restart(restart, best, mode="min"):
    stopper = EarlyStopping(monitor="val_loss" if mode == "min" else "val_roc_auc", mode=mode)
    stopper.best = best
    return SimpleNamespace(restart=restart, stopper=stopper)


@pytest.mark.parametrize(
    "bests, mode, chosen",
    [
        ([0.9, 0.2, 0.5], "min", 1),  # lowest validation loss
        ([0.6, 0.9, 0.7], "max", 1),  # highest validation AUC
        ([0.3, 0.3, 0.1], "min", 2),
        ([0.4, 0.4], "min", 0),  # a tie goes to the earliest restart
        ([0.7], "max", 0),
    ],
)
def test_select_restart_reads_the_best_validation_value(bests, mode, chosen):
    runs = [_restart(r, b, mode) for r, b in enumerate(bests)]
    assert select_restart(runs).restart == chosen


def test_select_restart_needs_a_run():
    with pytest.raises(ModelError, match="no finished restart"):
        select_restart([])


def test_restarts_keep_the_best_validation_run(data, tmp_path):
    single = run(data, tmp_path / "one", epochs=3)
    multi = run(data, tmp_path / "three", epochs=3, restarts=3, lr=0.02)
    table = pd.read_csv(tmp_path / "three" / "restarts.tsv", sep="\t")
    assert list(table["restart"]) == [0, 1, 2]
    assert table["selected"].sum() == 1
    best = table.loc[table["best_val_loss"].idxmin()]
    assert bool(best["selected"]) and multi["restart"] == best["restart"]
    assert multi["restarts"] == 3
    # restart 0 is the single run: same selected value, own checkpoint name
    assert table.loc[0, "best_val_loss"] == pytest.approx(single["best_val"])
    for r in (1, 2):
        assert (tmp_path / "three" / f"checkpoint-restart{r}.pt").is_file()
    # the restarts really differ (other initialisation and sample order)
    assert table["best_val_loss"].nunique() == 3
    meta = torch.load(tmp_path / "three" / "model.pt", weights_only=True)["metadata"]
    assert meta["restart"] == multi["restart"] and meta["restarts"] == 3
    # history.tsv is the kept restart's: its best value is the selected one
    hist = pd.read_csv(tmp_path / "three" / "history.tsv", sep="\t")
    assert hist["val_loss"].min() == pytest.approx(best["best_val_loss"], rel=1e-5)


def test_restarts_resume_after_a_kill_in_a_later_restart(data, tmp_path):
    full = run(data, tmp_path / "full", epochs=3, restarts=2)
    with pytest.raises(TrainingInterrupted, match="restart 1"):
        run(data, tmp_path / "killed", epochs=3, restarts=2, stop_after_epoch=(1, 2))
    assert not (tmp_path / "killed" / "metrics.json").exists()
    ckpt = torch.load(tmp_path / "killed" / "checkpoint-restart1.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    assert run(data, tmp_path / "killed", epochs=3, restarts=2) == full
