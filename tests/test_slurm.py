"""Run workflows through ``profiles/slurm`` on a real, throwaway one-node SLURM.

The module fixture brings up slurmctld + slurmd + munged with
``tests/cluster/slurm_up.sh`` (as root; installs the Debian packages if missing)
and stops them by PID file with ``tests/cluster/slurm_down.sh`` afterwards,
also when a test fails.

Evidence that GPU rules request a GPU works without accounting: the cluster keeps
finished jobs for ``MinJobAge=300`` s, so ``scontrol -o show job`` lists every job
of the run with its ``Comment=rule_<name>...`` (set by the Snakemake plugin) and
``TresPerJob=gres:gpu:1`` (from ``--gpus=1``).

Run::

    .venv/bin/pytest -m slurm tests/test_slurm.py -s

A real workflow goes through the same profile with (all optional but the first)::

    BRAINLENS_SLURM_SNAKEFILE=Snakefile \\
    BRAINLENS_SLURM_CONFIGFILE=config/demo.yaml \\
    BRAINLENS_SLURM_WORKDIR=.            # default: a fresh tmp dir
    BRAINLENS_SLURM_GPU_RULES=train_model,attribute \\
    BRAINLENS_SLURM_TIMEOUT=1800 \\
    BRAINLENS_SLURM_ARGS="--config bids_dir=/data/bids --forcerun train_model" \\
    .venv/bin/pytest -m slurm tests/test_slurm.py -k custom -s

``BRAINLENS_SLURM_ARGS`` holds further Snakemake arguments (split like a shell
would), e.g. targets, ``--config`` values or ``--forcerun``: with a work dir that
already holds the preprocessed results of an earlier (local) run, ``--forcerun
train_model`` sends only training and what follows it to SLURM, which takes
minutes instead of the hour a fresh run's preprocessing takes on a small machine.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO / "tests" / "cluster"
PROFILE = REPO / "profiles" / "slurm"
TOY = CLUSTER_DIR / "toy"

# What the test node advertises (SlurmdParameters=config_overrides lets a 2-core VM
# claim more): enough for the profile's largest request (8 threads / 32 GB for
# train_model; 8 grouped preprocess jobs x 2 threads / 4 GB) to be scheduled as is.
NODE_CPUS = 32
NODE_MEM_MB = 262144


def _skip_reason() -> str | None:
    """Return why this machine cannot run a local SLURM, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "a local SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (installs packages, runs daemons)"
    have_slurm = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sinfo", "munged"))
    if not have_slurm and shutil.which("apt-get") is None:
        return "SLURM/munge are not installed and apt-get is unavailable to install them"
    if shutil.which("timeout") is None:
        return "coreutils `timeout` is needed to stop Snakemake with SIGINT"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed"
    return None


_REASON = _skip_reason()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.workflow,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


@dataclass
class SlurmCluster:
    """A running local test cluster."""

    up_seconds: float


@dataclass
class SlurmRun:
    """Outcome of one Snakemake run on the cluster."""

    returncode: int
    seconds: float
    output: str
    workdir: Path
    jobs: list[dict[str, str]] = field(default_factory=list)

    def jobs_of_rule(self, rule: str) -> list[dict[str, str]]:
        """Return the SLURM jobs whose plugin comment names ``rule``."""
        return [
            j
            for j in self.jobs
            if j.get("Comment") == f"rule_{rule}"
            or j.get("Comment", "").startswith(f"rule_{rule}_wildcards_")
        ]


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the ``tests/cluster`` shell scripts."""
    return subprocess.run(
        ["bash", str(CLUSTER_DIR / name), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Bring the local SLURM up for this module and always tear it down."""
    start = time.monotonic()
    try:
        up = _run_script("slurm_up.sh", "--cpus", str(NODE_CPUS), "--mem-mb", str(NODE_MEM_MB))
        if up.returncode != 0:
            pytest.fail(f"slurm_up.sh failed:\n{up.stdout}\n{up.stderr}")
        cluster = SlurmCluster(up_seconds=time.monotonic() - start)
        print(f"\nSLURM cluster up in {cluster.up_seconds:.1f} s ({up.stdout.strip()})")
        yield cluster
    finally:
        down = _run_script("slurm_down.sh")
        print(down.stdout, down.stderr)
        assert down.returncode == 0, f"slurm_down.sh failed:\n{down.stdout}\n{down.stderr}"


def _parse_scontrol(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol -o show job`` (one job per line) into dicts."""
    jobs = []
    for line in text.splitlines():
        record = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                record[key] = value
        if "JobId" in record:
            jobs.append(record)
    return jobs


def _snakemake_exe() -> str:
    """Return the snakemake executable next to this interpreter, else on PATH."""
    candidate = Path(sys.executable).with_name("snakemake")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("snakemake")
    if found is None:
        pytest.fail("snakemake executable not found next to the interpreter or on PATH")
    return found


def run_on_slurm(
    snakefile: Path,
    workdir: Path,
    timeout_s: int,
    configfile: Path | None = None,
    extra: tuple[str, ...] = (),
) -> SlurmRun:
    """Run Snakemake with ``--workflow-profile profiles/slurm`` and collect its jobs.

    Parameters
    ----------
    snakefile : Path
        Workflow to run.
    workdir : Path
        Snakemake working directory (``--directory``).
    timeout_s : int
        Wall-clock limit; Snakemake then gets SIGINT, which makes it ``scancel``
        its jobs (SIGTERM would not).
    configfile : Path, optional
        Passed as ``--configfile``.
    extra : tuple of str
        Further command-line arguments.

    Returns
    -------
    SlurmRun
        Return code, run time, combined output and the SLURM jobs of the run.
    """
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "60",
        str(timeout_s),
        _snakemake_exe(),
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(PROFILE),
        # Poll a tiny cluster quickly; the profile keeps the plugin's defaults.
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "3",
    ]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += list(extra)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    start = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout_s + 120, check=False
    )
    seconds = time.monotonic() - start
    shown = subprocess.run(
        ["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=False
    )
    jobs = [
        j
        for j in _parse_scontrol(shown.stdout)
        if Path(j.get("WorkDir", "/nonexistent")).resolve() == workdir.resolve()
    ]
    print(f"\nSnakemake on SLURM: rc={proc.returncode} in {seconds:.1f} s, {len(jobs)} SLURM jobs")
    return SlurmRun(proc.returncode, seconds, proc.stdout + proc.stderr, workdir, jobs)


def _explain(run: SlurmRun) -> str:
    """Return a failure message with the Snakemake output and SLURM logs."""
    logs = []
    for log in sorted((run.workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        logs.append(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}")
    jobs = "\n".join(
        f"{j['JobId']} {j.get('JobState')} {j.get('Comment')} {j.get('TresPerJob')}"
        for j in run.jobs
    )
    return f"rc={run.returncode}\n{run.output[-6000:]}\n--- jobs\n{jobs}\n" + "\n".join(logs)


def _assert_gpu_rules(run: SlurmRun, gpu_rules: list[str]) -> None:
    """Assert every job of each GPU rule was submitted with a GPU request."""
    for rule in gpu_rules:
        jobs = run.jobs_of_rule(rule)
        assert jobs, f"no SLURM job for GPU rule {rule!r}\n{_explain(run)}"
        for job in jobs:
            tres = job.get("TresPerJob", "") + job.get("TresPerNode", "")
            assert "gpu:1" in tres, f"job {job['JobId']} of {rule!r} has no GPU: {tres!r}"


def test_toy_workflow_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """The toy workflow runs through the profile: grouped CPU jobs, one GPU job."""
    workdir = tmp_path / "toy"
    shutil.copytree(TOY, workdir)
    run = run_on_slurm(workdir / "Snakefile", workdir, timeout_s=300)
    assert run.returncode == 0, _explain(run)

    # The GPU rule asks for a GPU although the workflow config says gpu=0:
    # the profile's set-resources decides.
    _assert_gpu_rules(run, ["train_model"])
    (train,) = run.jobs_of_rule("train_model")
    assert train["JobState"] == "COMPLETED"
    assert train["NumCPUs"] == "8", "set-threads train_model: 8 not applied"
    assert train.get("MinMemoryNode") == "32000M", "set-resources mem_mb not applied"
    model = (workdir / "results" / "model.txt").read_text()
    assert f"train slurm_job={train['JobId']} cuda_visible_devices=0" in model

    # The three preprocess_t1w jobs ran together in ONE SLURM job without a GPU.
    prep_ids = {
        (workdir / "results" / "prep" / f"{s}.txt").read_text().split("slurm_job=")[1].strip()
        for s in ("s1", "s2", "s3")
    }
    assert len(prep_ids) == 1, f"preprocess not grouped into one SLURM job: {prep_ids}"
    (prep_id,) = prep_ids
    assert prep_id and prep_id != train["JobId"]
    prep = next(j for j in run.jobs if j["JobId"] == prep_id)
    assert "gpu" not in prep.get("TresPerJob", ""), prep
    assert len(run.jobs) == 2, f"expected 2 SLURM jobs, got {len(run.jobs)}\n{_explain(run)}"
    print(
        f"cluster up {slurm_cluster.up_seconds:.1f} s; toy run {run.seconds:.1f} s; "
        f"train_model job {train['JobId']} TresPerJob={train['TresPerJob']}"
    )


def test_custom_workflow_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """A workflow named by environment variables runs through the profile."""
    snakefile = os.environ.get("BRAINLENS_SLURM_SNAKEFILE")
    if not snakefile:
        pytest.skip("set BRAINLENS_SLURM_SNAKEFILE to run a real workflow on the local SLURM")
    configfile = os.environ.get("BRAINLENS_SLURM_CONFIGFILE")
    workdir = Path(os.environ.get("BRAINLENS_SLURM_WORKDIR", tmp_path / "run"))
    workdir.mkdir(parents=True, exist_ok=True)
    gpu_rules = [
        r.strip()
        for r in os.environ.get("BRAINLENS_SLURM_GPU_RULES", "train_model,attribute").split(",")
        if r.strip()
    ]
    run = run_on_slurm(
        Path(snakefile).resolve(),
        workdir.resolve(),
        timeout_s=int(os.environ.get("BRAINLENS_SLURM_TIMEOUT", "1800")),
        configfile=Path(configfile).resolve() if configfile else None,
        extra=tuple(shlex.split(os.environ.get("BRAINLENS_SLURM_ARGS", ""))),
    )
    assert run.returncode == 0, _explain(run)
    assert run.jobs, "no SLURM jobs were submitted"
    _assert_gpu_rules(run, gpu_rules)
    failed = [j["JobId"] for j in run.jobs if j.get("JobState") != "COMPLETED"]
    assert not failed, f"jobs not COMPLETED: {failed}\n{_explain(run)}"
    rules = sorted({j.get("Comment", "").split("_wildcards_")[0] for j in run.jobs})
    print(f"custom run {run.seconds:.1f} s, {len(run.jobs)} SLURM jobs: {', '.join(rules)}")
    for rule in gpu_rules:
        for job in run.jobs_of_rule(rule):
            print(f"  {rule}: job {job['JobId']} TresPerJob={job.get('TresPerJob')}")
