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
import yaml

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


def real_cluster(test):  # noqa: ANN001, ANN201 - a test function
    """Mark a test that brings up the local SLURM (the dry-run tests below do not)."""
    for mark in (
        pytest.mark.slurm,
        pytest.mark.workflow,
        pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    ):
        test = mark(test)
    return test


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


@real_cluster
def test_toy_workflow_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """The toy workflow runs through the profile: grouped CPU jobs, one GPU job."""
    workdir = tmp_path / "toy"
    shutil.copytree(TOY, workdir)
    run = run_on_slurm(workdir / "Snakefile", workdir, timeout_s=300, extra=("--config", "gpu=1"))
    assert run.returncode == 0, _explain(run)

    # The GPU rule asks for a GPU because the workflow config does (gpu=1); the
    # profile adds none of its own (see test_profile_dry_run_requests_gpus_from_config).
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


@real_cluster
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


# --- Dry runs of the real workflow through the profile (no cluster needed) ---------

TINY_CONFIG = REPO / "tests" / "data" / "config_tiny.yaml"
#: What the README's SLURM command sets in the environment.
SITE_ENV = {
    "BRAINLENS_SLURM_PARTITION": "short",
    "BRAINLENS_SLURM_ACCOUNT": "p123",
    "BRAINLENS_SLURM_GPU_PARTITION": "gpu",
}
GPU_RULES = {"train_model", "attribute", "sanity_checks", "evaluate_external"}
#: Rules that run in the Snakemake process, not as SLURM jobs.
TINY_RULES = {
    "report_manifest",
    "tiv",
    "attribution_baseline_harmonised",
    "demo_metadata",
    "templates",
    "atlas",
    "check_inputs",
    "qc_table",
    "folds",
    "metrics_summary",
    "attribution_baseline",
    "regions",
    "method_agreement",
    "check_external_inputs",
    "external_tiv",
    "external_summary",
}
#: The local rules of external test sets (external.datasets; not in the demo).
EXTERNAL_TINY_RULES = {"check_external_inputs", "external_tiv", "external_summary"}


def _planned(output: str) -> list[dict[str, str]]:
    """Jobs of a dry run (also inside group jobs): rule, output and resources."""
    jobs = []
    current: dict[str, str] | None = None
    for line in output.splitlines():
        text = line.strip()
        for prefix in ("rule ", "checkpoint "):
            name = text[len(prefix) : -1]
            if text.startswith(prefix) and text.endswith(":") and name.isidentifier():
                current = {"rule": name}
                jobs.append(current)
                break
        else:
            if current is None:
                continue
            if text.startswith("output: "):
                current["output"] = text.removeprefix("output: ")
            elif text.startswith("resources: "):
                for item in text.removeprefix("resources: ").split(", "):
                    key, _, value = item.partition("=")
                    current[key] = value
            elif not text:
                current = None
    return jobs


def _dry_run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, gpus: int = 0
) -> list[dict]:
    """Dry-run the workflow from a project folder outside the checkout, as the README says.

    ``-s <checkout>/Snakefile -d <project> --workflow-profile slurm``: the profile is
    found next to the Snakefile, the config is the project's own file.
    """
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    study = yaml.safe_load(TINY_CONFIG.read_text())
    study["train"]["gpus"] = gpus
    (project / "study.yaml").write_text(yaml.safe_dump(study))
    cmd = [
        _snakemake_exe(),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(project),
        "--configfile",
        str(project / "study.yaml"),
        "--workflow-profile",
        "slurm",
        "-n",
        *args,
    ]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINLENS_SLURM_")}
    proc = subprocess.run(
        cmd, cwd=tmp_path, env={**full_env, **(env or {})}, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"Using workflow specific profile {PROFILE}" in out, out[:2000]
    jobs = _planned(out)
    assert jobs, out[-3000:]
    return jobs


def _with_a_scan(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    """The default target plus one scan's preprocessing (hidden behind the checkpoint)."""
    demo = next(j for j in _dry_run(tmp_path, *args, env=env) if j["rule"] == "demo_scan")
    t1w = Path(demo["output"]).relative_to("results/demo_bids")  # <subdir>/anat/<scan>_T1w...
    scan = t1w.name.removesuffix("_T1w.nii.gz")
    target = f"results/preprocess/{t1w.parent.parent}/anat/{scan}_desc-qc_T1w.json"
    return _dry_run(tmp_path, "all", target, *args, env=env)


@pytest.mark.workflow
def test_profile_dry_run_keeps_memory_and_runtime_of_every_job(tmp_path: Path) -> None:
    """The README's command: site settings added, the profile's defaults kept."""
    jobs = _with_a_scan(tmp_path, env=SITE_ENV)
    remote = [j for j in jobs if j["rule"] not in TINY_RULES | {"all"}]
    assert {j["rule"] for j in remote} >= {"preprocess_t1w", "train_model", "demo_scan", "pack"}
    for job in remote:
        assert job.get("mem_mb") and job.get("runtime"), job
        assert job.get("slurm_account") == "p123", job
        expected = "gpu" if job["rule"] in GPU_RULES else "short"
        assert job.get("slurm_partition") == expected, job
        assert "gpu" not in job, f"train.gpus: 0 but a GPU was requested: {job}"
    by_rule = {j["rule"]: j for j in remote}
    assert (by_rule["train_model"]["mem_mb"], by_rule["train_model"]["runtime"]) == ("32000", "720")
    assert by_rule["preprocess_t1w"]["mem_mb"] == "6000"
    assert by_rule["pack"]["mem_mb"] == "4000" and by_rule["pack"]["runtime"] == "60"
    # A dry run does not show which jobs are local; the rule files do.
    assert _local_rules() == TINY_RULES
    # tiv and the harmonised baselines run only with covariates / confounds (not in the demo)
    assert {j["rule"] for j in jobs} >= TINY_RULES - {
        "tiv",
        "attribution_baseline_harmonised",
        *EXTERNAL_TINY_RULES,
    }


def _local_rules() -> set[str]:
    """Rules declared ``localrule: True`` in workflow/rules/ (snakefmt layout)."""
    import re

    local = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        blocks = re.split(r"^ *(?=(?:rule|checkpoint) \w+:$)", smk.read_text(), flags=re.M)
        for block in blocks:
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if head and re.search(r"^ +localrule: True$", block, flags=re.M):
                local.add(head[1])
    return local


@pytest.mark.workflow
def test_profile_dry_run_requests_gpus_from_config(tmp_path: Path) -> None:
    """``train.gpus`` alone decides the GPU request; unset site variables are left out."""
    jobs = _dry_run(tmp_path, gpus=1)
    for job in jobs:
        if job["rule"] in TINY_RULES | {"all"}:
            continue
        assert job.get("gpu") == ("1" if job["rule"] in GPU_RULES else None), job
        assert job.get("slurm_partition") == "" and job.get("slurm_account") == "", job


def test_profile_memory_and_runtime_grow_with_the_attempt() -> None:
    """Every memory/runtime request of the profile scales with the retry attempt."""
    import yte

    assert "retries: 2" in (PROFILE / "config.yaml").read_text()
    with open(PROFILE / "config.yaml") as stream:
        profile = yte.process_yaml(stream, require_use_yte=True)
    assert "gpu" not in str(profile["set-resources"]), "gpu only through train.gpus"
    requests = [("default", profile["default-resources"])] + list(profile["set-resources"].items())
    for rule, resources in requests:
        for key in ("mem_mb", "runtime"):
            value = str(resources[key])
            first, second = (eval(value, {"attempt": a}) for a in (1, 2))
            assert second == 2 * first > 0, (rule, key, value)
    assert yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())[
        "show-failed-logs"
    ]
    assert profile["show-failed-logs"] is True
