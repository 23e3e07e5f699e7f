# One HTML page that a researcher can send to a colleague.


rule report:
    input:
        inputs="results/preprocess/inputs.tsv",
        qc="results/preprocess/qc.tsv",
        folds="results/folds/folds.tsv",
        summaries=expand("results/train/{model}/metrics_summary.tsv", model=MODELS),
        metrics=expand(
            "results/train/{model}/fold-{fold}/metrics.json", model=MODELS, fold=FOLDS
        ),
        predictions=expand(
            "results/train/{model}/fold-{fold}/predictions.tsv", model=MODELS, fold=FOLDS
        ),
        histories=expand(
            "results/train/{model}/fold-{fold}/history.tsv", model=MODELS, fold=FOLDS
        ),
        attributions=expand(
            "results/attribution/{model}/{method}/fold-{fold}.tsv",
            model=MODELS,
            method=METHODS,
            fold=FOLDS,
        ),
        regions=expand(
            "results/regions/{model}/{method}/{atlas}.tsv",
            model=MODELS,
            method=METHODS,
            atlas=ATLASES,
        ),
        region_folds=expand(
            "results/regions/{model}/{method}/{atlas}_folds.tsv",
            model=MODELS,
            method=METHODS,
            atlas=ATLASES,
        ),
        agreement=expand(
            "results/regions/{model}/agreement_{atlas}.tsv", model=MODELS, atlas=ATLASES
        ),
        sanity=expand("results/sanity/{model}/{method}.tsv", model=MODELS, method=METHODS),
        deletion=expand(
            "results/sanity/{model}/{method}_deletion.tsv", model=MODELS, method=METHODS
        ),
        ground_truth=ground_truth_file(),
        template=TEMPLATES,
        code=REPORT_CODE,
    output:
        html=report("results/report/index.html", category="Report"),
        figures=directory("results/report/figures"),
    params:
        title=config["report"]["title"],
        config=canonical(config),
        # keys of the expanded inputs above, in the same (itertools.product) order
        models=MODELS,
        model_fold=list(product(MODELS, FOLDS)),
        model_method_fold=list(product(MODELS, METHODS, FOLDS)),
        model_method_atlas=list(product(MODELS, METHODS, ATLASES)),
        model_atlas=list(product(MODELS, ATLASES)),
        model_method=list(product(MODELS, METHODS)),
    log:
        "logs/report.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report.py"
