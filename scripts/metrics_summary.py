"""Rule metrics_summary: per-fold metrics plus mean, sd and 95% CI."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.metrics import write_metrics_summary

write_metrics_summary(list(snakemake.input.metrics), snakemake.output.summary)
