"""Rule folds: subject-level stratified splits, audited for leakage and near duplicates."""

import pandas as pd

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.duplicates import read_near_duplicates
from brainlens.folds import write_folds
from brainlens.inputs import usable_scans

scans = pd.read_csv(snakemake.input.inputs, sep="\t", dtype=str, keep_default_na=False)
write_folds(
    usable_scans(scans),
    snakemake.output.folds,
    seed=snakemake.params.seed,
    near_duplicates=read_near_duplicates(snakemake.input.near_duplicates),
    on_duplicate=snakemake.params.on_duplicate,
    **snakemake.params.options,
)
