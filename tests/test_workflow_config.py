"""The workflow refuses bad configuration before any job runs, and lints clean."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, SMALL_CONFIG, snakemake

pytestmark = pytest.mark.workflow


def _write(tmp_path: Path, edit) -> Path:  # noqa: ANN001 - a small callable
    cfg = yaml.safe_load(SMALL_CONFIG.read_text())
    edit(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


BAD = [
    (
        "folds.mode",
        lambda c: c["folds"].__setitem__("mode", "loo"),
        ["kfold", "repeated", "holdout"],
    ),
    (
        "preprocess.resolution",
        lambda c: c["preprocess"].__setitem__("resolution", 3),
        ["resolution"],
    ),
    (
        "preprocess.skullstrip",
        lambda c: c["preprocess"].__setitem__("skullstrip", "bet"),
        ["deepbet", "ants_template"],
    ),
    (
        "train.model",
        lambda c: c["train"].__setitem__("model", "alexnet"),
        ["alexnet", "rieke2018_3d"],
    ),
    ("regions.atlases", lambda c: c["regions"].__setitem__("atlases", ["nope"]), ["nope", "aal"]),
    (
        "demo.region",
        lambda c: c["demo"].__setitem__("region", "Hippocampus"),
        ["Hippocampus", "aal"],
    ),
    ("train.epochs", lambda c: c["train"].__setitem__("epochs", 0), ["epochs"]),
    (
        "attribution.methods key",
        lambda c: c["attribution"]["methods"].__setitem__("gradcam@", {}),
        ["gradcam@", "gradients"],
    ),
    (
        "attribution.model_methods model",
        lambda c: c["attribution"].__setitem__("model_methods", {"vgg3d": {"gradients": {}}}),
        ["model_methods", "vgg3d", "rieke2018_3d"],
    ),
    (
        "attribution.model_methods atlas",
        lambda c: c["attribution"].__setitem__(
            "model_methods", {"rieke2018_3d": {"region_occlusion@x": {"atlas": "nope"}}}
        ),
        ["region_occlusion@x", "nope", "aal"],
    ),
    ("unknown key", lambda c: c.__setitem__("trian", {}), ["trian"]),
    (
        "attribution.baseline control class",
        lambda c: c["attribution"].__setitem__("baseline", {"kind": "train_control_mean"}),
        ["attribution.baseline.control_class", "train_control_mean"],
    ),
    ("regions.rank_by", lambda c: c["regions"].__setitem__("rank_by", "sum"), ["sum", "abs"]),
    (
        "exclude_scans id",
        lambda c: c.__setitem__("exclude_scans", {"sub-01/../x": "bad"}),
        ["exclude_scans", "sub-01/../x"],
    ),
    (
        "folds.on_duplicate",
        lambda c: c["folds"].__setitem__("on_duplicate", "ignore"),
        ["on_duplicate", "fail", "warn"],
    ),
    (
        "folds.duplicate_threshold",
        lambda c: c["folds"].__setitem__("duplicate_threshold", 1.5),
        ["duplicate_threshold"],
    ),
    (
        "lateralized flip",
        lambda c: (
            c.__setitem__("lateralized", True),
            c["train"]["augmentation"].__setitem__("flip_axes", [0]),
        ),
        ["flip_axes", "lateralized"],
    ),
]


@pytest.mark.parametrize(("name", "edit", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_fails_before_any_job(
    tmp_path: Path, name: str, edit, expected: list[str]
) -> None:  # noqa: ANN001
    cfg = _write(tmp_path, edit)
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfile=cfg, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    for word in expected:
        assert word in proc.stdout, (word, proc.stdout[-3000:])
    assert not (tmp_path / "results").exists()


def test_good_config_dry_run_plans_the_chain(tmp_path: Path) -> None:
    from conftest import planned_jobs

    jobs = planned_jobs(snakemake(tmp_path, "-n", "--cores", "1").stdout)
    for rule in (
        "demo_scan",
        "demo_metadata",
        "check_inputs",
        "near_duplicates",
        "folds",
        "train_model",
        "attribution_baseline",
        "attribute",
        "report",
    ):
        assert rule in jobs, jobs
    # one baseline per fold, from its training part (occlusion takes one, gradients not)
    assert (
        jobs["attribution_baseline"] == yaml.safe_load(SMALL_CONFIG.read_text())["folds"]["n_folds"]
    ), jobs


def test_per_model_method_sets_plan_their_own_jobs(tmp_path: Path) -> None:
    """``attribution.model_methods`` replaces the method set of one model only."""
    from conftest import planned_jobs

    def edit(c: dict) -> None:
        c["train"]["model"] = ["rieke2018_3d", "ng2018_3d"]
        c["attribution"]["model_methods"] = {
            "ng2018_3d": {"gradients": {}, "gradcam@conv1": {"layer": "features.0"}}
        }

    cfg = _write(tmp_path, edit)
    small = yaml.safe_load(SMALL_CONFIG.read_text())
    n_default, n_folds = len(small["attribution"]["methods"]), small["folds"]["n_folds"]
    out = snakemake(tmp_path, "-n", "--cores", "1", configfile=cfg).stdout
    jobs = planned_jobs(out)
    assert jobs["attribute"] == (n_default + 2) * n_folds, jobs
    assert jobs["sanity_checks"] == n_default + 2, jobs
    assert "results/attribution/ng2018_3d/gradcam@conv1/fold-0.tsv" in out
    assert "results/attribution/ng2018_3d/occlusion/" not in out


def test_lint_is_clean() -> None:
    proc = snakemake(
        REPO, "--lint", "--cores", "1", configfile=REPO / "config" / "config.yaml", check=False
    )
    assert "Congratulations" in proc.stdout, proc.stdout[-4000:]
