"""Rule preprocess_t1w: the nipype/ANTs preprocessing workflow for one scan."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.preprocess import run_t1w_preproc

run_t1w_preproc(
    snakemake.input.t1w,
    scan=snakemake.wildcards.scan,
    out_dir=snakemake.params.out_dir,
    templates_dir=snakemake.input.templates,
    reg_templates_dir=snakemake.input.get("reg_templates"),
    resolution=snakemake.params.resolution,
    skullstrip=snakemake.params.skullstrip,
    segmentation_grid=snakemake.params.segmentation_grid,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    work_dir=snakemake.params.work_dir,
    bids_dir=snakemake.params.bids_dir,
)
