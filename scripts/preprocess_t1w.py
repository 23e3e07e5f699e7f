"""Rule preprocess_t1w: the nipype/ANTs preprocessing workflow for one scan."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.preprocess import run_t1w_preproc  # noqa: E402

run_t1w_preproc(
    snakemake.input.t1w,  # noqa: F821
    scan=snakemake.wildcards.scan,  # noqa: F821
    out_dir=snakemake.params.out_dir,  # noqa: F821
    templates_dir=snakemake.input.templates,  # noqa: F821
    resolution=snakemake.params.resolution,  # noqa: F821
    skullstrip=snakemake.params.skullstrip,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
    work_dir=snakemake.params.work_dir,  # noqa: F821
)
