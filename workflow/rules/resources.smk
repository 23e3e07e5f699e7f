# Templates and atlases, copied from offline package data onto the analysis grid.


rule templates:
    output:
        directory(f"resources/templates/{SPACE}/res-{{res}}"),
    log:
        f"logs/templates/{SPACE}/res-{{res}}.log",
    localrule: True
    conda:
        "../../envs/preprocess.yaml"
    params:
        resolution=resolution_of,
    script:
        "../../scripts/templates.py"


rule atlas:
    input:
        unpack(custom_atlas_files),
    output:
        nii=f"resources/atlases/res-{RES}/{{atlas}}.nii.gz",
        tsv=f"resources/atlases/res-{RES}/{{atlas}}.tsv",
    log:
        "logs/atlas/{atlas}.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        resolution=config["preprocess"]["resolution"],
    script:
        "../../scripts/atlas.py"
