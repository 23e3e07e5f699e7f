"""Skull-strip sub-workflow: deepbet or a template brain mask carried back.

:func:`init_skullstrip_wf` turns a bias-corrected RAS+ head into a brain mask, either
with the deepbet CNN or by registering the head template to the scan
(:data:`HEAD_REGISTRATION`) and carrying its brain mask back.
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import ants
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainlens.errors import ConfigError
from brainlens.preprocess.interfaces import WORK_EXT, DeepBet, ThresholdMask
from brainlens.preprocess.registration import registration_node

SKULLSTRIP_METHODS = ("deepbet", "ants_template")
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
    head_reg = registration_node(
        "head_reg", HEAD_REGISTRATION, seed=seed, omp_nthreads=omp_nthreads
    )
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
