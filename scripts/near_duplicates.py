"""Rule near_duplicates: scans of different participants with near-identical GM maps."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.duplicates import write_near_duplicates

write_near_duplicates(
    list(snakemake.input.maps),
    list(snakemake.params.scan_ids),
    list(snakemake.params.subject_ids),
    snakemake.output.table,
    threshold=snakemake.params.threshold,
    smooth_fwhm_mm=snakemake.params.smooth_fwhm_mm,
)
