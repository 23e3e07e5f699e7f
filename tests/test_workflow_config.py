"""The workflow refuses bad configuration before any job runs, and lints clean."""

from __future__ import annotations

import re
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

    out = snakemake(tmp_path, "-n", "--cores", "1").stdout
    jobs = planned_jobs(out)
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
    small = yaml.safe_load(SMALL_CONFIG.read_text())
    # one baseline per fold, from its training part (occlusion takes one, gradients not)
    assert jobs["attribution_baseline"] == small["folds"]["n_folds"], jobs
    # the file's three methods, not the demo's eight (its method set replaces the demo's)
    methods = set(small["attribution"]["methods"])
    assert jobs["attribute"] == len(methods) * small["folds"]["n_folds"], jobs
    planned = set(re.findall(r"results/attribution/rieke2018_3d/([^/\s]+)/fold-", out))
    assert planned == methods, planned


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
        REPO, "--lint", "--cores", "1", configfile=REPO / "config" / "demo.yaml", check=False
    )
    assert "Congratulations" in proc.stdout, proc.stdout[-4000:]


# ------------------------------------------------------------------ config layers
#
# config/demo.yaml pins every demo value it names (so a changed schema default cannot
# silently change the demo and its README numbers). We list the deliberate overrides
# here instead of keeping demo.yaml to overrides only: a demo value that differs from
# the schema's default must be in DEMO_OVERRIDES with its reason, and every entry must
# still differ, so a default and the demo can only disagree on purpose.
DEMO_OVERRIDES = {
    "seed": "required, no default: the demo's seed (README numbers)",
    "demo.shrink": "0.3 folds one demo patient with deformation_mm 1.5",
    "preprocess.resolution": "4 mm: at 2 mm the demo's model memorised ~28 subjects",
    "train.epochs": "the demo's models generalised late (epochs 40-80)",
    "train.lr": "tuned on the demo (docs/demo-tuning.md)",
    "train.early_stopping.patience": "validation loss on ~8 subjects swings",
    "train.early_stopping.start_epoch": "the untrained net's val loss beats early epochs",
    "train.restarts": "a demo run sometimes fits nuisance; the best of 3 on validation",
    "train.augmentation.shift_voxels": "random shifts did not help the demo",
    "train.model_options": "the paper's dropout 0.8 underfits ~28 training subjects",
    "attribution.model_methods": "Grad-CAM on conv3: the last conv is 1x2x1 at 4 mm",
    "attribution.max_scans_per_fold": "6 test scans per fold keep the demo's run short",
    "attribution.sanity.overrides": "occlusion maps cost 288 passes: no cascade",
    "regions.atlases": "the demo's tables on two atlases",
}


def _schema() -> dict:
    return yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _demo() -> dict:
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def _properties(node: dict, path: tuple[str, ...] = ()):  # noqa: ANN202 - a generator
    """(path, schema node) of every property, depth first."""
    for key, sub in (node.get("properties") or {}).items():
        yield (*path, key), sub
        yield from _properties(sub, (*path, key))


def test_every_schema_key_is_described() -> None:
    schema = _schema()
    missing = [".".join(p) for p, sub in _properties(schema) if not sub.get("description")]
    missing += [
        f"$defs.{k}" for k, sub in schema.get("$defs", {}).items() if "description" not in sub
    ]
    assert not missing, f"schema keys without a description: {missing}"


def _demo_leaves(demo: dict, schema: dict, path: tuple[str, ...] = ()):  # noqa: ANN202
    """(path, demo value, schema node): a section with ``properties`` is walked into."""
    for key, value in demo.items():
        sub = (schema.get("properties") or {}).get(key)
        assert sub is not None, f"config/demo.yaml: {'.'.join((*path, key))} is not in the schema"
        if isinstance(value, dict) and "properties" in sub:
            yield from _demo_leaves(value, sub, (*path, key))
        else:
            yield ".".join((*path, key)), value, sub


def test_demo_values_equal_the_schema_defaults_except_the_listed_overrides() -> None:
    differ = {}
    for path, value, sub in _demo_leaves(_demo(), _schema()):
        if "default" not in sub or sub["default"] != value:
            differ[path] = (value, sub.get("default", "<no default>"))
    unlisted = {p: v for p, v in differ.items() if p not in DEMO_OVERRIDES}
    assert not unlisted, (
        "config/demo.yaml value != schema default (demo, default); fix the default or list "
        f"the override in DEMO_OVERRIDES: {unlisted}"
    )
    stale = sorted(set(DEMO_OVERRIDES) - set(differ))
    assert not stale, f"DEMO_OVERRIDES entries that no longer differ: {stale}"


def test_a_user_method_set_replaces_the_demos() -> None:
    from brainlens.config_layers import resolve_config

    demo = REPO / "config" / "demo.yaml"
    cfg = resolve_config({"attribution": {"methods": {"gradients": {}}}}, demo)
    assert cfg["attribution"]["methods"] == {"gradients": {}}
    # the demo's per-model set would replace the user's set for its model: dropped too
    assert "model_methods" not in cfg["attribution"]
    # sections with fixed keys still merge: the demo's other attribution values stay
    assert cfg["attribution"]["max_scans_per_fold"] == _demo()["attribution"]["max_scans_per_fold"]
    both = {"methods": {"gradients": {}}, "model_methods": {"rieke2018_3d": {"gradcam": {}}}}
    cfg = resolve_config({"attribution": both}, demo)
    assert cfg["attribution"]["model_methods"] == {"rieke2018_3d": {"gradcam": {}}}
    # idempotent: a job that re-parses the resolved, validated config gets the same one
    from brainlens.cli import SCHEMA
    from brainlens.config import validate_config

    once = validate_config(
        resolve_config({"attribution": {"methods": {"gradients": {}}}}, demo), SCHEMA
    )
    assert validate_config(resolve_config(once, demo), SCHEMA) == once
    cfg = resolve_config({"train": {"model_options": {}, "epochs": 2}}, demo)
    assert cfg["train"]["model_options"] == {}
    assert cfg["train"]["restarts"] == _demo()["train"]["restarts"]


def test_a_bids_dir_leaves_the_demo_settings_out(tmp_path: Path) -> None:
    from brainlens.cli import SCHEMA
    from brainlens.config import validate_config
    from brainlens.config_layers import resolve_config
    from brainlens.errors import ConfigError

    missing = tmp_path / "no_demo.yaml"  # never read with a bids_dir
    user = {"seed": 1, "bids_dir": "/data/bids"}
    cfg = validate_config(resolve_config(user, missing), SCHEMA)
    defaults = {p: s.get("default") for p, s in _properties(_schema())}
    assert (
        cfg["train"]["restarts"] == defaults[("train", "restarts")] != _demo()["train"]["restarts"]
    )
    assert cfg["attribution"]["methods"] == defaults[("attribution", "methods")]
    assert cfg["attribution"]["model_methods"] == {}
    with pytest.raises(ConfigError, match="no_demo.yaml"):
        resolve_config({"seed": 1}, missing)


def test_replacing_mappings_are_documented_as_such() -> None:
    from brainlens.config_layers import REPLACED_MAPPINGS

    nodes = dict(_properties(_schema()))
    for path in REPLACED_MAPPINGS:
        assert "replaces the demo's" in " ".join(nodes[path]["description"].split()), path


@pytest.mark.parametrize(
    "name",
    ["tests/data/config_small.yaml", "tests/data/config_tiny.yaml", "config/quickstart.yaml"],
)
def test_test_configs_do_not_depend_on_the_demo_layer(name: str) -> None:
    """With or without a bids_dir (demo layer under it or not) a test config means the same."""
    from brainlens.cli import SCHEMA
    from brainlens.config import validate_config
    from brainlens.config_layers import resolve_config

    user = yaml.safe_load((REPO / name).read_text())
    demo = validate_config(resolve_config(user, REPO / "config" / "demo.yaml"), SCHEMA)
    bids = validate_config(
        resolve_config({**user, "bids_dir": "/x"}, REPO / "config" / "demo.yaml"), SCHEMA
    )
    assert {**demo, "bids_dir": "/x"} == bids


def test_the_quick_start_plants_the_full_demos_effect() -> None:
    """config/quickstart.yaml is smaller and cheaper, but its planted atrophy is the demo's."""
    quick = yaml.safe_load((REPO / "config" / "quickstart.yaml").read_text())["demo"]
    keys = ("atlas", "region", "effect", "shrink", "deformation_mm", "scale")
    assert {k: quick[k] for k in keys} == {k: _demo()["demo"][k] for k in keys}


def test_the_template_config_parses_without_the_demo() -> None:
    from brainlens.cli import SCHEMA
    from brainlens.config import validate_config
    from brainlens.config_layers import resolve_config

    user = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert user["bids_dir"], "config/config.yaml is a real study's template: it needs a bids_dir"
    validate_config(resolve_config(user, REPO / "config" / "no_demo_needed.yaml"), SCHEMA)
