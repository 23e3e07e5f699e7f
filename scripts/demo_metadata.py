"""Rule demo_metadata: participants.tsv, dataset description and ground truth of the demo."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.synthetic import DemoSpec, write_demo_metadata

write_demo_metadata(
    snakemake.params.out_dir, DemoSpec(**snakemake.params.spec), seed=snakemake.params.seed
)
