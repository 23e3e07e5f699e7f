# One HTML page that a researcher can send to a colleague.


rule report:
    input:
        inputs="results/preprocess/inputs.tsv",
        qc="results/preprocess/qc.tsv",
        folds="results/folds/folds.tsv",
        summaries=expand("results/train/{model}/metrics_summary.tsv", model=MODELS),
        metrics=expand("results/train/{model}/fold-{fold}/metrics.json", model=MODELS, fold=FOLDS),
        predictions=expand(
            "results/train/{model}/fold-{fold}/predictions.tsv", model=MODELS, fold=FOLDS
        ),
        histories=expand("results/train/{model}/fold-{fold}/history.tsv", model=MODELS, fold=FOLDS),
        attributions=[
            f"results/attribution/{m}/{k}/fold-{f}.tsv" for m, k in MODEL_METHODS for f in FOLDS
        ],
        regions=[f"results/regions/{m}/{k}/{a}.tsv" for m, k, a in REGION_KEYS],
        region_folds=[f"results/regions/{m}/{k}/{a}_folds.tsv" for m, k, a in REGION_KEYS],
        agreement=expand(
            "results/regions/{model}/agreement_{atlas}.tsv",
            model=model_names(config),
            atlas=ATLASES,
        ),
        sanity=[f"results/sanity/{m}/{k}.tsv" for m, k in MODEL_METHODS],
        deletion=[f"results/sanity/{m}/{k}_deletion.tsv" for m, k in MODEL_METHODS],
        sanity_cascade=[f"results/sanity/{m}/{k}_cascade.tsv" for m, k in MODEL_METHODS],
        sanity_summary=[f"results/sanity/{m}/{k}_summary.tsv" for m, k in MODEL_METHODS],
        ground_truth=ground_truth_file(),
        template=TEMPLATES,
        code=REPORT_CODE,
    output:
        html=report("results/report/index.html", category="Report"),
        figures=directory("results/report/figures"),
    log:
        "logs/report.log",
    conda:
        "../../envs/report.yaml"
    params:
        title=config["report"]["title"],
        config=canonical(config),
        # keys of the expanded inputs above, in the same (itertools.product) order
        models=MODELS,
        model_fold=list(product(MODELS, FOLDS)),
        model_method_fold=[(m, k, f) for m, k in MODEL_METHODS for f in FOLDS],
        model_method_atlas=REGION_KEYS,
        model_atlas=list(product(model_names(config), ATLASES)),
        model_method=MODEL_METHODS,
    script:
        "../../scripts/report.py"
