# Attribution maps per model, method and fold, on the test scans of that fold.
# With confounds.scope: all (HARMONISE_CNN, confounds.smk) a model trained on harmonised
# inputs is explained on them: attribute and sanity_checks get the fold's confound files
# (brainlens reads them from model.pt and checks them against these) and the baselines of
# attribution_baseline_harmonised (means of the harmonised training inputs). Off, every
# input and param below is as it was.
BASELINE_DIR = (
    "results/attribution/baselines/harmonised" if HARMONISE_CNN else "results/attribution/baselines"
)
#: baseline_input (common.smk), from BASELINE_DIR.
attribute_baseline_input = lambda wc: {
    k: v.replace("results/attribution/baselines", BASELINE_DIR)
    for k, v in baseline_input(wc).items()
}


rule attribution_baseline:
    input:
        packs=expand("results/pack/{input}.npy", input=INPUTS),
        indexes=expand("results/pack/{input}.tsv", input=INPUTS),
        folds="results/folds/folds.tsv",
    output:
        npy="results/attribution/baselines/fold-{fold}.npy",
        json="results/attribution/baselines/fold-{fold}.json",
    log:
        "logs/attribution/baselines/fold-{fold}.log",
    localrule: True
    conda:
        "../../envs/attribution.yaml"
    params:
        baseline=canonical(config["attribution"]["baseline"]),
    script:
        "../../scripts/attribution_baseline.py"


# Means of the harmonised training inputs (brainlens.confounds.inputs), only when
# HARMONISE_CNN; attribution_baseline stays the raw one.
rule attribution_baseline_harmonised:
    input:
        unpack(cnn_confound_inputs),
        packs=expand("results/pack/{input}.npy", input=INPUTS),
        indexes=expand("results/pack/{input}.tsv", input=INPUTS),
        folds="results/folds/folds.tsv",
    output:
        npy="results/attribution/baselines/harmonised/fold-{fold}.npy",
        json="results/attribution/baselines/harmonised/fold-{fold}.json",
    log:
        "logs/attribution/baselines/harmonised/fold-{fold}.log",
    localrule: True
    conda:
        "../../envs/attribution.yaml"
    params:
        baseline=canonical(config["attribution"]["baseline"]),
    script:
        "../../scripts/attribution_baseline_harmonised.py"


rule attribute:
    input:
        unpack(attribute_baseline_input),
        unpack(cnn_confound_inputs),
        model="results/train/{model}/fold-{fold}/model.pt",
        packs=expand("results/pack/{input}.npy", input=INPUTS),
        indexes=expand("results/pack/{input}.tsv", input=INPUTS),
        folds="results/folds/folds.tsv",
        atlas=lambda wc: f"resources/atlases/res-{RES}/"
        + method_options(wc).get("atlas", "aal")
        + ".nii.gz",
    output:
        maps=directory("results/attribution/{model}/{method}/fold-{fold}"),
        table="results/attribution/{model}/{method}/fold-{fold}.tsv",
    log:
        "logs/attribution/{model}/{method}/fold-{fold}.log",
    # run time and peak memory of each job, to size cluster requests (README)
    benchmark:
        "results/benchmarks/attribute/{model}/{method}/fold-{fold}.tsv"
    conda:
        "../../envs/attribution.yaml"
    threads: 2
    resources:
        **GPU_RESOURCES,
        mem_mb=8000,
        runtime=240,
    params:
        inputs=INPUTS,
        options=method_options,
        max_scans=config["attribution"]["max_scans_per_fold"],
        target=config["attribution"]["target"],
        seed=lambda wc: derive_seed(config["seed"], "attribution", wc.model, wc.method, wc.fold),
    script:
        "../../scripts/attribute.py"


rule sanity_checks:
    input:
        # harmonised models: every fold's confound files (none when off)
        unpack(cnn_confound_inputs_all_folds),
        models=expand("results/train/{{model}}/fold-{fold}/model.pt", fold=FOLDS),
        tables=expand("results/attribution/{{model}}/{{method}}/fold-{fold}.tsv", fold=FOLDS),
        packs=expand("results/pack/{input}.npy", input=INPUTS),
        indexes=expand("results/pack/{input}.tsv", input=INPUTS),
        folds="results/folds/folds.tsv",
        baselines=expand("{dir}/fold-{fold}.npy", dir=BASELINE_DIR, fold=FOLDS),
        baseline_jsons=expand("{dir}/fold-{fold}.json", dir=BASELINE_DIR, fold=FOLDS),
        # attribution.sanity.random_label_run: that run's fold models (none when null)
        random_label_models=expand(
            "{run}/train/{{model}}/fold-{fold}/model.pt",
            run=[r for r in [config["attribution"]["sanity"]["random_label_run"]] if r],
            fold=FOLDS,
        ),
        atlas=f"resources/atlases/res-{RES}/{GT_ATLAS}.nii.gz",
        templates=TEMPLATES,
    output:
        table="results/sanity/{model}/{method}.tsv",
        cascade="results/sanity/{model}/{method}_cascade.tsv",
        deletion="results/sanity/{model}/{method}_deletion.tsv",
        summary="results/sanity/{model}/{method}_summary.tsv",
    log:
        "logs/sanity/{model}/{method}.log",
    benchmark:
        "results/benchmarks/sanity_checks/{model}/{method}.tsv"
    conda:
        "../../envs/attribution.yaml"
    threads: 2
    resources:
        **GPU_RESOURCES,
        mem_mb=8000,
    params:
        inputs=INPUTS,
        options=method_options,
        seed=lambda wc: derive_seed(config["seed"], "sanity", wc.model, wc.method),
        checks=canonical(config["attribution"]["sanity"]),
        ground_truth=GROUND_TRUTH,
        resolution=config["preprocess"]["resolution"],
    script:
        "../../scripts/sanity_checks.py"
