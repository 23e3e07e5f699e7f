"""Rule train_linear: fit one linear baseline on one fold (C chosen on val)."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.grid import template_paths
from brainlens.linear import train_linear_fold

inp = snakemake.input
templates = inp.get("templates")
train_linear_fold(
    model=snakemake.wildcards.model,
    folds_tsv=inp.folds,
    fold=int(snakemake.wildcards.fold),
    out_dir=snakemake.params.out_dir,
    pack=(inp.pack, inp.index) if "pack" in inp.keys() else None,
    mask_nii=(
        template_paths(templates, snakemake.params.resolution)["brain_mask"] if templates else None
    ),
    atlas_nii=inp.get("atlas"),
    atlas_tsv=inp.get("labels"),
    participants_tsv=inp.get("participants"),
    covariates=snakemake.params.covariates,
    tiv_tsv=inp.get("tiv"),
    confounds=((inp.confounds_npz, inp.confounds_json) if "confounds_npz" in inp.keys() else None),
    c_grid=snakemake.params.c_grid,
    monitor=snakemake.params.monitor,
    max_iter=snakemake.params.max_iter,
    seed=snakemake.params.seed,
)
