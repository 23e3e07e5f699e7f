"""Rule demo_data: write the synthetic BIDS demo dataset."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.synthetic import DemoSpec, write_demo_dataset  # noqa: E402

write_demo_dataset(
    snakemake.params.out_dir,  # noqa: F821
    DemoSpec(**snakemake.params.spec),  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
)
