"""Rule metrics_summary: per-fold subject- and scan-level metrics, mean, sd, corrected CI."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.summary import write_metrics_summary

write_metrics_summary(
    list(snakemake.input.metrics),
    snakemake.output.summary,
    predictions_tsvs=list(snakemake.input.predictions),
    folds_tsv=snakemake.input.folds,
    positive_class=snakemake.params.positive_class,
)
