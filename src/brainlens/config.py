"""Checks of a workflow configuration that a JSON schema cannot express.

:func:`brainlens.config_layers.resolve_config` builds the config the workflow runs with
(the demo's ``config/demo.yaml`` under the user's only when no ``bids_dir`` is given);
``workflow/schemas/config.schema.yaml`` is the one source of defaults.

The workflow validates the config against ``workflow/schemas/config.schema.yaml``
first (types, ranges, allowed values), then calls :func:`check_config` with the
resulting dict, :func:`check_layers` (Grad-CAM/CAM layers, on the analysis grid) and,
once the scan table is built, :func:`check_dataset` (classes, fold feasibility,
``positive_class``). All run before any job, so a bad value never costs compute;
``brainlens check`` runs the same functions. Names and options are read from the
static tables of :mod:`brainlens.names`, so these checks import neither torch nor
captum (only :func:`check_layers` does, and only when a ``layer`` is configured).
The checks take plain dicts and tables; only :func:`validate_config` (the schema
validation for ``brainlens check``) reads a file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd

from brainlens.errors import ConfigError, DatasetError
from brainlens.feasibility import check_feasible
from brainlens.names import (
    CONFIG_METHOD_OPTIONS,
    DICT_METHODS,
    METHOD_OPTIONS,
    MODEL_OPTIONS,
    TARGET_MODES,
    method_base,
)


def model_names(config: dict[str, Any]) -> list[str]:
    """``train.model`` as a list of names."""
    model = config["train"]["model"]
    return [model] if isinstance(model, str) else list(model)


def attribution_methods(config: dict[str, Any], model: str) -> dict[str, dict[str, Any]]:
    """The attribution methods (key -> options) configured for one model.

    ``attribution.model_methods[<model>]`` replaces ``attribution.methods`` for that model
    (e.g. per-layer ``gradcam@<label>: {layer: ...}`` maps for a 2D slice model, no
    ``region_occlusion`` for it); every other model uses ``attribution.methods``.
    """
    attribution = config["attribution"]
    per_model = attribution.get("model_methods") or {}
    return dict(per_model.get(model, attribution["methods"]))


def fold_ids(config: dict[str, Any]) -> list[int]:
    """The fold (or repeat) indices the split mode produces."""
    folds = config["folds"]
    if folds["mode"] == "kfold":
        return list(range(folds["n_folds"]))
    if folds["mode"] == "repeated":
        return list(range(folds["n_repeats"]))
    return [0]


def check_config(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the key, the value and the allowed values.

    Checks model names and ``train.model_options`` against the static tables of
    :mod:`brainlens.names` (the registries' names, without importing torch), the
    attribution methods' options, ``regions.atlases`` (built-in names against
    :func:`brainlens.atlases.available_atlases`, a user's ``{name, image, labels}`` with
    :func:`brainlens.atlas_custom.check_atlases`), ``baselines.atlas``, the demo's
    ground-truth region against its atlas, per-model attribution method sets against
    ``train.model``, left-right flips against ``lateralized``, and ``train.recipe`` (a
    paper recipe whose input or grid the config does not provide).
    """
    from brainlens.atlas_custom import check_atlases
    from brainlens.atlases import available_atlases, load_atlas, region_label
    from brainlens.confounds.infold import check_confounds_config
    from brainlens.models.recipes import train_params

    check_confounds_config(config)  # covariates, confounds (and the moved baselines key)
    for name in model_names(config):
        if name not in MODEL_OPTIONS:
            raise ConfigError(
                f"train.model: unknown model {name!r}; allowed: {sorted(MODEL_OPTIONS)}"
            )
    _check_model_options(config)
    for name in model_names(config):
        train_params(config, name)  # train.recipe: paper needs the paper's input and grid
    _check_method_options(config)
    atlases = check_atlases(config)  # built-in names and {name, image, labels} entries
    if (config.get("baselines") or {}).get("atlas") not in (None, *atlases):
        raise ConfigError(
            f"baselines.atlas: unknown atlas {config['baselines']['atlas']!r}; allowed here: "
            f"{sorted(atlases)}. Fix: name a built-in atlas or one of regions.atlases"
        )
    models = model_names(config)
    extra = sorted(set(config["attribution"].get("model_methods") or {}) - set(models))
    if extra:
        raise ConfigError(
            f"attribution.model_methods: {extra} not in train.model {models}. Fix: list them "
            "in train.model or remove their entries"
        )
    for model in models:
        for key, options in attribution_methods(config, model).items():
            if (
                method_base(key) == "region_occlusion"
                and options.get("atlas", "aal") not in atlases
            ):
                raise ConfigError(
                    f"attribution.methods.{key}.atlas (model {model}): unknown atlas "
                    f"{options.get('atlas')!r}; allowed here: {sorted(atlases)}"
                )
    baseline = config["attribution"].get("baseline") or {}
    if baseline.get("kind") == "train_control_mean" and not baseline.get("control_class"):
        raise ConfigError(
            "attribution.baseline.control_class: required by kind train_control_mean (the "
            "class whose training scans are averaged), got null. Fix: name the control "
            "class, e.g. control_class: control, or use kind: train_mean"
        )
    sanity = config["attribution"].get("sanity") or {}
    for old, new in (("scans_per_fold", "scans_per_class"), ("max_folds", "scans_per_class")):
        if old in sanity:
            raise ConfigError(
                f"attribution.sanity.{old}: removed (the checks now draw test scans of each "
                f"class from all folds). Fix: delete it and set attribution.sanity.{new} "
                "(default 10)"
            )
    if config.get("bids_dir") is None:
        demo = config["demo"]
        if demo["atlas"] not in available_atlases():  # the demo plants in a built-in one
            raise ConfigError(
                f"demo.atlas: unknown atlas {demo['atlas']!r}; allowed here: "
                f"{sorted(available_atlases())}"
            )
        _, table = load_atlas(demo["atlas"])
        region_label(table, demo["region"], atlas=demo["atlas"])
    if config.get("lateralized") and 0 in config["train"]["augmentation"]["flip_axes"]:
        raise ConfigError(
            "train.augmentation.flip_axes: a left-right flip (axis 0) is not allowed with "
            "lateralized: true (it would swap the labels' meaning). Fix: remove 0 from flip_axes"
        )
    if config["folds"]["mode"] == "kfold" and config["folds"]["n_folds"] > 20:
        raise ConfigError(f"folds.n_folds: expected 2..20, got {config['folds']['n_folds']}")


def _check_model_options(config: dict[str, Any]) -> None:
    """``train.model_options`` must be options of every configured model."""
    options = config["train"].get("model_options") or {}
    for model in model_names(config):
        unknown = sorted(set(options) - set(MODEL_OPTIONS[model]))
        if unknown:
            raise ConfigError(
                f"train.model_options: unknown option(s) {unknown} for model {model!r}; "
                f"allowed: {sorted(MODEL_OPTIONS[model])}. Fix: remove or rename them (the "
                "options apply to every model in train.model)"
            )


def _check_method_options(config: dict[str, Any]) -> None:
    """Every configured method key is known and carries only options its method takes."""
    for model in model_names(config):
        for key, options in attribution_methods(config, model).items():
            where = _method_where(config, model, key)
            try:
                base = method_base(key)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}. Fix: rename the key") from None
            if base in DICT_METHODS:
                raise ConfigError(
                    f"{where}: {base!r} returns one map per layer, which the workflow cannot "
                    "write. Fix: configure one gradcam@<label>: {layer: <module>} per layer"
                )
            allowed = (*METHOD_OPTIONS[base], *CONFIG_METHOD_OPTIONS.get(base, ()))
            unknown = sorted(set(options or {}) - set(allowed))
            if unknown:
                raise ConfigError(
                    f"{where}: unknown option(s) {unknown} of method {base!r}; allowed: "
                    f"{sorted(allowed)}. Fix: remove or rename them"
                )


def _method_where(config: dict[str, Any], model: str, key: str) -> str:
    """The config key a model's method comes from (for messages)."""
    if model in (config["attribution"].get("model_methods") or {}):
        return f"attribution.model_methods.{model}.{key}"
    return f"attribution.methods.{key} (model {model})"


def labelled_participants(config: dict[str, Any], scans: pd.DataFrame) -> pd.DataFrame:
    """One row per participant and label of the scans the workflow will use.

    Parameters
    ----------
    config : dict
        The validated config (``exclude_scans`` are left out).
    scans : DataFrame
        The scan table: ``scan``, ``participant_id`` and ``label``.

    Returns
    -------
    DataFrame
        Columns ``participant_id``, ``label``, ``n_scans``.

    Raises
    ------
    DatasetError
        A participant whose scans carry more than one label.
    """
    excluded = set(config.get("exclude_scans") or {})
    df = scans.loc[~scans["scan"].astype(str).isin(excluded), ["participant_id", "label"]]
    df = df.astype(str)
    out = df.groupby(["participant_id", "label"]).size().rename("n_scans").reset_index()
    mixed = out["participant_id"][out["participant_id"].duplicated()].unique().tolist()
    if mixed:
        raise DatasetError(
            f"label_column {config.get('label_column')!r}: participant(s) {mixed[:5]} carry "
            "more than one label. Fix: give every participant one label for all sessions"
        )
    return out


def check_dataset(config: dict[str, Any], scans: pd.DataFrame) -> pd.Series:
    """The checks that need the labels: class count, fold feasibility, positive class.

    Runs when the workflow parses the config (and in ``brainlens check``), so a split
    the ``folds`` job would refuse stops the run before any job. Participants are
    counted as in :func:`brainlens.folds.make_folds` (which also merges participants
    with identical images, found only after preprocessing, so it may still refuse a
    split this accepts).

    Parameters
    ----------
    config : dict
        The validated config.
    scans : DataFrame
        The scan table: ``scan``, ``participant_id``, ``label``.

    Returns
    -------
    Series
        Participants per class, indexed by the sorted class names.

    Raises
    ------
    ConfigError
        One class only, a class too small for the split, an unknown ``positive_class``,
        ``attribution.target`` or ``attribution.baseline.control_class``.
    """
    people = labelled_participants(config, scans)
    folds = config["folds"]
    check_feasible(
        people["label"].value_counts(),
        label_column=f"label_column {config.get('label_column')!r}",
        mode=folds["mode"],
        n_folds=folds.get("n_folds", 5),
        n_repeats=folds.get("n_repeats", 10),
        val_fraction=folds.get("val_fraction", 0.2),
        test_fraction=folds.get("test_fraction", 0.2),
    )
    counts = people["label"].value_counts().sort_index()
    classes = list(counts.index)
    positive = config.get("positive_class")
    if positive is not None and str(positive) not in classes:
        raise ConfigError(
            f"positive_class: {positive!r} is not a class of the labels; the classes are "
            f"{classes}. Fix: set positive_class to one of them, or null for the last ({classes[-1]})"
        )
    if positive is not None and len(classes) > 2:
        raise ConfigError(
            f"positive_class: {positive!r} set, but there are {len(classes)} classes "
            f"{classes}; with more than two, sensitivity etc. are one-vs-rest means over all "
            "classes. Fix: set positive_class: null"
        )
    target = config["attribution"].get("target", "true_class")
    if target not in TARGET_MODES and str(target) not in classes:
        raise ConfigError(
            f"attribution.target: {target!r} is neither one of {list(TARGET_MODES)} nor a "
            f"class of the labels {classes}. Fix: use one of them"
        )
    control = (config["attribution"].get("baseline") or {}).get("control_class")
    if control is not None and str(control) not in classes:
        raise ConfigError(
            f"attribution.baseline.control_class: {control!r} is not a class of the labels; "
            f"the classes are {classes}. Fix: set it to one of them"
        )
    return counts


def positive_class(config: dict[str, Any], classes: list[str]) -> str | None:
    """The configured positive class, else the last of the sorted ``classes`` (None if > 2)."""
    if config.get("positive_class") is not None:
        return str(config["positive_class"])
    return sorted(classes)[-1] if len(classes) == 2 else None


def _layer_of(key: str, options: dict[str, Any] | None) -> str | None:
    layer = (options or {}).get("layer")
    return None if layer is None else str(layer)


def check_layers(config: dict[str, Any]) -> None:
    """Every ``layer`` option of Grad-CAM / CAM names a module of the model.

    The models are built on the analysis grid's shape (``preprocess.resolution``,
    ``train.inputs`` channels, the 3D->2D transform of a 2D model) with
    ``train.model_options``. This needs torch, so it is imported here, and only when a
    method has a ``layer`` option; without one, nothing is built.

    Raises
    ------
    ConfigError
        A layer that the model does not have (the message lists the ones it has), or a
        grid too small for the model.
    """
    wanted = [
        (model, key, layer)
        for model in model_names(config)
        for key, options in attribution_methods(config, model).items()
        if (layer := _layer_of(key, options)) is not None
    ]
    if not wanted:
        return
    from brainlens.errors import ModelError
    from brainlens.grid import mni_grid
    from brainlens.models import MODELS, build_model
    from brainlens.transforms import output_shape

    train = config["train"]
    volume = (len(train["inputs"]), *mni_grid(float(config["preprocess"]["resolution"]))[0])
    built: dict[str, Any] = {}
    for model, key, layer in wanted:
        if model not in built:
            spec = MODELS[model]
            shape: tuple[int, ...] = volume
            if spec.ndim == 2:
                tr = dict(train.get("transform") or {})
                name = tr.pop("name", spec.transform)
                opts = tr if train.get("transform") else dict(spec.transform_options)
                shape = output_shape(name, volume, **opts)
            try:
                built[model] = build_model(
                    model, in_shape=shape, n_classes=2, **(train.get("model_options") or {})
                )
            except ModelError as err:
                raise ConfigError(f"train.model {model!r} on the analysis grid: {err}") from None
        names = [n for n, _ in built[model].named_modules() if n]
        if layer not in names:
            raise ConfigError(
                f"{_method_where(config, model, key)}.layer: model {model!r} has no module "
                f"{layer!r} (built on the analysis grid {tuple(volume[1:])}); its modules: "
                f"{names}. Fix: pick one of them (e.g. a ReLU after a convolution)"
            )


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate ``config`` against the workflow's JSON schema and fill in its defaults.

    The same as the workflow's ``snakemake.utils.validate(config, schema)``, without
    Snakemake (the package never imports it).

    Parameters
    ----------
    config : dict
        The loaded YAML config; changed in place (defaults added).
    schema_path : path
        ``workflow/schemas/config.schema.yaml``.

    Returns
    -------
    dict
        ``config``, with defaults.

    Raises
    ------
    ConfigError
        The first schema violation, naming the key path.
    """
    import jsonschema
    import yaml
    from jsonschema import validators

    schema = yaml.safe_load(Path(schema_path).read_text())
    base = validators.validator_for(schema)
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):  # noqa: ANN001, ANN202
        for name, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    validator = validators.extend(base, {"properties": set_defaults})(schema)
    try:
        validator.validate(config)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(
            f"{where}: {err.message}. Fix: see {Path(schema_path).name} for the allowed values"
        ) from None
    return config
