"""Rule pack: pack one input type of every scan into a memory-mapped array."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.packing import pack_volumes  # noqa: E402

pack_volumes(
    list(snakemake.input.maps),  # noqa: F821
    scan_ids=list(snakemake.params.scan_ids),  # noqa: F821
    out_npy=snakemake.output.npy,  # noqa: F821
    out_index=snakemake.output.index,  # noqa: F821
)
