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
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        rank_by=config["regions"]["rank_by"],
    script:
        "../../scripts/regions.py"


rule method_agreement:
    input:
        tables=lambda wc: expand(
            "results/regions/{model}/{method}/{atlas}.tsv",
            model=wc.model,
            method=methods_of(wc.model),
            atlas=wc.atlas,
        ),
    output:
        table="results/regions/{model}/agreement_{atlas}.tsv",
    log:
        "logs/regions/{model}/agreement_{atlas}.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        methods=lambda wc: methods_of(wc.model),
    script:
        "../../scripts/method_agreement.py"
