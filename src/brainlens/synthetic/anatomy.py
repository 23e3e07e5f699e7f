"""The demo's anatomy: the template head, the planted effect, deformation and scans.

Per subject (:func:`subject_anatomy`): the MNI152 2009 template head with the planted
tissue loss and a smooth deformation; per scan (:func:`make_scan`): head position,
native grid and orientation, bias field and Rician noise.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainlens._io import nifti_image
from brainlens.atlases import load_atlas, region_label
from brainlens.errors import ConfigError
from brainlens.synthetic.spec import DemoSpec

_NILEARN_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

#: Axis-code orientations a native scan may be stored in.
ORIENTATIONS = ("RAS", "LAS", "LPS", "RPI", "PIR", "ASR")


def _nilearn_data() -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


@lru_cache(maxsize=1)
def _base_head() -> tuple[np.ndarray, np.ndarray]:
    """The template brain with a CSF gap, skull and scalp, on the template's 1 mm grid.

    Returns
    -------
    head : ndarray, shape (197, 233, 189), float32
        Intensities scaled so that white matter is about 1.
    affine : ndarray, shape (4, 4)
    """
    img = nib.load(str(_nilearn_data() / _NILEARN_T1))
    t1 = np.asanyarray(img.dataobj).astype(np.float32) / 220.0  # WM ~ 1
    brain = t1 > 0.2 * t1.max()
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=2))
    # a smooth inner-skull surface, then shells by distance from it
    inner = ndimage.gaussian_filter(brain.astype(np.float32), 4.0) > 0.25
    dist = ndimage.distance_transform_edt(~inner)
    head = np.where(brain, t1, 0.0).astype(np.float32)
    head[inner & ~brain] = 0.30  # CSF between brain and skull
    head[(dist > 0) & (dist <= 2.5)] = 0.30
    head[(dist > 2.5) & (dist <= 7.0)] = 0.08  # compact bone: dark
    head[(dist > 7.0) & (dist <= 8.5)] = 0.45  # diploe
    head[(dist > 8.5) & (dist <= 13.0)] = 0.90  # scalp fat: bright
    return head, img.affine.copy()


@lru_cache(maxsize=4)
def _region_weights(atlas: str, region: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Smoothed region masks on the template grid (tissue loss, deformation) and its label."""
    head, affine = _base_head()
    atlas_img, table = load_atlas(atlas)
    label = region_label(table, region, atlas=atlas)
    # resample the atlas onto the 1 mm template grid (nearest neighbour)
    vox2vox = np.linalg.inv(atlas_img.affine) @ affine
    grid = np.indices(head.shape, dtype=np.float32).reshape(3, -1)
    src = vox2vox[:3, :3] @ grid + vox2vox[:3, 3:4]
    lab = ndimage.map_coordinates(
        np.asanyarray(atlas_img.dataobj), src, order=0, mode="constant"
    ).reshape(head.shape)
    mask = (lab == label).astype(np.float32)
    if mask.sum() == 0:
        raise ConfigError(
            f"demo.region {region!r} has no voxels in atlas {atlas!r} on the template grid"
        )
    loss = np.clip(ndimage.gaussian_filter(mask, 1.0) * 1.5, 0, 1)
    warp = ndimage.gaussian_filter(mask, 4.0)
    warp /= warp.max()
    return loss.astype(np.float32), warp.astype(np.float32), label


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """A smooth random field with unit standard deviation, made on a coarse grid."""
    coarse = [max(4, int(np.ceil(s / sigma)) + 2) for s in shape]
    field = rng.standard_normal(coarse).astype(np.float32)
    field = ndimage.zoom(field, [s / c for s, c in zip(shape, coarse, strict=True)], order=3)
    field = field[: shape[0], : shape[1], : shape[2]]
    return field / (field.std() + 1e-6)


def _subject_source(
    spec: DemoSpec, rng: np.random.Generator, effect: float
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Template head with the subject's tissue loss and its displacement field (voxels)."""
    head, _ = _base_head()
    src = head.copy()
    shape = head.shape
    disp = [spec.deformation_mm * _smooth_field(rng, shape, 30.0) for _ in range(3)]
    if effect > 0:
        loss, warp, _ = _region_weights(spec.atlas, spec.region)
        tissue = src > 0.35
        src = np.where(tissue, src * (1 - effect * loss) + 0.30 * effect * loss, src)
        # radial contraction towards the centroid: the output samples further out
        centre = np.array(ndimage.center_of_mass(warp))
        idx = np.indices(shape, dtype=np.float32)
        k = spec.shrink * effect
        for ax in range(3):
            disp[ax] = disp[ax] + k * warp * (idx[ax] - centre[ax])
    _check_no_folding(spec, disp, effect)  # controls too: a large deformation_mm folds
    return src.astype(np.float32), (disp[0], disp[1], disp[2])


def min_jacobian(displacement: list[np.ndarray], step: int = 2) -> float:
    """Smallest Jacobian determinant of the sampling map x -> x + d(x).

    Parameters
    ----------
    displacement : list of 3 ndarrays, shape (X, Y, Z)
        Displacement in voxels along each axis.
    step : int
        Evaluate on every ``step``-th voxel (the fields are smooth).

    Returns
    -------
    float
        <= 0 where the map folds (the anatomy would pass through itself).
    """
    sub = [d[::step, ::step, ::step] for d in displacement]
    jac = np.empty(sub[0].shape + (3, 3), dtype=np.float32)
    for a in range(3):
        grads = np.gradient(sub[a], step)
        for b in range(3):
            jac[..., a, b] = grads[b] + (1.0 if a == b else 0.0)
    return float(np.linalg.det(jac).min())


def _check_no_folding(spec: DemoSpec, disp: list[np.ndarray], effect: float) -> None:
    det = min_jacobian(disp)
    if det <= 0:
        raise ConfigError(
            f"demo: the planted shrinkage (demo.shrink={spec.shrink} x effect {effect:.2f}) "
            f"with demo.deformation_mm={spec.deformation_mm} folds the anatomy around "
            f"{spec.region!r} (smallest Jacobian determinant {det:.2f}, must be > 0); lower "
            "demo.shrink (a long region such as a gyrus needs about half of what a small "
            "nucleus takes) or demo.deformation_mm"
        )


def subject_anatomy(
    spec: DemoSpec, *, seed: int, index: int, is_patient: bool
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One demo subject's anatomy: the template head with its tissue loss, and its warp.

    A patient's effect is ``spec.effect * U(0.8, 1.2)`` (at most 1), drawn from the
    subject's own random stream, so it depends only on ``seed`` and ``index``.

    Returns
    -------
    source : ndarray, shape (X, Y, Z)
        Template head intensities with the planted tissue loss (patients).
    displacement : tuple of 3 ndarrays, shape (X, Y, Z)
        Sampling displacement in template voxels (deformation plus planted shrinkage).

    Raises
    ------
    ConfigError
        The displacement folds the anatomy (Jacobian determinant <= 0); the message names
        ``demo.shrink`` and ``demo.deformation_mm``.
    """
    subject_rng = np.random.default_rng([seed, 1, index])
    effect = spec.effect * subject_rng.uniform(0.8, 1.2) if is_patient else 0.0
    return _subject_source(spec, subject_rng, min(effect, 1.0))


def _random_affine(spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    """A random rigid-plus-isotropic-scale transform in world mm (4, 4)."""
    angles = np.deg2rad(rng.uniform(-spec.rotation_deg, spec.rotation_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ ry @ rx * (1 + rng.uniform(-spec.scale, spec.scale))
    out[:3, 3] = rng.uniform(-spec.translation_mm, spec.translation_mm, 3)
    return out


def _native_grid(voxel_size: float, orientation: str) -> tuple[tuple[int, int, int], np.ndarray]:
    """A native grid covering the head (200 x 236 x 200 mm) in the given orientation."""
    extent = np.array([200.0, 236.0, 200.0])
    centre = np.array([0.0, -18.0, 12.0])
    shape = tuple(int(np.ceil(e / voxel_size)) for e in extent)
    ras_affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    ras_affine[:3, 3] = centre - voxel_size * (np.array(shape) - 1) / 2
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(orientation))
    )
    # what nibabel's as_reoriented does, without data: a view gives the new shape
    new_shape = nib.orientations.apply_orientation(np.empty(shape, dtype=bool), transform).shape
    affine = ras_affine @ nib.orientations.inv_ornt_aff(transform, shape)
    return tuple(int(s) for s in new_shape), affine  # type: ignore[return-value]


def make_scan(
    spec: DemoSpec,
    *,
    source: np.ndarray,
    displacement: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> nib.Nifti1Image:
    """Resample a subject's source head into a new native scan.

    Parameters
    ----------
    spec : DemoSpec
    source : ndarray, shape (197, 233, 189)
        The subject's head on the template grid.
    displacement : tuple of 3 ndarrays, same shape as ``source``
        The subject's displacement field in template voxels.
    rng : numpy.random.Generator
        Per-scan generator (position, orientation, bias, noise).

    Returns
    -------
    nibabel.Nifti1Image
        int16 image with a valid qform/sform (code 1, scanner).
    """
    _, tpl_affine = _base_head()
    orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    shape, native_affine = _native_grid(spec.voxel_size, orientation)
    head_motion = _random_affine(spec, rng)
    # native voxel -> world (scanner) -> template world (inverse head motion) -> template voxel
    vox2tpl = np.linalg.inv(tpl_affine) @ np.linalg.inv(head_motion) @ native_affine
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = vox2tpl[:3, :3] @ grid + vox2tpl[:3, 3:4]
    # add the subject's deformation, looked up at the (undeformed) template position
    disp = np.stack(
        [ndimage.map_coordinates(d, coords, order=1, mode="nearest") for d in displacement]
    )
    data = ndimage.map_coordinates(source, coords + disp, order=1, mode="constant", cval=0.0)
    data = data.reshape(shape)
    bias = np.exp(spec.bias * _smooth_field(rng, shape, 60.0 / spec.voxel_size) / 2.0)
    data = data * bias
    sigma = spec.noise
    data = np.sqrt(
        (data + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2
    )
    scaled = np.clip(data * 1000.0, 0, 32767).astype(np.int16)
    img = nifti_image(scaled, native_affine, code="scanner", dtype=np.int16)
    img.header.set_xyzt_units("mm", "sec")
    return img
