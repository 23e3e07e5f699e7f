# External test sets (external.datasets; brainlens.external; README, "External test
# sets"): each dataset's scans go through the main input checks, preprocessing and
# packing with the main rules' settings, under results/external/<name>/; an audit
# against the main scans' GM maps must pass; then every fold's CNN scores them. The
# scan tables (EXTERNAL) are read and checked in common.smk; with no external dataset
# nothing here is defined. Included after preprocess.smk and train.smk: the rules take
# the params of rules check_inputs, preprocess_t1w and pack (inherited_params), so their
# settings cannot drift apart.
from brainlens.config import positive_class
from brainlens.external.datasets import check_external_covariates, external_entries
from brainlens.preprocess.workdir import scan_work_dir

#: Dataset name -> its config entry (label_column resolved).
EXTERNAL_ENTRIES = {e["name"]: e for e in external_entries(config)}
#: The models scored on the external sets: the CNNs (the linear baselines are not).
EXTERNAL_MODELS = model_names(config)
#: The positive class of the main metrics (None with more than two classes).
POSITIVE_CLASS = positive_class(config, list(CLASS_COUNTS.index))


wildcard_constraints:
    dataset=r"[A-Za-z0-9]+",


#: The external raw BIDS folder of a dataset name.
external_bids = lambda dataset: EXTERNAL_ENTRIES[dataset]["bids_dir"]
#: A main rule's params (rules.<name>) with the ``changed`` ones replaced or added.
inherited_params = lambda rule, **changed: dict(rule.params.items()) | changed
#: External scans that passed the input checks (after check_external_inputs).
external_checked_scans = lambda dataset: usable_scans(
    pd.read_csv(
        checkpoints.check_external_inputs.get(dataset=dataset).output.table,
        sep="\t",
        dtype=str,
    )
)["scan"].tolist()
#: Input function: map ``key`` of every checked scan of ``wildcards.dataset``.
external_maps = lambda key: lambda wc: [
    external_preproc_path(wc.dataset, s, key) for s in external_checked_scans(wc.dataset)
]
#: The external set's covariate files and the folds (leakage audit) when the CNN inputs
#: are harmonised (the fold's own confound files come with cnn_confound_inputs).
external_confound_inputs = lambda wc: (
    {
        "folds": "results/folds/folds.tsv",
        "external_participants": f"{external_bids(wc.dataset)}/participants.tsv",
    }
    | (
        {"external_tiv": f"results/external/{wc.dataset}/tiv.tsv"}
        if tiv_rule_inputs(COVARIATES)
        else {}
    )
    if HARMONISE_CNN
    else {}
)

if EXTERNAL:
    # as confounds.smk for the main dataset: with harmonised CNN inputs the external
    # participants.tsv must carry the covariates (checked before any job)
    if HARMONISE_CNN:
        check_external_covariates(EXTERNAL, COVARIATES)

    checkpoint check_external_inputs:
        input:
            participants=lambda wc: f"{external_bids(wc.dataset)}/participants.tsv",
            scans=lambda wc: EXTERNAL[wc.dataset]["path"].tolist(),
        output:
            table="results/external/{dataset}/inputs.tsv",
        log:
            "logs/external/{dataset}/check_inputs.log",
        localrule: True
        conda:
            "../../envs/preprocess.yaml"
        params:
            # check_inputs' (on_invalid_scan), for this dataset's scans and label column;
            # the table's label column holds the main class (labels mapped to null are
            # not among the scans)
            **inherited_params(
                rules.check_inputs,
                scans=lambda wc: EXTERNAL[wc.dataset][
                    ["scan", "participant_id", "session_id", "path"]
                ].to_dict("records"),
                label_column=lambda wc: EXTERNAL_ENTRIES[wc.dataset]["label_column"],
                excluded={},
                label_map=lambda wc: canonical(
                    {
                        k: v
                        for k, v in EXTERNAL_ENTRIES[wc.dataset]["label_map"].items()
                        if v is not None
                    }
                ),
            ),
        script:
            "../../scripts/check_inputs.py"

    rule external_preprocess_t1w:
        input:
            **REG_TEMPLATES,
            t1w=lambda wc: EXTERNAL[wc.dataset].loc[wc.scan, "path"],
            templates=TEMPLATES,
        output:
            **{
                key: derivative_pattern(
                    external_preproc_root("{dataset}"), key, resolution=RESOLUTION
                )
                for key in DERIVATIVES
            },
        log:
            "logs/external/{dataset}/preprocess/{subdir}/{scan}.log",
        group:
            "preprocess"
        conda:
            "../../envs/preprocess.yaml"
        threads: config["preprocess"]["threads"]
        resources:
            mem_mb=6000,
            runtime=60,
        params:
            # the main preprocessing's settings and seed; this dataset's folders
            **inherited_params(
                rules.preprocess_t1w,
                out_dir=lambda wc: str(scan_dir(external_preproc_root(wc.dataset), wc.scan)),
                bids_dir=lambda wc: external_bids(wc.dataset),
                work_dir=lambda wc: scan_work_dir(
                    config["preprocess"]["work_dir"], f"external-{wc.dataset}-{wc.scan}"
                ),
            ),
        script:
            "../../scripts/preprocess_t1w.py"

    rule external_pack:
        input:
            maps=lambda wc: external_maps(wc.input)(wc),
            inputs="results/external/{dataset}/inputs.tsv",
        output:
            npy="results/external/{dataset}/pack/{input}.npy",
            index="results/external/{dataset}/pack/{input}.tsv",
            grid="results/external/{dataset}/pack/{input}.json",
        log:
            "logs/external/{dataset}/pack/{input}.log",
        conda:
            "../../envs/train.yaml"
        params:
            # pack's smoothing
            **inherited_params(rules.pack, scan_ids=lambda wc: external_checked_scans(wc.dataset)),
        script:
            "../../scripts/pack.py"

    rule external_tiv:
        input:
            gm=external_maps("gm_modulated"),
            wm=external_maps("wm_modulated"),
            csf=external_maps("csf_modulated"),
            inputs="results/external/{dataset}/inputs.tsv",
        output:
            table="results/external/{dataset}/tiv.tsv",
        log:
            "logs/external/{dataset}/tiv.log",
        localrule: True
        conda:
            "../../envs/preprocess.yaml"
        params:
            scans=lambda wc: [
                {
                    "scan": s,
                    "participant_id": EXTERNAL[wc.dataset].loc[s, "participant_id"],
                    "session_id": EXTERNAL[wc.dataset].loc[s, "session_id"],
                }
                for s in external_checked_scans(wc.dataset)
            ],
        script:
            "../../scripts/tiv.py"

    rule external_duplicates:
        input:
            external=external_maps("gm"),
            main=lambda wc: [preproc_path(s, "gm") for s in checked_scans()],
            external_inputs="results/external/{dataset}/inputs.tsv",
            main_inputs="results/preprocess/inputs.tsv",
        output:
            table="results/external/{dataset}/duplicates.tsv",
            summary="results/external/{dataset}/duplicates.json",
        log:
            "logs/external/{dataset}/duplicates.log",
        conda:
            "../../envs/train.yaml"
        params:
            external_scans=lambda wc: external_checked_scans(wc.dataset),
            external_subjects=lambda wc: EXTERNAL[wc.dataset]
            .loc[external_checked_scans(wc.dataset), "participant_id"]
            .tolist(),
            main_scans=lambda wc: checked_scans(),
            main_subjects=lambda wc: SCANS.loc[checked_scans(), "participant_id"].tolist(),
            # the main audit's settings (rule near_duplicates, rule folds)
            threshold=config["folds"]["duplicate_threshold"],
            smooth_fwhm_mm=config["folds"]["duplicate_smooth_fwhm_mm"],
            on_duplicate=config["folds"]["on_duplicate"],
        script:
            "../../scripts/external_duplicates.py"

    rule evaluate_external:
        input:
            # when the CNN inputs are harmonised: the fold's confound files (as train_model
            # gets them), the folds and the external set's covariates; else nothing
            unpack(cnn_confound_inputs),
            unpack(external_confound_inputs),
            model="results/train/{model}/fold-{fold}/model.pt",
            packs=expand("results/external/{{dataset}}/pack/{input}.npy", input=INPUTS),
            indexes=expand("results/external/{{dataset}}/pack/{input}.tsv", input=INPUTS),
            labels="results/external/{dataset}/inputs.tsv",
            # the audit must have passed
            duplicates="results/external/{dataset}/duplicates.tsv",
        output:
            predictions="results/external/{dataset}/{model}/fold-{fold}/predictions.tsv",
            metrics="results/external/{dataset}/{model}/fold-{fold}/metrics.json",
        log:
            "logs/external/{dataset}/{model}/fold-{fold}.log",
        wildcard_constraints:
            model="|".join(EXTERNAL_MODELS),
        conda:
            "../../envs/train.yaml"
        threads: 2
        resources:
            **GPU_RESOURCES,
            mem_mb=8000,
            runtime=60,
        params:
            inputs=INPUTS,
            lateralized=config["lateralized"],
            positive_class=POSITIVE_CLASS,
            device=config["train"]["device"],
            # batch size, amp, deterministic of the model's training settings
            train=lambda wc: canonical(train_params(config, wc.model)),
            # the fold's spec as train_model gets it in train["confounds"]; {} when off
            confounds=lambda wc: canonical(cnn_spec(wc.fold)),
        script:
            "../../scripts/evaluate_external.py"

    rule external_summary:
        input:
            metrics=expand(
                "results/external/{{dataset}}/{{model}}/fold-{fold}/metrics.json", fold=FOLDS
            ),
            predictions=expand(
                "results/external/{{dataset}}/{{model}}/fold-{fold}/predictions.tsv",
                fold=FOLDS,
            ),
        output:
            summary="results/external/{dataset}/{model}/metrics_summary.tsv",
        log:
            "logs/external/{dataset}/{model}/summary.log",
        wildcard_constraints:
            model="|".join(EXTERNAL_MODELS),
        localrule: True
        conda:
            "../../envs/train.yaml"
        params:
            positive_class=POSITIVE_CLASS,
            n_resamples=config["external"]["bootstrap"],
            seed=lambda wc: derive_seed(config["seed"], "external", wc.dataset, wc.model),
        script:
            "../../scripts/external_summary.py"
