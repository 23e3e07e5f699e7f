# Pack the preprocessed maps once, train one model per fold, summarise the metrics.


rule pack:
    input:
        maps=lambda wc: [preproc_path(s, wc.input) for s in checked_scans()],
        inputs="results/preprocess/inputs.tsv",
    output:
        npy="results/pack/{input}.npy",
        index="results/pack/{input}.tsv",
        grid="results/pack/{input}.json",
    log:
        "logs/pack/{input}.log",
    conda:
        "../../envs/train.yaml"
    params:
        scan_ids=lambda wc: checked_scans(),
        smooth_fwhm_mm=config["pack"]["smooth_fwhm_mm"],
    script:
        "../../scripts/pack.py"


rule train_model:
    input:
        packs=expand("results/pack/{input}.npy", input=INPUTS),
        indexes=expand("results/pack/{input}.tsv", input=INPUTS),
        folds="results/folds/folds.tsv",
    output:
        model="results/train/{model}/fold-{fold}/model.pt",
        metrics="results/train/{model}/fold-{fold}/metrics.json",
        history="results/train/{model}/fold-{fold}/history.tsv",
        predictions="results/train/{model}/fold-{fold}/predictions.tsv",
        curve=report(
            "results/train/{model}/fold-{fold}/learning_curve.png",
            category="Training",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "learning curve"},
        ),
    log:
        "logs/train/{model}/fold-{fold}.log",
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        **GPU_RESOURCES,
        mem_mb=8000,
        runtime=240,
    params:
        inputs=INPUTS,
        train=canonical(
            {k: v for k, v in config["train"].items() if k not in ("model", "inputs", "gpus")}
        ),
        lateralized=config["lateralized"],
        # a changed config replaces the run: an old checkpoint must not be resumed
        on_stale_checkpoint="restart",
        seed=lambda wc: derive_seed(config["seed"], "train", wc.model, wc.fold),
        out_dir=lambda wc: f"results/train/{wc.model}/fold-{wc.fold}",
    script:
        "../../scripts/train_model.py"


rule metrics_summary:
    input:
        metrics=expand("results/train/{{model}}/fold-{fold}/metrics.json", fold=FOLDS),
        predictions=expand("results/train/{{model}}/fold-{fold}/predictions.tsv", fold=FOLDS),
        folds="results/folds/folds.tsv",
    output:
        summary="results/train/{model}/metrics_summary.tsv",
    log:
        "logs/metrics_summary/{model}.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/metrics_summary.py"
