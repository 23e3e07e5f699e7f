# Input checks, then one nipype/ANTs preprocessing job per scan, then the QC table.
from brainlens.preprocess.workdir import scan_work_dir


checkpoint check_inputs:
    input:
        participants=f"{BIDS_DIR}/participants.tsv",
        scans=SCANS["path"].tolist(),
    output:
        table="results/preprocess/inputs.tsv",
    log:
        "logs/check_inputs.log",
    localrule: True
    conda:
        "../../envs/preprocess.yaml"
    params:
        scans=SCANS[["scan", "participant_id", "session_id", "path"]].to_dict("records"),
        label_column=config["label_column"],
        on_invalid=config["preprocess"]["on_invalid_scan"],
        excluded=canonical(config["exclude_scans"]),
    script:
        "../../scripts/check_inputs.py"


rule preprocess_t1w:
    input:
        **REG_TEMPLATES,
        t1w=raw_t1w,
        templates=TEMPLATES,
    output:
        **{key: derivative_pattern(PREPROC_ROOT, key, resolution=RESOLUTION) for key in DERIVATIVES},
    log:
        "logs/preprocess/{subdir}/{scan}.log",
    group:
        "preprocess"
    conda:
        "../../envs/preprocess.yaml"
    threads: config["preprocess"]["threads"]
    resources:
        mem_mb=6000,
        runtime=60,
    params:
        resolution=config["preprocess"]["resolution"],
        skullstrip=config["preprocess"]["skullstrip"],
        segmentation_grid=config["preprocess"]["segmentation_grid"],
        seed=derive_seed(config["seed"], "preprocess"),
        out_dir=lambda wc: str(scan_dir(PREPROC_ROOT, wc.scan)),
        # Sources of the sidecars: BIDS URIs into this dataset (bids:raw:...)
        bids_dir=BIDS_DIR,
        # unexpanded: the job expands $VARS/~ on its node (node-local scratch)
        work_dir=lambda wc: scan_work_dir(config["preprocess"]["work_dir"], wc.scan),
    script:
        "../../scripts/preprocess_t1w.py"


rule qc_table:
    input:
        qc=lambda wc: [preproc_path(s, "qc_json") for s in checked_scans()],
        inputs="results/preprocess/inputs.tsv",
    output:
        table="results/preprocess/qc.tsv",
        description="results/preprocess/dataset_description.json",
        bidsignore="results/preprocess/.bidsignore",
    log:
        "logs/qc_table.log",
    localrule: True
    conda:
        "../../envs/preprocess.yaml"
    params:
        # DatasetLinks/SourceDatasets of dataset_description.json
        bids_dir=BIDS_DIR,
        resolution=RESOLUTION,
    script:
        "../../scripts/qc_table.py"


# After a failed run (e.g. --keep-going), the Snakefile's onerror lists the scans whose
# preprocessing failed; a successful run removes that list.
onsuccess:
    Path(FAILED_SCANS).unlink(missing_ok=True)
