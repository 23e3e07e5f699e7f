# One HTML page that a researcher can send to a colleague: results/report/index.html and
# its figures/ (one folder, so `snakemake --report` bundles the page with its pictures).
# Its inputs are named in results/report_manifest.json (kind, model/method/fold/atlas/scan
# keys and path of every file; brainlens.report.io.MANIFEST_KINDS), not in lists whose
# order the script would have to know.


def report_records(wildcards):
    """Every file the report reads, with its kind and keys (evaluated after check_inputs).

    Within a kind the order is the workflow's (models, folds, methods, atlases as
    configured); the report keys each file by its record, never by position.
    """
    records = [
        {"kind": "inputs", "path": "results/preprocess/inputs.tsv"},
        {"kind": "qc", "path": "results/preprocess/qc.tsv"},
        {"kind": "folds", "path": "results/folds/folds.tsv"},
        {"kind": "template", "path": TEMPLATES},
    ]
    records += [{"kind": "ground_truth", "path": path} for path in ground_truth_file()]
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
    for kind, name in (("regions", "{a}.tsv"), ("region_folds", "{a}_folds.tsv")):
        records += [
            {
                "kind": kind,
                "model": m,
                "method": k,
                "atlas": a,
                "path": f"results/regions/{m}/{k}/" + name.format(a=a),
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
    return records


rule report_manifest:
    input:
        # the checkpoint's table: QC pictures are listed for the scans that passed it
        checked="results/preprocess/inputs.tsv",
    output:
        manifest="results/report_manifest.json",
    log:
        "logs/report_manifest.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        records=report_records,
    script:
        "../../scripts/report_manifest.py"


rule report:
    input:
        manifest="results/report_manifest.json",
        files=lambda wildcards: [r["path"] for r in report_records(wildcards)],
        code=REPORT_CODE,
    output:
        report(directory("results/report"), htmlindex="index.html", category="Report"),
    log:
        "logs/report.log",
    conda:
        "../../envs/report.yaml"
    params:
        title=config["report"]["title"],
        config=canonical(config),
    script:
        "../../scripts/report.py"
