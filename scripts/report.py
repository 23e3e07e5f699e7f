"""Rule report: the HTML report."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.report import build_report  # noqa: E402

inp, par = snakemake.input, snakemake.params
build_report(
    out_html=snakemake.output.html,
    figures_dir=snakemake.output.figures,
    title=par.title,
    config=par.config,
    inputs_tsv=inp.inputs,
    qc_tsv=inp.qc,
    folds_tsv=inp.folds,
    summaries=dict(zip(par.models, inp.summaries, strict=True)),
    fold_metrics=dict(zip(par.model_fold, inp.metrics, strict=True)),
    predictions=dict(zip(par.model_fold, inp.predictions, strict=True)),
    histories=dict(zip(par.model_fold, inp.histories, strict=True)),
    attribution_tables=dict(zip(par.model_method_fold, inp.attributions, strict=True)),
    region_tables=dict(zip(par.model_method_atlas, inp.regions, strict=True)),
    region_fold_tables=dict(zip(par.model_method_atlas, inp.region_folds, strict=True)),
    agreement_tables=dict(zip(par.model_atlas, inp.agreement, strict=True)),
    sanity_tables=dict(zip(par.model_method, inp.sanity, strict=True)),
    deletion_tables=dict(zip(par.model_method, inp.deletion, strict=True)),
    sanity_summary_tables=dict(zip(par.model_method, inp.sanity_summary, strict=True)),
    sanity_cascade_tables=dict(zip(par.model_method, inp.sanity_cascade, strict=True)),
    ground_truth=inp.ground_truth[0] if inp.ground_truth else None,
    template_t1w=inp.template,
)
