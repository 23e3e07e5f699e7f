"""Rule train_model: train one model on one fold."""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from brainlens.training import train_fold  # noqa: E402

train_fold(
    packs=dict(
        zip(
            snakemake.params.inputs,
            zip(snakemake.input.packs, snakemake.input.indexes, strict=True),
            strict=True,
        )
    ),  # noqa: F821
    folds_tsv=snakemake.input.folds,  # noqa: F821
    fold=int(snakemake.wildcards.fold),  # noqa: F821
    out_dir=snakemake.params.out_dir,  # noqa: F821
    model=snakemake.wildcards.model,  # noqa: F821
    lateralized=snakemake.params.lateralized,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    num_threads=snakemake.threads,  # noqa: F821
    **snakemake.params.train,  # noqa: F821
)
