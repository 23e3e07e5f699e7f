# Subject-level, stratified, seeded splits with a leakage audit.

#: folds keys of the near-duplicate audit (the rest are make_folds options).
DUPLICATE_KEYS = ("duplicate_threshold", "duplicate_smooth_fwhm_mm", "on_duplicate")


rule near_duplicates:
    input:
        maps=lambda wc: [preproc_path(s, "gm") for s in checked_scans()],
        inputs="results/preprocess/inputs.tsv",
    output:
        table="results/folds/near_duplicates.tsv",
        summary="results/folds/near_duplicates.json",
    log:
        "logs/near_duplicates.log",
    conda:
        "../../envs/train.yaml"
    params:
        scan_ids=lambda wc: checked_scans(),
        subject_ids=lambda wc: SCANS.loc[checked_scans(), "participant_id"].tolist(),
        threshold=config["folds"]["duplicate_threshold"],
        smooth_fwhm_mm=config["folds"]["duplicate_smooth_fwhm_mm"],
    script:
        "../../scripts/near_duplicates.py"


rule folds:
    input:
        inputs="results/preprocess/inputs.tsv",
        near_duplicates="results/folds/near_duplicates.tsv",
    output:
        folds="results/folds/folds.tsv",
    log:
        "logs/folds.log",
    localrule: True
    conda:
        "../../envs/train.yaml"
    params:
        options=canonical({k: v for k, v in config["folds"].items() if k not in DUPLICATE_KEYS}),
        on_duplicate=config["folds"]["on_duplicate"],
        seed=derive_seed(config["seed"], "folds"),
    script:
        "../../scripts/folds.py"
