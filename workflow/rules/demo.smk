# The built-in synthetic BIDS dataset (only when config bids_dir is null): one job
# for the metadata, one per scan (parallel on many cores).
if DEMO:

    rule demo_metadata:
        output:
            participants=f"{BIDS_DIR}/participants.tsv",
            ground_truth=f"{BIDS_DIR}/ground_truth.json",
            description=f"{BIDS_DIR}/dataset_description.json",
        log:
            "logs/demo/metadata.log",
        localrule: True
        conda:
            "../../envs/preprocess.yaml"
        params:
            spec=canonical(config["demo"]),
            seed=DEMO_SEED,
            out_dir=lambda wildcards, output: os.path.dirname(output.participants),
        script:
            "../../scripts/demo_metadata.py"

    rule demo_scan:
        output:
            t1w=f"{BIDS_DIR}/{{subdir}}/anat/{{scan}}_T1w.nii.gz",
        log:
            "logs/demo/{subdir}/{scan}.log",
        conda:
            "../../envs/preprocess.yaml"
        params:
            spec=canonical(config["demo"]),
            seed=DEMO_SEED,
            # the dataset root: up from anat/ and the subject (and session) folders
            out_dir=lambda wildcards, output: str(
                Path(output.t1w).parents[wildcards.subdir.count("/") + 2]
            ),
            participant=lambda wildcards: SCANS.loc[wildcards.scan, "participant_id"],
            session=lambda wildcards: SCANS.loc[wildcards.scan, "session_id"],
        script:
            "../../scripts/demo_scan.py"
