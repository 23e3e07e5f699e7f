# brainlens: leakage-free CNN classification of T1w brain MRI and atlas-region
# attribution. Run the built-in demo with `snakemake --cores 8`; point
# config/config.yaml at your BIDS data for a real study. See README.md.
from snakemake.utils import min_version

from brainlens.runtime import export_src

min_version("9.0")

# Jobs (also inside per-rule conda envs and on cluster nodes) import brainlens from
# this checkout: its src/ goes first on PYTHONPATH. See README, "Conda environments".
export_src(f"{workflow.basedir}/src")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/folds.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/regions.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report/index.html",
