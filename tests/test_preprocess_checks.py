"""check_t1w: each bad input raises InputFileError naming the file, the problem and the fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainlens.errors import InputFileError
from brainlens.preprocess.checks import check_t1w


def _head(shape=(24, 28, 24)) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.indices(shape).astype(np.float32)
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    r = np.sqrt(((x - c) ** 2).sum(0))
    return (100.0 * (r < min(shape) / 3) + rng.normal(0, 1, shape)).astype(np.float32)


def _write(path: Path, data: np.ndarray, zooms=(1.5, 1.5, 1.5), affine=None) -> Path:
    if affine is None:
        affine = np.diag([*zooms[:3], 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(tuple(zooms[:3]) + img.header.get_zooms()[3:])
    nib.save(img, path)
    return path


def _missing(d: Path) -> Path:
    return d / "sub-01_T1w.nii.gz"


def _not_nifti(d: Path) -> Path:
    p = d / "sub-01_T1w.mgz"
    p.write_bytes(b"hello")
    return p


def _garbage_gz(d: Path) -> Path:
    p = d / "sub-01_T1w.nii.gz"
    p.write_bytes(b"this is not gzip at all" * 20)
    return p


def _truncated(d: Path) -> Path:
    p = _write(d / "sub-01_T1w.nii.gz", _head())
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return p


def _4d(d: Path) -> Path:
    return _write(d / "sub-01_T1w.nii.gz", np.stack([_head()] * 3, -1), zooms=(1.5, 1.5, 1.5, 2))


def _2d(d: Path) -> Path:
    return _write(d / "sub-01_T1w.nii.gz", _head()[:, :, 12:13])


def _nan(d: Path) -> Path:
    x = _head()
    x[3, 3, 3] = np.nan
    return _write(d / "sub-01_T1w.nii.gz", x)


def _inf(d: Path) -> Path:
    x = _head()
    x[3, 3, 3] = np.inf
    return _write(d / "sub-01_T1w.nii.gz", x)


def _zero(d: Path) -> Path:
    return _write(d / "sub-01_T1w.nii.gz", np.zeros((24, 28, 24), np.float32))


def _constant(d: Path) -> Path:
    return _write(d / "sub-01_T1w.nii.gz", np.full((24, 28, 24), 7, np.float32))


def _big_voxels(d: Path) -> Path:
    return _write(d / "sub-01_T1w.nii.gz", _head(), zooms=(1.0, 1.0, 5.0))


def _tiny_voxels(d: Path) -> Path:
    return _write(d / "sub-01_T1w.nii.gz", _head(), zooms=(0.01, 0.01, 0.01))


def _singular(d: Path) -> Path:
    aff = np.diag([1.5, 1.5, 1.5, 1.0])
    aff[:3, 2] = aff[:3, 1]  # two identical axes
    img = nib.Nifti1Image(_head(), aff)
    img.header.set_zooms((1.5, 1.5, 1.5))
    p = d / "sub-01_T1w.nii.gz"
    nib.save(img, p)
    return p


BAD = [
    (_missing, "does not exist", "check the path"),
    (_not_nifti, "expected a NIfTI", "convert"),
    (_garbage_gz, "cannot be read", "re-export"),
    (_truncated, "unreadable", "re-export"),
    (_4d, "4D with 3 volumes", "select one volume"),
    (_2d, "2D or a slab", "full 3D"),
    (_nan, "NaN/inf", "replace non-finite"),
    (_inf, "NaN/inf", "replace non-finite"),
    (_zero, "empty image", "exclude the scan"),
    (_constant, "empty image", "exclude the scan"),
    (_big_voxels, "voxels too large", "higher-resolution"),
    (_tiny_voxels, "absurd header", "pixdim"),
    (_singular, "absurd header", "qform/sform"),
]


@pytest.mark.parametrize(("make", "problem", "fix"), BAD, ids=[b[0].__name__ for b in BAD])
def test_bad_inputs_raise_with_file_problem_fix(tmp_path, make, problem, fix):
    path = make(tmp_path)
    with pytest.raises(InputFileError) as exc:
        check_t1w(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert problem in exc.value.problem, exc.value.problem
    assert fix in exc.value.fix, exc.value.fix


GOOD = [
    ("plain", lambda d: _write(d / "a.nii.gz", _head()), False),
    ("trailing_singleton", lambda d: _write(d / "b.nii", _head()[..., None]), False),
    (
        "oblique_20deg",
        lambda d: _write(
            d / "c.nii.gz",
            _head(),
            affine=np.array(
                [
                    [1.5 * np.cos(0.35), -1.5 * np.sin(0.35), 0, 0],
                    [1.5 * np.sin(0.35), 1.5 * np.cos(0.35), 0, 0],
                    [0, 0, 1.5, 0],
                    [0, 0, 0, 1],
                ]
            ),
        ),
        True,
    ),
]


@pytest.mark.parametrize(("name", "make", "oblique"), GOOD, ids=[g[0] for g in GOOD])
def test_good_inputs_pass(tmp_path, name, make, oblique):
    rep = check_t1w(make(tmp_path))
    assert rep.shape == (24, 28, 24)
    assert rep.oblique is oblique
    assert len(rep.sha1) == 40


def test_hash_ignores_orientation_and_dtype_but_not_content(tmp_path):
    x = _head()
    aff = np.diag([1.5, 1.5, 1.5, 1.0])
    a = _write(tmp_path / "a.nii.gz", x, affine=aff)
    # same image stored flipped along x (LAS) and as int16
    flip = aff.copy()
    flip[0, 0] = -1.5
    flip[0, 3] = 1.5 * (x.shape[0] - 1)
    b = _write(tmp_path / "b.nii.gz", np.round(x[::-1]).astype(np.int16), affine=flip)
    c = _write(tmp_path / "c.nii.gz", np.round(x).astype(np.int16), affine=aff)
    y = np.round(x)
    y[5, 5, 5] += 1
    d = _write(tmp_path / "d.nii.gz", y, affine=aff)
    hb, hc, hd = (check_t1w(p).sha1 for p in (b, c, d))
    assert hb == hc
    assert hd != hc
    assert check_t1w(a).sha1 != hd
