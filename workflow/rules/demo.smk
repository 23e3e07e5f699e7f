# The built-in synthetic BIDS dataset (only when config bids_dir is null).
if DEMO:

    rule demo_data:
        output:
            participants=f"{BIDS_DIR}/participants.tsv",
            ground_truth=f"{BIDS_DIR}/ground_truth.json",
            scans=SCANS["path"].tolist(),
        params:
            spec=config["demo"],
            seed=DEMO_SEED,
            out_dir=lambda wildcards, output: os.path.dirname(output.participants),
        log:
            "logs/demo_data.log",
        conda:
            "../../envs/preprocess.yaml"
        script:
            "../../scripts/demo_data.py"
