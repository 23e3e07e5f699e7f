"""Rule folds: subject-level stratified splits, audited for leakage."""

import pandas as pd

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.folds import write_folds

scans = pd.read_csv(snakemake.input.inputs, sep="\t", dtype=str, keep_default_na=False)
write_folds(
    scans[scans["status"] == "ok"],
    snakemake.output.folds,
    seed=snakemake.params.seed,
    **snakemake.params.options,
)
