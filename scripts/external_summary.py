"""Rule external_summary: one model's folds on one external set, ensemble, bootstrap CI.

Inputs: ``metrics`` and ``predictions`` (lists over folds, same order). Params:
``positive_class``, ``n_resamples`` (bootstrap resamples), ``seed`` (derived from the
master seed, e.g. ``derive_seed(config["seed"], "external", dataset, model)``).
"""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.external.summary import summarize_external

summarize_external(
    metrics=list(snakemake.input.metrics),
    predictions=list(snakemake.input.predictions),
    out=snakemake.output.summary,
    n_resamples=snakemake.params.n_resamples,
    seed=snakemake.params.seed,
    positive_class=snakemake.params.positive_class,
)
