"""Rule templates: MNI templates and tissue priors on the analysis grid."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.templates import build_templates

build_templates(snakemake.output[0], resolution=snakemake.params.resolution)
