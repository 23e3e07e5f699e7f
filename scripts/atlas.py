"""Rule atlas: one atlas resampled to the analysis grid."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.atlases import write_atlas  # noqa: E402

write_atlas(
    snakemake.wildcards.atlas,  # noqa: F821
    resolution=snakemake.params.resolution,  # noqa: F821
    out_nii=snakemake.output.nii,  # noqa: F821
    out_tsv=snakemake.output.tsv,  # noqa: F821
)
