"""Incremental re-runs and failure isolation on a tiny user BIDS dataset.

One module-scoped real run (``tests/data/config_tiny.yaml``: the 4 mm grid registered on 2 mm, one holdout split, 1 epoch,
``gradients`` on one scan per fold, ``on_invalid_scan: exclude``) of a copy of this
checkout on a synthetic BIDS dataset of 7 participants, one of them with a truncated
``.nii.gz``, run with ``--keep-going``. Then:

* failure isolation: the corrupt scan is marked invalid (message names the file),
  the other six are preprocessed, the folds and the report leave it out;
* (a) a dry run afterwards has nothing to do;
* (b) a changed training parameter re-runs training and what depends on it only;
* (d) editing a report module re-runs only the report;
* (c) adding a participant (files + ``participants.tsv`` row) preprocesses only that
  participant; checked with a real run up to ``qc.tsv``/``folds.tsv`` because jobs
  behind the ``check_inputs`` checkpoint are not planned in a dry run.

The tests share the run and must run in file order: (c) changes the dataset, so it
is last. The workflow runs from a copy of the checkout (``Snakefile``, ``workflow/``,
``scripts/``, ``envs/``, ``config/``, ``profiles/default/``, ``src/``), copied with
modification times kept, so (d) can edit a report module without touching the
checkout. About 12 minutes on 2 idle cores (preprocessing 7 scans at ~2 CPU-minutes
each dominates); far longer on a shared machine.

Run::

    .venv/bin/pytest -m workflow tests/test_incremental.py -v
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
import yaml
from conftest import REPO, planned_jobs

from brainlens.config import fold_ids
from brainlens.derivatives import SPACE
from brainlens.grid import mni_grid
from brainlens.synthetic import DemoSpec, write_demo_dataset

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

TINY_CONFIG = REPO / "tests" / "data" / "config_tiny.yaml"
#: What a copy of the checkout needs to run the workflow.
CHECKOUT_ITEMS = ("Snakefile", "workflow", "scripts", "envs", "config", "profiles/default", "src")
#: Participant left out of the first run and added for (c) (a control).
ADDED = "sub-006"
#: Participant whose scan is truncated (a patient); 3 patients + 3 controls stay valid.
CORRUPT = "sub-008"
#: Rules upstream of training: a training parameter must never re-run them.
UPSTREAM_OF_TRAINING = (
    "check_inputs",
    "preprocess_t1w",
    "qc_table",
    "folds",
    "pack",
    "templates",
    "atlas",
)
DOWNSTREAM_OF_TRAINING = {
    "train_model",
    "metrics_summary",
    "attribute",
    "sanity_checks",
    "regions",
    "method_agreement",
    "report",
    "all",
}


@dataclass
class TinyRun:
    """The shared run: where it is and what it printed."""

    snakefile: Path
    workdir: Path
    bids: Path
    spare: Path
    output: str
    returncode: int


def run_workflow(
    snakefile: Path,
    workdir: Path,
    bids: Path,
    *args: str,
    configfile: Path = TINY_CONFIG,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run Snakemake with the tiny config on ``bids`` in ``workdir``.

    Parameters
    ----------
    snakefile : Path
        The copied checkout's Snakefile.
    workdir : Path
        Working directory of the run.
    bids : Path
        The BIDS dataset (``--config bids_dir=...``).
    *args : str
        Further Snakemake arguments (targets, ``-n``, ``--cores``).
    configfile : Path
        Configuration file.
    check : bool
        Fail the test on a non-zero exit status.

    Returns
    -------
    subprocess.CompletedProcess
        Finished process; stdout and stderr together in ``.stdout``.
    """
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe), "-s", str(snakefile), "--configfile", str(configfile)]
    cmd += ["--config", f"bids_dir={bids}", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=3600,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
        )
    return proc


def executed_jobs(log: str, rule: str) -> int:
    """Count the jobs of ``rule`` that a real run finished, from its log."""
    return len(re.findall(rf"^Finished jobid: \d+ \(Rule: {rule}\)$", log, flags=re.MULTILINE))


def copy_checkout(dest: Path) -> Path:
    """Copy what the workflow needs (modification times kept); return the Snakefile."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for item in CHECKOUT_ITEMS:
        src = REPO / item
        (dest / item).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=ignore)
        else:
            shutil.copy2(src, dest / item)
    return dest / "Snakefile"


def _participants(bids: Path) -> pd.DataFrame:
    return pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The whole tiny workflow run once on 6 valid + 1 corrupt scans (minutes)."""
    base = tmp_path_factory.mktemp("incremental")
    full = base / "generated"
    spec = DemoSpec(n_subjects=8, n_second_session=0, voxel_size=2.0)
    plan = write_demo_dataset(full, spec, seed=3)
    labels = dict(zip(plan["participant_id"], plan["diagnosis"], strict=True))
    assert labels[ADDED] == "control" and labels[CORRUPT] == "patient", labels

    # The dataset of the first run: without ADDED, with CORRUPT's scan truncated.
    bids = base / "bids"
    shutil.copytree(full, bids, ignore=shutil.ignore_patterns(ADDED))
    parts = _participants(full)
    parts[parts["participant_id"] != ADDED].to_csv(bids / "participants.tsv", sep="\t", index=False)
    corrupt = bids / CORRUPT / "anat" / f"{CORRUPT}_T1w.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:2000])

    snakefile = copy_checkout(base / "checkout")
    workdir = base / "work"
    workdir.mkdir()
    proc = run_workflow(snakefile, workdir, bids, "--cores", "2", "--keep-going", check=False)
    return TinyRun(snakefile, workdir, bids, full / ADDED, proc.stdout, proc.returncode)


def _inputs(run: TinyRun) -> pd.DataFrame:
    path = run.workdir / "results" / "preprocess" / "inputs.tsv"
    assert path.exists(), f"check_inputs wrote no table:\n{run.output[-4000:]}"
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).set_index("scan")


def test_corrupt_scan_is_marked_invalid_naming_the_file(tiny_run: TinyRun) -> None:
    table = _inputs(tiny_run)
    assert table.loc[CORRUPT, "status"] == "invalid"
    assert f"{CORRUPT}_T1w.nii.gz" in table.loc[CORRUPT, "problem"]
    others = table.drop(index=CORRUPT)
    assert len(others) == 6 and (others["status"] == "ok").all(), others[["status", "problem"]]


def test_other_scans_are_preprocessed(tiny_run: TinyRun) -> None:
    ok = _inputs(tiny_run).query("status == 'ok'").index.tolist()
    assert executed_jobs(tiny_run.output, "preprocess_t1w") == len(ok) == 6
    prep = tiny_run.workdir / "results" / "preprocess"
    for scan in ok:
        anat = prep / scan / "anat"
        for pattern in (
            "space-*_desc-preproc_T1w.nii.gz",
            "space-*_label-GM_desc-modulated_probseg.nii.gz",
            "desc-qc_T1w.json",
        ):
            assert len(list(anat.glob(f"{scan}_{pattern}"))) == 1, (scan, pattern)
    assert not (prep / CORRUPT).exists()
    qc = pd.read_csv(prep / "qc.tsv", sep="\t", dtype=str)
    assert sorted(qc["scan"]) == sorted(ok)
    # the 4 mm grid is registered on 2 mm: both template grids were built, the outputs
    # are on the 4 mm grid
    templates = tiny_run.workdir / "resources" / "templates" / SPACE
    assert sorted(p.name for p in templates.iterdir()) == ["res-2", "res-4"]
    gm = next((prep / ok[0] / "anat").glob("*_label-GM_desc-modulated_probseg.nii.gz"))
    assert nib.load(gm).shape == mni_grid(4.0)[0]


def test_folds_are_built_from_the_valid_scans(tiny_run: TinyRun) -> None:
    folds = pd.read_csv(tiny_run.workdir / "results" / "folds" / "folds.tsv", sep="\t", dtype=str)
    ok = _inputs(tiny_run).query("status == 'ok'").index  # one scan per participant here
    assert set(folds["participant_id"]) == set(ok)
    assert CORRUPT not in set(folds["participant_id"])


def test_the_whole_run_succeeds(tiny_run: TinyRun) -> None:
    """The excluded scan does not fail the run: every job, the report included, ran."""
    assert tiny_run.returncode == 0, tiny_run.output[-6000:]
    assert (tiny_run.workdir / "results" / "report" / "index.html").exists()


def test_report_lists_the_excluded_scan(tiny_run: TinyRun) -> None:
    html_path = tiny_run.workdir / "results" / "report" / "index.html"
    if not html_path.exists():
        pytest.fail(f"no report was built:\n{tiny_run.output[-4000:]}")
    html = html_path.read_text()
    assert CORRUPT in html
    assert "truncated or corrupt" in html or "cannot be read" in html or "unreadable" in html


def test_a_nothing_to_do_after_the_run(tiny_run: TinyRun) -> None:
    out = run_workflow(tiny_run.snakefile, tiny_run.workdir, tiny_run.bids, "-n").stdout
    assert planned_jobs(out) == {}, out[-4000:]
    assert "Nothing to be done" in out, out[-4000:]


def test_b_training_parameter_reruns_training_and_downstream_only(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["train"]["epochs"] = config["train"]["epochs"] + 1
    changed = tmp_path / "config_epochs.yaml"
    changed.write_text(yaml.safe_dump(config))
    out = run_workflow(
        tiny_run.snakefile, tiny_run.workdir, tiny_run.bids, "-n", configfile=changed
    ).stdout
    jobs = planned_jobs(out)
    assert jobs.get("train_model") == len(fold_ids(config)), jobs
    assert set(jobs) == DOWNSTREAM_OF_TRAINING, jobs
    for rule in UPSTREAM_OF_TRAINING:
        assert rule not in jobs, jobs


def test_d_editing_report_code_reruns_only_the_report(tiny_run: TinyRun) -> None:
    """An edit (new content) of a report module re-runs the report and nothing else.

    Only touching the file is not enough: Snakemake compares checksums of small
    inputs whose modification time changed. The edit is made in the copied checkout
    and undone (content and times) afterwards.
    """
    html = tiny_run.workdir / "results" / "report" / "index.html"
    assert html.exists(), "no report to re-run: the first run did not build it"
    modules = sorted((tiny_run.snakefile.parent / "src" / "brainlens" / "report").glob("*.py"))
    assert modules, "no report modules in the copied checkout"
    module = modules[-1]
    original, before = module.read_bytes(), module.stat()
    try:
        module.write_bytes(original + b"\n# an edit\n")
        out = run_workflow(tiny_run.snakefile, tiny_run.workdir, tiny_run.bids, "-n").stdout
    finally:
        module.write_bytes(original)
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert planned_jobs(out) == {"report": 1, "all": 1}, out[-4000:]
    assert f"Updated input files: {module}" in out, out[-4000:]


def test_c_added_participant_is_the_only_new_preprocessing(tiny_run: TinyRun) -> None:
    bids = tiny_run.bids
    shutil.copytree(tiny_run.spare, bids / ADDED)
    parts = _participants(bids)
    row = _participants(tiny_run.spare.parent).query("participant_id == @ADDED")
    pd.concat([parts, row]).to_csv(bids / "participants.tsv", sep="\t", index=False)

    planned = planned_jobs(run_workflow(tiny_run.snakefile, tiny_run.workdir, bids, "-n").stdout)
    assert planned.get("check_inputs") == 1, planned
    assert "preprocess_t1w" not in planned, "no preprocessing should run before the checkpoint"

    targets = ("results/preprocess/qc.tsv", "results/folds/folds.tsv")
    log = run_workflow(tiny_run.snakefile, tiny_run.workdir, bids, "--cores", "2", *targets).stdout
    assert executed_jobs(log, "preprocess_t1w") == 1, log[-4000:]
    assert re.search(rf"wildcards: .*scan={ADDED}\b", log), log[-4000:]
    for rule in ("check_inputs", "qc_table", "folds"):
        assert executed_jobs(log, rule) == 1, (rule, log[-4000:])

    folds = pd.read_csv(tiny_run.workdir / "results" / "folds" / "folds.tsv", sep="\t", dtype=str)
    assert ADDED in set(folds["participant_id"])
    # What depends on the scans or the folds is out of date now; preprocessing is not.
    after = planned_jobs(run_workflow(tiny_run.snakefile, tiny_run.workdir, bids, "-n").stdout)
    assert {"pack", "train_model", "report"} <= set(after), after
    for rule in ("check_inputs", "preprocess_t1w", "qc_table", "folds"):
        assert rule not in after, after
