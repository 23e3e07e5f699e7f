"""Rule attribute: relevance maps of one method for the test scans of one fold."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.attribution.fold import attribute_fold

attribute_fold(
    model_path=snakemake.input.model,
    packs=list(zip(snakemake.input.packs, snakemake.input.indexes, strict=True)),
    folds_tsv=snakemake.input.folds,
    fold=int(snakemake.wildcards.fold),
    method=snakemake.wildcards.method,
    options=snakemake.params.options,
    atlas_nii=snakemake.input.atlas,
    out_dir=snakemake.output.maps,
    out_table=snakemake.output.table,
    max_scans=snakemake.params.max_scans,
    seed=snakemake.params.seed,
    baseline_npy=snakemake.input.get("baseline"),  # only for methods that take one
    baseline_json=snakemake.input.get("baseline_json"),
    target=snakemake.params.target,
)
