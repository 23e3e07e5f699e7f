"""Rule metrics_summary: per-fold metrics plus mean, sd and 95% CI."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.metrics import write_metrics_summary  # noqa: E402

write_metrics_summary(list(snakemake.input.metrics), snakemake.output.summary)  # noqa: F821
