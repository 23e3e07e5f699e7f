# Shared set-up: config validation, the scan table, wildcard constraints, helpers.
import os
import sys
from itertools import product
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from brainlens.atlas_custom import atlas_names, custom_atlases
from brainlens.bids import scan_key, scan_subdir, scan_table_from_config
from brainlens.config import (
    attribution_methods,
    check_config,
    check_dataset,
    check_layers,
    fold_ids,
    model_names,
)
from brainlens.config_layers import resolve_config
from brainlens.derivatives import (
    DERIVATIVES,
    SPACE,
    derivative_path,
    derivative_pattern,
    scan_dir,
)
from brainlens.external.datasets import external_scan_tables
from brainlens.grid import registration_grid, res_label
from brainlens.inputs import usable_scans
from brainlens.names import METHOD_OPTIONS, method_base
from brainlens.seeding import derive_seed
from brainlens.synthetic import DemoSpec, plan_dataset, scan_relpath

# The config's layers (brainlens.config_layers; README, "Your own data"): the
# schema's defaults, then config/demo.yaml only when no bids_dir is given, then the
# user's --configfile/--config values (a method set or option mapping replaces the
# demo's). `config` is changed in place: Snakemake and every rule read this object.
_RESOLVED = resolve_config(config, f"{workflow.basedir}/config/demo.yaml")
config.clear()
config.update(_RESOLVED)
validate(config, "../schemas/config.schema.yaml")
check_config(config)
# imports torch, and only when a Grad-CAM/CAM `layer` is configured
check_layers(config)

DEMO = config["bids_dir"] is None
BIDS_DIR = "results/demo_bids" if DEMO else config["bids_dir"]
#: The analysis grid (mm): the res-<RES> label of the derivatives on it.
RESOLUTION = config["preprocess"]["resolution"]
RES = res_label(RESOLUTION)
TEMPLATES = f"resources/templates/{SPACE}/res-{RES}"
#: A coarser analysis grid is registered on a finer one, with that grid's templates.
REG_RES = registration_grid(config["preprocess"]["resolution"])
REG_TEMPLATES = (
    {"reg_templates": f"resources/templates/{SPACE}/res-{res_label(REG_RES)}"} if REG_RES else {}
)
#: Classical baselines (brainlens.linear, job train_linear): same folds and metrics files
#: as the CNNs, in the report's model comparison, but no attribution methods.
BASELINES = list(config["baselines"]["models"])
MODELS = model_names(config) + BASELINES
FOLDS = fold_ids(config)
#: (model, method key) pairs: ``attribution.model_methods`` can give a model its own set.
MODEL_METHODS = [(m, k) for m in model_names(config) for k in attribution_methods(config, m)]
#: Atlas names of regions.atlases; a user's {name, image, labels} entries by name.
ATLASES = atlas_names(config)
CUSTOM_ATLASES = custom_atlases(config)
#: Baselines whose Haufe activation pattern goes through the region tables (method "pattern").
PATTERN_MODELS = [m for m in BASELINES if m == "linear_svm_voxels"]
#: (model, method, atlas) of every region table the report shows.
REGION_KEYS = [(m, k, a) for m, k in MODEL_METHODS for a in ATLASES] + [
    (m, "pattern", a) for m in PATTERN_MODELS for a in ATLASES
]
INPUTS = list(config["train"]["inputs"])
DEMO_SEED = derive_seed(config["seed"], "demo")
GROUND_TRUTH = f"{BIDS_DIR}/ground_truth.json"
#: Atlas used to score the ground truth (the demo's atlas, else the first configured).
GT_ATLAS = config["demo"]["atlas"] if DEMO else ATLASES[0]
#: The report's own code: editing it re-runs the report (and nothing else).
REPORT_CODE = sorted(str(p) for p in Path(workflow.basedir, "src/brainlens/report").glob("*.py"))
GPU_RESOURCES = {"gpu": config["train"]["gpus"]} if config["train"]["gpus"] else {}


def _scans():
    """One row per selected T1w scan: scan, participant_id, session_id, subdir, path.

    A BIDS dataset goes through brainlens.bids.scan_table (participants, t1w_filters,
    t1w_multiple, exclude_scans checked here, before any job); the demo is unchanged.
    """
    if DEMO:
        plan = plan_dataset(DemoSpec(**config["demo"]), seed=DEMO_SEED)
        stems = [scan_key(p, s) for p, s in zip(plan.participant_id, plan.session_id)]
        return pd.DataFrame(
            {
                "scan": stems,
                "participant_id": plan.participant_id,
                "session_id": plan.session_id,
                "subdir": [scan_subdir(p, s) for p, s in zip(plan.participant_id, plan.session_id)],
                "path": [
                    f"{BIDS_DIR}/{scan_relpath(p, s)}"
                    for p, s in zip(plan.participant_id, plan.session_id)
                ],
            }
        )
    table = scan_table_from_config(config)
    validate(table[["participant_id"]].drop_duplicates(), "../schemas/participants.schema.yaml")
    return table


SCANS = _scans().set_index("scan", drop=False)


def _labelled_scans():
    """SCANS with a ``label`` column (the demo's labels come from its plan)."""
    if "label" in SCANS.columns:
        return SCANS.reset_index(drop=True)
    plan = plan_dataset(DemoSpec(**config["demo"]), seed=DEMO_SEED)
    labels = plan[DemoSpec(**config["demo"]).label_column].astype(str).tolist()
    return SCANS.reset_index(drop=True).assign(label=labels)


#: Participants per class; class count, fold feasibility and positive_class checked.
CLASS_COUNTS = check_dataset(config, _labelled_scans())
#: External test sets (brainlens.external.datasets, workflow/rules/external.smk): name ->
#: scan table with labels mapped to the main classes; {} plans no external job.
EXTERNAL = external_scan_tables(config, SCANS, list(CLASS_COUNTS.index))


wildcard_constraints:
    scan=r"sub-[A-Za-z0-9]+(_[a-z]+-[A-Za-z0-9]+)*",
    subdir=r"sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",
    model=r"[A-Za-z0-9_]+",
    method=r"[a-z0-9_]+(@[A-Za-z0-9_-]+)?",
    atlas=r"[a-z0-9_]+",
    fold=r"\d+",
    input=r"[a-z_]+",
    res=r"[0-9]+(p[0-9]+)?",


#: Root of the preprocessing derivatives: a scan's files are named by the one table,
#: brainlens.derivatives.DERIVATIVES (key -> name; the keys are train.inputs' names).
PREPROC_ROOT = "results/preprocess"


def preproc_path(scan, key):
    """Path of one preprocessing output of a scan (a DERIVATIVES key, on the RES grid)."""
    return str(derivative_path(PREPROC_ROOT, scan, key, resolution=RESOLUTION))


def external_preproc_root(dataset):
    """Root of an external test set's preprocessing derivatives (same naming table)."""
    return f"results/external/{dataset}/preprocess"


def external_preproc_path(dataset, scan, key):
    """Path of one preprocessing output of an external test set's scan (a DERIVATIVES key)."""
    return str(derivative_path(external_preproc_root(dataset), scan, key, resolution=RESOLUTION))


def checked_scans():
    """Scans that passed the input checks (evaluated after the check_inputs checkpoint)."""
    table = pd.read_csv(checkpoints.check_inputs.get().output.table, sep="\t", dtype=str)
    return usable_scans(table)["scan"].tolist()


def canonical(value):
    """A config value with dict keys sorted at every level.

    Params are compared with their stored values to decide re-runs; without this a
    config file whose keys were merely reordered would re-run every rule.
    """
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def methods_of(model):
    """The method keys configured for one model."""
    return [k for m, k in MODEL_METHODS if m == model]


def method_options(wildcards):
    """Options of ``wildcards.method`` for ``wildcards.model`` (key-sorted, see canonical)."""
    return canonical(attribution_methods(config, wildcards.model)[wildcards.method])


def baseline_input(wildcards):
    """The fold's baseline files for a method that takes a baseline (IG, occlusion), else none."""
    if "baseline" not in METHOD_OPTIONS[method_base(wildcards.method)]:
        return {}
    return {
        "baseline": f"results/attribution/baselines/fold-{wildcards.fold}.npy",
        "baseline_json": f"results/attribution/baselines/fold-{wildcards.fold}.json",
    }


def custom_atlas_files(wildcards):
    """The image and labels of a regions.atlases {name, image, labels} entry; none for a built-in."""
    atlas = CUSTOM_ATLASES.get(wildcards.atlas)
    return {"image": str(atlas.image), "labels": str(atlas.labels)} if atlas else {}


def resolution_of(wildcards):
    """The grid resolution (mm) named by a ``res`` wildcard (``1p5`` -> 1.5)."""
    return float(wildcards.res.replace("p", "."))


def raw_t1w(wildcards):
    return SCANS.loc[wildcards.scan, "path"]


def ground_truth_file():
    """The dataset's ground_truth.json as a list (empty when it has none)."""
    return [GROUND_TRUTH] if DEMO or os.path.exists(GROUND_TRUTH) else []


#: Scans that failed in preprocessing are listed here after a failed (--keep-going) run.
FAILED_SCANS = "results/preprocess/failed_scans.tsv"


def preprocess_jobs():
    """Outputs and log of every scan's preprocessing job (excluded scans left out)."""
    excluded = set(config["exclude_scans"])
    return [
        {
            "scan": scan,
            "participant_id": row.participant_id,
            "session_id": row.session_id,
            "outputs": [preproc_path(scan, key) for key in DERIVATIVES],
            "log": f"logs/preprocess/{row.subdir}/{scan}.log",
        }
        for scan, row in SCANS.iterrows()
        if scan not in excluded
    ]


def linear_inputs(wildcards):
    """The feature sources of one baseline: pack and mask, pack and atlas, or covariates."""
    kind = {"linear_svm_voxels": "voxels", "linear_svm_regions": "regions"}.get(
        wildcards.model, "covariates"
    )
    if kind == "covariates":
        return {"participants": f"{BIDS_DIR}/participants.tsv"}
    pack = config["baselines"]["input"]
    files = {"pack": f"results/pack/{pack}.npy", "index": f"results/pack/{pack}.tsv"}
    if kind == "voxels":
        return files | {"templates": TEMPLATES}
    atlas = config["baselines"]["atlas"] or ATLASES[0]
    return files | {
        "atlas": f"resources/atlases/res-{RES}/{atlas}.nii.gz",
        "labels": f"resources/atlases/res-{RES}/{atlas}.tsv",
    }


# The report's inputs (report.smk): one list of records, read by the manifest and the report.
def report_records(wildcards, qc_figures=True):
    """Every file the report reads, with its kind and keys.

    Within a kind the order is the workflow's (models, folds, methods, atlases as
    configured); the report keys each file by its record, never by position. The QC
    pictures are listed for the scans that passed check_inputs, so only with
    ``qc_figures`` is this evaluated after that checkpoint: the report rule's own input
    leaves them out, so a dry run plans every job before the checkpoint has run.
    """
    records = [
        {"kind": "inputs", "path": "results/preprocess/inputs.tsv"},
        {"kind": "qc", "path": "results/preprocess/qc.tsv"},
        {"kind": "folds", "path": "results/folds/folds.tsv"},
        {"kind": "template", "path": TEMPLATES},
    ]
    records += [{"kind": "ground_truth", "path": path} for path in ground_truth_file()]
    if qc_figures:
        records += [
            {"kind": "qc_figure", "scan": scan, "path": preproc_path(scan, "qc_png")}
            for scan in checked_scans()
        ]
    records += [
        {"kind": "summary", "model": m, "path": f"results/train/{m}/metrics_summary.tsv"}
        for m in MODELS
    ]
    per_fold = {
        "metrics": "metrics.json",
        "predictions": "predictions.tsv",
        "history": "history.tsv",
    }
    for kind, name in per_fold.items():
        records += [
            {"kind": kind, "model": m, "fold": f, "path": f"results/train/{m}/fold-{f}/{name}"}
            for m, f in product(MODELS, FOLDS)
        ]
    records += [
        {
            "kind": "attribution",
            "model": m,
            "method": k,
            "fold": f,
            "path": f"results/attribution/{m}/{k}/fold-{f}.tsv",
        }
        for m, k in MODEL_METHODS
        for f in FOLDS
    ]
    for kind, suffix in (("regions", ""), ("region_folds", "_folds")):
        records += [
            {
                "kind": kind,
                "model": m,
                "method": k,
                "atlas": a,
                "path": f"results/regions/{m}/{k}/{a}{suffix}.tsv",
            }
            for m, k, a in REGION_KEYS
        ]
    records += [
        {
            "kind": "agreement",
            "model": m,
            "atlas": a,
            "path": f"results/regions/{m}/agreement_{a}.tsv",
        }
        for m, a in product(model_names(config), ATLASES)
    ]
    per_method = {
        "sanity": "",
        "deletion": "_deletion",
        "sanity_cascade": "_cascade",
        "sanity_summary": "_summary",
    }
    for kind, suffix in per_method.items():
        records += [
            {"kind": kind, "model": m, "method": k, "path": f"results/sanity/{m}/{k}{suffix}.tsv"}
            for m, k in MODEL_METHODS
        ]
    # external test sets (external.smk): scored by every fold's CNN, a report section of their own
    per_fold_external = {
        "external_metrics": "metrics.json",
        "external_predictions": "predictions.tsv",
    }
    for kind, name in per_fold_external.items():
        records += [
            {
                "kind": kind,
                "dataset": d,
                "model": m,
                "fold": f,
                "path": f"results/external/{d}/{m}/fold-{f}/{name}",
            }
            for d, m, f in product(EXTERNAL, model_names(config), FOLDS)
        ]
    records += [
        {
            "kind": "external_summary",
            "dataset": d,
            "model": m,
            "path": f"results/external/{d}/{m}/metrics_summary.tsv",
        }
        for d, m in product(EXTERNAL, model_names(config))
    ]
    return records
