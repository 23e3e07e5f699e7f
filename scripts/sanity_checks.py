"""Rule sanity_checks: is the map meaningful? Randomisation, deletion/insertion, ground truth."""

from pathlib import Path

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.attribution.checks import run_sanity_checks

inp, gt = snakemake.input, snakemake.params.ground_truth
run_sanity_checks(
    model_paths=list(inp.models),
    attribution_tables=list(inp.tables),
    packs=list(zip(inp.packs, inp.indexes, strict=True)),
    method=snakemake.wildcards.method,
    options=snakemake.params.options,
    atlas_nii=inp.atlas,
    templates_dir=inp.templates,
    resolution=snakemake.params.resolution,
    ground_truth=gt if Path(gt).exists() else None,
    baselines=list(zip(inp.baselines, inp.baseline_jsons, strict=True)),
    folds_tsv=inp.folds,
    random_label_models=list(inp.random_label_models) or None,
    out_table=snakemake.output.table,
    out_cascade=snakemake.output.cascade,
    out_deletion=snakemake.output.deletion,
    out_summary=snakemake.output.summary,
    seed=snakemake.params.seed,
    settings=snakemake.params.checks,
)
