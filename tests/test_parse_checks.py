"""Checks before any job (issue 23): classes, fold feasibility, options, layers, positive class.

The workflow runs them when Snakemake parses the config; ``brainlens check`` runs the
same ones. The static tables they read (:mod:`brainlens.names`) must agree with the
real registries.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SMALL_CONFIG, snakemake

from brainlens.cli import SCHEMA, main
from brainlens.config import check_config, check_dataset, check_layers, validate_config
from brainlens.errors import ConfigError, DatasetError
from brainlens.feasibility import check_feasible
from brainlens.folds import make_folds
from brainlens.names import METHOD_OPTIONS, MODEL_OPTIONS, method_base


def _config(edit=None) -> dict:  # noqa: ANN001 - a small callable
    cfg = validate_config(yaml.safe_load(SMALL_CONFIG.read_text()), SCHEMA)
    if edit is not None:
        edit(cfg)
    return cfg


def _scans(counts: dict[str, int], sessions: int = 1) -> pd.DataFrame:
    rows = []
    i = 0
    for label, n in counts.items():
        for _ in range(n):
            i += 1
            for s in range(sessions):
                pid = f"sub-{i:02d}"
                rows.append({"scan": f"{pid}_ses-{s}", "participant_id": pid, "label": label})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ static tables


def test_static_model_table_agrees_with_the_registry() -> None:
    from brainlens.models import MODELS

    assert set(MODEL_OPTIONS) == set(MODELS)
    for name, spec in MODELS.items():
        assert set(MODEL_OPTIONS[name]) == set(spec.default_options()), name


def test_static_method_table_agrees_with_the_registry() -> None:
    from brainlens.attribution import methods

    assert set(METHOD_OPTIONS) == set(methods.METHODS)
    for name, spec in methods.METHODS.items():
        assert set(METHOD_OPTIONS[name]) == set(spec.options()), name
    for key in ("gradcam", "gradcam@conv3", "occlusion@p8", "region_occlusion"):
        assert method_base(key) == methods.method_base(key)
    for bad in ("gradcam@", "nope", "Gradcam"):
        with pytest.raises(ConfigError):
            methods.method_base(bad)
        with pytest.raises(ConfigError, match="expected one of"):
            method_base(bad)


def test_static_target_modes_agree() -> None:
    from brainlens.attribution import targets
    from brainlens.names import TARGET_MODES

    assert tuple(TARGET_MODES) == tuple(targets.TARGET_MODES)


def test_config_and_dataset_checks_import_neither_torch_nor_captum() -> None:
    code = (
        "import sys, yaml\n"
        "from brainlens.cli import SCHEMA, _demo_scans\n"
        "from brainlens.config import check_config, check_dataset, check_layers, validate_config\n"
        f"cfg = validate_config(yaml.safe_load(open({str(SMALL_CONFIG)!r})), SCHEMA)\n"
        "check_config(cfg); check_layers(cfg); check_dataset(cfg, _demo_scans(cfg))\n"
        "assert 'torch' not in sys.modules and 'captum' not in sys.modules, 'imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------- fold feasibility

FOLD_CASES = [
    ({"AD": 6}, {"mode": "kfold", "n_folds": 3}, "at least 2 classes"),
    ({"AD": 6, "CN": 2}, {"mode": "kfold", "n_folds": 3}, "class 'CN' has only 2"),
    ({"AD": 9, "CN": 4}, {"mode": "kfold", "n_folds": 3, "val_fraction": 0.2}, "val_fraction"),
    (
        {"AD": 20, "CN": 5},
        {"mode": "repeated", "n_repeats": 2, "test_fraction": 0.1},
        "folds.test_fraction=0.1: class 'CN'",
    ),
    ({"AD": 10, "CN": 10}, {"mode": "holdout", "test_fraction": 0.9}, "their sum < 1"),
]


@pytest.mark.parametrize(("counts", "opts", "match"), FOLD_CASES)
def test_feasibility_gives_make_folds_own_message(counts, opts, match) -> None:  # noqa: ANN001
    """The parse-time check and the folds job refuse with the same message."""
    with pytest.raises(ConfigError) as job:
        make_folds(_scans(counts), seed=1, **opts)
    with pytest.raises(ConfigError) as early:
        check_feasible(counts, **opts)
    assert str(early.value) == str(job.value)
    assert match in str(job.value)


def test_feasible_split_passes_both() -> None:
    counts = {"AD": 5, "CN": 5}
    check_feasible(counts, mode="kfold", n_folds=5, val_fraction=0.2)
    make_folds(_scans(counts), seed=1, mode="kfold", n_folds=5, val_fraction=0.2)


# --------------------------------------------------------------- check_dataset


def test_check_dataset_counts_participants_not_scans() -> None:
    cfg = _config()
    counts = check_dataset(cfg, _scans({"AD": 5, "CN": 5}, sessions=2))
    assert counts.to_dict() == {"AD": 5, "CN": 5}
    # 3 folds need 3 participants of each class: two sessions do not make up for one
    with pytest.raises(ConfigError, match=r"n_folds=3: class 'CN' has only 2"):
        check_dataset(cfg, _scans({"AD": 3, "CN": 2}, sessions=3))


def test_check_dataset_leaves_out_excluded_scans() -> None:
    scans = _scans({"AD": 5, "CN": 5})
    check_dataset(_config(), scans)
    cfg = _config(lambda c: c.__setitem__("exclude_scans", {"sub-10_ses-0": "motion"}))
    with pytest.raises(ConfigError, match="val_fraction=0.2: class 'CN' has 4"):
        check_dataset(cfg, scans)


def test_check_dataset_one_class_and_mixed_labels() -> None:
    with pytest.raises(ConfigError, match=r"label_column 'diagnosis'.*at least 2 classes"):
        check_dataset(_config(), _scans({"AD": 8}))
    scans = _scans({"AD": 5, "CN": 5}, sessions=2)
    scans.loc[0, "label"] = "CN"
    with pytest.raises(DatasetError, match="sub-01.*more than one label"):
        check_dataset(_config(), scans)


@pytest.mark.parametrize(
    ("counts", "pos", "match"),
    [
        ({"AD": 5, "CN": 5}, "ad", r"positive_class: 'ad' is not a class.*\['AD', 'CN'\]"),
        ({"AD": 5, "CN": 5, "MCI": 5}, "AD", "3 classes"),
    ],
)
def test_check_dataset_positive_class(counts, pos, match) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=match):
        check_dataset(_config(lambda c: c.__setitem__("positive_class", pos)), _scans(counts))
    check_dataset(
        _config(lambda c: c.__setitem__("positive_class", "AD")), _scans({"AD": 5, "CN": 5})
    )


def test_check_dataset_attribution_target_must_be_a_label() -> None:
    def edit(c: dict) -> None:
        c["attribution"]["target"] = "patient"

    with pytest.raises(ConfigError, match=r"attribution.target: 'patient'.*\['AD', 'CN'\]"):
        check_dataset(_config(edit), _scans({"AD": 5, "CN": 5}))


def test_check_dataset_control_class_must_be_a_label() -> None:
    def edit(c: dict) -> None:
        c["attribution"]["baseline"] = {"kind": "train_control_mean", "control_class": "HC"}

    with pytest.raises(ConfigError, match=r"control_class: 'HC'.*\['AD', 'CN'\]"):
        check_dataset(_config(edit), _scans({"AD": 5, "CN": 5}))


# ------------------------------------------------------------ options and layers


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda c: c["train"].__setitem__("model_options", {"dropuot": 0.5}),
            r"train.model_options: unknown option\(s\) \['dropuot'\] for model 'rieke2018_3d'",
        ),
        (
            lambda c: c["attribution"]["methods"].__setitem__("occlusion", {"patches": 8}),
            r"attribution.methods.occlusion \(model rieke2018_3d\): unknown option.*'patch'",
        ),
        (
            lambda c: c["attribution"].__setitem__(
                "model_methods", {"rieke2018_3d": {"gradcam@x": {"layers": "features.0"}}}
            ),
            r"attribution.model_methods.rieke2018_3d.gradcam@x: unknown option.*'layer'",
        ),
        (
            lambda c: c["attribution"]["methods"].__setitem__("layer_maps", {}),
            "one map per layer",
        ),
    ],
)
def test_option_typos_are_refused(edit, match) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=match):
        check_config(_config(edit))


def test_region_occlusion_takes_the_atlas_key() -> None:
    check_config(_config(lambda c: c["attribution"]["methods"].__setitem__("region_occlusion", {})))


def test_gradcam_layer_is_resolved_on_the_model() -> None:
    def edit(layer: str):  # noqa: ANN202
        return lambda c: c["attribution"]["methods"].__setitem__("gradcam@x", {"layer": layer})

    check_layers(_config(edit("features.0")))
    with pytest.raises(ConfigError, match=r"gradcam@x \(model rieke2018_3d\).layer.*'feature.0'"):
        check_layers(_config(edit("feature.0")))


# ------------------------------------------------------------------- dry runs


def _t1w(path: Path, n: int = 8) -> None:
    """A random n**3 image: 2 mm voxels for n 8 (too small a volume), else 4 mm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(0).random((n, n, n)).astype(np.float32)
    mm = 2.0 if n == 8 else 4.0
    nib.save(nib.Nifti1Image(arr, np.diag([mm, mm, mm, 1.0])), str(path))


def _bids(root: Path, labels: list[str], n: int = 8) -> Path:
    rows = []
    for i, label in enumerate(labels, start=1):
        pid = f"sub-{i:02d}"
        _t1w(root / pid / "anat" / f"{pid}_T1w.nii.gz", n)
        rows.append({"participant_id": pid, "diagnosis": label})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


DRY = [
    ("one class", ["AD"] * 6, None, ["label_column 'diagnosis'", "at least 2 classes", "['AD']"]),
    (
        "too few subjects",
        ["AD"] * 4 + ["CN"] * 2,
        None,
        ["folds.n_folds=3", "class 'CN' has only 2", "Fix: lower n_folds"],
    ),
    (
        "model option typo",
        ["AD", "CN"] * 3,
        lambda c: c["train"].__setitem__("model_options", {"dropuot": 0.5}),
        ["train.model_options", "'dropuot'", "'dropout'"],
    ),
    (
        "gradcam layer",
        ["AD", "CN"] * 3,
        lambda c: c["attribution"]["methods"].__setitem__("gradcam@b", {"layer": "conv9"}),
        ["attribution.methods.gradcam@b", "'conv9'", "features.0"],
    ),
    (
        "positive class",
        ["AD", "CN"] * 5,
        lambda c: c.__setitem__("positive_class", "patient"),
        ["positive_class: 'patient'", "['AD', 'CN']"],
    ),
]


@pytest.mark.workflow
@pytest.mark.parametrize(("name", "labels", "edit", "expected"), DRY, ids=[d[0] for d in DRY])
def test_dry_run_stops_with_the_message(tmp_path: Path, name, labels, edit, expected) -> None:  # noqa: ANN001
    cfg = yaml.safe_load(SMALL_CONFIG.read_text())
    cfg["bids_dir"] = str(_bids(tmp_path / "bids", labels))
    if edit is not None:
        edit(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfile=path, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    for word in expected:
        assert word in proc.stdout, (word, proc.stdout[-3000:])
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_a_user_method_set_plans_one_method(tmp_path: Path) -> None:
    """The README's template with a bids_dir and ``methods: {gradients: {}}``: one method.

    The demo's settings (eight methods, a per-model set for rieke2018_3d) are not read
    with a bids_dir, and the user's method set is not merged into a default one.
    """
    from conftest import REPO, planned_jobs

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    bids = _bids(tmp_path / "bids", ["AD", "CN"] * 10, n=40)
    table = pd.read_csv(bids / "participants.tsv", sep="\t")  # the default covariates
    table.assign(age=range(60, 80), sex=["F", "M"] * 10).to_csv(
        bids / "participants.tsv", sep="\t", index=False
    )
    cfg["bids_dir"] = str(bids)
    cfg["attribution"] = {"methods": {"gradients": {}}}
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # the jobs after the check_inputs checkpoint are planned once its table exists
    snakemake(tmp_path, "--cores", "1", "results/preprocess/inputs.tsv", configfile=path)
    out = snakemake(tmp_path, "-n", "--cores", "1", configfile=path).stdout
    jobs = planned_jobs(out)
    n_folds = validate_config(dict(cfg), SCHEMA)["folds"]["n_folds"]
    assert jobs.get("attribute") == n_folds, jobs
    assert set(re.findall(r"results/attribution/rieke2018_3d/([^/\s]+)/fold-", out)) == {
        "gradients"
    }


# ------------------------------------------------------------------ brainlens check


def test_brainlens_check_prints_what_would_run(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    cfg = tmp_path / "config.yaml"
    cfg.write_text(SMALL_CONFIG.read_text() + "\npositive_class: AD\n")
    bids = _bids(tmp_path / "bids", ["AD"] * 5 + ["CN"] * 6)
    assert main(["check", "--bids-dir", str(bids), "--configfile", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out
    assert "classes: AD 5 subjects / 5 scans, CN 6 subjects / 6 scans" in out
    assert "positive class: AD (positive_class)" in out
    assert "folds: kfold, 3 folds" in out
    assert "methods (rieke2018_3d): gradients, gradcam, occlusion" in out


def test_brainlens_check_fails_with_the_workflow_message(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    cfg = tmp_path / "config.yaml"
    cfg.write_text(SMALL_CONFIG.read_text())
    bids = _bids(tmp_path / "bids", ["AD"] * 4 + ["CN"] * 2)
    assert main(["check", "--bids-dir", str(bids), "--configfile", str(cfg)]) == 1
    assert "folds.n_folds=3: class 'CN' has only 2" in capsys.readouterr().err
    cfg.write_text(SMALL_CONFIG.read_text().replace("n_folds: 3", "n_folds: 30"))
    assert main(["check", "--configfile", str(cfg)]) == 1
    assert "n_folds" in capsys.readouterr().err


def test_brainlens_check_on_the_demo_config(capsys) -> None:  # noqa: ANN001
    assert main(["check", "--configfile", str(SMALL_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "data the synthetic demo" in out and "positive class: patient (default" in out
    # the small demo's own three methods: its method set replaces the demo's
    assert "methods (rieke2018_3d): gradients, gradcam, occlusion\n" in out


def test_brainlens_check_without_a_config_checks_the_demo(capsys) -> None:  # noqa: ANN001
    """No --configfile: config/demo.yaml alone, as ``snakemake`` without one."""
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "config none over " in out and "demo.yaml, data the synthetic demo" in out
    demo = yaml.safe_load((Path(SCHEMA).parents[2] / "config" / "demo.yaml").read_text())
    for model, methods in demo["attribution"]["model_methods"].items():
        assert f"methods ({model}): {', '.join(methods)}\n" in out
