"""Rule demo_data: write the synthetic BIDS demo dataset."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.synthetic import DemoSpec, write_demo_dataset

write_demo_dataset(
    snakemake.params.out_dir,
    DemoSpec(**snakemake.params.spec),
    seed=snakemake.params.seed,
)
