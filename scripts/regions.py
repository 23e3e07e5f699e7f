"""Rule regions: per-region relevance across folds and classes for one atlas."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.regions import write_region_tables

write_region_tables(
    list(snakemake.input.tables),
    atlas_nii=snakemake.input.atlas,
    atlas_tsv=snakemake.input.labels,
    out_tsv=snakemake.output.table,
    out_folds_tsv=snakemake.output.folds,
    rank_by=snakemake.params.rank_by,
)
