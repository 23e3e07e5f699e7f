"""Rule atlas: one atlas (built-in, or a custom image and labels) on the analysis grid."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.atlases import write_atlas

write_atlas(
    snakemake.wildcards.atlas,
    resolution=snakemake.params.resolution,
    out_nii=snakemake.output.nii,
    out_tsv=snakemake.output.tsv,
    image=snakemake.input.get("image"),
    labels=snakemake.input.get("labels"),
)
