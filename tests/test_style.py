"""The code base stays formatted and lint-clean (ruff for Python, snakefmt for rules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY_DIRS = ["src", "tests", "scripts", "benchmarks"]


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "format", "--check", *PY_DIRS],
        ["ruff", "check", *PY_DIRS],
        ["snakefmt", "--check", "Snakefile", "workflow"],
    ],
    ids=["ruff-format", "ruff-check", "snakefmt"],
)
def test_tool_is_clean(cmd: list[str]) -> None:
    proc = subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
