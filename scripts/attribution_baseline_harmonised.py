"""Rule attribution_baseline_harmonised: a fold's baseline from its harmonised training inputs."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.attribution.baselines import write_fold_baseline

inp, baseline = snakemake.input, snakemake.params.baseline
write_fold_baseline(
    packs=list(zip(inp.packs, inp.indexes, strict=True)),
    folds_tsv=inp.folds,
    fold=int(snakemake.wildcards.fold),
    kind=baseline["kind"],
    control_class=baseline["control_class"],
    blur_fwhm_mm=baseline["blur_fwhm_mm"],
    out_npy=snakemake.output.npy,
    out_json=snakemake.output.json,
    confounds={
        "npz": inp.confounds_npz,
        "json": inp.confounds_json,
        "participants": inp.confounds_participants,
        "tiv": inp.get("confounds_tiv"),
    },
)
