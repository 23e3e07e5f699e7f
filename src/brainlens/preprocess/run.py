"""File-level entry point of the T1w preprocessing (called by the Snakemake rule)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.errors import BrainlensError, InputFileError, PreprocessingError
from brainlens.grid import REGISTRATION_RESOLUTION, SPACE, mni_grid, registration_grid
from brainlens.preprocess import fileops, qc
from brainlens.preprocess.checks import check_t1w
from brainlens.preprocess.versions import ensure_ants_on_path, software_versions
from brainlens.preprocess.workflow import ATROPOS, N4, REGISTRATION, TISSUES, init_t1w_preproc_wf
from brainlens.templates import TEMPLATE_KEYS, template_paths


def output_names(scan: str) -> dict[str, str]:
    """File names (no folder) that :func:`run_t1w_preproc` writes for ``scan``.

    Parameters
    ----------
    scan : str
        BIDS stem, e.g. ``sub-01`` or ``sub-01_ses-02``.

    Returns
    -------
    dict of str to str
        Keys ``t1w``, ``probseg_<GM|WM|CSF>``, ``modulated_<GM|WM|CSF>``, ``brain_mask``,
        ``xfm_to_std``, ``xfm_from_std``, ``qc_json``, ``qc_png``. Every ``.nii.gz`` also
        gets a ``.json`` sidecar of the same stem.
    """
    s = f"{scan}_space-{SPACE}"
    names = {
        "t1w": f"{s}_desc-preproc_T1w.nii.gz",
        "brain_mask": f"{scan}_desc-brain_mask.nii.gz",
        "xfm_to_std": f"{scan}_from-T1w_to-{SPACE}_mode-image_xfm.h5",
        "xfm_from_std": f"{scan}_from-{SPACE}_to-T1w_mode-image_xfm.h5",
        "qc_json": f"{scan}_desc-qc.json",
        "qc_png": f"{scan}_desc-qc.png",
    }
    for t in ("GM", "WM", "CSF"):
        names[f"probseg_{t}"] = f"{s}_label-{t}_probseg.nii.gz"
        names[f"modulated_{t}"] = f"{s}_label-{t}_desc-modulated_probseg.nii.gz"
    return names


def _sidecar(nii: Path, content: dict) -> None:
    nii.with_name(nii.name.replace(".nii.gz", ".json")).write_text(
        json.dumps(content, indent=2, default=str) + "\n"
    )


def _save_grid(src: Path, dst: Path, shape: tuple, affine: np.ndarray) -> None:
    img = nib.load(src)
    data = np.asarray(img.dataobj, np.float32)
    if data.shape != tuple(shape) or not np.allclose(img.affine, affine, atol=1e-3):
        raise PreprocessingError(
            f"{src}: expected the MNI grid {tuple(shape)}, got {data.shape} / affine "
            f"{img.affine.round(3).tolist()}"
        )
    out = nib.Nifti1Image(data, affine)
    out.set_qform(affine, code=4)
    out.set_sform(affine, code=4)
    out.header.set_xyzt_units("mm")
    nib.save(out, dst)


def _node_seconds(execgraph) -> dict[str, float]:  # noqa: ANN001 - networkx graph
    secs: dict[str, float] = {}
    for node in execgraph.nodes():
        if node.name in ("inputnode", "outputnode"):
            continue
        try:
            rt = node.result.runtime
        except Exception:  # noqa: BLE001 - timing is best effort, never fatal
            continue
        rts = rt if isinstance(rt, list) else [rt]
        secs[node.name] = round(sum(float(getattr(r, "duration", 0.0) or 0.0) for r in rts), 2)
    return secs


def _source(wf, node, field: str):  # noqa: ANN001, ANN202 - nipype objects
    """The (node, field) that really produces ``node.field`` (through identity nodes
    and sub-workflows)."""
    for src, _, data in wf._graph.in_edges(node, data=True):
        for src_field, dst_field in data["connect"]:
            if dst_field != field:
                continue
            if isinstance(src, pe.Workflow):
                sub_name, sub_field = src_field.rsplit(".", 1)
                return _source(src, src.get_node(sub_name), sub_field)
            if isinstance(src.interface, niu.IdentityInterface):
                return _source(wf, src, src_field)
            return src, src_field
    raise PreprocessingError(f"nothing connected to {node.name}.{field}")


def _outputs(wf, execgraph) -> dict:  # noqa: ANN001 - nipype workflow, networkx graph
    """Values of ``outputnode`` fields (identity nodes are dropped from the exec graph)."""
    ran = {node.name: node for node in execgraph.nodes()}
    outnode = wf.get_node("outputnode")
    values = {}
    for field in outnode.interface._outputs().copyable_trait_names():
        src, src_field = _source(wf, outnode, field)
        if src.name not in ran:
            raise PreprocessingError(f"nipype node {src.name!r} did not run")
        values[field] = getattr(ran[src.name].result.outputs, src_field)
    return values


_EXCLUDE_HINT = (
    "To finish the study without this scan, list it in the workflow config as "
    "exclude_scans: {{{scan}: <reason>}} (the report then lists it as excluded)."
)


def run_t1w_preproc(
    t1w: Path,
    *,
    scan: str,
    out_dir: Path,
    templates_dir: Path,
    resolution: float,
    skullstrip: str,
    seed: int,
    threads: int,
    work_dir: Path,
    registration: dict | None = None,
    keep_work: bool = False,
    reg_templates_dir: Path | None = None,
    segmentation_grid: str = "native",
) -> dict:
    """Preprocess one T1w scan into MNI space and write its derivatives atomically.

    Parameters
    ----------
    t1w : Path
        Raw T1w NIfTI.
    scan : str
        BIDS stem used in file names, e.g. ``sub-01`` or ``sub-01_ses-02``.
    out_dir : Path
        ``results/preprocess/sub-01/[ses-02/]anat``; receives the files of
        :func:`output_names` (plus JSON sidecars) only when everything succeeded.
    templates_dir : Path
        Folder written by :func:`brainlens.templates.build_templates` at ``resolution``.
    resolution : float
        MNI grid resolution in mm (1, 1.5, 2 or 4).
    skullstrip : {"deepbet", "ants_template"}
    seed : int
        ANTs registration seed.
    threads : int
        Threads for ANTs and deepbet.
    work_dir : Path
        Scratch folder (nipype working directory and staging); may be deleted afterwards.
    registration : dict, optional
        Overrides of :data:`brainlens.preprocess.workflow.REGISTRATION` (e.g. cheaper
        SyN iterations for a quick run); recorded in the sidecars.
    keep_work : bool
        Keep nipype's working directory after a success (about 150 MB per scan). It is
        always kept after a failure, for its crash files.
    reg_templates_dir : Path, optional
        Folder written by :func:`brainlens.templates.build_templates` at
        :func:`brainlens.grid.registration_grid` ``(resolution)`` (2 mm); required when the
        analysis grid is coarser than that (4 mm): the scan is registered, segmented and
        modulated there and the outputs are resampled onto the analysis grid.
    segmentation_grid : {"native", "analysis"}
        Grid Atropos segments on: the scan's own, or (``analysis``) coarsened to the
        voxel size of the grid the MNI maps are made on where the scan is finer; see
        :func:`brainlens.preprocess.workflow.init_t1w_preproc_wf`. The QC JSON records
        the voxel size used (``segmentation_voxel_mm``); native tissue volumes come from
        that grid.

    Returns
    -------
    dict
        The QC dict written to ``{scan}_desc-qc.json`` plus ``"files"``: key -> Path in
        ``out_dir``.

    Raises
    ------
    InputFileError
        The T1w fails :func:`brainlens.preprocess.checks.check_t1w`, or a template file
        is missing.
    PreprocessingError
        A step failed; the message names the scan file. ``out_dir`` is left untouched.
    """
    t0 = time.perf_counter()
    t1w, out_dir, work_dir = Path(t1w).resolve(), Path(out_dir), Path(work_dir).resolve()
    report = check_t1w(t1w)
    tpl = template_paths(Path(templates_dir), resolution)
    for k in TEMPLATE_KEYS:
        if not tpl[k].is_file():
            raise InputFileError(
                tpl[k],
                f"template {k!r} for resolution {resolution} mm not found",
                "run brainlens.templates.build_templates(templates_dir, resolution=...) first",
            )
    reg_res = registration_grid(resolution)
    reg_tpl = None
    if reg_res is not None:
        if reg_templates_dir is None:
            raise InputFileError(
                Path(templates_dir),
                f"a {resolution} mm analysis grid is registered on the {reg_res} mm grid, "
                "but no templates for that grid were given",
                f"pass reg_templates_dir= a folder written by build_templates(..., "
                f"resolution={reg_res})",
            )
        reg_tpl = template_paths(Path(reg_templates_dir), reg_res)
        for k in TEMPLATE_KEYS:
            if not reg_tpl[k].is_file():
                raise InputFileError(
                    reg_tpl[k],
                    f"registration template {k!r} for resolution {reg_res} mm not found",
                    f"run brainlens.templates.build_templates(dir, resolution={reg_res}) first",
                )
    shape, affine = mni_grid(resolution)
    ensure_ants_on_path()
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    for var in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(int(threads))

    work_dir.mkdir(parents=True, exist_ok=True)
    stage = work_dir / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    names = output_names(scan)
    try:
        wf = init_t1w_preproc_wf(
            name=f"t1w_preproc_{scan.replace('-', '_')}",
            templates=tpl,
            resolution=resolution,
            skullstrip=skullstrip,
            seed=seed,
            omp_nthreads=threads,
            registration=registration,
            reg_templates=reg_tpl,
            segmentation_grid=segmentation_grid,
        )
        wf.base_dir = str(work_dir / "nipype")
        wf.config["execution"].update(
            {
                "crashdump_dir": str(work_dir / "crash"),
                "crashfile_format": "txt",
                "stop_on_first_crash": True,
                "remove_unnecessary_outputs": False,
            }
        )
        wf.inputs.inputnode.t1w = str(t1w)
        t_wf = time.perf_counter()
        execgraph = wf.run(plugin="Linear")
        seconds_wf = time.perf_counter() - t_wf
        res = _outputs(wf, execgraph)
        steps = _node_seconds(execgraph)

        # --- stage outputs -------------------------------------------------------
        files = {k: stage / v for k, v in names.items()}
        _save_grid(Path(res["std_t1w"]), files["t1w"], shape, affine)
        for i, t in enumerate(TISSUES):
            _save_grid(Path(res["std_probseg"][i]), files[f"probseg_{t}"], shape, affine)
            _save_grid(Path(res["std_mod_probseg"][i]), files[f"modulated_{t}"], shape, affine)
        # intermediates are uncompressed (interfaces.WORK_EXT): re-save, not copy
        nib.save(nib.load(res["brain_mask"]), files["brain_mask"])
        shutil.copyfile(res["anat2std_xfm"], files["xfm_to_std"])
        shutil.copyfile(res["std2anat_xfm"], files["xfm_from_std"])

        t_qc = time.perf_counter()
        native = dict(zip(("csf", "gm", "wm"), res["native_probseg"], strict=True))
        metrics: dict = {"scan": scan, "source": str(t1w), "input_sha1": report.sha1}
        metrics |= fileops.tissue_volumes_ml(native, Path(res["brain_mask"]))
        seg_affine = nib.load(res["native_probseg"][0]).affine
        metrics["segmentation_voxel_mm"] = [
            round(float(v), 4) for v in np.sqrt((seg_affine[:3, :3] ** 2).sum(0))
        ]
        metrics |= qc.registration_metrics(
            files["t1w"], tpl["t1w"], tpl["brain_mask"], files["brain_mask"],
            Path(res["tpl_mask_native"]),
        )  # fmt: skip
        # the Jacobian lives on the grid the modulation ran on
        metrics |= qc.jacobian_metrics(Path(res["jacobian"]), (reg_tpl or tpl)["brain_mask"])
        v_mni = float(np.prod([resolution] * 3)) / 1000.0
        for t in TISSUES:
            mod = np.asarray(nib.load(files[f"modulated_{t}"]).dataobj, np.float64).sum() * v_mni
            metrics[f"{t.lower()}_ml_modulated"] = float(mod)
            native_ml = metrics[f"{t.lower()}_ml"]
            metrics[f"{t.lower()}_modulation_ratio"] = float(mod / native_ml) if native_ml else None
        qc.qc_figure(
            files["t1w"],
            {"GM": files["probseg_GM"], "WM": files["probseg_WM"]},
            tpl["brain_mask"],
            files["qc_png"],
            title=f"{scan} {skullstrip} {resolution} mm",
        )
        steps["qc"] = round(time.perf_counter() - t_qc, 2)
        metrics |= {
            "skullstrip": skullstrip,
            "resolution": float(resolution),
            "seed": int(seed),
            "threads": int(threads),
            "seconds_workflow": round(seconds_wf, 2),
            "seconds_steps": steps,
            "input": report.to_dict(),
        }
        versions = software_versions()
        metrics["software"] = versions
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        files["qc_json"].write_text(json.dumps(metrics, indent=2, default=str) + "\n")

        params = {
            "Space": SPACE,
            "Resolution": float(resolution),
            "RegistrationGridResolution": REGISTRATION_RESOLUTION,
            "OutputsResampledFromGridResolution": reg_res,
            "SkullStripMethod": skullstrip,
            "Seed": int(seed),
            "Registration": REGISTRATION | (registration or {}),
            "N4": N4,
            "Atropos": ATROPOS,
            "SegmentationGrid": segmentation_grid,
            # Atropos ran on the native grid, coarsened where finer than this (mm)
            **(
                {"SegmentationMinVoxelSize": float(reg_res or resolution)}
                if segmentation_grid == "analysis"
                else {}
            ),
            "Modulation": "modulated = probseg * det(D phi), phi: MNI -> native mm "
            "(CreateJacobianDeterminantImage of the composite anat2std displacement field); "
            "sum * voxel volume = native tissue volume",
        }
        for k, f in files.items():
            if f.name.endswith(".nii.gz"):
                side = {"Sources": [str(t1w)], "SoftwareVersions": versions} | params
                if k == "brain_mask":
                    side |= {"Type": "Brain", "Space": "T1w (native, RAS-reordered)"}
                elif k.startswith(("probseg_", "modulated_")):
                    side["Tissue"] = k.split("_")[1]
                    side["Modulated"] = k.startswith("modulated_")
                elif k == "t1w":
                    side["SkullStripped"] = True
                    side["Intensity"] = "N4 bias-corrected, not rescaled"
                _sidecar(f, side)
    except BrainlensError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise PreprocessingError(
            f"{t1w}: preprocessing of {scan} failed: {exc}. {_EXCLUDE_HINT.format(scan=scan)}"
        ) from exc
    except Exception as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise PreprocessingError(
            f"{t1w}: preprocessing of {scan} failed ({type(exc).__name__}: {exc}); "
            f"see nipype crash files in {work_dir / 'crash'}. " + _EXCLUDE_HINT.format(scan=scan)
        ) from exc

    # --- publish: every file staged; move them in (same filesystem -> atomic renames) --
    out_dir.mkdir(parents=True, exist_ok=True)
    pub = out_dir / f".{scan}.incoming"
    if pub.exists():
        shutil.rmtree(pub)
    shutil.copytree(stage, pub)  # cross-device copy first, then renames inside out_dir
    for f in sorted(pub.iterdir()):
        os.replace(f, out_dir / f.name)
    pub.rmdir()
    shutil.rmtree(stage, ignore_errors=True)
    if not keep_work:
        shutil.rmtree(work_dir / "nipype", ignore_errors=True)
        shutil.rmtree(work_dir / "crash", ignore_errors=True)
        with contextlib.suppress(OSError):
            work_dir.rmdir()  # only when nothing else was put there
    metrics["files"] = {k: out_dir / v for k, v in names.items()}
    return metrics
