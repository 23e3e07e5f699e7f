"""Rule atlas: one atlas resampled to the analysis grid."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.atlases import write_atlas

write_atlas(
    snakemake.wildcards.atlas,
    resolution=snakemake.params.resolution,
    out_nii=snakemake.output.nii,
    out_tsv=snakemake.output.tsv,
)
