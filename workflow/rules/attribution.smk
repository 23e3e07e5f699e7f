# Attribution maps per model, method and fold, on the test scans of that fold.


rule attribute:
    input:
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
        seed=lambda wc: derive_seed(config["seed"], "attribution", wc.model, wc.method, wc.fold),
    script:
        "../../scripts/attribute.py"


rule sanity_checks:
    input:
        models=expand("results/train/{{model}}/fold-{fold}/model.pt", fold=FOLDS),
        tables=expand("results/attribution/{{model}}/{{method}}/fold-{fold}.tsv", fold=FOLDS),
        packs=expand("results/pack/{input}.npy", input=INPUTS),
        indexes=expand("results/pack/{input}.tsv", input=INPUTS),
        folds="results/folds/folds.tsv",
        atlas=f"resources/atlases/res-{RES}/{GT_ATLAS}.nii.gz",
        templates=TEMPLATES,
    output:
        table="results/sanity/{model}/{method}.tsv",
        deletion="results/sanity/{model}/{method}_deletion.tsv",
    log:
        "logs/sanity/{model}/{method}.log",
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
