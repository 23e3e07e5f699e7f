# Subject-level, stratified, seeded splits with a leakage audit.


rule folds:
    input:
        inputs="results/preprocess/inputs.tsv",
    output:
        folds="results/folds/folds.tsv",
    params:
        options=canonical(config["folds"]),
        seed=derive_seed(config["seed"], "folds"),
    log:
        "logs/folds.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/folds.py"
