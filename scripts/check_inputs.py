"""Rule check_inputs: check every scan once, before any preprocessing."""

import pandas as pd

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.inputs import check_dataset

check_dataset(
    pd.DataFrame(snakemake.params.scans),
    participants_tsv=snakemake.input.participants,
    label_column=snakemake.params.label_column,
    on_invalid=snakemake.params.on_invalid,
    out_tsv=snakemake.output.table,
    excluded=snakemake.params.excluded,
    # an external test set's labels mapped to the main classes (rule check_external_inputs)
    label_map=snakemake.params.get("label_map"),
)
