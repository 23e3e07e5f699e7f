# Pack the preprocessed maps once, train one model per fold, summarise the metrics.
from brainlens.models.recipes import train_params

# train.recipe is resolved for every configured model by brainlens.config.check_config
# (common.smk, and `brainlens check`): a paper recipe that does not fit stops the parse.


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
        # the fold's confound files when the CNN inputs are harmonised, else nothing
        unpack(cnn_confound_inputs),
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
        # + confounds (the fold's files, also inputs above) when harmonised; carried in
        # train, which the script passes on, so that its script stays unchanged
        train=lambda wc: canonical(train_params(config, wc.model) | confounds_param(wc)),
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
    localrule: True
    conda:
        "../../envs/train.yaml"
    params:
        positive_class=config["positive_class"],
    script:
        "../../scripts/metrics_summary.py"


# Classical baselines (brainlens.linear, scikit-learn): the CNNs' folds, metrics files and
# validation value; seconds per fold. Their own rules, chosen over train_model / regions
# for their model names only (train_model's jobs and outputs are unchanged).
ruleorder: train_linear > train_model
ruleorder: linear_pattern_regions > regions


rule train_linear:
    input:
        unpack(linear_inputs),
        unpack(confound_inputs),
        folds="results/folds/folds.tsv",
    output:
        model="results/train/{model}/fold-{fold}/model.npz",
        metrics="results/train/{model}/fold-{fold}/metrics.json",
        history="results/train/{model}/fold-{fold}/history.tsv",
        predictions="results/train/{model}/fold-{fold}/predictions.tsv",
    log:
        "logs/train/{model}/fold-{fold}.log",
    wildcard_constraints:
        model="linear_svm_voxels|linear_svm_regions|confounds_only",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        covariates=config["covariates"],
        c_grid=config["baselines"]["C_grid"],
        # one validation value for all models: the CNNs' unless set
        monitor=config["baselines"]["monitor"] or config["train"]["early_stopping"]["monitor"],
        max_iter=config["baselines"]["max_iter"],
        resolution=config["preprocess"]["resolution"],
        seed=lambda wc: derive_seed(config["seed"], "train", wc.model, wc.fold),
        out_dir=lambda wc: f"results/train/{wc.model}/fold-{wc.fold}",
    script:
        "../../scripts/train_linear.py"


rule linear_pattern:
    input:
        unpack(confound_inputs),
        model="results/train/{model}/fold-{fold}/model.npz",
        pack=f"results/pack/{config['baselines']['input']}.npy",
        index=f"results/pack/{config['baselines']['input']}.tsv",
        folds="results/folds/folds.tsv",
    output:
        nii="results/train/{model}/fold-{fold}/pattern.nii.gz",
        table="results/train/{model}/fold-{fold}/pattern.tsv",
    log:
        "logs/train/{model}/pattern_fold-{fold}.log",
    wildcard_constraints:
        model="linear_svm_voxels",
    conda:
        "../../envs/train.yaml"
    params:
        input=config["baselines"]["input"],
    script:
        "../../scripts/linear_pattern.py"


rule linear_pattern_regions:
    input:
        tables=expand("results/train/{{model}}/fold-{fold}/pattern.tsv", fold=FOLDS),
        atlas=f"resources/atlases/res-{RES}/{{atlas}}.nii.gz",
        labels=f"resources/atlases/res-{RES}/{{atlas}}.tsv",
    output:
        table="results/regions/{model}/pattern/{atlas}.tsv",
        folds="results/regions/{model}/pattern/{atlas}_folds.tsv",
    log:
        "logs/regions/{model}/pattern/{atlas}.log",
    wildcard_constraints:
        model="linear_svm_voxels",
    conda:
        "../../envs/report.yaml"
    params:
        rank_by=config["regions"]["rank_by"],
    script:
        "../../scripts/regions.py"
