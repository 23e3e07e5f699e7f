"""preprocess.work_dir: the nipype work folder on node-local scratch, expanded by the job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from brainlens.errors import ConfigError, PreprocessingError
from brainlens.preprocess import run as run_mod
from brainlens.preprocess.workdir import DEFAULT_WORK_ROOT, expand_work_dir, scan_work_dir


def test_the_default_is_the_project_work_folder_as_before() -> None:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["preprocess"]["properties"]["work_dir"]["default"] is None
    assert scan_work_dir(None, "sub-01_ses-2") == "work/preprocess/sub-01_ses-2"
    assert DEFAULT_WORK_ROOT == "work/preprocess"


def test_the_workflow_passes_the_folder_unexpanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", "/login-node/tmp")  # the parsing process's value: not used
    assert scan_work_dir("$TMPDIR/brainlens/", "sub-01") == "$TMPDIR/brainlens/sub-01"
    assert scan_work_dir("~/scratch", "sub-01") == "~/scratch/sub-01"
    rule = (REPO / "workflow/rules/preprocess.smk").read_text()
    params = re.search(r"rule preprocess_t1w:.*?script:", rule, re.S).group(0)
    assert 'work_dir=lambda wc: scan_work_dir(config["preprocess"]["work_dir"], wc.scan)' in params


def test_the_job_expands_variables_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BL_NODE_SCRATCH", str(tmp_path / "node"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert expand_work_dir("$BL_NODE_SCRATCH/bl/sub-01") == tmp_path / "node/bl/sub-01"
    assert expand_work_dir("${BL_NODE_SCRATCH}/sub-01") == tmp_path / "node/sub-01"
    assert expand_work_dir("~/w/sub-01") == tmp_path / "home/w/sub-01"
    monkeypatch.chdir(tmp_path)
    assert expand_work_dir("work/preprocess/sub-01") == tmp_path / "work/preprocess/sub-01"


def test_an_unset_variable_is_an_error_not_a_folder_named_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BL_NOT_SET", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"preprocess.work_dir: \$BL_NOT_SET/sub-01: .*BL_NOT_SET"
    ):
        expand_work_dir("$BL_NOT_SET/sub-01")
    assert list(tmp_path.iterdir()) == []


def test_run_t1w_preproc_works_in_the_folder_expanded_on_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job side: run_t1w_preproc gets the workflow's string and works in its expansion."""
    seen: dict[str, Path] = {}

    def fake_workflow(t1w: Path, work_dir: Path, **_: object) -> None:
        seen["work_dir"] = work_dir
        (work_dir / "nipype").mkdir()
        raise RuntimeError("stop here")

    monkeypatch.setattr(run_mod, "check_t1w", lambda path: None)
    monkeypatch.setattr(run_mod, "_templates", lambda *a: ({}, None, None))
    monkeypatch.setattr(run_mod, "ensure_ants_on_path", lambda: None)
    monkeypatch.setattr(run_mod, "_run_workflow", fake_workflow)
    monkeypatch.setenv("BL_NODE_SCRATCH", str(tmp_path / "node"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PreprocessingError, match=str(tmp_path / "node/bl/sub-01" / "crash")):
        run_mod.run_t1w_preproc(
            tmp_path / "sub-01_T1w.nii.gz",
            scan="sub-01",
            out_dir=tmp_path / "out",
            templates_dir=tmp_path / "tpl",
            resolution=2.0,
            skullstrip="ants_template",
            seed=1,
            threads=1,
            work_dir="$BL_NODE_SCRATCH/bl/sub-01",
        )
    assert seen["work_dir"] == tmp_path / "node/bl/sub-01"
    assert (tmp_path / "node/bl/sub-01/nipype").is_dir()  # kept after a failure
    assert not any("$" in p.name for p in tmp_path.rglob("*"))
    assert not (tmp_path / "out").exists()
