"""The nipype T1w preprocessing workflow (nipreps style).

``init_t1w_preproc_wf`` composes: reorient to RAS -> N4 -> skull strip
(:mod:`~brainlens.preprocess.skullstrip`: deepbet or template-mask registration) ->
rigid/affine/SyN registration of the brain to the MNI brain template
(:mod:`~brainlens.preprocess.registration`) -> Atropos GM/WM/CSF with warped template
priors (:mod:`~brainlens.preprocess.segmentation`) -> tissue maps to MNI, plain and
Jacobian-modulated (:mod:`~brainlens.preprocess.modulation`). Each sub-workflow's
``inputnode``/``outputnode`` is its contract. Every ANTs step is a nipype ANTs
interface, i.e. a subprocess call of the ANTs program (real ANTs or the antspyx console
scripts of :mod:`brainlens.preprocess.ants_cli`).
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import ants
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.errors import ConfigError
from brainlens.grid import REGISTRATION_RESOLUTION
from brainlens.preprocess.interfaces import WORK_EXT, ApplyMask, Reorient
from brainlens.preprocess.modulation import init_modulation_wf
from brainlens.preprocess.registration import REGISTRATION, init_registration_wf
from brainlens.preprocess.segmentation import (
    ATROPOS,
    SEGMENTATION_GRIDS,
    TISSUES,
    init_segmentation_wf,
)
from brainlens.preprocess.skullstrip import SKULLSTRIP_METHODS, init_skullstrip_wf

__all__ = [
    "ATROPOS",
    "N4",
    "REGISTRATION",
    "SEGMENTATION_GRIDS",
    "SKULLSTRIP_METHODS",
    "TISSUES",
    "init_skullstrip_wf",
    "init_t1w_preproc_wf",
]

#: N4 settings. Four fitting levels from a 300 mm B-spline mesh (final knot spacing
#: 37.5 mm) on the image shrunk 6 times. Measured on the benchmark's demo head (1.5 mm)
#: and Colin27 (1 mm), r with the template after the default registration / N4 seconds
#: on 2 cores: three levels from 200 mm at shrink 4 (the earlier default) 0.862 / 10.0 s
#: and 0.823 / 26.6 s; the same at shrink 6 0.863 / 3.7 s and 0.824 / 9.3 s; four levels
#: from 200 mm 0.882 and 0.808 (a finer field also removes anatomy on the real head);
#: this setting 0.891 / 6.3 s and 0.822 / 13.9 s. A residual bias field lowers the
#: registration's r with the template and the tissue contrast Atropos sees.
N4 = {
    "shrink_factor": 6,
    "n_iterations": [50, 50, 50, 50],
    "convergence_threshold": 1e-7,
    "bspline_fitting_distance": 300,
}

#: ``outputnode`` fields of the registration / modulation sub-workflows passed through.
REGISTRATION_OUTPUTS = ("anat2std_xfm", "std2anat_xfm", "std_t1w", "tpl_mask_native")
MODULATION_OUTPUTS = ("std_probseg", "std_mod_probseg", "jacobian")
#: Fields of the workflow's ``outputnode`` (see :func:`init_t1w_preproc_wf`).
OUTPUT_FIELDS = (
    "t1w_ras",
    "t1w_n4",
    "brain_mask",
    "t1w_brain",
    "anat2std_xfm",
    "std2anat_xfm",
    "std_t1w",
    "native_probseg",
    "std_probseg",
    "std_mod_probseg",
    "jacobian",
    "tpl_mask_native",
)


def _n4_node(omp_nthreads: int) -> pe.Node:
    """The N4 bias-field correction node (:data:`N4` settings)."""
    n4 = ants.N4BiasFieldCorrection(
        dimension=3,
        output_image="t1w_n4" + WORK_EXT,
        copy_header=True,
        **N4,
        num_threads=omp_nthreads,
    )
    return pe.Node(n4, name="n4", n_procs=omp_nthreads)


def _work_templates(
    templates: dict[str, Path],
    reg_templates: dict[str, Path] | None,
    *,
    skullstrip: str,
    resolution: float,
    registration_resolution: float,
) -> tuple[dict[str, Path], bool]:
    """Check the template files; return those of the grid the chain runs on and
    whether the analysis grid is coarser than the registration grid."""
    if skullstrip not in SKULLSTRIP_METHODS:
        raise ConfigError(
            f"preprocess.skullstrip: expected one of {list(SKULLSTRIP_METHODS)}, got {skullstrip!r}"
        )
    need = ["t1w", "brain_mask", "gm", "wm", "csf"] + (
        ["head", "head_mask"] if skullstrip == "ants_template" else []
    )
    missing = [k for k in need if k not in templates or not Path(templates[k]).is_file()]
    if missing:
        raise ConfigError(
            f"templates: missing {missing} (expected files from build_templates at "
            f"resolution {resolution}); rerun brainlens.templates.build_templates"
        )
    coarse = float(resolution) > float(registration_resolution) + 1e-6
    if not coarse:
        return templates, False
    missing = [k for k in need if not reg_templates or not Path(reg_templates.get(k, "")).is_file()]
    if missing:
        raise ConfigError(
            f"reg_templates: missing {missing} (a {resolution} mm analysis grid is "
            f"registered on the {registration_resolution} mm grid; expected files from "
            f"build_templates at resolution {registration_resolution}); rerun "
            "brainlens.templates.build_templates"
        )
    return reg_templates, True


def _mni_stage_wfs(
    work_templates: dict[str, Path],
    *,
    coarse: bool,
    resolution: float,
    registration_resolution: float,
    seed: int,
    omp_nthreads: int,
    registration: dict | None,
    atropos: dict | None,
    segmentation_grid: str,
) -> tuple[pe.Workflow, pe.Workflow, pe.Workflow]:
    """The registration, segmentation and modulation sub-workflows, on their grids.

    The chain runs on the grid of ``work_templates`` (:func:`_work_templates`): the
    analysis grid, or with ``coarse`` the registration grid, in which case the MNI
    outputs are resampled onto the analysis grid (``output_resolution``). An analysis
    grid finer than ``registration_resolution`` registers against the template
    resampled to that grid (``fixed_resolution``).
    """
    grid_mm = float(registration_resolution) if coarse else float(resolution)
    tpl = {k: str(Path(v).resolve()) for k, v in work_templates.items()}
    out_res = float(resolution) if coarse else None
    fixed_res = float(registration_resolution)
    fixed_res = fixed_res if float(resolution) < fixed_res else None
    registration_wf = init_registration_wf(
        templates=tpl, grid_mm=grid_mm, settings=REGISTRATION | (registration or {}), seed=seed,
        omp_nthreads=omp_nthreads, fixed_resolution=fixed_res, output_resolution=out_res,
    )  # fmt: skip
    segmentation_wf = init_segmentation_wf(
        templates=tpl, segmentation_grid=segmentation_grid, grid_mm=grid_mm,
        omp_nthreads=omp_nthreads, atropos=atropos,
    )  # fmt: skip
    modulation_wf = init_modulation_wf(
        templates=tpl, grid_mm=grid_mm, omp_nthreads=omp_nthreads, output_resolution=out_res
    )
    return registration_wf, segmentation_wf, modulation_wf


def init_t1w_preproc_wf(
    *,
    templates: dict[str, Path],
    resolution: float,
    skullstrip: str,
    seed: int,
    omp_nthreads: int,
    name: str = "t1w_preproc_wf",
    registration: dict | None = None,
    atropos: dict | None = None,
    registration_resolution: float = REGISTRATION_RESOLUTION,
    reg_templates: dict[str, Path] | None = None,
    segmentation_grid: str = "native",
) -> pe.Workflow:
    """Build the T1w preprocessing workflow.

    Parameters
    ----------
    templates : dict of str to Path
        :func:`brainlens.templates.build_templates` at ``resolution``; uses ``t1w``,
        ``brain_mask``, ``gm``, ``wm``, ``csf`` (and ``head``, ``head_mask`` for
        ``ants_template``).
    resolution : float
        Analysis grid resolution in mm (the grid comes from ``templates``).
    skullstrip : {"deepbet", "ants_template"}
        See :func:`~brainlens.preprocess.skullstrip.init_skullstrip_wf`.
    seed, omp_nthreads : int
        ANTs random seed of both registrations; threads of ANTs and deepbet.
    name : str
        Workflow name.
    registration, atropos : dict, optional
        Overrides merged into :data:`REGISTRATION` / :data:`ATROPOS`.
    registration_resolution : float
        A finer analysis grid is registered against the template resampled to this grid
        (mm); on a coarser one (4 mm) the whole chain runs on ``reg_templates`` and the MNI
        outputs are resampled onto the analysis grid at the end (registering against the
        4 mm template carried half of the planted atrophy: Cohen's d 1.9 vs 3.8).
    reg_templates : dict of str to Path, optional
        Templates at ``registration_resolution``; required when ``resolution`` is coarser.
    segmentation_grid : {"native", "analysis"}
        See :func:`brainlens.preprocess.segmentation.init_segmentation_wf`.

    Returns
    -------
    Workflow
        ``inputnode.t1w``: the raw T1w. ``outputnode``: :data:`OUTPUT_FIELDS` (tissue
        lists ordered as :data:`TISSUES`), described in each sub-workflow's docstring.
    """
    work_templates, coarse = _work_templates(
        templates, reg_templates, skullstrip=skullstrip, resolution=resolution,
        registration_resolution=registration_resolution,
    )  # fmt: skip
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(OUTPUT_FIELDS)), name="outputnode")
    reorient = pe.Node(Reorient(), name="reorient")
    n4 = _n4_node(omp_nthreads)
    apply_mask = pe.Node(ApplyMask(), name="apply_mask")
    skullstrip_wf = init_skullstrip_wf(
        skullstrip=skullstrip, templates=work_templates, seed=seed, omp_nthreads=omp_nthreads
    )
    registration_wf, segmentation_wf, modulation_wf = _mni_stage_wfs(
        work_templates, coarse=coarse, resolution=resolution,
        registration_resolution=registration_resolution, seed=seed, omp_nthreads=omp_nthreads,
        registration=registration, atropos=atropos, segmentation_grid=segmentation_grid,
    )  # fmt: skip
    # fmt: off
    workflow.connect([
        (inputnode, reorient, [("t1w", "in_file")]),
        (reorient, n4, [("out_file", "input_image")]),
        (n4, skullstrip_wf, [("output_image", "inputnode.in_file")]),
        (n4, apply_mask, [("output_image", "in_file")]),
        (skullstrip_wf, apply_mask, [("outputnode.out_mask", "in_mask")]),
        (apply_mask, registration_wf, [("out_file", "inputnode.t1w_brain")]),
        (n4, registration_wf, [("output_image", "inputnode.t1w_n4")]),
        (n4, segmentation_wf, [("output_image", "inputnode.t1w_n4")]),
        (skullstrip_wf, segmentation_wf, [("outputnode.out_mask", "inputnode.brain_mask")]),
        (registration_wf, segmentation_wf, [("outputnode.std2anat_xfm", "inputnode.std2anat_xfm")]),
        (apply_mask, modulation_wf, [("out_file", "inputnode.t1w_brain")]),
        (segmentation_wf, modulation_wf, [("outputnode.native_probseg", "inputnode.native_probseg")]),
        (registration_wf, modulation_wf, [("outputnode.anat2std_xfm", "inputnode.anat2std_xfm")]),
        (reorient, outputnode, [("out_file", "t1w_ras")]),
        (n4, outputnode, [("output_image", "t1w_n4")]),
        (apply_mask, outputnode, [("out_file", "t1w_brain")]),
        (skullstrip_wf, outputnode, [("outputnode.out_mask", "brain_mask")]),
        (registration_wf, outputnode, [(f"outputnode.{f}", f) for f in REGISTRATION_OUTPUTS]),
        (segmentation_wf, outputnode, [("outputnode.native_probseg", "native_probseg")]),
        (modulation_wf, outputnode, [(f"outputnode.{f}", f) for f in MODULATION_OUTPUTS]),
    ])
    # fmt: on
    return workflow
