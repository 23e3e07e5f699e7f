"""Rule regions: per-region relevance across folds and classes for one atlas."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.regions import write_region_tables  # noqa: E402

write_region_tables(
    list(snakemake.input.tables),  # noqa: F821
    atlas_nii=snakemake.input.atlas,  # noqa: F821
    atlas_tsv=snakemake.input.labels,  # noqa: F821
    out_tsv=snakemake.output.table,  # noqa: F821
    out_folds_tsv=snakemake.output.folds,  # noqa: F821
)
