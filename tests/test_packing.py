"""Tests of brainlens.packing: packing NIfTI once, reading packs as channels."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from brainlens.errors import ConfigError, DatasetError, InputFileError
from brainlens.packing import open_pack, pack_volumes, sidecar_path
from brainlens.training.dataset import PackedDataset

torch.set_num_threads(1)
SHAPE = (6, 7, 5)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write_vols(folder, n, *, offset=0.0, shape=SHAPE, affine=AFFINE, prefix="v"):
    folder.mkdir(parents=True, exist_ok=True)
    paths, vols = [], []
    rng = np.random.default_rng(int(offset) + n)
    for i in range(n):
        v = (rng.random(shape) + offset + i).astype(np.float32)
        p = folder / f"{prefix}{i}.nii.gz"
        nib.save(nib.Nifti1Image(v, affine), p)
        paths.append(p)
        vols.append(v)
    return paths, np.stack(vols)


@pytest.mark.parametrize("dtype, tol", [("float16", 1e-2), ("float32", 0.0)])
def test_pack_roundtrip(tmp_path, dtype, tol):
    paths, vols = write_vols(tmp_path / "in", 4)
    ids = [f"sub-{i:02d}" for i in range(4)]
    npy, tsv = tmp_path / "p" / "gm.npy", tmp_path / "p" / "gm.tsv"
    pack_volumes(paths, scan_ids=ids, out_npy=npy, out_index=tsv, dtype=dtype)
    pack = open_pack(npy, tsv)
    assert isinstance(pack.array, np.memmap) and pack.array.dtype == dtype
    assert pack.array.shape == (4, *SHAPE)
    assert np.allclose(pack.array, vols, atol=tol * vols.max(), rtol=0)
    assert list(pack.index["scan_id"]) == ids
    assert np.allclose(pack.affine, AFFINE)
    assert json.loads(sidecar_path(npy).read_text())["shape"] == [4, *SHAPE]
    assert not [p for p in npy.parent.iterdir() if ".tmp" in p.name]
    assert list(pack.rows(["sub-03", "sub-01"])) == [3, 1]
    with pytest.raises(DatasetError, match="sub-99"):
        pack.rows(["sub-99"])


def _other_shape(tmp_path, paths):
    bad, _ = write_vols(tmp_path / "bad", 1, shape=(6, 7, 4), prefix="odd")
    return [*paths, *bad], "grid shape"


def _other_affine(tmp_path, paths):
    bad, _ = write_vols(tmp_path / "bad", 1, affine=np.diag([1.0, 1, 1, 1]), prefix="odd")
    return [*paths, *bad], "affine differs"


def _nan(tmp_path, paths):
    v = np.zeros(SHAPE, np.float32)
    v[0, 0, 0] = np.nan
    p = tmp_path / "odd_nan.nii.gz"
    nib.save(nib.Nifti1Image(v, AFFINE), p)
    return [*paths, p], "non-finite"


def _huge(tmp_path, paths):
    p = tmp_path / "odd_huge.nii.gz"
    nib.save(nib.Nifti1Image(np.full(SHAPE, 1e6, np.float32), AFFINE), p)
    return [*paths, p], "float16 range"


def _missing(tmp_path, paths):
    return [*paths, tmp_path / "odd_missing.nii.gz"], "not found"


@pytest.mark.parametrize("make_bad", [_other_shape, _other_affine, _nan, _huge, _missing])
def test_bad_volume_named_in_error_and_nothing_written(tmp_path, make_bad):
    paths, _ = write_vols(tmp_path / "in", 2)
    bad_paths, match = make_bad(tmp_path, paths)
    npy = tmp_path / "out" / "x.npy"
    with pytest.raises(InputFileError, match=match) as info:
        pack_volumes(
            bad_paths,
            scan_ids=[f"s{i}" for i in range(3)],
            out_npy=npy,
            out_index=tmp_path / "out" / "x.tsv",
        )
    assert "odd" in str(info.value)
    assert not npy.exists() and list(npy.parent.iterdir()) == []


@pytest.mark.parametrize(
    "ids, dtype, match",
    [
        (["a"], "float16", "2 paths but 1"),
        (["a", "a"], "float16", "duplicate"),
        (["a", "b"], "int8", "dtype"),
    ],
)
def test_bad_pack_arguments(tmp_path, ids, dtype, match):
    paths, _ = write_vols(tmp_path, 2)
    with pytest.raises(ConfigError, match=match):
        pack_volumes(
            paths,
            scan_ids=ids,
            out_npy=tmp_path / "x.npy",
            out_index=tmp_path / "x.tsv",
            dtype=dtype,
        )


def _two_packs(tmp_path):
    ids = [f"sub-{i:02d}" for i in range(5)]
    packs = {}
    vols = {}
    for name, off in (("gm", 0.0), ("t1w", 100.0)):
        paths, v = write_vols(tmp_path / name, 5, offset=off)
        npy, tsv = tmp_path / f"{name}.npy", tmp_path / f"{name}.tsv"
        pack_volumes(paths, scan_ids=ids, out_npy=npy, out_index=tsv, dtype="float32")
        packs[name] = (npy, tsv)
        vols[name] = v
    return ids, packs, vols


def test_dataset_stacks_inputs_as_channels(tmp_path, monkeypatch):
    ids, packs, vols = _two_packs(tmp_path)
    # an epoch must never decode NIfTI
    monkeypatch.setattr(nib, "load", lambda *a, **k: pytest.fail("NIfTI decoded"))
    ds = PackedDataset(packs, ["sub-03", "sub-01"], labels=[1, 0])
    x, y = ds[0]
    assert x.shape == (2, *SHAPE) and x.dtype == torch.float32 and int(y) == 1
    assert np.allclose(x[0].numpy(), vols["gm"][3]) and np.allclose(x[1].numpy(), vols["t1w"][3])
    b = ds.batch([1, 0, 1])
    assert b.shape == (3, 2, *SHAPE)
    assert np.allclose(b[0, 1].numpy(), vols["t1w"][1])
    assert ds.targets([1, 0]).tolist() == [0, 1]
    pre = PackedDataset(packs, ["sub-03", "sub-01"], labels=[1, 0], preload=True)
    assert pre.data is not None and torch.equal(pre.batch([1, 0, 1]), b)


def test_dataset_transform_and_augment_order(tmp_path):
    ids, packs, vols = _two_packs(tmp_path)
    ds = PackedDataset({"gm": packs["gm"]}, ids, transform=lambda s: s.mean(dim=-1))
    flipped = ds.batch([2], augment=lambda x: x.flip(2))  # flip X before X,Y,Z -> X,Y
    assert flipped.shape == (1, 1, SHAPE[0], SHAPE[1])
    assert np.allclose(flipped[0, 0].numpy(), vols["gm"][2][::-1].mean(-1), atol=1e-5)


def test_dataset_errors(tmp_path):
    ids, packs, _ = _two_packs(tmp_path)
    paths, _ = write_vols(tmp_path / "odd", 5, shape=(6, 7, 4))
    pack_volumes(paths, scan_ids=ids, out_npy=tmp_path / "odd.npy", out_index=tmp_path / "odd.tsv")
    with pytest.raises(InputFileError, match="grid"):
        PackedDataset({**packs, "odd": (tmp_path / "odd.npy", tmp_path / "odd.tsv")}, ids)
    with pytest.raises(DatasetError, match="sub-77"):
        PackedDataset(packs, ["sub-77"])
    with pytest.raises(ConfigError, match="2 labels for 1"):
        PackedDataset(packs, ["sub-01"], labels=[0, 1])
    with pytest.raises(InputFileError, match="not found"):
        open_pack(tmp_path / "nope.npy", tmp_path / "gm.tsv")


def test_transformed_samples_are_cached_without_augmentation(tmp_path):
    ids, packs, vols = _two_packs(tmp_path)
    calls = []

    def transform(s):
        calls.append(1)
        return s.amax(dim=-1)

    ds = PackedDataset({"gm": packs["gm"]}, ids, transform=transform)
    a = ds.batch([3, 1])
    b = ds.batch([1, 3, 0])
    assert len(calls) == 3  # sub 3, 1 once each, then 0
    assert torch.equal(a[0], b[1]) and np.allclose(b[2, 0].numpy(), vols["gm"][0].max(-1))
    ds.batch([1], augment=lambda x: x)  # augmented batches bypass the cache
    assert len(calls) == 4
    plain = PackedDataset({"gm": packs["gm"]}, ids, transform=transform, cache_transformed=False)
    plain.batch([0])
    plain.batch([0])
    assert len(calls) == 6


@pytest.mark.parametrize("voxel", [(2.0, 2.0, 2.0), (1.0, 2.0, 3.0)])
def test_pack_smoothing_has_the_requested_fwhm_in_mm(tmp_path, voxel):
    """An impulse packed with FWHM 6 mm: a Gaussian whose width in mm is 6 on every axis."""
    shape = (31, 31, 31)
    affine = np.diag([*voxel, 1.0])
    v = np.zeros(shape, np.float32)
    v[15, 15, 15] = 1000.0
    p = tmp_path / "impulse.nii.gz"
    nib.save(nib.Nifti1Image(v, affine), p)
    npy, tsv = tmp_path / "s.npy", tmp_path / "s.tsv"
    pack_volumes(
        [p], scan_ids=["sub-01"], out_npy=npy, out_index=tsv, dtype="float32", smooth_fwhm_mm=6.0
    )
    out = open_pack(npy, tsv).array[0]
    assert out.sum() == pytest.approx(1000.0, rel=1e-3)  # mass kept
    assert np.unravel_index(out.argmax(), shape) == (15, 15, 15)
    sigma_mm = 6.0 / np.sqrt(8 * np.log(2))
    for axis, size in enumerate(voxel):
        profile = np.moveaxis(out, axis, 0)[:, 15, 15]
        # Gaussian: value one voxel off centre / centre = exp(-size^2 / (2 sigma_mm^2))
        assert profile[16] / profile[15] == pytest.approx(
            np.exp(-(size**2) / (2 * sigma_mm**2)), rel=0.02
        )
    assert json.loads(sidecar_path(npy).read_text())["smooth_fwhm_mm"] == 6.0


@pytest.mark.parametrize("fwhm", [-1.0, float("nan")])
def test_pack_smoothing_refuses_bad_fwhm(tmp_path, fwhm):
    paths, _ = write_vols(tmp_path / "in", 2)
    npy = tmp_path / "p" / "x.npy"
    with pytest.raises(ConfigError, match="smooth_fwhm_mm"):
        pack_volumes(
            paths,
            scan_ids=["a", "b"],
            out_npy=npy,
            out_index=tmp_path / "p" / "x.tsv",
            smooth_fwhm_mm=fwhm,
        )
    assert not npy.exists()


def test_packing_does_not_import_torch():
    """The pack rule needs no torch: PackedDataset lives in brainlens.training.dataset."""
    import subprocess
    import sys

    code = "import sys, brainlens.packing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
