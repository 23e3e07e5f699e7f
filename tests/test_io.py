"""brainlens._io: atomic writes leave nothing half-written; NIfTI saves set the codes asked for."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brainlens._io import (
    atomic_output,
    nifti_image,
    save_nifti,
    save_nifti_like,
    write_text_atomic,
)


class _Boom(Exception):
    pass


def test_atomic_output_leaves_nothing_on_an_exception(tmp_path):
    target = tmp_path / "sub" / "table.tsv"
    with pytest.raises(_Boom), atomic_output(target) as tmp:
        tmp.write_text("half")
        assert tmp.exists() and tmp.parent == target.parent
        raise _Boom
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left


def test_atomic_output_keeps_the_old_file_on_an_exception(tmp_path):
    target = write_text_atomic(tmp_path / "a.json", "old\n")
    with pytest.raises(_Boom), atomic_output(target) as tmp:
        tmp.write_text("new")
        raise _Boom
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_output_replaces_on_success_and_keeps_suffixes(tmp_path):
    target = write_text_atomic(tmp_path / "img.nii.gz", "old")
    with atomic_output(target) as tmp:
        # nibabel / numpy / pandas pick the format from the suffixes
        assert tmp.name.endswith(".nii.gz") and tmp != target
        assert not tmp.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["img.nii.gz"]


@pytest.mark.parametrize(
    ("code", "number", "dtype"),
    [("scanner", 1, np.int16), ("mni", 4, np.float32), ("aligned", 2, np.uint8)],
)
def test_save_nifti_writes_the_requested_codes_and_dtype(tmp_path, code, number, dtype):
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    data = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    path = save_nifti(data, affine, tmp_path / "x.nii.gz", code=code, dtype=dtype)
    img = nib.load(path)
    assert int(img.header["qform_code"]) == number
    assert int(img.header["sform_code"]) == number
    assert img.get_data_dtype() == np.dtype(dtype)
    assert img.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data.astype(dtype))
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]


def test_save_nifti_keeps_the_dtype_when_asked_and_refuses_unknown_codes(tmp_path):
    data = np.ones((2, 2, 2), dtype=np.int16)
    img = nib.load(save_nifti(data, np.eye(4), tmp_path / "k.nii", code="scanner", dtype=None))
    assert img.get_data_dtype() == np.int16
    with pytest.raises(ValueError, match="code='world'"):
        save_nifti(data, np.eye(4), tmp_path / "bad.nii", code="world")
    assert not (tmp_path / "bad.nii").exists()


def test_save_nifti_like_copies_the_reference_codes(tmp_path):
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    ref = nifti_image(np.zeros((3, 3, 3)), affine, code="aligned", sform_code="mni")
    img = nib.load(save_nifti_like(np.ones((3, 3, 3)), ref, tmp_path / "l.nii", dtype=np.uint8))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (2, 4)
    assert img.get_data_dtype() == np.uint8
    # a reference without codes (0, unknown) gets scanner coordinates
    bare = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), affine)
    bare.set_qform(affine, code=0)
    bare.set_sform(affine, code=0)
    img = nib.load(save_nifti_like(np.ones((3, 3, 3)), bare, tmp_path / "b.nii"))
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(img.affine, bare.affine)  # the reference's own affine


def test_nibabel_save_is_called_only_in_io():
    """One NIfTI-save home: every image the package writes goes through brainlens._io."""
    import re
    from pathlib import Path

    import brainlens

    root = Path(brainlens.__file__).parent
    call = re.compile(r"\bnib(abel)?\.save\(|\.to_filename\(")
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "_io.py" and call.search(p.read_text())
    ]
    assert offenders == []
