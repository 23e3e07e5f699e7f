"""Rule check_inputs: check every scan once, before any preprocessing."""

import pandas as pd

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.inputs import check_dataset  # noqa: E402

check_dataset(
    pd.DataFrame(snakemake.params.scans),  # noqa: F821
    participants_tsv=snakemake.input.participants,  # noqa: F821
    label_column=snakemake.params.label_column,  # noqa: F821
    on_invalid=snakemake.params.on_invalid,  # noqa: F821
    out_tsv=snakemake.output.table,  # noqa: F821
)
