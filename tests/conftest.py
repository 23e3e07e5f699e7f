"""Shared test helpers: run the real workflow in a scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SMALL_CONFIG = REPO / "tests" / "data" / "config_small.yaml"

#: Test files that take minutes, in the order they are started. The README's test
#: command runs files on two workers (pytest-xdist, ``--dist loadfile``; with
#: ``--no-loadscope-reorder`` in pyproject's addopts it hands out files in collection
#: order instead of most-tests-first); starting the longest first keeps the run from
#: ending with one worker alone on the end-to-end demo.
LONG_FILES_FIRST = (
    "test_workflow_e2e.py",
    "test_incremental.py",
    "test_synthetic_atlases_regions.py",
    "test_preprocess_colin27.py",
    "test_models.py",
    "test_preprocess_workflow.py",
    "test_preprocess_failures.py",
    "test_external_workflow.py",
    "test_training.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order test files longest first (stable: tests within a file keep their order)."""
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def snakemake(
    workdir: Path,
    *args: str,
    configfile: Path = SMALL_CONFIG,
    check: bool = True,
    timeout: int = 3600,
) -> subprocess.CompletedProcess:
    """Run ``snakemake`` of this checkout in ``workdir`` and return the finished process.

    Output (stdout and stderr together) is in ``.stdout``. With ``check``, a non-zero
    exit fails the test and shows the last lines of the output.
    """
    exe = Path(sys.executable).parent / "snakemake"
    cmd = [str(exe), "-s", str(SNAKEFILE), "--configfile", str(configfile), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
        )
    return proc


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the "Job stats" table of a dry run (empty when nothing to do)."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Job stats:"):
            for row in lines[i + 3 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
            break
    return counts


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo workflow run to completion once per test session (minutes)."""
    workdir = tmp_path_factory.mktemp("small_run")
    snakemake(workdir, "--cores", "2")
    return workdir
