"""Rule train_model: train one model on one fold."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.training import train_fold

train_fold(
    packs=dict(
        zip(
            snakemake.params.inputs,
            zip(snakemake.input.packs, snakemake.input.indexes, strict=True),
            strict=True,
        )
    ),
    folds_tsv=snakemake.input.folds,
    fold=int(snakemake.wildcards.fold),
    out_dir=snakemake.params.out_dir,
    model=snakemake.wildcards.model,
    lateralized=snakemake.params.lateralized,
    on_stale_checkpoint=snakemake.params.on_stale_checkpoint,
    seed=snakemake.params.seed,
    num_threads=snakemake.threads,
    **snakemake.params.train,
)
