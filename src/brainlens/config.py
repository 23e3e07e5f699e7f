"""Checks of a workflow configuration that a JSON schema cannot express.

The workflow validates the config against ``workflow/schemas/config.schema.yaml``
first (types, ranges, allowed values), then calls :func:`check_config` with the
resulting dict. Both run before any job, so a bad value never costs compute.
This module takes a plain dict; it never reads files itself.
"""

from __future__ import annotations

from typing import Any

from brainlens.errors import ConfigError


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

    Checks model names against :data:`brainlens.models.MODELS`, atlas names against
    :func:`brainlens.atlases.available_atlases`, the demo's ground-truth region against
    its atlas, per-model attribution method sets against ``train.model``, and
    left-right flips against ``lateralized``.
    """
    from brainlens.atlases import available_atlases, load_atlas, region_label
    from brainlens.attribution.methods import method_base
    from brainlens.models import MODELS

    for name in model_names(config):
        if name not in MODELS:
            raise ConfigError(f"train.model: unknown model {name!r}; allowed: {sorted(MODELS)}")
    atlases = available_atlases()
    for atlas in config["regions"]["atlases"]:
        if atlas not in atlases:
            raise ConfigError(
                f"regions.atlases: unknown atlas {atlas!r}; allowed here: {sorted(atlases)}"
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
        if demo["atlas"] not in atlases:
            raise ConfigError(
                f"demo.atlas: unknown atlas {demo['atlas']!r}; allowed here: {sorted(atlases)}"
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
