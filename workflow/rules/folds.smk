# Subject-level, stratified, seeded splits with a leakage audit.


rule folds:
    input:
        inputs="results/preprocess/inputs.tsv",
    output:
        folds="results/folds/folds.tsv",
    log:
        "logs/folds.log",
    conda:
        "../../envs/train.yaml"
    params:
        options=canonical(config["folds"]),
        seed=derive_seed(config["seed"], "folds"),
    script:
        "../../scripts/folds.py"
