"""Rule folds: subject-level stratified splits, audited for leakage."""

import pandas as pd

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.folds import write_folds  # noqa: E402

scans = pd.read_csv(snakemake.input.inputs, sep="\t", dtype=str, keep_default_na=False)  # noqa: F821
write_folds(
    scans[scans["status"] == "ok"],
    snakemake.output.folds,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    **snakemake.params.options,  # noqa: F821
)
