"""External test sets (issue 21 item 5): config, parse-time checks, rules, audit.

The workflow tests plan the tiny config (tests/data/config_tiny.yaml, the demo as main
dataset) with an external dataset written by the demo generator with another seed and
``id_prefix`` (so its participant IDs differ from the main demo's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, planned_jobs, snakemake

from brainlens.cli import main as cli_main
from brainlens.errors import ConfigError, LeakageError
from brainlens.external.audit import external_near_duplicates, write_external_duplicates
from brainlens.external.datasets import external_entries, map_labels
from brainlens.synthetic import DemoSpec, write_demo_dataset

TINY = REPO / "tests" / "data" / "config_tiny.yaml"
#: The external rules; none is planned without external.datasets.
EXTERNAL_RULES = {
    "check_external_inputs",
    "external_preprocess_t1w",
    "external_pack",
    "external_tiv",
    "external_duplicates",
    "evaluate_external",
    "external_summary",
}


@pytest.fixture(scope="module")
def external_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second demo dataset: another seed, participant IDs sub-ext001.. (about a minute)."""
    root = tmp_path_factory.mktemp("external") / "site2"
    spec = DemoSpec(
        n_subjects=4,
        n_second_session=0,
        voxel_size=4.0,
        region="Hippocampus_L",
        effect=0.7,
        id_prefix="ext",
    )
    write_demo_dataset(root, spec, seed=5)
    return root


def _copy(src: Path, dst: Path, labels: list[str] | None = None) -> Path:
    """A copy of a dataset, optionally with other diagnosis labels (in row order)."""
    shutil.copytree(src, dst)
    if labels is not None:
        table = pd.read_csv(dst / "participants.tsv", sep="\t", dtype=str)
        table.assign(diagnosis=labels).to_csv(dst / "participants.tsv", sep="\t", index=False)
    return dst


def _config(tmp_path: Path, datasets: list[dict] | None, **external) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    if datasets is not None:
        cfg["external"] = {"datasets": datasets, **external}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------ workflow: planning


@pytest.mark.workflow
def test_external_jobs_are_planned(tmp_path: Path, external_bids: Path) -> None:
    """Input checks (labels mapped), per-scan preprocessing, packs, audit, evaluation."""
    bids = _copy(external_bids, tmp_path / "ext", labels=["AD", "CN", "AD", "CN"])
    entry = {
        "name": "site2",
        "bids_dir": str(bids),
        "label_map": {"AD": "patient", "CN": "control"},
    }
    path = _config(tmp_path, [entry])
    # the external checkpoint's table, then every job after it is planned
    snakemake(tmp_path, "--cores", "1", "results/external/site2/inputs.tsv", configfile=path)
    table = pd.read_csv(tmp_path / "results/external/site2/inputs.tsv", sep="\t", dtype=str)
    assert table["label"].tolist() == ["patient", "control", "patient", "control"]
    assert set(table["status"]) == {"ok"}
    out = snakemake(tmp_path, "-n", "--cores", "1", configfile=path).stdout
    jobs = planned_jobs(out)
    assert jobs.get("external_preprocess_t1w") == 4, jobs
    assert jobs.get("external_pack") == 1 and jobs.get("external_duplicates") == 1, jobs
    assert jobs.get("evaluate_external") == 1 and jobs.get("external_summary") == 1, jobs
    assert "external_tiv" not in jobs, jobs  # only for harmonised CNN inputs with tiv
    assert "results/external/site2/preprocess/sub-ext001/anat/" in out
    assert "results/external/site2/rieke2018_3d/fold-0/metrics.json" in out


@pytest.mark.workflow
def test_no_external_dataset_plans_nothing_external(tmp_path: Path) -> None:
    out = snakemake(tmp_path, "-n", "--cores", "1", configfile=_config(tmp_path, None)).stdout
    jobs = planned_jobs(out)
    assert jobs, out[-2000:]
    assert not set(jobs) & EXTERNAL_RULES, jobs
    assert "results/external" not in out


@pytest.mark.workflow
def test_harmonised_cnn_inputs_take_the_external_covariates(
    tmp_path: Path, external_bids: Path
) -> None:
    """With in-fold residualisation of the CNN inputs the evaluation gets the fold's fit,
    the folds, the external participants.tsv and the external TIV table."""
    cfg = yaml.safe_load(
        _config(tmp_path, [{"name": "site2", "bids_dir": str(external_bids)}]).read_text()
    )
    cfg |= {"covariates": ["age", "sex", "tiv"], "confounds": {"method": "residualize"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--cores", "1", configfile=path).stdout
    assert planned_jobs(out).get("external_tiv") == 1, planned_jobs(out)
    block = out[out.index("rule evaluate_external:") :].split("\n")[1]
    for path_ in (
        "results/confounds/inputs/fold-0.npz",
        "results/folds/folds.tsv",
        f"{external_bids}/participants.tsv",
        "results/external/site2/tiv.tsv",
    ):
        assert path_ in block, (path_, block)
    # a covariate missing from the external participants.tsv stops the parse
    ext = _copy(external_bids, tmp_path / "noage")
    table = pd.read_csv(ext / "participants.tsv", sep="\t", dtype=str)
    table.drop(columns=["age"]).to_csv(ext / "participants.tsv", sep="\t", index=False)
    cfg["external"]["datasets"][0]["bids_dir"] = str(ext)
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfile=path, check=False)
    assert proc.returncode != 0
    assert "external dataset 'site2'" in proc.stdout and "['age'] not in" in proc.stdout


def _bad_label(tmp: Path, bids: Path) -> list[dict]:
    ext = _copy(bids, tmp / "ext", labels=["AD", "CN", "MCI", "CN"])
    return [
        {"name": "site2", "bids_dir": str(ext), "label_map": {"AD": "patient", "CN": "control"}}
    ]


def _shared_id(tmp: Path, bids: Path) -> list[dict]:
    ext = _copy(bids, tmp / "ext")
    (ext / "sub-ext002").rename(ext / "sub-002")
    (ext / "sub-002/anat/sub-ext002_T1w.nii.gz").rename(ext / "sub-002/anat/sub-002_T1w.nii.gz")
    table = pd.read_csv(ext / "participants.tsv", sep="\t", dtype=str)
    table.replace({"sub-ext002": "sub-002"}).to_csv(ext / "participants.tsv", sep="\t", index=False)
    return [{"name": "site2", "bids_dir": str(ext)}]


def _derivatives(tmp: Path, bids: Path) -> list[dict]:
    ext = _copy(bids, tmp / "ext")
    (ext / "dataset_description.json").write_text(
        json.dumps({"Name": "x", "BIDSVersion": "1.9.0", "DatasetType": "derivative"})
    )
    return [{"name": "site2", "bids_dir": str(ext)}]


def _no_participants(tmp: Path, bids: Path) -> list[dict]:
    ext = _copy(bids, tmp / "ext")
    (ext / "participants.tsv").unlink()
    return [{"name": "site2", "bids_dir": str(ext)}]


PARSE_ERRORS = [
    ("unknown label", _bad_label, ["'site2'", "['MCI']", "label_map", "['control', 'patient']"]),
    ("shared participant", _shared_id, ["'site2'", "also in the main dataset", "['sub-002']"]),
    (
        "missing bids_dir",
        lambda tmp, bids: [{"name": "site2", "bids_dir": str(tmp / "nowhere")}],
        ["'site2'", "nowhere", "does not exist"],
    ),
    ("no participants.tsv", _no_participants, ["'site2'", "participants.tsv is missing"]),
    ("derivatives dataset", _derivatives, ["'site2'", "BIDS-Derivatives", "raw BIDS"]),
    (
        "name clash",
        lambda tmp, bids: [{"name": "a", "bids_dir": str(bids)}] * 2,
        ["external.datasets[1]", "'a' is used twice"],
    ),
]


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("name", "make", "expected"), PARSE_ERRORS, ids=[p[0] for p in PARSE_ERRORS]
)
def test_dry_run_stops_with_the_message(
    tmp_path: Path, external_bids: Path, name, make, expected
) -> None:  # noqa: ANN001
    path = _config(tmp_path, make(tmp_path, external_bids))
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfile=path, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    for word in expected:
        assert word in proc.stdout, (word, proc.stdout[-3000:])
    assert not (tmp_path / "results").exists()


def test_final_model_is_refused_until_implemented() -> None:
    cfg = {"label_column": "diagnosis", "external": {"final_model": True, "datasets": []}}
    with pytest.raises(ConfigError, match="not implemented yet"):
        external_entries(cfg)


def test_brainlens_check_runs_the_external_checks(
    tmp_path: Path, external_bids: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _config(tmp_path, [{"name": "site2", "bids_dir": str(external_bids)}])
    assert cli_main(["check", "--configfile", str(path)]) == 0
    assert "external site2: 4 scans of 4 subjects (control 2, patient 2)" in capsys.readouterr().out
    path = _config(tmp_path, _shared_id(tmp_path, external_bids))
    assert cli_main(["check", "--configfile", str(path)]) == 1
    assert "also in the main dataset: ['sub-002']" in capsys.readouterr().err


# ------------------------------------------------------------------ labels


def test_labels_mapped_to_null_are_left_out() -> None:
    table = pd.DataFrame(
        {"participant_id": ["sub-a", "sub-b", "sub-c"], "label": ["AD", "MCI", "CN"]}
    )
    entry = {
        "name": "x",
        "bids_dir": "/x",
        "label_column": "dx",
        "label_map": {"AD": "patient", "CN": "control", "MCI": None},
    }
    out = map_labels(table, entry, ["control", "patient"])
    assert out["label"].tolist() == ["patient", "control"]
    assert out["raw_label"].tolist() == ["AD", "CN"]
    with pytest.raises(ConfigError, match=r"maps to \['sick'\]"):
        map_labels(table, entry | {"label_map": {"AD": "sick"}}, ["control", "patient"])


# ------------------------------------------------------------------ near-duplicate audit


def _maps(root: Path, names: list[str], data: list[np.ndarray]) -> list[str]:
    paths = []
    for name, d in zip(names, data, strict=True):
        path = root / f"{name}.nii.gz"
        nib.save(
            nib.Nifti1Image(d.astype(np.float32), np.eye(4) * 4 + np.diag([0, 0, 0, -3])), path
        )
        paths.append(str(path))
    return paths


def _brains(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    base = np.zeros((12, 12, 12))
    base[2:10, 2:10, 2:10] = 0.6
    return [np.clip(base + rng.normal(0, 0.2, base.shape), 0, 1) for _ in range(n)]


def test_a_copy_of_a_main_scan_in_the_external_set_fails_the_audit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    main_data = _brains(rng, 4)
    ext_data = _brains(rng, 2) + [main_data[1] + rng.normal(0, 0.005, main_data[1].shape)]
    main = (
        _maps(tmp_path, ["m1", "m2", "m3", "m4"], main_data),
        ["sub-01", "sub-02", "sub-03", "sub-04"],
        ["sub-01", "sub-02", "sub-03", "sub-04"],
    )
    ext = (
        _maps(tmp_path, ["e1", "e2", "e3"], ext_data),
        ["sub-e1", "sub-e2", "sub-e3"],
        ["sub-e1", "sub-e2", "sub-e3"],
    )
    table = external_near_duplicates(ext, main, dataset="site2", threshold=0.98)
    assert table[["scan_a", "scan_b"]].values.tolist() == [["sub-e3", "sub-02"]]
    assert table.attrs["max_cross"]["correlation"] > 0.98
    out = tmp_path / "dup" / "duplicates.tsv"
    with pytest.raises(LeakageError, match=r"'site2'.*sub-e3 \(sub-e3\) ~ main sub-02"):
        write_external_duplicates(
            ext, main, out, dataset="site2", threshold=0.98, smooth_fwhm_mm=0.0, on_duplicate="fail"
        )
    assert not out.exists()
    written = write_external_duplicates(
        ext, main, out, dataset="site2", threshold=0.98, smooth_fwhm_mm=0.0, on_duplicate="warn"
    )
    assert len(written) == 1 and out.is_file() and out.with_suffix(".json").is_file()
    # without the copy nothing is flagged: pairs within one dataset are never compared
    clean = (ext[0][:2], ext[1][:2], ext[2][:2])
    assert len(external_near_duplicates(clean, main, dataset="site2", threshold=0.98)) == 0


def test_demo_id_prefix_gives_other_participant_ids() -> None:
    from brainlens.synthetic import plan_dataset

    plan = plan_dataset(DemoSpec(n_subjects=4, n_second_session=0, id_prefix="ext"), seed=1)
    assert plan["participant_id"].tolist() == [f"sub-ext00{i}" for i in range(1, 5)]
    with pytest.raises(ConfigError, match="demo.id_prefix"):
        plan_dataset(DemoSpec(n_subjects=4, id_prefix="e_x"), seed=1)
