"""Rule qc_table: collect per-scan QC into one table with outlier flags."""

from pathlib import Path

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.preprocess import qc_table, write_bidsignore, write_dataset_description

qc_table(list(snakemake.input.qc), snakemake.output.table)
root = Path(snakemake.output.description).parent
write_dataset_description(
    root, bids_dir=snakemake.params.bids_dir, resolution=snakemake.params.resolution
)
write_bidsignore(root)
