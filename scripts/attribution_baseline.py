"""Rule attribution_baseline: one fold's attribution baseline, from its training part only."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.attribution.baselines import write_fold_baseline

baseline = snakemake.params.baseline
write_fold_baseline(
    packs=list(zip(snakemake.input.packs, snakemake.input.indexes, strict=True)),
    folds_tsv=snakemake.input.folds,
    fold=int(snakemake.wildcards.fold),
    kind=baseline["kind"],
    control_class=baseline["control_class"],
    blur_fwhm_mm=baseline["blur_fwhm_mm"],
    out_npy=snakemake.output.npy,
    out_json=snakemake.output.json,
)
