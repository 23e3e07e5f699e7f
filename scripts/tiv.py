"""Rule tiv: total intracranial volume (mL) per scan from the modulated tissue maps."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.confounds.tiv import write_tiv_table

inp = snakemake.input
write_tiv_table(
    {"gm": list(inp.gm), "wm": list(inp.wm), "csf": list(inp.csf)},
    snakemake.params.scans,
    snakemake.output.table,
)
