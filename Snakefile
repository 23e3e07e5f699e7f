# brainlens: leakage-free CNN classification of T1w brain MRI and atlas-region
# attribution. Run the built-in demo with `snakemake --cores 8`; for a real study copy
# config/config.yaml, set its bids_dir and pass it with --configfile. See README.md.
from snakemake.utils import min_version

from brainlens.runtime import export_src

min_version("9.0")

# Jobs (also inside per-rule conda envs and on cluster nodes) import brainlens from
# this checkout: its src/ goes first on PYTHONPATH. See README, "Conda environments".
export_src(f"{workflow.basedir}/src")

# No `configfile:` here: Snakemake would deep-merge the user's --configfile into it.
# workflow/rules/common.smk layers the config: config/demo.yaml under the user's
# values only when they give no bids_dir (brainlens.config_layers.resolve_config).


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/folds.smk"
include: "workflow/rules/confounds.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/regions.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/external.smk"


rule all:
    default_target: True
    input:
        # the report folder (index.html + figures/), one output so --report bundles both
        "results/report",


# The one error handler (a later `onerror:` would replace it): each failed job's own
# error from its log; scans that failed in preprocessing get their own table and the
# exclude_scans entries instead.
onerror:
    from brainlens.joblogs import failure_report
    from brainlens.preprocess import write_failure_summary

    scans = write_failure_summary(preprocess_jobs(), FAILED_SCANS)
    jobs = failure_report(log, skip_rules=["preprocess_t1w"] if scans else [])
    for message in (jobs, scans):
        if message:
            print(message, file=sys.stderr)
