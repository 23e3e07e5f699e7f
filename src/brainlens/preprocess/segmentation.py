"""Tissue segmentation sub-workflow: Atropos GM/WM/CSF with warped template priors.

:func:`init_segmentation_wf` warps the template tissue priors onto the scan (with the
inverse of the brain -> MNI registration), normalises them inside the brain mask and
runs Atropos (:data:`ATROPOS`), on the scan's own grid or a coarsened copy of it.
"""

from __future__ import annotations

from nipype.interfaces import ants
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.errors import ConfigError
from brainlens.preprocess.interfaces import WORK_EXT, MakePriors, SegmentationGrid

#: Grids Atropos can segment on: the scan's own (``native``), or the scan's grid
#: coarsened to the voxel size of the grid the MNI maps are made on (``analysis``).
SEGMENTATION_GRIDS = ("native", "analysis")
#: Tissue class order of Atropos and of every list output of the workflow.
TISSUES = ("CSF", "GM", "WM")
#: Atropos settings (3 classes, template priors).
ATROPOS = {
    "prior_weighting": 0.25,
    "mrf_smoothing_factor": 0.1,
    "mrf_radius": [1, 1, 1],
    "n_iterations": 5,
    "convergence_threshold": 0.001,
}


def init_segmentation_wf(
    *,
    templates: dict[str, str],
    segmentation_grid: str,
    grid_mm: float,
    omp_nthreads: int,
    atropos: dict | None = None,
    name: str = "segmentation_wf",
) -> pe.Workflow:
    """Segment the native head into CSF, GM and WM posteriors.

    Parameters
    ----------
    templates : dict of str to str
        Resolved templates of the grid the chain runs on: priors ``csf``, ``gm``, ``wm``.
    segmentation_grid : {"native", "analysis"}
        Grid Atropos segments on (see Notes).
    grid_mm : float
        Voxel size of the grid the MNI maps are made on (the analysis grid, or the
        registration grid when the analysis grid is coarser).
    omp_nthreads : int
    atropos : dict, optional
        Overrides merged into :data:`ATROPOS`.
    name : str
        Workflow name.

    Returns
    -------
    Workflow
        ``inputnode``: ``t1w_n4`` (native bias-corrected head), ``brain_mask`` (native),
        ``std2anat_xfm`` (composite MNI -> native transform). ``outputnode``:
        ``native_probseg`` (Atropos posteriors, list in :data:`TISSUES` order, on the
        segmentation grid).

    Notes
    -----
    ``segmentation_grid="analysis"``: Atropos runs on the N4 head and mask resampled
    (anti-aliased, linear; :func:`~brainlens.preprocess.core.coarser_grid`; node
    ``seg_grid``) to voxels no finer than ``grid_mm``, same axes and field of view: a
    1 mm head segmented for 1.5 mm maps has 3.4x fewer voxels (the posteriors are
    anti-aliased to that grid before warping anyway) and scans of different voxel sizes
    are segmented alike. The brain mask (TIV, published) stays on the native grid.
    """
    if segmentation_grid not in SEGMENTATION_GRIDS:
        raise ConfigError(
            f"preprocess.segmentation_grid: expected one of {list(SEGMENTATION_GRIDS)}, "
            f"got {segmentation_grid!r}"
        )
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w_n4", "brain_mask", "std2anat_xfm"]), name="inputnode"
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=["native_probseg"]), name="outputnode")
    if segmentation_grid == "analysis":
        # Atropos on a native grid no finer than the grid the MNI maps are made on
        seg_grid = pe.Node(SegmentationGrid(min_voxel_mm=grid_mm), name="seg_grid")
        # fmt: off
        workflow.connect([
            (inputnode, seg_grid, [("t1w_n4", "in_file"), ("brain_mask", "in_mask")]),
        ])
        # fmt: on
        seg_head, seg_mask = (seg_grid, "out_file"), (seg_grid, "out_mask")
    else:
        seg_head, seg_mask = (inputnode, "t1w_n4"), (inputnode, "brain_mask")
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
    priors_to_t1w.inputs.input_image = [templates["csf"], templates["gm"], templates["wm"]]
    make_priors = pe.Node(MakePriors(), name="make_priors")
    atropos_node = _atropos_node(omp_nthreads, atropos)
    # fmt: off
    workflow.connect([
        (inputnode, priors_to_t1w, [("std2anat_xfm", "transforms")]),
        (seg_head[0], priors_to_t1w, [(seg_head[1], "reference_image")]),
        (priors_to_t1w, make_priors, [("output_image", "in_priors")]),
        (seg_mask[0], make_priors, [(seg_mask[1], "in_mask")]),
        (make_priors, atropos_node, [("prior_pattern", "prior_image")]),
        (seg_head[0], atropos_node, [(seg_head[1], "intensity_images")]),
        (seg_mask[0], atropos_node, [(seg_mask[1], "mask_image")]),
        (atropos_node, outputnode, [("posteriors", "native_probseg")]),
    ])
    # fmt: on
    return workflow


def _atropos_node(omp_nthreads: int, atropos: dict | None) -> pe.Node:
    """Node ``atropos``: prior-initialised Gaussian Atropos with :data:`ATROPOS` (and
    the ``atropos`` overrides), saving one posterior per tissue of :data:`TISSUES`."""
    return pe.Node(
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
            **(ATROPOS | (atropos or {})),
        ),
        name="atropos",
        n_procs=omp_nthreads,
    )
