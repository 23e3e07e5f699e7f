"""Rule fit_confounds: fit one fold's confound removal on its training rows."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.grid import template_paths
from brainlens.linear import write_fold_confounds

inp, confounds = snakemake.input, snakemake.params.confounds
templates = inp.get("templates")
write_fold_confounds(
    kind=snakemake.wildcards.kind,
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
    pack=(inp.pack, inp.index),
    mask_nii=(
        template_paths(templates, snakemake.params.resolution)["brain_mask"] if templates else None
    ),
    atlas_nii=inp.get("atlas"),
    atlas_tsv=inp.get("labels"),
)
