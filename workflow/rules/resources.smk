# Templates and atlases, copied from offline package data onto the analysis grid.


rule templates:
    output:
        directory(TEMPLATES),
    params:
        resolution=config["preprocess"]["resolution"],
    log:
        "logs/templates.log",
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../../scripts/templates.py"


rule atlas:
    output:
        nii=f"resources/atlases/res-{RES}/{{atlas}}.nii.gz",
        tsv=f"resources/atlases/res-{RES}/{{atlas}}.tsv",
    params:
        resolution=config["preprocess"]["resolution"],
    log:
        "logs/atlas/{atlas}.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/atlas.py"
