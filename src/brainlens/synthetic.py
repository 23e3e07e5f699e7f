"""A synthetic BIDS dataset with a planted group effect at a known place.

The demo must run offline, so it is made from the MNI152 2009 symmetric T1 template
that ships with nilearn. Each scan is the template brain, wrapped in a synthetic
CSF gap, skull and scalp, then moved into its own native space:

1. **planted effect** (patients only): regional atrophy inside one atlas region
   (default AAL ``Temporal_Inf_L``, 25.6 mL): tissue is replaced by CSF-like signal by a
   fraction ``effect`` and the region shrinks towards its centroid (a smooth radial
   contraction of ``shrink * effect``), both weighted by a smoothed region mask;
2. a smooth random nonlinear deformation (subject anatomy, a few mm);
3. a random rigid-plus-scale affine (head position), per scan;
4. resampling onto a native grid of ``voxel_size`` mm in a randomly chosen axis
   orientation (so reorientation matters);
5. a smooth multiplicative bias field and Rician noise.

Steps 1-2 are per subject (shared by a subject's sessions), 3-5 per scan. Every
random draw comes from ``numpy.random.default_rng([seed, subject_index, ...])``, so
a subject's images depend only on the master seed and its index.

The dataset root gets ``participants.tsv`` (participant_id, diagnosis, age, sex),
``dataset_description.json`` and ``ground_truth.json`` (atlas, region name exactly as
in that atlas's label table, label value, effect).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from brainlens.atlases import load_atlas, region_label, resample_labels
from brainlens.errors import ConfigError

_NILEARN_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

#: Axis-code orientations a native scan may be stored in.
ORIENTATIONS = ("RAS", "LAS", "LPS", "RPI", "PIR", "ASR")


@dataclass(frozen=True)
class DemoSpec:
    """What the synthetic dataset looks like.

    Attributes
    ----------
    n_subjects : int
        Number of participants (half patients, rounded down).
    n_second_session : int
        How many participants get a second session. When > 0 every participant has
        ``ses-01`` (BIDS requires one layout per dataset).
    voxel_size : float
        Native voxel size in mm.
    atlas, region : str
        Where the effect is planted: an atlas from :mod:`brainlens.atlases` and a
        region name exactly as in its label table.
    effect : float
        Fraction of tissue replaced by CSF-like signal in the region (0-1).
    shrink : float
        Radial contraction of the region per unit effect.
    deformation_mm : float
        Typical amplitude of the subject's smooth nonlinear deformation.
    rotation_deg, translation_mm, scale : float
        Ranges of the random head position.
    bias : float
        Amplitude of the multiplicative bias field (0.3 = +-30 %).
    noise : float
        Rician noise sigma as a fraction of white-matter intensity.
    label_column : str
        Name of the diagnosis column in ``participants.tsv``.
    """

    n_subjects: int = 40
    n_second_session: int = 4
    voxel_size: float = 1.5
    atlas: str = "aal"
    region: str = "Temporal_Inf_L"
    effect: float = 0.9
    shrink: float = 0.3
    deformation_mm: float = 1.5
    rotation_deg: float = 8.0
    translation_mm: float = 8.0
    scale: float = 0.03
    bias: float = 0.25
    noise: float = 0.03
    label_column: str = "diagnosis"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        checks = [
            ("n_subjects", self.n_subjects >= 4, "an integer >= 4"),
            ("n_second_session", 0 <= self.n_second_session <= self.n_subjects, "0..n_subjects"),
            ("voxel_size", 0.8 <= self.voxel_size <= 4.0, "0.8..4 mm"),
            ("effect", 0.0 <= self.effect <= 1.0, "0..1"),
            ("shrink", 0.0 <= self.shrink <= 0.8, "0..0.8"),
            ("bias", 0.0 <= self.bias < 1.0, "0..<1"),
            ("noise", 0.0 <= self.noise <= 0.5, "0..0.5"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"demo.{key}: expected {allowed}, got {getattr(self, key)!r}")


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
    img = nib.Nifti1Image(scaled, native_affine)
    img.set_qform(native_affine, code=1)
    img.set_sform(native_affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def plan_dataset(spec: DemoSpec, *, seed: int) -> pd.DataFrame:
    """Who is in the demo dataset, without making any image.

    Returns
    -------
    pandas.DataFrame
        One row per scan: ``participant_id``, ``session_id`` ("n/a" without
        sessions), ``index`` (subject index), ``<label_column>``, ``age``, ``sex``.
    """
    spec.validate()
    rng = np.random.default_rng([seed, 0])
    n = spec.n_subjects
    n_pat = n // 2
    diagnosis = np.array(["patient"] * n_pat + ["control"] * (n - n_pat))
    rng.shuffle(diagnosis)
    age = np.round(rng.normal(70, 6, n), 1)
    sex = rng.choice(["F", "M"], n)
    second = set(rng.choice(n, spec.n_second_session, replace=False).tolist())
    width = max(3, len(str(n)))
    rows = []
    for i in range(n):
        pid = f"sub-{i + 1:0{width}d}"
        sessions = (
            ["n/a"]
            if spec.n_second_session == 0
            else (["ses-01", "ses-02"] if i in second else ["ses-01"])
        )
        for ses in sessions:
            rows.append(
                {
                    "participant_id": pid,
                    "session_id": ses,
                    "index": i,
                    spec.label_column: diagnosis[i],
                    "age": age[i],
                    "sex": sex[i],
                }
            )
    return pd.DataFrame(rows)


def scan_relpath(participant_id: str, session_id: str) -> str:
    """BIDS path of a T1w scan relative to the dataset root."""
    if session_id in ("", "n/a", None):
        return f"{participant_id}/anat/{participant_id}_T1w.nii.gz"
    return f"{participant_id}/{session_id}/anat/{participant_id}_{session_id}_T1w.nii.gz"


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


def write_demo_subject(
    out_dir: Path, spec: DemoSpec, *, seed: int, participant_id: str, session_id: str | None = None
) -> list[Path]:
    """Write the scans of one participant (or one of its sessions) of the demo dataset.

    Each file is written to a temporary name and renamed, so an interrupted run leaves
    no half-written image. A participant's images depend only on ``seed``, ``spec`` and
    its index, so subjects can be made in parallel (one workflow job each).

    Parameters
    ----------
    out_dir : Path
        Dataset root.
    spec : DemoSpec
    seed : int
    participant_id : str
    session_id : str, optional
        Only this session ("n/a" in a dataset without sessions); all by default.

    Returns
    -------
    list of Path
        The T1w files written, one per session.
    """
    out_dir = Path(out_dir)
    plan = plan_dataset(spec, seed=seed)
    rows = plan[plan["participant_id"] == participant_id]
    if rows.empty:
        raise ConfigError(f"{participant_id}: not in the demo plan of {spec.n_subjects} subjects")
    index = int(rows["index"].iloc[0])
    is_patient = rows.iloc[0][spec.label_column] == "patient"
    source, disp = subject_anatomy(spec, seed=seed, index=index, is_patient=is_patient)
    written = []
    for k, row in enumerate(rows.to_dict("records")):
        if session_id is not None and row["session_id"] != session_id:
            continue
        scan_rng = np.random.default_rng([seed, 2, index, k])
        img = make_scan(spec, source=source, displacement=disp, rng=scan_rng)
        path = out_dir / scan_relpath(row["participant_id"], row["session_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".tmp-" + path.name)
        try:
            nib.save(img, str(tmp))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(path)
    return written


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_text(text)
    tmp.replace(path)


def write_demo_metadata(out_dir: Path, spec: DemoSpec, *, seed: int) -> pd.DataFrame:
    """Write ``participants.tsv/.json``, ``dataset_description.json`` and ``ground_truth.json``.

    Returns
    -------
    pandas.DataFrame
        The scan plan (see :func:`plan_dataset`).
    """
    out_dir = Path(out_dir)
    plan = plan_dataset(spec, seed=seed)
    _, _, label = _region_weights(spec.atlas, spec.region)
    out_dir.mkdir(parents=True, exist_ok=True)
    participants = plan.drop_duplicates("participant_id")[
        ["participant_id", spec.label_column, "age", "sex"]
    ]
    tmp = out_dir / ".tmp-participants.tsv"
    participants.to_csv(tmp, sep="\t", index=False)
    tmp.replace(out_dir / "participants.tsv")
    levels = {"patient": "planted regional atrophy", "control": "no effect"}
    sidecar = {
        spec.label_column: {"Description": "group", "Levels": levels},
        "age": {"Description": "age", "Units": "years"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    }
    _atomic_text(out_dir / "participants.json", json.dumps(sidecar, indent=2))
    description = {
        "Name": "brainlens synthetic demo (MNI152 template with a planted effect)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "brainlens.synthetic"}],
    }
    _atomic_text(out_dir / "dataset_description.json", json.dumps(description, indent=2))
    truth = {
        "atlas": spec.atlas,
        "region": spec.region,
        "label": label,
        "effect": spec.effect,
        "kind": "regional atrophy (tissue loss and shrinkage)",
        "label_column": spec.label_column,
        "positive_class": "patient",
        "seed": seed,
        "spec": asdict(spec),
    }
    _atomic_text(out_dir / "ground_truth.json", json.dumps(truth, indent=2))
    return plan


def write_demo_dataset(out_dir: Path, spec: DemoSpec, *, seed: int) -> pd.DataFrame:
    """Write the whole synthetic BIDS dataset (metadata and every participant).

    Files are written into a temporary folder beside ``out_dir`` and moved into place
    at the end, so an interrupted run leaves no half-written dataset.

    Parameters
    ----------
    out_dir : Path
        Dataset root to create (replaced if it exists).
    spec : DemoSpec
    seed : int
        Master seed.

    Returns
    -------
    pandas.DataFrame
        The scan plan (see :func:`plan_dataset`) with a ``path`` column (relative).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=out_dir.parent))
    try:
        plan = write_demo_metadata(tmp, spec, seed=seed)
        for pid in plan["participant_id"].unique():
            write_demo_subject(tmp, spec, seed=seed, participant_id=pid)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan.assign(
        path=[
            scan_relpath(p, s)
            for p, s in zip(plan["participant_id"], plan["session_id"], strict=True)
        ]
    )


def region_mask_on_grid(atlas: str, region: str, resolution: float) -> np.ndarray:
    """Boolean mask of a ground-truth region on the analysis grid, shape (X, Y, Z)."""
    img, table = load_atlas(atlas)
    return resample_labels(img, resolution) == region_label(table, region, atlas=atlas)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m brainlens.synthetic OUT_DIR [--n-subjects N] ...``."""
    parser = argparse.ArgumentParser(description="Write the brainlens synthetic BIDS demo dataset.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, required=True, help="master seed")
    defaults = DemoSpec()
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out_dir, seed = args.pop("out_dir"), args.pop("seed")
    plan = write_demo_dataset(out_dir, DemoSpec(**args), seed=seed)
    print(
        f"wrote {len(plan)} scans of {plan['participant_id'].nunique()} participants to {out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
