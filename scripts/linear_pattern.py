"""Rule linear_pattern: the voxel baseline's Haufe activation pattern of one fold."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.linear import write_pattern

inp = snakemake.input
write_pattern(
    model_npz=inp.model,
    pack=(snakemake.input.pack, snakemake.input.index),
    folds_tsv=snakemake.input.folds,
    fold=int(snakemake.wildcards.fold),
    out_nii=snakemake.output.nii,
    out_tsv=snakemake.output.table,
    confounds=((inp.confounds_npz, inp.confounds_json) if "confounds_npz" in inp.keys() else None),
    participants_tsv=inp.get("participants"),
    tiv_tsv=inp.get("tiv"),
)
