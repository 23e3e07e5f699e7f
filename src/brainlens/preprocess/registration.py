"""Brain -> MNI registration sub-workflow (nipreps style) and its ANTs settings.

:func:`init_registration_wf` registers the skull-stripped T1w to the MNI brain template
(rigid, affine, SyN; :data:`REGISTRATION`), resamples the brain into MNI space and
carries the template brain mask back onto the scan (for QC). :func:`registration_node`
is the one ``antsRegistration`` node factory (also used by the ``ants_template`` skull
strip, :mod:`brainlens.preprocess.skullstrip`).
"""

from __future__ import annotations

from nipype.interfaces import ants
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.preprocess.interfaces import WORK_EXT, AntiAlias, ResampleToGrid

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


def _first(in_list: list | str) -> str:
    # nipype collapses a one-element OutputMultiObject to a plain string
    return in_list if isinstance(in_list, str) else in_list[0]


def registration_node(name: str, settings: dict, *, seed: int, omp_nthreads: int) -> pe.Node:
    """A nipype ``ants.Registration`` node with composite transforms (forward + inverse).

    Parameters
    ----------
    name : str
        Node name (the nipype work-folder name).
    settings : dict
        Per-stage settings, as :data:`REGISTRATION`.
    seed : int
        ANTs random seed.
    omp_nthreads : int
        ANTs threads.

    Returns
    -------
    Node
        Inputs ``fixed_image`` and ``moving_image`` left to connect or set.
    """
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


def init_registration_wf(
    *,
    templates: dict[str, str],
    grid_mm: float,
    settings: dict,
    seed: int,
    omp_nthreads: int,
    fixed_resolution: float | None = None,
    output_resolution: float | None = None,
    name: str = "registration_wf",
) -> pe.Workflow:
    """Register the brain to the MNI brain template; resample it and the template mask.

    Parameters
    ----------
    templates : dict of str to str
        Resolved templates of the grid the chain runs on: ``t1w``, ``brain_mask``.
    grid_mm : float
        Voxel size of that grid: the brain is anti-aliased to it before resampling.
    settings : dict
        Registration stages (:data:`REGISTRATION` with overrides).
    seed, omp_nthreads : int
        ANTs random seed and threads.
    fixed_resolution : float, optional
        Register against the ``t1w`` template resampled to this grid (node
        ``reg_template``; used when the analysis grid is finer than the registration
        grid); the template itself by default.
    output_resolution : float, optional
        Resample the MNI brain onto ``mni_grid(output_resolution)`` (node ``t1w_to_grid``).
    name : str
        Workflow name.

    Returns
    -------
    Workflow
        ``inputnode``: ``t1w_brain`` (native skull-stripped T1w), ``t1w_n4`` (native
        head, reference of ``tpl_mask_native``). ``outputnode``: ``anat2std_xfm``
        (composite ``.h5``, resamples native into MNI), ``std2anat_xfm`` (its inverse),
        ``std_t1w`` (brain on the MNI grid, Gaussian pre-filtered with FWHM
        ``sqrt(grid_mm^2 - voxel^2)`` where the native voxels are finer),
        ``tpl_mask_native`` (template brain mask on the native grid, nearest neighbour).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w_brain", "t1w_n4"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["anat2std_xfm", "std2anat_xfm", "std_t1w", "tpl_mask_native"]
        ),
        name="outputnode",
    )
    t1w2std = registration_node("t1w2std", settings, seed=seed, omp_nthreads=omp_nthreads)
    _connect_fixed_image(workflow, t1w2std, templates["t1w"], fixed_resolution)
    antialias_t1w = pe.Node(AntiAlias(target_mm=grid_mm), name="antialias_t1w")
    t1w_to_std = pe.Node(
        ants.ApplyTransforms(
            reference_image=templates["t1w"],
            output_image="std_t1w" + WORK_EXT,
            interpolation="Linear",
            float=True,
            num_threads=omp_nthreads,
        ),
        name="t1w_to_std",
    )
    tpl_mask_to_t1w = pe.Node(
        ants.ApplyTransforms(
            input_image=templates["brain_mask"],
            output_image="tpl_mask" + WORK_EXT,
            interpolation="NearestNeighbor",
            num_threads=omp_nthreads,
        ),
        name="tpl_mask_to_t1w",
    )
    # fmt: off
    workflow.connect([
        (inputnode, t1w2std, [("t1w_brain", "moving_image")]),
        (inputnode, antialias_t1w, [("t1w_brain", "in_files")]),
        (antialias_t1w, t1w_to_std, [(("out_files", _first), "input_image")]),
        (t1w2std, t1w_to_std, [("composite_transform", "transforms")]),
        (t1w2std, tpl_mask_to_t1w, [("inverse_composite_transform", "transforms")]),
        (inputnode, tpl_mask_to_t1w, [("t1w_n4", "reference_image")]),
        (t1w2std, outputnode, [
            ("composite_transform", "anat2std_xfm"),
            ("inverse_composite_transform", "std2anat_xfm"),
        ]),
        (tpl_mask_to_t1w, outputnode, [("output_image", "tpl_mask_native")]),
    ])
    # fmt: on
    _connect_std_t1w(workflow, t1w_to_std, outputnode, output_resolution)
    return workflow


def _connect_fixed_image(
    workflow: pe.Workflow, t1w2std: pe.Node, t1w_template: str, fixed_resolution: float | None
) -> None:
    """Give ``t1w2std`` its fixed image: the template, or (node ``reg_template``) the
    template resampled to ``fixed_resolution``."""
    if fixed_resolution is None:
        t1w2std.inputs.fixed_image = t1w_template
        return
    reg_template = pe.Node(
        ResampleToGrid(in_file=t1w_template, resolution=float(fixed_resolution)),
        name="reg_template",
    )
    workflow.connect([(reg_template, t1w2std, [("out_file", "fixed_image")])])


def _connect_std_t1w(
    workflow: pe.Workflow,
    t1w_to_std: pe.Node,
    outputnode: pe.Node,
    output_resolution: float | None,
) -> None:
    """Route the MNI brain to ``outputnode.std_t1w``, through node ``t1w_to_grid``
    (resampled onto ``mni_grid(output_resolution)``) when that is given."""
    if output_resolution is None:
        workflow.connect([(t1w_to_std, outputnode, [("output_image", "std_t1w")])])
        return
    t1w_to_grid = pe.Node(ResampleToGrid(resolution=float(output_resolution)), name="t1w_to_grid")
    # fmt: off
    workflow.connect([
        (t1w_to_std, t1w_to_grid, [("output_image", "in_file")]),
        (t1w_to_grid, outputnode, [("out_file", "std_t1w")]),
    ])
    # fmt: on
