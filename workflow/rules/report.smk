# One HTML page that a researcher can send to a colleague: results/report/index.html and
# its figures/ (one folder, so `snakemake --report` bundles the page with its pictures).
# Its inputs are named in results/report_manifest.json (kind, model/method/fold/atlas/scan
# keys and path of every file; brainlens.report.io.MANIFEST_KINDS), not in lists whose
# order the script would have to know.


rule report_manifest:
    input:
        # after the checkpoint: QC pictures are listed for the scans that passed it
        qc_figures=lambda wildcards: [preproc_path(s, "qc_png") for s in checked_scans()],
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
        # every file but the QC pictures (upstream of qc.tsv, listed in the manifest)
        files=lambda wildcards: [r["path"] for r in report_records(wildcards, qc_figures=False)],
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
