"""Rule sanity_checks: is the map meaningful? Randomisation, deletion, ground truth."""

from pathlib import Path

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.explain import sanity_checks

gt = snakemake.params.ground_truth
sanity_checks(
    model_paths=list(snakemake.input.models),
    attribution_tables=list(snakemake.input.tables),
    packs=list(zip(snakemake.input.packs, snakemake.input.indexes, strict=True)),
    method=snakemake.wildcards.method,
    options=snakemake.params.options,
    atlas_nii=snakemake.input.atlas,
    templates_dir=snakemake.input.templates,
    resolution=snakemake.params.resolution,
    ground_truth=gt if Path(gt).exists() else None,
    out_table=snakemake.output.table,
    out_deletion=snakemake.output.deletion,
    seed=snakemake.params.seed,
    **snakemake.params.checks,
)
