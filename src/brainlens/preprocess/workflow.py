"""The nipype T1w preprocessing workflow (nipreps style).

``init_t1w_preproc_wf`` builds: reorient to RAS -> N4 -> skull strip (deepbet or
template-mask registration) -> rigid/affine/SyN registration of the brain to the MNI
brain template -> Atropos GM/WM/CSF with warped template priors -> tissue maps to MNI,
plain and Jacobian-modulated. Every ANTs step is a nipype ANTs interface, i.e. a
subprocess call of the ANTs program (real ANTs or the antspyx console scripts of
:mod:`brainlens.preprocess.ants_cli`).
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import ants
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.errors import ConfigError
from brainlens.grid import REGISTRATION_RESOLUTION
from brainlens.preprocess.interfaces import (
    WORK_EXT,
    AntiAlias,
    ApplyMask,
    DeepBet,
    MakePriors,
    Modulate,
    Reorient,
    ResampleToGrid,
    SegmentationGrid,
    ThresholdMask,
)

SKULLSTRIP_METHODS = ("deepbet", "ants_template")
#: Grids Atropos can segment on: the scan's own (``native``), or the scan's grid
#: coarsened to the voxel size of the grid the MNI maps are made on (``analysis``).
SEGMENTATION_GRIDS = ("native", "analysis")
#: Tissue class order of Atropos and of every list output of the workflow.
TISSUES = ("CSF", "GM", "WM")

#: Registration settings of the brain -> MNI registration (rigid, affine, SyN).
#: Chosen on Colin27 (real 1 mm head, deepbet brain) registered to the 2 mm template,
#: scored by r with the template on the 2 mm grid (warped at 1 mm, anti-aliased), CPU s
#: of antsRegistration on the shared 2-core machine:
#: antspyx ``ants.registration(type_of_transform="SyN")`` at 1 mm: r 0.867 (126 s wall);
#: SyN Mattes 60x40x10: 0.842 / 29 s; Mattes 100x70x20: 0.856 / 44 s;
#: CC radius 2 60x40x10: 0.895 / 130 s; CC radius 2 60x40x0: 0.842 / 55 s;
#: CC radius 1 60x40x10: 0.898 / 62 s; CC radius 1 40x20x5: 0.887 / 41 s <- default
#: (the finest level matters most). The same at a 1.5 mm fixed grid costs 144 s for
#: r 0.911, so registration always runs against the template at
#: ``registration_resolution`` (2 mm) and only the outputs use the analysis grid
#: (on the 1.5 mm grid: ours 0.871 vs antspyx-1mm 0.847).
REGISTRATION = {
    "transforms": ["Rigid", "Affine", "SyN"],
    "transform_parameters": [(0.1,), (0.1,), (0.2, 3.0, 0.0)],
    "metric": ["MI", "MI", "CC"],
    "radius_or_number_of_bins": [32, 32, 1],
    "sampling_strategy": ["Regular", "Regular", "None"],
    "sampling_percentage": [0.25, 0.25, 1.0],
    "number_of_iterations": [[1000, 500, 250], [1000, 500, 250], [40, 20, 5]],
    "convergence_threshold": [1e-6, 1e-6, 1e-6],
    "convergence_window_size": [10, 10, 10],
    "shrink_factors": [[8, 4, 2], [8, 4, 2], [4, 2, 1]],
    "smoothing_sigmas": [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [2.0, 1.0, 0.0]],
}
#: Registration settings of the head template -> head scan (``ants_template`` skull strip).
HEAD_REGISTRATION = {
    "transforms": ["Rigid", "Affine", "SyN"],
    "transform_parameters": [(0.1,), (0.1,), (0.2, 3.0, 0.0)],
    "metric": ["MI", "MI", "Mattes"],
    "radius_or_number_of_bins": [32, 32, 32],
    "sampling_strategy": ["Regular", "Regular", "None"],
    "sampling_percentage": [0.25, 0.25, 1.0],
    "number_of_iterations": [[1000, 500, 250], [1000, 500, 250], [50, 30, 0]],
    "convergence_threshold": [1e-6, 1e-6, 1e-6],
    "convergence_window_size": [10, 10, 10],
    "shrink_factors": [[8, 4, 2], [8, 4, 2], [4, 2, 1]],
    "smoothing_sigmas": [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [2.0, 1.0, 0.0]],
}
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
#: Atropos settings (3 classes, template priors).
ATROPOS = {
    "prior_weighting": 0.25,
    "mrf_smoothing_factor": 0.1,
    "mrf_radius": [1, 1, 1],
    "n_iterations": 5,
    "convergence_threshold": 0.001,
}


def _first(in_list: list | str) -> str:
    # nipype collapses a one-element OutputMultiObject to a plain string
    return in_list if isinstance(in_list, str) else in_list[0]


def _registration(name: str, settings: dict, *, seed: int, omp_nthreads: int) -> pe.Node:
    """A nipype ``ants.Registration`` node with composite transforms (forward + inverse)."""
    n = len(settings["transforms"])
    reg = ants.Registration(
        dimension=3,
        float=True,
        collapse_output_transforms=True,
        write_composite_transform=True,
        initialize_transforms_per_stage=False,
        initial_moving_transform_com=1,
        output_warped_image=False,  # not used; every output is resampled explicitly
        interpolation="Linear",
        metric_weight=[1.0] * n,
        sigma_units=["vox"] * n,
        use_histogram_matching=[True] * n,
        winsorize_lower_quantile=0.005,
        winsorize_upper_quantile=0.995,
        random_seed=int(seed),
        num_threads=int(omp_nthreads),
        **settings,
    )
    return pe.Node(reg, name=name, n_procs=omp_nthreads)


def init_skullstrip_wf(
    *,
    skullstrip: str,
    templates: dict[str, Path],
    seed: int,
    omp_nthreads: int,
    name: str = "skullstrip_wf",
) -> pe.Workflow:
    """Brain mask of a bias-corrected T1w head.

    Parameters
    ----------
    skullstrip : {"deepbet", "ants_template"}
        ``deepbet``: the deepbet CNN (CPU). ``ants_template``: the head template
        (``templates["head"]``) is registered to the scan with :data:`HEAD_REGISTRATION`
        (rigid, affine, SyN that skips the finest level) and its brain mask
        (``templates["head_mask"]``) carried back (linear, >= 0.5, largest component,
        holes filled).
    templates : dict of str to Path
        Output of :func:`brainlens.templates.build_templates`.
    seed : int
        ANTs random seed.
    omp_nthreads : int
        Threads for ANTs / torch.
    name : str
        Workflow name.

    Returns
    -------
    Workflow
        ``inputnode.in_file`` (RAS+, N4-corrected head) -> ``outputnode.out_mask``
        (uint8 mask on the input grid).
    """
    if skullstrip not in SKULLSTRIP_METHODS:
        raise ConfigError(
            f"preprocess.skullstrip: expected one of {list(SKULLSTRIP_METHODS)}, got {skullstrip!r}"
        )
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_mask"]), name="outputnode")
    if skullstrip == "deepbet":
        deepbet = pe.Node(DeepBet(num_threads=omp_nthreads), name="deepbet", n_procs=omp_nthreads)
        # fmt: off
        workflow.connect([
            (inputnode, deepbet, [("in_file", "in_file")]),
            (deepbet, outputnode, [("out_mask", "out_mask")]),
        ])
        # fmt: on
        return workflow
    for key in ("head", "head_mask"):
        if key not in templates or not Path(templates[key]).is_file():
            raise ConfigError(
                f"templates[{key!r}]: file missing (needed by skullstrip='ants_template'); "
                "rerun brainlens.templates.build_templates"
            )
    head_reg = _registration("head_reg", HEAD_REGISTRATION, seed=seed, omp_nthreads=omp_nthreads)
    head_reg.inputs.moving_image = str(Path(templates["head"]).resolve())
    head_mask_to_t1w = pe.Node(
        ants.ApplyTransforms(
            input_image=str(Path(templates["head_mask"]).resolve()),
            output_image="head_mask" + WORK_EXT,
            interpolation="Linear",
            float=True,
            num_threads=omp_nthreads,
        ),
        name="head_mask_to_t1w",
    )
    threshold_mask = pe.Node(ThresholdMask(threshold=0.5), name="threshold_mask")
    # fmt: off
    workflow.connect([
        (inputnode, head_reg, [("in_file", "fixed_image")]),
        (inputnode, head_mask_to_t1w, [("in_file", "reference_image")]),
        (head_reg, head_mask_to_t1w, [("composite_transform", "transforms")]),
        (head_mask_to_t1w, threshold_mask, [("output_image", "in_file")]),
        (threshold_mask, outputnode, [("out_mask", "out_mask")]),
    ])
    # fmt: on
    return workflow


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
        Output of :func:`brainlens.templates.build_templates` at ``resolution``; uses
        ``t1w``, ``brain_mask``, ``gm``, ``wm``, ``csf``, and for ``ants_template`` also
        ``head`` and ``head_mask``.
    resolution : float
        Template grid resolution in mm (recorded; the grid comes from ``templates``).
    skullstrip : {"deepbet", "ants_template"}
        ``deepbet``: the deepbet CNN on the N4-corrected head. ``ants_template``: the
        head template is registered to the scan (rigid, affine, SyN skipping full
        resolution) and its brain mask carried back (linear, >= 0.5, largest component).
    seed : int
        ANTs random seed of both registrations.
    omp_nthreads : int
        Threads of every ANTs program and of deepbet.
    name : str
        Workflow name.
    registration, atropos : dict, optional
        Overrides merged into :data:`REGISTRATION` / :data:`ATROPOS`.
    registration_resolution : float
        The brain is registered to the template resampled to this grid (mm) when the
        analysis grid is finer (cost), then every output is resampled with the same
        transform onto the analysis grid. On a coarser analysis grid (4 mm) the whole
        chain (skull strip, registration, priors, modulation) runs on the templates of
        this grid (``reg_templates``) and the MNI-space outputs are resampled onto the
        analysis grid at the end (Gaussian anti-aliasing, then linear; densities, so
        modulated sums times voxel volume still give native volumes). Registering
        against the 4 mm template itself carried about half of the demo's planted
        atrophy into the modulated maps (Cohen's d 1.9 vs 3.8 for 2 mm maps averaged to
        4 mm).
    reg_templates : dict of str to Path, optional
        :func:`brainlens.templates.build_templates` at ``registration_resolution``;
        required when ``resolution`` is coarser than it, unused otherwise.
    segmentation_grid : {"native", "analysis"}
        Grid Atropos segments on (see Notes). ``native``: the scan's own voxels.
        ``analysis``: the scan's grid coarsened to voxels no finer than the grid the MNI
        maps are made on (node ``seg_grid``).

    Returns
    -------
    Workflow
        ``inputnode.t1w``: the raw T1w file. ``outputnode`` fields: ``t1w_ras``
        (RAS-reordered native), ``t1w_n4`` (bias-corrected head), ``brain_mask``,
        ``t1w_brain`` (native), ``anat2std_xfm`` (composite ``.h5``, resamples native
        into MNI, i.e. ``from-T1w_to-MNI``), ``std2anat_xfm`` (its inverse),
        ``std_t1w`` (brain T1w on the MNI grid), ``native_probseg`` (Atropos
        posteriors on the segmentation grid, see Notes), ``std_probseg``,
        (native maps and ``std_t1w`` are Gaussian pre-filtered with FWHM
        ``sqrt(resolution^2 - voxel^2)`` before resampling when the native voxels are
        finer than the grid, so the MNI maps are not aliased; sums are preserved)
        ``std_mod_probseg`` (lists ordered as :data:`TISSUES`), ``jacobian``
        (det D phi on the MNI grid the modulation ran on, i.e. the registration grid when
        the analysis grid is coarser; see :func:`brainlens.preprocess.core.modulate`),
        ``tpl_mask_native`` (template brain mask carried to the scan, for QC).

    Notes
    -----
    Segmentation grid: with ``segmentation_grid="analysis"`` Atropos runs on the N4 head
    and brain mask resampled (anti-aliased, linear;
    :func:`brainlens.preprocess.core.coarser_grid`) to voxels no finer than the grid the
    MNI maps are made on (the analysis grid, or the registration grid when the analysis
    grid is coarser), keeping the scan's axes and field of view. A 1 mm head segmented
    for 1.5 mm maps has 3.4x fewer voxels, and the posteriors would be anti-aliased to
    that grid before warping anyway; scans of different voxel sizes are then segmented
    alike. A scan whose voxels are already that coarse is segmented on its own grid.
    The brain mask (TIV, published) stays on the native grid either way.

    Modulation: ``std_mod_probseg = std_probseg * jacobian`` where ``jacobian`` is
    ``CreateJacobianDeterminantImage`` of the composite displacement field of
    ``anat2std_xfm`` (affine included) on the MNI grid, so that
    ``sum(std_mod_probseg) * voxel_volume_mni`` equals the native tissue volume.
    """
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
    if segmentation_grid not in SEGMENTATION_GRIDS:
        raise ConfigError(
            f"preprocess.segmentation_grid: expected one of {list(SEGMENTATION_GRIDS)}, "
            f"got {segmentation_grid!r}"
        )
    coarse = float(resolution) > float(registration_resolution) + 1e-6
    if coarse:
        missing = [
            k for k in need if not reg_templates or not Path(reg_templates.get(k, "")).is_file()
        ]
        if missing:
            raise ConfigError(
                f"reg_templates: missing {missing} (a {resolution} mm analysis grid is "
                f"registered on the {registration_resolution} mm grid; expected files from "
                f"build_templates at resolution {registration_resolution}); rerun "
                "brainlens.templates.build_templates"
            )
    # templates of the grid the chain runs on (registration, priors, modulation)
    work_templates = reg_templates if coarse else templates
    work_res = float(registration_resolution) if coarse else float(resolution)
    tpl = {k: str(Path(v).resolve()) for k, v in work_templates.items()}
    reg_settings = REGISTRATION | (registration or {})
    atr = ATROPOS | (atropos or {})

    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
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
            ]
        ),
        name="outputnode",
    )

    reorient = pe.Node(Reorient(), name="reorient")
    n4 = pe.Node(
        ants.N4BiasFieldCorrection(
            dimension=3,
            output_image="t1w_n4" + WORK_EXT,
            copy_header=True,
            **N4,
            num_threads=omp_nthreads,
        ),
        name="n4",
        n_procs=omp_nthreads,
    )
    apply_mask = pe.Node(ApplyMask(), name="apply_mask")

    # fmt: off
    workflow.connect([
        (inputnode, reorient, [("t1w", "in_file")]),
        (reorient, n4, [("out_file", "input_image")]),
        (n4, apply_mask, [("output_image", "in_file")]),
        (reorient, outputnode, [("out_file", "t1w_ras")]),
        (n4, outputnode, [("output_image", "t1w_n4")]),
        (apply_mask, outputnode, [("out_file", "t1w_brain")]),
    ])
    # fmt: on

    skullstrip_wf = init_skullstrip_wf(
        skullstrip=skullstrip, templates=work_templates, seed=seed, omp_nthreads=omp_nthreads
    )
    mask_src = (skullstrip_wf, "outputnode.out_mask")
    workflow.connect([(n4, skullstrip_wf, [("output_image", "inputnode.in_file")])])

    t1w2std = _registration("t1w2std", reg_settings, seed=seed, omp_nthreads=omp_nthreads)
    if float(resolution) < float(registration_resolution):
        reg_template = pe.Node(
            ResampleToGrid(in_file=tpl["t1w"], resolution=float(registration_resolution)),
            name="reg_template",
        )
        workflow.connect([(reg_template, t1w2std, [("out_file", "fixed_image")])])
    else:
        t1w2std.inputs.fixed_image = tpl["t1w"]

    if segmentation_grid == "analysis":
        # Atropos on a native grid no finer than the grid the MNI maps are made on
        seg_grid = pe.Node(SegmentationGrid(min_voxel_mm=work_res), name="seg_grid")
        # fmt: off
        workflow.connect([
            (n4, seg_grid, [("output_image", "in_file")]),
            (mask_src[0], seg_grid, [(mask_src[1], "in_mask")]),
        ])
        # fmt: on
        seg_head, seg_mask = (seg_grid, "out_file"), (seg_grid, "out_mask")
    else:
        seg_head, seg_mask = (n4, "output_image"), mask_src
    priors_to_t1w = pe.MapNode(
        ants.ApplyTransforms(
            output_image="prior" + WORK_EXT,
            interpolation="Linear",
            float=True,
            num_threads=omp_nthreads,
        ),
        iterfield=["input_image"],
        name="priors_to_t1w",
    )
    priors_to_t1w.inputs.input_image = [tpl["csf"], tpl["gm"], tpl["wm"]]
    make_priors = pe.Node(MakePriors(), name="make_priors")
    atropos = pe.Node(
        ants.Atropos(
            dimension=3,
            initialization="PriorProbabilityImages",
            number_of_tissue_classes=len(TISSUES),
            likelihood_model="Gaussian",
            posterior_formulation="Socrates",
            out_classified_image_name="labels" + WORK_EXT,
            output_posteriors_name_template="POSTERIOR_%02d" + WORK_EXT,
            use_mixture_model_proportions=True,
            save_posteriors=True,
            num_threads=omp_nthreads,
            **atr,
        ),
        name="atropos",
        n_procs=omp_nthreads,
    )
    antialias_t1w = pe.Node(AntiAlias(target_mm=work_res), name="antialias_t1w")
    t1w_to_std = pe.Node(
        ants.ApplyTransforms(
            reference_image=tpl["t1w"],
            output_image="std_t1w" + WORK_EXT,
            interpolation="Linear",
            float=True,
            num_threads=omp_nthreads,
        ),
        name="t1w_to_std",
    )
    antialias_tissue = pe.Node(AntiAlias(target_mm=work_res), name="antialias_tissue")
    tissue_to_std = pe.MapNode(
        ants.ApplyTransforms(
            reference_image=tpl["t1w"],
            output_image="std_probseg" + WORK_EXT,
            interpolation="Linear",
            float=True,
            num_threads=omp_nthreads,
        ),
        iterfield=["input_image"],
        name="tissue_to_std",
    )
    std_field = pe.Node(
        ants.ApplyTransforms(
            reference_image=tpl["t1w"],
            output_image="anat2std_field" + WORK_EXT,
            print_out_composite_warp_file=True,
            float=True,
            num_threads=omp_nthreads,
        ),
        name="std_field",
    )
    jacobian = pe.Node(
        ants.CreateJacobianDeterminantImage(
            imageDimension=3, outputImage="jacobian" + WORK_EXT, doLogJacobian=0, useGeometric=0
        ),
        name="jacobian",
    )
    modulate = pe.Node(Modulate(), name="modulate")
    tpl_mask_to_t1w = pe.Node(
        ants.ApplyTransforms(
            input_image=tpl["brain_mask"],
            output_image="tpl_mask" + WORK_EXT,
            interpolation="NearestNeighbor",
            num_threads=omp_nthreads,
        ),
        name="tpl_mask_to_t1w",
    )

    # fmt: off
    workflow.connect([
        (mask_src[0], apply_mask, [(mask_src[1], "in_mask")]),
        (mask_src[0], outputnode, [(mask_src[1], "brain_mask")]),
        (apply_mask, t1w2std, [("out_file", "moving_image")]),
        (t1w2std, priors_to_t1w, [("inverse_composite_transform", "transforms")]),
        (seg_head[0], priors_to_t1w, [(seg_head[1], "reference_image")]),
        (priors_to_t1w, make_priors, [("output_image", "in_priors")]),
        (seg_mask[0], make_priors, [(seg_mask[1], "in_mask")]),
        (make_priors, atropos, [("prior_pattern", "prior_image")]),
        (seg_head[0], atropos, [(seg_head[1], "intensity_images")]),
        (seg_mask[0], atropos, [(seg_mask[1], "mask_image")]),
        (atropos, antialias_tissue, [("posteriors", "in_files")]),
        (antialias_tissue, tissue_to_std, [("out_files", "input_image")]),
        (apply_mask, antialias_t1w, [("out_file", "in_files")]),
        (antialias_t1w, t1w_to_std, [(("out_files", _first), "input_image")]),
        (t1w2std, t1w_to_std, [("composite_transform", "transforms")]),
        (t1w2std, tissue_to_std, [("composite_transform", "transforms")]),
        (apply_mask, std_field, [("out_file", "input_image")]),
        (t1w2std, std_field, [("composite_transform", "transforms")]),
        (std_field, jacobian, [("output_image", "deformationField")]),
        (tissue_to_std, modulate, [("output_image", "in_files")]),
        (jacobian, modulate, [("jacobian_image", "jacobian")]),
        (t1w2std, tpl_mask_to_t1w, [("inverse_composite_transform", "transforms")]),
        (n4, tpl_mask_to_t1w, [("output_image", "reference_image")]),
        (t1w2std, outputnode, [
            ("composite_transform", "anat2std_xfm"),
            ("inverse_composite_transform", "std2anat_xfm"),
        ]),
        (atropos, outputnode, [("posteriors", "native_probseg")]),
        (jacobian, outputnode, [("jacobian_image", "jacobian")]),
        (tpl_mask_to_t1w, outputnode, [("output_image", "tpl_mask_native")]),
    ])
    # fmt: on
    if not coarse:
        # fmt: off
        workflow.connect([
            (t1w_to_std, outputnode, [("output_image", "std_t1w")]),
            (tissue_to_std, outputnode, [("output_image", "std_probseg")]),
            (modulate, outputnode, [("out_files", "std_mod_probseg")]),
        ])
        # fmt: on
        return workflow

    # coarser analysis grid: resample the registration-grid MNI outputs onto it
    t1w_to_grid = pe.Node(ResampleToGrid(resolution=float(resolution)), name="t1w_to_grid")
    probseg_to_grid = pe.MapNode(
        ResampleToGrid(resolution=float(resolution)), iterfield=["in_file"], name="probseg_to_grid"
    )
    modulated_to_grid = pe.MapNode(
        ResampleToGrid(resolution=float(resolution)),
        iterfield=["in_file"],
        name="modulated_to_grid",
    )
    # fmt: off
    workflow.connect([
        (t1w_to_std, t1w_to_grid, [("output_image", "in_file")]),
        (tissue_to_std, probseg_to_grid, [("output_image", "in_file")]),
        (modulate, modulated_to_grid, [("out_files", "in_file")]),
        (t1w_to_grid, outputnode, [("out_file", "std_t1w")]),
        (probseg_to_grid, outputnode, [("out_file", "std_probseg")]),
        (modulated_to_grid, outputnode, [("out_file", "std_mod_probseg")]),
    ])
    # fmt: on
    return workflow
