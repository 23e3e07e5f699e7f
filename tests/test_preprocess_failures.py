"""Scans that fail in preprocessing: the failure table after a ``--keep-going`` run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake

from brainlens.preprocess.failures import (
    FAILURE_COLUMNS,
    exclude_snippet,
    find_failures,
    last_error,
    write_failure_summary,
)
from brainlens.synthetic import DemoSpec, write_demo_dataset

TINY_CONFIG = REPO / "tests" / "data" / "config_tiny.yaml"

TRACEBACK = """\
2026-12-01 10:00:00,000 INFO brainlens: preprocessing sub-01
Traceback (most recent call last):
  File "x.py", line 1, in <module>
    run()
brainlens.errors.PreprocessingError: /data/sub-01_T1w.nii.gz: preprocessing of sub-01 failed
  (antsRegistration exited 1)
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (TRACEBACK, "brainlens.errors.PreprocessingError: /data/sub-01_T1w.nii.gz: "
         "preprocessing of sub-01 failed (antsRegistration exited 1)"),
        # the last of two tracebacks (an earlier failed attempt is in the same log)
        ("Traceback (most recent call last):\n  f()\nValueError: old\n" + TRACEBACK
         .replace("sub-01 failed", "sub-01 failed again"), "again"),
        # a logging line after the traceback ends the message
        ("Traceback (most recent call last):\n  f()\nOSError: disk full\n"
         "2026-12-01 10:00:01,000 INFO nipype: cleanup\n", "OSError: disk full"),
        ("no traceback here\nKilled\n\n", "Killed"),
        ("", ""),
    ],
    ids=["one-traceback", "last-traceback", "log-line-after", "no-traceback", "empty"],
)  # fmt: skip
def test_last_error(log: str, expected: str) -> None:
    error = last_error(log)
    if expected in ("", "Killed", "OSError: disk full"):
        assert error == expected
    else:
        assert expected in error
        assert "\n" not in error
    if expected == "again":
        assert "ValueError: old" not in error


def _job(tmp: Path, scan: str, *, outputs_made: int, log: str | None) -> dict:
    outputs = [tmp / f"{scan}_{i}.nii.gz" for i in range(3)]
    for path in outputs[:outputs_made]:
        path.write_text("x")
    log_path = tmp / f"{scan}.log"
    if log is not None:
        log_path.write_text(log)
    return {
        "scan": scan,
        "participant_id": scan.split("_")[0],
        "session_id": float("nan"),
        "outputs": outputs,
        "log": log_path,
    }


def test_find_failures_lists_only_jobs_that_ran_and_left_outputs_missing(tmp_path: Path) -> None:
    jobs = [
        _job(tmp_path, "sub-01", outputs_made=3, log="ok"),  # done
        _job(tmp_path, "sub-02", outputs_made=0, log=TRACEBACK),  # failed
        _job(tmp_path, "sub-03", outputs_made=0, log=None),  # never ran
        _job(tmp_path, "sub-04", outputs_made=2, log=""),  # failed, empty log
    ]
    table = find_failures(jobs)
    assert list(table.columns) == FAILURE_COLUMNS
    assert table["scan"].tolist() == ["sub-02", "sub-04"]
    assert table["missing_outputs"].tolist() == [3, 1]
    assert table["session_id"].tolist() == ["", ""]
    assert "antsRegistration exited 1" in table.loc[0, "error"]
    assert table.loc[1, "error"] == "(the log is empty)"


def test_exclude_snippet_is_valid_config(tmp_path: Path) -> None:
    table = find_failures([_job(tmp_path, "sub-02_ses-1", outputs_made=0, log=TRACEBACK)])
    short = yaml.safe_load(exclude_snippet(table))["exclude_scans"]["sub-02_ses-1"]
    # the exception type and the file name are dropped from the reason
    assert short == (
        "preprocessing failed: preprocessing of sub-01 failed (antsRegistration exited 1)"
    )
    table.loc[0, "error"] = 'a "quoted": error ' + "x" * 200
    parsed = yaml.safe_load(exclude_snippet(table))
    reason = parsed["exclude_scans"]["sub-02_ses-1"]
    assert reason.startswith('preprocessing failed: a "quoted": error')
    assert len(reason) == len("preprocessing failed: ") + 100


def test_write_failure_summary_writes_and_clears_the_table(tmp_path: Path) -> None:
    out = tmp_path / "results" / "failed_scans.tsv"
    failed = [_job(tmp_path, "sub-02", outputs_made=0, log=TRACEBACK)]
    message = write_failure_summary(failed, out)
    assert "sub-02" in message and "exclude_scans:" in message and str(out) in message
    assert pd.read_csv(out, sep="\t")["scan"].tolist() == ["sub-02"]
    # fixed: the table of the earlier run is removed, nothing is reported
    for path in failed[0]["outputs"]:
        Path(path).write_text("x")
    assert write_failure_summary(failed, out) == ""
    assert not out.exists()


@pytest.mark.workflow
@pytest.mark.slow
def test_keep_going_run_lists_the_scan_that_failed(tmp_path: Path) -> None:
    """A scan that passes the checks but fails in preprocessing is listed, with its error.

    The failure is real: the scan's nipype working folder is blocked by a file, so
    nipype cannot create its node folders (as on a full or read-only disk).
    """
    bids = tmp_path / "bids"
    # 6 subjects: the tiny config's holdout split needs 3 per class, which the DAG's
    # parse-time feasibility check enforces even when only one scan is targeted
    write_demo_dataset(bids, DemoSpec(n_subjects=6, n_second_session=0, voxel_size=4.0), seed=6)
    work = tmp_path / "work"
    blocked = work / "work" / "preprocess" / "sub-001" / "nipype"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    target = "results/preprocess/sub-001/anat/sub-001_desc-qc_T1w.json"
    proc = snakemake(
        work, "--cores", "2", "--keep-going", target, "--config", f"bids_dir={bids}",
        configfile=TINY_CONFIG, check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-3000:]
    table = pd.read_csv(work / "results/preprocess/failed_scans.tsv", sep="\t", dtype=str)
    assert table["scan"].tolist() == ["sub-001"], table
    assert "PreprocessingError" in table.loc[0, "error"]
    assert "sub-001" in table.loc[0, "error"]
    # the message tells the user what to add to the config
    assert "exclude_scans:\n  sub-001:" in proc.stdout
    assert not (work / target).exists()


@pytest.mark.parametrize(
    ("log", "interrupted"),
    [
        # stopped by Snakemake in the middle of a nipype node: no reason in the log
        ('2026-12-06 21:28:04,781 INFO nipype.workflow: [Node] Executing "t1w2std"\n', True),
        ('Traceback (most recent call last):\n  File "x.py", line 1\nKeyboardInterrupt\n', True),
        ("2026-12-06 21:28:04,781 ERROR nipype.workflow: node t1w2std failed\n", False),
        (TRACEBACK, False),
    ],
)
def test_a_job_stopped_from_outside_is_not_called_a_failed_scan(
    tmp_path: Path, log: str, interrupted: bool
) -> None:
    out = tmp_path / "failed_scans.tsv"
    jobs = [_job(tmp_path, "sub-02", outputs_made=0, log=log)]
    message = write_failure_summary(jobs, out)
    table = pd.read_csv(out, sep="\t")
    assert table["interrupted"].tolist() == [interrupted]
    # only a scan that failed on its own is offered for exclusion
    assert ("exclude_scans:" in message) is not interrupted
    assert ("stopped from outside" in message) is interrupted
