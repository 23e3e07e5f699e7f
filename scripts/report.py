"""Rule report: the HTML report (results/report/index.html and its figures/)."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.report.build import build_report_from_manifest  # noqa: E402

build_report_from_manifest(
    manifest=snakemake.input.manifest,
    out_dir=snakemake.output[0],
    title=snakemake.params.title,
    config=snakemake.params.config,
)
