"""Rule method_agreement: rank correlation of region relevance between methods."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.regions import method_agreement  # noqa: E402

table = method_agreement(dict(zip(snakemake.params.methods, snakemake.input.tables, strict=True)))  # noqa: F821
table.to_csv(snakemake.output.table, sep="\t")  # noqa: F821
