"""Rule fit_confounds: fit one fold's confound removal on its training rows."""

from pathlib import Path

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.confounds.inputs import INPUTS_KIND, write_input_confounds
from brainlens.grid import template_paths
from brainlens.linear import write_fold_confounds

inp, confounds, kind = snakemake.input, snakemake.params.confounds, snakemake.wildcards.kind
common = dict(
    folds_tsv=inp.folds,
    fold=int(snakemake.wildcards.fold),
    out_npz=snakemake.output.npz,
    out_json=snakemake.output.json,
    participants_tsv=inp.participants,
    covariates=snakemake.params.covariates,
    method=confounds["method"],
    fit_on=confounds["fit_on"],
    site_column=confounds["site_column"],
    control_class=confounds["control_class"],
    positive_class=snakemake.params.positive_class,
    tiv_tsv=inp.get("tiv"),
)
if kind == INPUTS_KIND:  # the CNN inputs: every voxel of every train.inputs pack
    write_input_confounds(
        packs={
            Path(npy).stem: (npy, index) for npy, index in zip(inp.packs, inp.indexes, strict=True)
        },
        **common,
    )
else:
    templates = inp.get("templates")
    write_fold_confounds(
        kind=kind,
        pack=(inp.pack, inp.index),
        mask_nii=(
            template_paths(templates, snakemake.params.resolution)["brain_mask"]
            if templates
            else None
        ),
        atlas_nii=inp.get("atlas"),
        atlas_tsv=inp.get("labels"),
        **common,
    )
