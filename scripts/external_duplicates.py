"""Rule external_duplicates: external scans whose GM maps nearly match a main scan's."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.external.audit import write_external_duplicates

p = snakemake.params
write_external_duplicates(
    (list(snakemake.input.external), list(p.external_scans), list(p.external_subjects)),
    (list(snakemake.input.main), list(p.main_scans), list(p.main_subjects)),
    snakemake.output.table,
    dataset=snakemake.wildcards.dataset,
    threshold=p.threshold,
    smooth_fwhm_mm=p.smooth_fwhm_mm,
    on_duplicate=p.on_duplicate,
)
