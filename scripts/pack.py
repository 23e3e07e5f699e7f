"""Rule pack: pack one input type of every scan into a memory-mapped array."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.packing import pack_volumes

pack_volumes(
    list(snakemake.input.maps),
    scan_ids=list(snakemake.params.scan_ids),
    out_npy=snakemake.output.npy,
    out_index=snakemake.output.index,
    smooth_fwhm_mm=snakemake.params.smooth_fwhm_mm,
)
