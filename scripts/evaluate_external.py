"""Rule evaluate_external: one fold's model on one external test set.

Inputs: ``model`` (``results/train/{model}/fold-{fold}/model.pt``), ``packs`` and
``indexes`` (``results/external/{dataset}/pack/{input}.npy`` / ``.tsv``, in
``params.inputs`` order), ``labels`` (``results/external/{dataset}/inputs.tsv``),
``duplicates`` (ordering only). When the CNN inputs are harmonised, also
``unpack(cnn_confound_inputs)`` (the fold's main files, as train_model gets them),
``folds`` (``results/folds/folds.tsv``, the leakage audit), ``external_participants``
(the external dataset's participants.tsv) and, with ``tiv`` a covariate,
``external_tiv`` (``results/external/{dataset}/tiv.tsv``).
Params: ``inputs`` (train.inputs), ``positive_class``, ``device``, ``train``
(``train_params(config, model)``: batch_size, amp, deterministic are read) and
``confounds`` (``cnn_spec(fold)``: the fold's main spec as train_model's
``train["confounds"]``, ``{}`` when not harmonised). Wildcards: ``dataset``.
"""

from brainlens.logutil import setup_logging

setup_logging(snakemake.log[0])

from brainlens.external.evaluate import evaluate_external_fold

inp, params = snakemake.input, snakemake.params
train = dict(params.train)
evaluate_external_fold(
    model_path=inp.model,
    packs=dict(zip(params.inputs, zip(inp.packs, inp.indexes, strict=True), strict=True)),
    inputs_tsv=inp.labels,
    out_predictions=snakemake.output.predictions,
    out_metrics=snakemake.output.metrics,
    dataset=snakemake.wildcards.dataset,
    batch_size=train["batch_size"],
    positive_class=params.positive_class,
    device=params.device,
    amp=train["amp"],
    deterministic=train["deterministic"],
    num_threads=snakemake.threads,
    confounds=dict(params.confounds) or None,
    folds_tsv=inp.get("folds"),
    participants_tsv=inp.get("external_participants"),
    tiv_tsv=inp.get("external_tiv"),
)
