"""Tissue maps to MNI space, plain and Jacobian-modulated (nipreps-style sub-workflow).

:func:`init_modulation_wf` resamples the native Atropos posteriors into MNI space with
the brain -> MNI transform and multiplies them by the Jacobian determinant of that
transform, so modulated maps keep the native tissue volumes.
"""

from __future__ import annotations

from nipype.interfaces import ants
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.preprocess.interfaces import WORK_EXT, AntiAlias, Modulate, ResampleToGrid


def init_modulation_wf(
    *,
    templates: dict[str, str],
    grid_mm: float,
    omp_nthreads: int,
    output_resolution: float | None = None,
    name: str = "modulation_wf",
) -> pe.Workflow:
    """Resample tissue posteriors into MNI space and Jacobian-modulate them.

    Parameters
    ----------
    templates : dict of str to str
        Resolved templates of the grid the chain runs on (``t1w``: the MNI reference).
    grid_mm : float
        Voxel size of that grid: posteriors are anti-aliased to it before resampling.
    omp_nthreads : int
    output_resolution : float, optional
        Resample the MNI maps onto ``mni_grid(output_resolution)`` at the end (nodes
        ``probseg_to_grid``, ``modulated_to_grid``; Gaussian anti-aliasing, then linear;
        densities, so modulated sums times voxel volume still give native volumes).
    name : str
        Workflow name.

    Returns
    -------
    Workflow
        ``inputnode``: ``t1w_brain`` (native brain), ``native_probseg`` (posteriors),
        ``anat2std_xfm`` (composite native -> MNI). ``outputnode``: ``std_probseg``,
        ``std_mod_probseg`` (lists in the posteriors' order), ``jacobian``: det D phi,
        ``CreateJacobianDeterminantImage`` of the composite displacement field (affine
        included) on the grid the modulation ran on, so ``sum(std_mod_probseg) *
        voxel volume`` is the native tissue volume (:func:`~brainlens.preprocess.core.modulate`).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w_brain", "native_probseg", "anat2std_xfm"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["std_probseg", "std_mod_probseg", "jacobian"]),
        name="outputnode",
    )
    antialias_tissue = pe.Node(AntiAlias(target_mm=grid_mm), name="antialias_tissue")
    tissue_to_std = pe.MapNode(
        ants.ApplyTransforms(
            reference_image=templates["t1w"],
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
            reference_image=templates["t1w"],
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
    # fmt: off
    workflow.connect([
        (inputnode, antialias_tissue, [("native_probseg", "in_files")]),
        (antialias_tissue, tissue_to_std, [("out_files", "input_image")]),
        (inputnode, tissue_to_std, [("anat2std_xfm", "transforms")]),
        (inputnode, std_field, [("t1w_brain", "input_image"), ("anat2std_xfm", "transforms")]),
        (std_field, jacobian, [("output_image", "deformationField")]),
        (tissue_to_std, modulate, [("output_image", "in_files")]),
        (jacobian, modulate, [("jacobian_image", "jacobian")]),
        (jacobian, outputnode, [("jacobian_image", "jacobian")]),
    ])
    # fmt: on
    _connect_std_maps(workflow, tissue_to_std, modulate, outputnode, output_resolution)
    return workflow


def _connect_std_maps(
    workflow: pe.Workflow,
    tissue_to_std: pe.MapNode,
    modulate: pe.Node,
    outputnode: pe.Node,
    output_resolution: float | None,
) -> None:
    """Route the MNI maps to ``outputnode.std_probseg`` / ``std_mod_probseg``, through
    nodes ``probseg_to_grid`` / ``modulated_to_grid`` (resampled onto
    ``mni_grid(output_resolution)``) when that is given."""
    if output_resolution is None:
        # fmt: off
        workflow.connect([
            (tissue_to_std, outputnode, [("output_image", "std_probseg")]),
            (modulate, outputnode, [("out_files", "std_mod_probseg")]),
        ])
        # fmt: on
        return
    res = float(output_resolution)  # one interface per node: nipype keeps them by reference
    probseg_to_grid = pe.MapNode(
        ResampleToGrid(resolution=res), iterfield=["in_file"], name="probseg_to_grid"
    )
    modulated_to_grid = pe.MapNode(
        ResampleToGrid(resolution=res), iterfield=["in_file"], name="modulated_to_grid"
    )
    # fmt: off
    workflow.connect([
        (tissue_to_std, probseg_to_grid, [("output_image", "in_file")]),
        (modulate, modulated_to_grid, [("out_files", "in_file")]),
        (probseg_to_grid, outputnode, [("out_file", "std_probseg")]),
        (modulated_to_grid, outputnode, [("out_file", "std_mod_probseg")]),
    ])
    # fmt: on
