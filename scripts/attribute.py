"""Rule attribute: relevance maps of one method for the test scans of one fold."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.explain import attribute_fold  # noqa: E402

attribute_fold(
    model_path=snakemake.input.model,  # noqa: F821
    packs=list(zip(snakemake.input.packs, snakemake.input.indexes, strict=True)),  # noqa: F821
    folds_tsv=snakemake.input.folds,  # noqa: F821
    fold=int(snakemake.wildcards.fold),  # noqa: F821
    method=snakemake.wildcards.method,  # noqa: F821
    options=snakemake.params.options,  # noqa: F821
    atlas_nii=snakemake.input.atlas,  # noqa: F821
    out_dir=snakemake.output.maps,  # noqa: F821
    out_table=snakemake.output.table,  # noqa: F821
    max_scans=snakemake.params.max_scans,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
)
