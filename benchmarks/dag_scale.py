"""DAG scaling: how long Snakemake takes to plan the workflow for thousands of scans.

For each dataset size N this writes a fake BIDS tree (N tiny placeholder
``sub-*/anat/*_T1w.nii.gz`` files and a ``participants.tsv``) and measures, with
``tests/data/config_tiny.yaml`` and ``--config bids_dir=<fake tree>``:

``dry-run``
    ``snakemake -n`` of the default target in an empty working directory: parsing,
    the parse-time BIDS scan, config validation and the DAG up to the
    ``check_inputs`` checkpoint (the per-scan jobs behind the checkpoint are not
    planned yet).
``no-op``
    ``snakemake --cores 1 <targets>`` when every output already exists with
    consistent modification times: ``results/preprocess/inputs.tsv`` (all scans
    ``ok``), the 12 per-scan ``preprocess_t1w`` outputs, ``qc.tsv``, ``folds.tsv``
    and the ``gm_modulated`` pack. The checkpoint is resolved, so the full per-scan
    DAG is built and checked, and nothing runs. Targets: ``qc.tsv``, ``folds.tsv``
    and the pack (the part of the DAG that grows with N).
``no-op -n``
    The same as a dry run (``-n``).

Printed per measurement: wall seconds and the CPU seconds (user + system) of the
Snakemake process, which is the steadier number on a busy machine. With
``--profile`` the no-op run of the first size runs under cProfile and the top
functions by cumulative time are printed.

Usage::

    .venv/bin/python benchmarks/dag_scale.py                 # 1000 and 5000 scans
    .venv/bin/python benchmarks/dag_scale.py --sizes 1000 --profile

Target (issue "Cluster-ready"): a no-op run on 1,000 scans in under 10 s.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from brainlens.derivatives import DERIVATIVES, SPACE, derivative_path

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
CONFIG = REPO / "tests" / "data" / "config_tiny.yaml"
TARGETS = [
    "results/preprocess/qc.tsv",
    "results/folds/folds.tsv",
    "results/pack/gm_modulated.npy",
    "results/pack/gm_modulated.tsv",
]


@dataclass
class Timing:
    """One timed Snakemake call."""

    wall_s: float
    cpu_s: float
    jobs: int
    returncode: int
    output: str


def write_fake_bids(root: Path, n_scans: int) -> list[str]:
    """Write ``n_scans`` placeholder T1w files and ``participants.tsv``.

    Parameters
    ----------
    root : Path
        Dataset root (created).
    n_scans : int
        One scan per participant.

    Returns
    -------
    list of str
        The participant IDs (= scan keys).
    """
    width = max(4, len(str(n_scans)))
    ids = [f"sub-{i + 1:0{width}d}" for i in range(n_scans)]
    rows = ["participant_id\tdiagnosis\tage\tsex"]
    for i, pid in enumerate(ids):
        anat = root / pid / "anat"
        anat.mkdir(parents=True)
        (anat / f"{pid}_T1w.nii.gz").write_bytes(b"placeholder")
        rows.append(f"{pid}\t{'patient' if i % 2 else 'control'}\t70\t{'F' if i % 3 else 'M'}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return ids


def _touch(path: Path, mtime: float, content: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.utime(path, (mtime, mtime))


def write_fake_outputs(workdir: Path, bids: Path, ids: list[str]) -> None:
    """Write every output up to the targets, each newer than its inputs.

    Times: BIDS files < templates < inputs.tsv < per-scan outputs < qc/folds/pack.
    """
    t0 = time.time() - 50  # newer than the scripts (the code trigger compares mtimes)
    for path in bids.rglob("*"):
        if path.is_file():
            os.utime(path, (t0, t0))
    templates = workdir / "resources" / "templates" / SPACE / "res-2"
    _touch(templates / "placeholder.txt", t0 + 10)
    os.utime(templates, (t0 + 10, t0 + 10))
    header = "scan\tparticipant_id\tsession_id\tlabel\tpath\tstatus\tproblem\timage_hash"
    lines = [header] + [
        f"{pid}\t{pid}\tn/a\t{'patient' if i % 2 else 'control'}\t"
        f"{bids / pid / 'anat' / f'{pid}_T1w.nii.gz'}\tok\t\t{i:040x}"
        for i, pid in enumerate(ids)
    ]
    _touch(workdir / "results" / "preprocess" / "inputs.tsv", t0 + 20, "\n".join(lines) + "\n")
    res = yaml.safe_load(CONFIG.read_text())["preprocess"]["resolution"]
    for pid in ids:
        # the per-scan outputs of rule preprocess_t1w: the one naming table
        for key in DERIVATIVES:
            p = derivative_path(workdir / "results" / "preprocess", pid, key, resolution=res)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
            os.utime(p, (t0 + 30, t0 + 30))
    qc_rule = ("results/preprocess/dataset_description.json", "results/preprocess/.bidsignore")
    for rel in (*TARGETS, *qc_rule):
        _touch(workdir / rel, t0 + 40)


def run_snakemake(workdir: Path, bids: Path, *args: str, profile: Path | None = None) -> Timing:
    """Run Snakemake once and time it (wall and child CPU seconds)."""
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [str(exe), "-s", str(SNAKEFILE), "--configfile", str(CONFIG)]
    cmd += ["--config", f"bids_dir={bids}", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"^total\s+(\d+)", proc.stdout, flags=re.MULTILINE)
    jobs = int(m.group(1)) if m else 0
    return Timing(wall, cpu, jobs, proc.returncode, proc.stdout)


def _check(timing: Timing, what: str) -> None:
    if timing.returncode != 0:
        sys.exit(f"{what} failed ({timing.returncode}):\n{timing.output[-4000:]}")


def measure(n_scans: int, base: Path, profile: bool) -> dict[str, Timing]:
    """Run the three measurements for one dataset size."""
    bids = base / f"bids-{n_scans}"
    ids = write_fake_bids(bids, n_scans)
    results: dict[str, Timing] = {}
    empty = base / f"work-empty-{n_scans}"
    empty.mkdir()
    results["dry-run"] = run_snakemake(empty, bids, "-n")
    _check(results["dry-run"], "dry run")

    work = base / f"work-{n_scans}"
    work.mkdir()
    write_fake_outputs(work, bids, ids)
    results["no-op -n"] = run_snakemake(work, bids, "-n", *TARGETS)
    _check(results["no-op -n"], "no-op dry run")
    if "Nothing to be done" not in results["no-op -n"].output:
        sys.exit(f"the placeholders are not up to date:\n{results['no-op -n'].output[-4000:]}")
    prof = base / f"noop-{n_scans}.prof" if profile else None
    results["no-op"] = run_snakemake(work, bids, "--cores", "1", *TARGETS, profile=prof)
    _check(results["no-op"], "no-op run")
    if "Nothing to be done" not in results["no-op"].output:
        sys.exit(f"no-op run: Snakemake ran jobs:\n{results['no-op'].output[-4000:]}")
    if prof is not None:
        print(f"\n--- cProfile of the no-op run, {n_scans} scans (top 25 by cumulative time)")
        pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(25)
    return results


def plugin_probe_seconds() -> float:
    """Wall seconds to import the SLURM executor plugin.

    Snakemake imports every installed executor plugin on each call; this one runs
    ``which sacct``/``squeue`` and ``scontrol show config`` at import time. Where SLURM
    tools exist but no controller answers (this test machine with the local cluster
    down), ``scontrol`` waits ~9 s; on a real login node it answers at once.
    """
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import snakemake_executor_plugin_slurm"],
        capture_output=True,
        check=False,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Measure and print one line per size and measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--profile", action="store_true", help="cProfile the first no-op run")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)

    print(f"{'scans':>6}  {'measurement':<10}  {'wall s':>7}  {'cpu s':>7}  jobs planned")
    with tempfile.TemporaryDirectory(prefix="dag_scale-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(args.sizes):
            res = measure(n, base, profile=args.profile and i == 0)
            for name, t in res.items():
                print(f"{n:>6}  {name:<10}  {t.wall_s:7.2f}  {t.cpu_s:7.2f}  {t.jobs}", flush=True)
    print(
        f"slurm plugin import (paid by every snakemake call): {plugin_probe_seconds():.2f} s wall"
    )
    print("target: no-op on 1000 scans < 10 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
