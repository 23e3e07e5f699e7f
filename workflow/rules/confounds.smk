# Covariates, TIV and in-fold confound removal (brainlens.confounds) of the linear
# baselines and, with confounds.scope: all, of the CNN inputs. Included before train.smk:
# train_linear and linear_pattern take confound_inputs; train_model, attribute,
# attribution_baseline_harmonised and sanity_checks take cnn_confound_inputs.
from types import SimpleNamespace

from brainlens.confounds.infold import confound_settings
from brainlens.confounds.inputs import INPUTS_KIND, cnn_confound_spec, spec_rule_inputs
from brainlens.linear.confounds import confound_rule_inputs, tiv_rule_inputs

COVARIATES = config["covariates"]
CONFOUNDS = confound_settings(config)
#: Extra inputs of train_linear / linear_pattern (TIV table, the fold's confound fit).
confound_inputs = lambda wc: confound_rule_inputs(
    wc.model,
    wc.fold,
    method=CONFOUNDS["method"],
    covariates=COVARIATES,
    participants_tsv=f"{BIDS_DIR}/participants.tsv",
)
#: The CNN inputs are harmonised in each fold (results/confounds/inputs/fold-<k>.*).
HARMONISE_CNN = CONFOUNDS["method"] != "none" and CONFOUNDS["scope"] == "all"
#: One fold's confound files as brainlens.confounds.inputs takes them ({} when off).
cnn_spec = lambda fold: cnn_confound_spec(
    fold,
    harmonise=HARMONISE_CNN,
    participants_tsv=f"{BIDS_DIR}/participants.tsv",
    tiv_tsv=tiv_rule_inputs(COVARIATES).get("tiv"),
)
#: Named inputs of one fold's harmonised CNN jobs, of all folds (sanity_checks), and the
#: train_fold keyword: all {} when off, so those rules' inputs and params are unchanged.
cnn_confound_inputs = lambda wc: spec_rule_inputs([cnn_spec(wc.fold)], lists=False)
cnn_confound_inputs_all_folds = lambda wc: spec_rule_inputs(
    [cnn_spec(k) for k in FOLDS], lists=True
)
confounds_param = lambda wc: ({"confounds": cnn_spec(wc.fold)} if HARMONISE_CNN else {})
#: Feature sources of fit_confounds: the CNN packs (inputs), or a baseline's features
#: (voxels, regions) as train_linear gets them.
confound_fit_inputs = lambda wc: (
    {
        "packs": expand("results/pack/{input}.npy", input=INPUTS),
        "indexes": expand("results/pack/{input}.tsv", input=INPUTS),
    }
    if wc.kind == INPUTS_KIND
    else linear_inputs(SimpleNamespace(model=f"linear_svm_{wc.kind}"))
)


rule tiv:
    input:
        gm=lambda wc: [preproc_path(s, "gm_modulated") for s in checked_scans()],
        wm=lambda wc: [preproc_path(s, "wm_modulated") for s in checked_scans()],
        csf=lambda wc: [preproc_path(s, "csf_modulated") for s in checked_scans()],
        inputs="results/preprocess/inputs.tsv",
    output:
        table="results/preprocess/tiv.tsv",
    log:
        "logs/tiv.log",
    localrule: True
    conda:
        "../../envs/preprocess.yaml"
    params:
        scans=lambda wc: [
            {
                "scan": s,
                "participant_id": SCANS.loc[s, "participant_id"],
                "session_id": SCANS.loc[s, "session_id"],
            }
            for s in checked_scans()
        ],
    script:
        "../../scripts/tiv.py"


rule fit_confounds:
    input:
        unpack(confound_fit_inputs),
        **tiv_rule_inputs(COVARIATES),
        folds="results/folds/folds.tsv",
        participants=f"{BIDS_DIR}/participants.tsv",
    output:
        npz="results/confounds/{kind}/fold-{fold}.npz",
        json="results/confounds/{kind}/fold-{fold}.json",
    log:
        "logs/confounds/{kind}/fold-{fold}.log",
    wildcard_constraints:
        kind="voxels|regions|inputs",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        covariates=COVARIATES,
        confounds=canonical(CONFOUNDS),
        positive_class=config["positive_class"],
        resolution=config["preprocess"]["resolution"],
    script:
        "../../scripts/fit_confounds.py"


# participants.tsv of user data exists at parse time: a missing covariate, a bad value or
# n/a among the scans used stops the run before any job (the demo's is written by a job;
# the jobs check it again).
if os.path.exists(f"{BIDS_DIR}/participants.tsv") and (
    "confounds_only" in BASELINES or CONFOUNDS["method"] != "none"
):
    from brainlens.confounds.covariates import check_covariates

    check_covariates(
        f"{BIDS_DIR}/participants.tsv",
        COVARIATES,
        config["label_column"],
        participant_ids=sorted(set(SCANS["participant_id"])),
    )
    if CONFOUNDS["method"] == "combat":
        from brainlens.confounds.infold import check_site_column

        check_site_column(
            f"{BIDS_DIR}/participants.tsv",
            CONFOUNDS["site_column"],
            sorted(set(SCANS["participant_id"])),
        )
