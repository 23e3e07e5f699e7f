"""Rule report_manifest: the report's inputs, each with its kind and keys."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.report.io import write_manifest  # noqa: E402

write_manifest(snakemake.params.records, snakemake.output.manifest)
