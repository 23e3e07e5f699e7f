"""A failed job's own error message reaches the terminal, once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, snakemake

from brainlens.joblogs import failed_job_logs, failure_report, last_exception

TINY_CONFIG = REPO / "tests" / "data" / "config_tiny.yaml"

TRACEBACK = """\
2026-12-01 10:00:00,000 INFO brainlens: checking 6 scans
Traceback (most recent call last):
  File "/w/.snakemake/scripts/tmpab.check_inputs.py", line 14, in <module>
    check_dataset(
brainlens.errors.DatasetError: 1 of 6 scans failed the input checks:
  /data/sub-003_T1w.nii.gz: cannot be read as NIfTI. Fix: re-export the file
Fix each file, or set preprocess.on_invalid_scan: exclude to leave them out.
"""

CHAINED = """\
Traceback (most recent call last):
  File "a.py", line 1, in <module>
OSError: [Errno 28] No space left on device

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "a.py", line 3, in <module>
brainlens.errors.PreprocessingError: sub-01: N4 failed (No space left on device)
"""

#: What Snakemake writes for a failed single job and a failed group job.
SNAKEMAKE_LOG = """\
Error in rule check_inputs:
    message: None
    jobid: 0
    output: results/preprocess/inputs.tsv
    log: logs/check_inputs.log (check log file(s) for error details)
Error in group preprocess:
    jobs:
        rule preprocess_t1w:
            jobid: 4
            log: logs/preprocess/sub-01/sub-01.log (check log file(s) for error details)
        rule preprocess_t1w:
            jobid: 5
            log: logs/preprocess/sub-02/sub-02.log (check log file(s) for error details)
Error in rule check_inputs:
    log: logs/check_inputs.log (check log file(s) for error details)
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (TRACEBACK, [
            "brainlens.errors.DatasetError: 1 of 6 scans failed the input checks:",
            "  /data/sub-003_T1w.nii.gz: cannot be read as NIfTI. Fix: re-export the file",
            "Fix each file, or set preprocess.on_invalid_scan: exclude to leave them out.",
        ]),
        # the same traceback twice (an older logutil wrote it twice): still one message
        (TRACEBACK + TRACEBACK.split("\n", 1)[1], None),
        # a chained error: the last (brainlens) one, not the cause
        (CHAINED, ["brainlens.errors.PreprocessingError: sub-01: N4 failed (No space left on device)"]),
        # a logging line after the traceback ends the message
        ("Traceback (most recent call last):\n  f()\nMemoryError\n"
         "2026-12-01 10:00:01,000 INFO nipype: cleanup\n", ["MemoryError"]),
        ("2026-12-01 10:00:01,000 ERROR brainlens: bad thing\n2026-12-01 10:00:02,000 INFO x: y\n",
         ["2026-12-01 10:00:01,000 ERROR brainlens: bad thing"]),
        ("no traceback here\nKilled\n\n", ["Killed"]),
        ("", []),
    ],
    ids=["traceback", "twice", "chained", "log-line-after", "error-line", "killed", "empty"],
)  # fmt: skip
def test_last_exception(log: str, expected: list[str] | None) -> None:
    lines = last_exception(log)
    if expected is None:
        expected = last_exception(TRACEBACK)
    assert lines == expected


def test_last_exception_cuts_long_messages() -> None:
    log = "Traceback (most recent call last):\n  f()\nValueError: x\n" + "more\n" * 50
    lines = last_exception(log, max_lines=5)
    assert len(lines) == 5 and lines[0] == "ValueError: x" and lines[-1] == "  ..."


def test_failed_job_logs_reads_single_and_group_errors() -> None:
    assert failed_job_logs(SNAKEMAKE_LOG) == [
        ("check_inputs", "logs/check_inputs.log"),
        ("preprocess_t1w", "logs/preprocess/sub-01/sub-01.log"),
        ("preprocess_t1w", "logs/preprocess/sub-02/sub-02.log"),
    ]
    assert failed_job_logs("Finished jobid: 0 (Rule: folds)\n") == []


def test_failure_report_names_each_job_and_its_error(tmp_path: Path) -> None:
    (tmp_path / "logs" / "preprocess" / "sub-01").mkdir(parents=True)
    (tmp_path / "logs" / "check_inputs.log").write_text(TRACEBACK)
    (tmp_path / "logs" / "preprocess" / "sub-01" / "sub-01.log").write_text(CHAINED)
    main_log = tmp_path / "run.snakemake.log"
    main_log.write_text(SNAKEMAKE_LOG)
    report = failure_report([main_log, tmp_path / "missing.log"], workdir=tmp_path)
    assert report.startswith("brainlens: 3 job(s) failed")
    assert (
        "  check_inputs (logs/check_inputs.log):\n    brainlens.errors.DatasetError: 1 of 6"
        in report
    )
    assert "N4 failed (No space left on device)" in report
    assert "OSError" not in report  # the cause is in the log, the message is the last error
    assert "sub-02.log):\n    (the log is empty or missing)" in report
    assert failure_report([tmp_path / "missing.log"], workdir=tmp_path) == ""
    # preprocessing failures have their own table (brainlens.preprocess.failures)
    short = failure_report([main_log], workdir=tmp_path, skip_rules=["preprocess_t1w"])
    assert short.startswith("brainlens: 1 job(s) failed") and "sub-01" not in short


def test_setup_logging_writes_the_traceback_once(tmp_path: Path) -> None:
    log = tmp_path / "rule.log"
    code = (
        "from brainlens.logutil import setup_logging\n"
        f"setup_logging({str(log)!r})\n"
        "from brainlens.errors import InputFileError\n"
        "raise InputFileError('/d/x.nii.gz', 'cannot be read', 'fix it')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    text = log.read_text()
    assert text.count("Traceback (most recent call last):") == 1, text
    assert text.count("InputFileError: /d/x.nii.gz: cannot be read. Fix: fix it") == 1, text


def _dataset(root: Path) -> Path:
    """Six participants (3 per class) with small valid scans, one of them corrupt."""
    rows = ["participant_id\tdiagnosis"]
    rng = np.random.default_rng(0)
    for i in range(1, 7):
        pid = f"sub-{i:02d}"
        rows.append(f"{pid}\t{'patient' if i % 2 else 'control'}")
        anat = root / pid / "anat"
        anat.mkdir(parents=True)
        data = rng.uniform(0, 100, (24, 28, 24)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0])), anat / f"{pid}_T1w.nii.gz")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / "sub-03" / "anat" / "sub-03_T1w.nii.gz").write_bytes(b"not a nifti file")
    return root


@pytest.mark.workflow
def test_corrupt_nifti_message_reaches_the_terminal(tmp_path: Path) -> None:
    """The check_inputs job fails on a corrupt scan; its message is in Snakemake's output."""
    bids = _dataset(tmp_path / "bids")
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(
        work, "--cores", "1", "results/preprocess/inputs.tsv",
        "--config", f"bids_dir={bids}", "preprocess={on_invalid_scan: fail}",
        configfile=TINY_CONFIG, check=False, timeout=300,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode != 0, out[-3000:]
    assert "Error in rule check_inputs" in out, out[-3000:]
    # the handler's summary: the job, its log and the brainlens error with the file
    summary = out[out.index("brainlens: 1 job(s) failed") :]
    assert "check_inputs (logs/check_inputs.log):" in summary, summary
    assert "DatasetError: 1 of 6 scans failed the input checks" in summary, summary
    assert "sub-03_T1w.nii.gz: cannot be read as NIfTI" in summary, summary
    # show-failed-logs (profiles/default) prints the log, whose traceback is written once
    assert out.count("Traceback (most recent call last):") == 1, out[-4000:]
    log = (work / "logs" / "check_inputs.log").read_text()
    assert log.count("Traceback (most recent call last):") == 1, log
