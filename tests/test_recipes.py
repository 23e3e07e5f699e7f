"""The papers' training recipes (brainlens.models.recipes) and ``train.recipe``."""

from __future__ import annotations

import copy
import pickle
from dataclasses import fields

import pytest
import yaml
from conftest import REPO

from brainlens.config import model_names, validate_config
from brainlens.errors import ConfigError
from brainlens.models import MODELS
from brainlens.models.recipes import (
    APPLIED_FIELDS,
    RECIPE_NAMES,
    RECIPES,
    Recipe,
    resolve_train_settings,
    train_params,
)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEMO = REPO / "config" / "demo.yaml"


def _demo_config() -> dict:
    """The demo's settings (config/demo.yaml) with the schema's defaults filled in."""
    return validate_config(yaml.safe_load(DEMO.read_text()), SCHEMA)


def _train(**changes) -> dict:  # noqa: ANN003 - train keys
    train = copy.deepcopy(_demo_config()["train"])
    train.update(changes)
    return train


def _paper(model: str, train: dict, resolution: float = 1.5, lateralized: bool = False):  # noqa: ANN202
    return resolve_train_settings(model, train, resolution=resolution, lateralized=lateralized)


# ------------------------------------------------------------------ the recipe table


def test_every_registered_model_has_its_recipe() -> None:
    assert set(RECIPES) == set(MODELS)
    for name, spec in MODELS.items():
        assert spec.recipe is RECIPES[name], name
        assert isinstance(spec.recipe, Recipe), name


def test_every_stated_field_names_its_section_and_fits_the_project() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["train"]["properties"]
    for name, recipe in RECIPES.items():
        spec = MODELS[name]
        stated = recipe.stated()
        assert stated, name
        # a source for every stated field, and none for a field the paper does not state
        assert set(recipe.sources) == set(stated), name
        assert recipe.paper and recipe.departures, name
        if recipe.optimizer is not None:
            assert recipe.optimizer in schema["optimizer"]["enum"], name
        if recipe.inputs is not None:
            assert set(recipe.inputs) <= set(schema["inputs"]["items"]["enum"]), name
        if recipe.dropout is not None:
            assert "dropout" in spec.default_options(), name
        # 3D papers state a volume, 2D papers an image made by the model's own transform
        if spec.ndim == 3:
            assert recipe.transform is None, name
        else:
            assert recipe.volume_shape is None and recipe.transform is not None, name
            assert recipe.transform["name"] == spec.transform, name


def test_unstated_fields_are_none() -> None:
    # Eitel et al. tuned and did not report the optimisation settings
    for name in ("eitel_baseline_3d", "pif_3d"):
        recipe = RECIPES[name]
        for key in ("optimizer", "lr", "batch_size", "epochs", "weight_decay", "dropout"):
            assert getattr(recipe, key) is None, (name, key)
    assert {f.name for f in fields(Recipe)} >= set(APPLIED_FIELDS)


# -------------------------------------------------------------------- recipe: config


@pytest.mark.parametrize("model", sorted(MODELS))
def test_config_recipe_is_the_identity(model: str) -> None:
    train = _train(recipe="config", inputs=["t1w"], model_options={"dropout": 0.3})
    before = copy.deepcopy(train)
    settings = _paper(model, train, resolution=4.0, lateralized=True)
    assert settings == {k: v for k, v in before.items() if k != "recipe"}
    assert "recipe" not in settings and dict(settings.from_paper) == {}
    assert train == before  # not changed in place


def test_demo_train_params_are_unchanged_by_the_recipe_key() -> None:
    """The train_model rule's params for the demo: what they were before train.recipe."""
    config = _demo_config()
    assert config["train"]["recipe"] == "config"
    drop = ("model", "inputs", "gpus")
    before = {k: v for k, v in config["train"].items() if k not in (*drop, "recipe")}
    for model in model_names(config):
        after = _paper(model, config["train"], config["preprocess"]["resolution"])
        assert {k: v for k, v in after.items() if k not in drop} == before


def test_rule_params_drop_what_the_rule_passes_otherwise() -> None:
    config = _demo_config()
    params = train_params(config, "rieke2018_3d")
    want = {k: v for k, v in config["train"].items() if k not in ("model", "inputs", "gpus")}
    del want["recipe"]
    assert params == want
    config["train"].update(recipe="paper", inputs=["t1w"])
    params = train_params(config, "rieke2018_3d")
    assert params["lr"] == 1e-4 and "inputs" not in params and "recipe" not in params
    assert "lr" in params.from_paper
    assert pickle.loads(pickle.dumps(params)) == params  # Snakemake pickles params


# --------------------------------------------------------------------- recipe: paper


def test_paper_recipe_replaces_stated_keys_and_keeps_the_rest() -> None:
    train = _train(
        recipe="paper",
        inputs=["wm_modulated"],
        lr=0.01,
        batch_size=7,
        epochs=3,
        weight_decay=0.25,
        model_options={"dropout": 0.3},
    )
    settings = _paper("ng2018_3d", train, resolution=1.5)
    assert (settings["lr"], settings["batch_size"], settings["epochs"]) == (1e-4, 2, 50)
    assert settings["optimizer"] == "adam"
    # Ng et al. state neither weight decay nor dropout nor a stopping rule to apply
    assert settings["weight_decay"] == 0.25
    assert settings["model_options"] == {"dropout": 0.3}
    assert settings["early_stopping"] == train["early_stopping"]
    assert set(settings.from_paper) == {"optimizer", "lr", "batch_size", "epochs"}
    assert settings.from_paper["lr"] == "§2.2"
    assert train["lr"] == 0.01  # the config is not changed


def test_paper_recipe_sets_nested_keys_and_keeps_their_siblings() -> None:
    train = _train(
        recipe="paper",
        inputs=["t1w"],
        model_options={"dropout": 0.5, "dropout2": 0.1},
        augmentation={"flip_axes": [], "shift_voxels": 3},
    )
    settings = _paper("rieke2018_3d", train, resolution=2.0)
    assert settings["model_options"] == {"dropout": 0.8, "dropout2": 0.1}
    assert settings["augmentation"] == {"flip_axes": [], "shift_voxels": 3}
    assert "model_options.dropout" in settings.from_paper

    pif = _paper("pif_3d", train, resolution=2.0)
    assert pif["augmentation"] == {"flip_axes": [0], "shift_voxels": 0}
    assert pif["lr"] == train["lr"] and pif["epochs"] == train["epochs"]  # not reported
    base = _paper("eitel_baseline_3d", train, resolution=2.0)
    assert base["augmentation"] == {"flip_axes": [0], "shift_voxels": 3}  # amount unstated


def test_paper_recipe_sets_the_2d_image_and_keeps_unstated_transform_options() -> None:
    train = _train(
        recipe="paper", inputs=["gm"], transform={"name": "coronal_slices", "center": 50}
    )
    settings = _paper("rao_2d", train, resolution=2.0)
    assert settings["transform"] == {
        "name": "coronal_slices",
        "center": 50,
        "count": 1,
        "size": 160,
    }
    assert settings["model_options"]["dropout"] == 0.0
    dyn = _paper("dynimg_vgg11_att", _train(recipe="paper", inputs=["t1w"]), resolution=2.0)
    assert dyn["transform"] == {
        "name": "dynamic_image",
        "axis": "z",
        "repeat_channels": 3,
        "size": 110,
    }
    assert (dyn["batch_size"], dyn["epochs"], dyn["model_options"]["dropout"]) == (16, 150, 0.5)


# the 3D baselines' 110^3 volumes are on no grid of the project (refused, tested below)
@pytest.mark.parametrize("model", sorted(m for m in MODELS if m not in ("vgg3d", "resnet3d")))
def test_paper_settings_pass_the_schema(model: str) -> None:
    recipe = RECIPES[model]
    config = _demo_config()
    config["train"].update(recipe="paper", model=model)
    if recipe.inputs:
        config["train"]["inputs"] = list(recipe.inputs)
    resolution = 1.5 if recipe.volume_shape else 2.0
    settings = _paper(model, config["train"], resolution=resolution)
    config["train"] = {**settings, "recipe": "paper"}
    config["preprocess"]["resolution"] = resolution
    validate_config(config, SCHEMA)


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", ["papers", "Paper", None, ""])
def test_unknown_recipe_name_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"train\.recipe: expected one of \['config', 'paper'\]"):
        _paper("rieke2018_3d", _train(recipe=bad))


def test_missing_recipe_and_unknown_model_error() -> None:
    train = _train()
    del train["recipe"]
    with pytest.raises(ConfigError, match="train.recipe is missing"):
        _paper("rieke2018_3d", train)
    with pytest.raises(ConfigError, match="alexnet"):
        _paper("alexnet", _train(recipe="config"))


@pytest.mark.parametrize(
    ("model", "changes", "resolution", "lateralized", "match"),
    [
        (
            "ng2018_3d",
            {"inputs": ["gm_modulated"]},
            1.5,
            False,
            r"train\.inputs: \['wm_modulated'\]",
        ),
        ("ng2018_3d", {"inputs": ["wm_modulated"]}, 4.0, False, r"preprocess\.resolution: 1\.5"),
        ("vgg3d", {"inputs": ["t1w"]}, 1.5, False, "no preprocess.resolution gives it"),
        ("dynimg_vgg11_att", {"inputs": ["t1w"]}, 1.5, False, "would crop"),
        ("eitel_baseline_3d", {}, 2.0, True, "lateralized: true"),
    ],
)
def test_paper_recipe_that_does_not_fit_the_config_errors(
    model: str, changes: dict, resolution: float, lateralized: bool, match: str
) -> None:
    train = _train(recipe="paper", **changes)
    with pytest.raises(ConfigError, match=match):
        _paper(model, train, resolution=resolution, lateralized=lateralized)


def test_schema_and_demo_name_the_recipes() -> None:
    prop = yaml.safe_load(SCHEMA.read_text())["properties"]["train"]["properties"]["recipe"]
    assert tuple(prop["enum"]) == RECIPE_NAMES and prop["default"] == "config"
    assert prop["description"]


def test_models_command_prints_each_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    from brainlens.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, recipe in RECIPES.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        following = out.splitlines()[out.splitlines().index(line) + 1]
        assert following.strip() == f"paper recipe: {recipe.brief()}", name
    assert "lr=0.0001, batch_size=2, epochs=50" in RECIPES["ng2018_3d"].brief()


def test_parse_time_modules_do_not_import_torch() -> None:
    """The DAG is parsed with these imports (common.smk, train.smk): no torch (~1 s) there;
    the model registry still loads on first use of brainlens.models.MODELS."""
    import subprocess
    import sys

    code = (
        "import sys, brainlens.config, brainlens.config_layers, brainlens.names, "
        "brainlens.models.recipes; print('torch' in sys.modules); "
        "from brainlens.models import MODELS; print('torch' in sys.modules, len(MODELS) > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr


def test_check_config_refuses_a_paper_recipe_the_config_cannot_feed() -> None:
    """The same check runs in the workflow's parse and in `brainlens check`."""
    from brainlens.config import check_config

    config = _demo_config()
    check_config(config)  # the demo's own recipe (config) is fine
    config["train"]["recipe"] = "paper"  # rieke2018_3d's paper trained on t1w
    with pytest.raises(ConfigError, match=r"train.recipe: paper.*train.inputs"):
        check_config(config)
