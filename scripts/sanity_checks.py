"""Rule sanity_checks: is the map meaningful? Randomisation, deletion, ground truth."""

from pathlib import Path

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.explain import sanity_checks  # noqa: E402

gt = snakemake.params.ground_truth  # noqa: F821
sanity_checks(
    model_paths=list(snakemake.input.models),  # noqa: F821
    attribution_tables=list(snakemake.input.tables),  # noqa: F821
    packs=list(zip(snakemake.input.packs, snakemake.input.indexes, strict=True)),  # noqa: F821
    method=snakemake.wildcards.method,  # noqa: F821
    options=snakemake.params.options,  # noqa: F821
    atlas_nii=snakemake.input.atlas,  # noqa: F821
    ground_truth=gt if Path(gt).exists() else None,
    out_table=snakemake.output.table,  # noqa: F821
    out_deletion=snakemake.output.deletion,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
)
