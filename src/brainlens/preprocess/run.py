"""File-level entry point of the T1w preprocessing (called by the Snakemake rule).

:func:`run_t1w_preproc` checks the inputs, runs the nipype workflow
(:func:`brainlens.preprocess.workflow.init_t1w_preproc_wf`), computes the QC metrics and
hands the files to :mod:`brainlens.preprocess.outputs` for staging and publishing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.derivatives import FOLDERS, TEMPLATE_KEYS, template_paths, tissue_key
from brainlens.errors import BrainlensError, InputFileError, PreprocessingError
from brainlens.grid import mni_grid, registration_grid
from brainlens.preprocess import fileops, qc
from brainlens.preprocess.checks import T1wReport, check_t1w
from brainlens.preprocess.outputs import (
    output_names,
    publish,
    published_dir,
    sidecar_params,
    source_of,
    stage_images,
    staged_paths,
    write_json,
    write_sidecars,
)
from brainlens.preprocess.segmentation import TISSUES
from brainlens.preprocess.versions import ensure_ants_on_path, software_versions
from brainlens.preprocess.workdir import expand_work_dir
from brainlens.preprocess.workflow import init_t1w_preproc_wf

__all__ = ["output_names", "run_t1w_preproc"]


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


def _templates(
    templates_dir: Path, resolution: float, reg_templates_dir: Path | None
) -> tuple[dict[str, Path], float | None, dict[str, Path] | None]:
    """Template files of the analysis grid and, for a coarse grid, of the registration grid.

    Returns
    -------
    tpl : dict of str to Path
        Templates at ``resolution``.
    reg_res : float or None
        :func:`brainlens.grid.registration_grid` of ``resolution``.
    reg_tpl : dict of str to Path or None
        Templates at ``reg_res`` (None when ``reg_res`` is None).
    """
    tpl = template_paths(Path(templates_dir), resolution)
    for k in TEMPLATE_KEYS:
        if not tpl[k].is_file():
            raise InputFileError(
                tpl[k],
                f"template {k!r} for resolution {resolution} mm not found",
                "run brainlens.templates.build_templates(templates_dir, resolution=...) first",
            )
    reg_res = registration_grid(resolution)
    if reg_res is None:
        return tpl, None, None
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
    return tpl, reg_res, reg_tpl


def _prepare(work_dir: Path, threads: int) -> Path:
    """Put ANTs on PATH, set its thread counts, and return an empty staging folder."""
    ensure_ants_on_path()
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    for var in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(int(threads))
    work_dir.mkdir(parents=True, exist_ok=True)
    stage = work_dir / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    return stage


def _failure(exc: Exception, *, t1w: Path, scan: str, work_dir: Path) -> PreprocessingError:
    """The error of a failed scan: names the file, the cause and how to go on without it."""
    if isinstance(exc, BrainlensError):
        return PreprocessingError(
            f"{t1w}: preprocessing of {scan} failed: {exc}. {_EXCLUDE_HINT.format(scan=scan)}"
        )
    return PreprocessingError(
        f"{t1w}: preprocessing of {scan} failed ({type(exc).__name__}: {exc}); "
        f"see nipype crash files in {work_dir / 'crash'}. " + _EXCLUDE_HINT.format(scan=scan)
    )


def _remove_work(work_dir: Path) -> None:
    shutil.rmtree(work_dir / "nipype", ignore_errors=True)
    shutil.rmtree(work_dir / "crash", ignore_errors=True)
    with contextlib.suppress(OSError):
        work_dir.rmdir()  # only when nothing else was put there


def _run_workflow(t1w: Path, work_dir: Path, **wf_kwargs: object) -> tuple[dict, dict, float]:
    """Build (:func:`init_t1w_preproc_wf` with ``wf_kwargs``) and run the workflow on
    ``t1w`` in ``work_dir``; return its outputs, step seconds and wall seconds."""
    wf = init_t1w_preproc_wf(**wf_kwargs)
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
    return _outputs(wf, execgraph), _node_seconds(execgraph), seconds_wf


def _qc_metrics(
    res: dict,
    files: dict[str, Path],
    *,
    scan: str,
    t1w: Path,
    report: T1wReport,
    tpl: dict[str, Path],
    reg_tpl: dict[str, Path] | None,
    resolution: float,
    title: str,
    steps: dict[str, float],
) -> dict:
    """QC metrics of one scan (volumes, registration, Jacobian, modulation) and its figure.

    Records its own seconds in ``steps["qc"]``.
    """
    t_qc = time.perf_counter()
    native = dict(zip(("csf", "gm", "wm"), res["native_probseg"], strict=True))
    metrics: dict = {"scan": scan, "input_sha1": report.sha1}
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
        mod_file = files[tissue_key(t, modulated=True)]
        mod = np.asarray(nib.load(mod_file).dataobj, np.float64).sum() * v_mni
        metrics[f"{t.lower()}_ml_modulated"] = float(mod)
        native_ml = metrics[f"{t.lower()}_ml"]
        metrics[f"{t.lower()}_modulation_ratio"] = float(mod / native_ml) if native_ml else None
    qc.qc_figure(
        files["t1w"],
        {t: files[tissue_key(t)] for t in ("GM", "WM")},
        tpl["brain_mask"],
        files["qc_png"],
        title=title,
    )
    steps["qc"] = round(time.perf_counter() - t_qc, 2)
    return metrics


def _produce(
    t1w: Path,
    stage: Path,
    names: dict[str, str],
    *,
    scan: str,
    work_dir: Path,
    report: T1wReport,
    templates: tuple[dict[str, Path], float | None, dict[str, Path] | None],
    source: str,
    settings: dict,
) -> dict:
    """Run the workflow on ``t1w`` and write every output (and its sidecar) into ``stage``.

    ``settings``: ``resolution, skullstrip, seed, threads, registration,
    segmentation_grid`` of :func:`run_t1w_preproc`. Returns the QC metrics (also written
    to the ``qc_json`` file).
    """
    tpl, reg_res, reg_tpl = templates
    resolution, skullstrip, seed = settings["resolution"], settings["skullstrip"], settings["seed"]
    res, steps, seconds_wf = _run_workflow(
        t1w, work_dir, name=f"t1w_preproc_{scan.replace('-', '_')}", templates=tpl,
        resolution=resolution, skullstrip=skullstrip, seed=seed,
        omp_nthreads=settings["threads"], registration=settings["registration"],
        reg_templates=reg_tpl, segmentation_grid=settings["segmentation_grid"],
    )  # fmt: skip
    files = staged_paths(stage, names)
    stage_images(res, files, *mni_grid(resolution))
    metrics = _qc_metrics(
        res, files, scan=scan, t1w=t1w, report=report, tpl=tpl, reg_tpl=reg_tpl,
        resolution=resolution, title=f"{scan} {skullstrip} {resolution} mm", steps=steps,
    )  # fmt: skip
    metrics |= {
        "source": source, "skullstrip": skullstrip, "resolution": float(resolution),
        "seed": int(seed), "threads": int(settings["threads"]),
        "seconds_workflow": round(seconds_wf, 2), "seconds_steps": steps,
        "input": report.to_dict(),
    }  # fmt: skip
    metrics["software"] = versions = software_versions()
    write_sidecars(
        files,
        source=source,
        versions=versions,
        params=sidecar_params(
            resolution=resolution, reg_res=reg_res, skullstrip=skullstrip, seed=seed,
            registration=settings["registration"],
            segmentation_grid=settings["segmentation_grid"],
        ),
    )  # fmt: skip
    return metrics


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
    bids_dir: Path | None = None,
) -> dict:
    """Preprocess one T1w scan into MNI space and write its derivatives atomically.

    Parameters
    ----------
    t1w : Path
        Raw T1w NIfTI.
    scan : str
        BIDS stem used in file names, e.g. ``sub-01`` or ``sub-01_ses-02``.
    out_dir : Path
        The scan's ``anat`` folder, ``results/preprocess/sub-01/[ses-02/]anat``
        (:func:`brainlens.derivatives.scan_dir`); receives the files of
        :func:`output_names` (plus JSON sidecars), the QC picture its sibling
        ``figures/`` (:func:`~brainlens.preprocess.outputs.published_dir`), only when
        everything succeeded.
    templates_dir, reg_templates_dir : Path
        Folders written by :func:`brainlens.templates.build_templates` at ``resolution``
        and at :func:`brainlens.grid.registration_grid` ``(resolution)`` (2 mm; required,
        and used for registration, segmentation and modulation, when the analysis grid is
        coarser, 4 mm; the outputs are then resampled onto the analysis grid).
    resolution : float
        MNI grid resolution in mm (1, 1.5, 2 or 4); the ``res-`` label of the names.
    skullstrip : {"deepbet", "ants_template"}
    seed, threads : int
        ANTs registration seed; threads for ANTs and deepbet.
    work_dir : Path or str
        Scratch folder (nipype working directory, staging); may be deleted afterwards.
        ``~`` and ``$VARS`` are expanded here, on the job's node (node-local scratch:
        :func:`brainlens.preprocess.workdir.expand_work_dir`).
    registration : dict, optional
        Overrides of :data:`brainlens.preprocess.registration.REGISTRATION` (e.g. cheaper
        SyN iterations for a quick run); recorded in the sidecars.
    keep_work : bool
        Keep nipype's work folder after a success (150 MB a scan; kept after a failure).
    segmentation_grid : {"native", "analysis"}
        Grid Atropos segments on (:func:`brainlens.preprocess.segmentation.init_segmentation_wf`);
        the QC JSON records its voxel size (``segmentation_voxel_mm``), the grid of the
        native tissue volumes.
    bids_dir : Path, optional
        The raw BIDS dataset ``t1w`` belongs to (the workflow passes it): ``Sources`` and
        the QC JSON's ``source`` are then the BIDS URI ``bids:raw:<path in the dataset>``;
        without it (a file outside any dataset) its ``file://`` URI.

    Returns
    -------
    dict
        The QC dict written to its ``qc_json`` file, plus ``"files"``
        (:data:`brainlens.derivatives.DERIVATIVES` key -> Path).

    Raises
    ------
    InputFileError
        The T1w fails :func:`~brainlens.preprocess.checks.check_t1w`; a template is
        missing; ``t1w`` is not inside ``bids_dir``.
    PreprocessingError
        A step failed; the message names the scan file. ``out_dir`` is left untouched.
    """
    t0 = time.perf_counter()
    t1w, out_dir, work_dir = Path(t1w).resolve(), Path(out_dir), expand_work_dir(work_dir)
    report, source = check_t1w(t1w), source_of(t1w, bids_dir)
    templates = _templates(templates_dir, resolution, reg_templates_dir)
    names, stage = output_names(scan, resolution=resolution), _prepare(work_dir, threads)
    settings = {
        "resolution": resolution, "skullstrip": skullstrip, "seed": seed, "threads": threads,
        "registration": registration, "segmentation_grid": segmentation_grid,
    }  # fmt: skip
    try:
        metrics = _produce(
            t1w, stage, names, scan=scan, work_dir=work_dir, report=report,
            templates=templates, source=source, settings=settings,
        )  # fmt: skip
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        write_json(stage / FOLDERS["qc_json"] / names["qc_json"], metrics)
    except Exception as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise _failure(exc, t1w=t1w, scan=scan, work_dir=work_dir) from exc
    publish(stage, out_dir, scan)
    if not keep_work:
        _remove_work(work_dir)
    metrics["files"] = {k: published_dir(out_dir, FOLDERS[k]) / v for k, v in names.items()}
    return metrics
