"""Jacobian modulation convention, checked with the ANTs programs the workflow uses.

A native "tissue" ball is resampled into a template grid through a known transform
phi (template mm -> native mm): an isotropic scale s with a translation, composed with
a smooth radial displacement of peak relative amplitude a. The composite displacement
field goes through CreateJacobianDeterminantImage exactly as in the workflow. Then

    sum(modulated) * v_template == native tissue volume      (within 5 %)
    det(J) at the ball centre   == s**3 * (1 + a)**3         (within 5 %)
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brainlens.preprocess import fileops
from brainlens.preprocess.versions import ensure_ants_on_path

LPS = np.array([-1.0, -1.0, 1.0])


def _grid(shape, vox, centre):
    aff = np.diag([vox, vox, vox, 1.0])
    aff[:3, 3] = np.asarray(centre, float) - vox * (np.asarray(shape) - 1) / 2
    return aff


def _save(data, aff, path, intent=None):
    img = nib.Nifti1Image(data.astype(np.float32), aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    if intent:
        img.header.set_intent(intent)
    nib.save(img, path)
    return str(path)


def _world(shape, aff):
    ijk = np.indices(shape, dtype=np.float64)
    return np.einsum("ij,j...->i...", aff[:3, :3], ijk) + aff[:3, 3, None, None, None]


def _write_itk_affine(path, scale, t_ras):
    t = LPS * np.asarray(t_ras, float)
    m = (np.eye(3) * scale).ravel()
    path.write_text(
        "#Insight Transform File V1.0\n#Transform 0\n"
        "Transform: AffineTransform_double_3_3\n"
        f"Parameters: {' '.join(f'{v:.10g}' for v in [*m, *t])}\n"
        "FixedParameters: 0 0 0\n"
    )
    return str(path)


CASES = [
    # (scale s, radial amplitude a, native voxel mm)
    (1.10, 0.00, 1.5),
    (0.90, 0.00, 2.0),
    (1.05, 0.15, 1.5),
    (0.95, -0.12, 1.5),
]


@pytest.mark.parametrize(("scale", "amp", "vox_nat"), CASES)
def test_modulated_sum_equals_native_volume(tmp_path, monkeypatch, scale, amp, vox_nat):
    from nipype.interfaces import ants

    ensure_ants_on_path()
    monkeypatch.chdir(tmp_path)
    t_ras = np.array([6.0, -4.0, 3.0])
    # template grid (2 mm) and native grid
    tshape, taff = (48, 48, 48), _grid((48, 48, 48), 2.0, (0, 0, 0))
    nshape = (72, 72, 72) if vox_nat == 1.5 else (54, 54, 54)
    naff = _grid(nshape, vox_nat, t_ras)
    # native tissue: a soft ball of radius 24 mm at the image of the template origin
    r = np.linalg.norm(_world(nshape, naff) - t_ras[:, None, None, None], axis=0)
    p_nat = np.clip(24.0 - r + 0.5, 0, 1)
    native = _save(p_nat, naff, tmp_path / "p_native.nii.gz")
    ref = _save(np.zeros(tshape), taff, tmp_path / "ref.nii.gz")
    # radial displacement u(x) = a * exp(-|x|^2 / (2 sigma^2)) * x on the template grid
    x = _world(tshape, taff)
    g = np.exp(-(x**2).sum(0) / (2 * 30.0**2))
    u = amp * g * x * LPS[:, None, None, None]  # ITK/ANTs vectors are LPS
    warp = _save(np.moveaxis(u, 0, -1)[:, :, :, None, :], taff, tmp_path / "warp.nii.gz", "vector")
    affine = _write_itk_affine(tmp_path / "affine.txt", scale, t_ras)
    transforms = [affine, warp]  # ANTs applies the last one first: phi = A o W

    prob = ants.ApplyTransforms(
        input_image=native, reference_image=ref, transforms=transforms,
        interpolation="Linear", output_image="p_std.nii.gz", float=True,
    ).run().outputs.output_image  # fmt: skip
    field = ants.ApplyTransforms(
        input_image=native, reference_image=ref, transforms=transforms,
        output_image="field.nii.gz", print_out_composite_warp_file=True, float=True,
    ).run().outputs.output_image  # fmt: skip
    jac = ants.CreateJacobianDeterminantImage(
        imageDimension=3, deformationField=field, outputImage="jac.nii.gz",
        doLogJacobian=0, useGeometric=0,
    ).run().outputs.jacobian_image  # fmt: skip
    mod = fileops.modulate_file(prob, jac, tmp_path / "mod.nii.gz")

    v_nat, v_std = vox_nat**3 / 1000, 8 / 1000
    native_ml = p_nat.sum() * v_nat
    plain_ml = np.asarray(nib.load(prob).dataobj, np.float64).sum() * v_std
    mod_ml = np.asarray(nib.load(mod).dataobj, np.float64).sum() * v_std
    j = np.asarray(nib.load(jac).dataobj, np.float64)
    expected_centre = scale**3 * (1 + amp) ** 3
    centre = j[23:25, 23:25, 23:25].mean()
    print(f"native {native_ml:.2f} ml, plain {plain_ml:.2f}, modulated {mod_ml:.2f}; "
          f"J(centre) {centre:.4f} vs {expected_centre:.4f}")  # fmt: skip
    assert mod_ml == pytest.approx(native_ml, rel=0.05)
    assert centre == pytest.approx(expected_centre, rel=0.05)
    # the check discriminates: without modulation (or with 1/J) the volume is off
    assert abs(plain_ml / native_ml - 1) > 0.1
    assert j.min() > 0
