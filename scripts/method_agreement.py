"""Rule method_agreement: rank correlation of region relevance between methods."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.regions import method_agreement

table = method_agreement(dict(zip(snakemake.params.methods, snakemake.input.tables, strict=True)))
table.to_csv(snakemake.output.table, sep="\t")
