# Per-region relevance tables across folds and classes, per atlas.


rule regions:
    input:
        tables=expand("results/attribution/{{model}}/{{method}}/fold-{fold}.tsv", fold=FOLDS),
        atlas=f"resources/atlases/res-{RES}/{{atlas}}.nii.gz",
        labels=f"resources/atlases/res-{RES}/{{atlas}}.tsv",
    output:
        table="results/regions/{model}/{method}/{atlas}.tsv",
        folds="results/regions/{model}/{method}/{atlas}_folds.tsv",
    log:
        "logs/regions/{model}/{method}/{atlas}.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/regions.py"


rule method_agreement:
    input:
        tables=expand("results/regions/{{model}}/{method}/{{atlas}}.tsv", method=METHODS),
    output:
        table="results/regions/{model}/agreement_{atlas}.tsv",
    params:
        methods=METHODS,
    log:
        "logs/regions/{model}/agreement_{atlas}.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/method_agreement.py"
