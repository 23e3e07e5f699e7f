"""The layers of a workflow configuration: which file says what, and what replaces what.

The config the workflow runs with is, lowest layer first:

1. the defaults of ``workflow/schemas/config.schema.yaml`` (added by the validation,
   :func:`brainlens.config.validate_config` or Snakemake's ``validate``);
2. ``config/demo.yaml``, the demo's settings, only when the user's config gives no
   dataset (``bids_dir`` absent or null, :func:`uses_demo`);
3. the user's config: Snakemake's ``--configfile`` files (merged with each other as
   Snakemake merges them) and ``--config`` values.

Layer 3 goes on top of layer 2 key by key (:func:`layer_config`), except the mappings
of :data:`REPLACED_MAPPINGS`, which a user's value replaces as a whole. The workflow
(``workflow/rules/common.smk``) and ``brainlens check`` both call :func:`resolve_config`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from brainlens.errors import ConfigError

#: Mappings whose keys the user names (methods, options, scans): a user's value replaces
#: the lower layer's (the demo's) as a whole instead of being merged into it, so that
#: ``attribution.methods: {gradients: {}}`` means one method. Every other mapping (the
#: sections ``train``, ``folds``, ...) is merged key by key.
REPLACED_MAPPINGS: tuple[tuple[str, ...], ...] = (
    ("exclude_scans",),
    ("t1w_filters",),
    ("train", "model_options"),
    ("train", "transform"),
    ("attribution", "methods"),
    ("attribution", "model_methods"),
    ("attribution", "sanity", "overrides"),
)
#: A user's ``attribution.methods`` also drops the lower layer's ``model_methods`` (which
#: would otherwise replace the new set for its models); give both to keep per-model sets.
DROPPED_WITH: dict[tuple[str, ...], tuple[str, ...]] = {
    ("attribution", "methods"): ("attribution", "model_methods"),
}


def layer_config(base: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``user`` on top of ``base``: mappings merged, :data:`REPLACED_MAPPINGS` replaced.

    Parameters
    ----------
    base : dict
        The lower layer (the demo's settings); not changed.
    user : dict
        The user's config (Snakemake's ``--configfile`` files and ``--config`` values);
        not changed.

    Returns
    -------
    dict
        A new dict: every key of ``user`` wins; a mapping of both layers is merged key by
        key unless its path is in :data:`REPLACED_MAPPINGS`, where the user's replaces
        the base's; a path of :data:`DROPPED_WITH` given by the user removes the other
        path from the base (the schema's default applies unless the user gives it).
    """
    out = copy.deepcopy(base)
    for given, dropped in DROPPED_WITH.items():
        if _has(user, given) and not _has(user, dropped):
            _pop(out, dropped)
    _merge(out, copy.deepcopy(user), ())
    return out


def _merge(out: dict[str, Any], user: dict[str, Any], path: tuple[str, ...]) -> None:
    for key, value in user.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if here not in REPLACED_MAPPINGS:
                _merge(out[key], value, here)
                continue
        out[key] = value


def _has(config: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return False
        config = config[key]
    return True


def _pop(config: dict[str, Any], path: tuple[str, ...]) -> None:
    if _has(config, path):
        del _get(config, path[:-1])[path[-1]]


def _get(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        config = config[key]
    return config


def uses_demo(user: dict[str, Any]) -> bool:
    """True when the user's config gives no dataset (``bids_dir`` absent or null)."""
    return user.get("bids_dir") is None


def resolve_config(user: dict[str, Any], demo_path: str | Path) -> dict[str, Any]:
    """The config the workflow runs with, before the schema adds its defaults.

    Layers, lowest first: the schema's defaults (added afterwards by the validation);
    ``config/demo.yaml`` (``demo_path``), only when the user gives no ``bids_dir``
    (:func:`uses_demo`); the user's config (:func:`layer_config`: a user's method set,
    options or scan list replaces the demo's). With a ``bids_dir`` the demo's file is
    not read: the user's config and the schema's defaults are the whole config.

    Parameters
    ----------
    user : dict
        The user's config (``--configfile`` files and ``--config`` values; may be empty).
    demo_path : path
        The demo's settings, ``config/demo.yaml`` of the checkout.

    Returns
    -------
    dict
        A new dict (``user`` is not changed).

    Raises
    ------
    ConfigError
        ``demo_path`` missing or not a YAML mapping.
    """
    if not uses_demo(user):
        return copy.deepcopy(dict(user))
    import yaml

    path = Path(demo_path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: the demo's settings are missing (no bids_dir given, so the demo "
            "runs). Fix: restore config/demo.yaml from the repository, or set bids_dir"
        )
    demo = yaml.safe_load(path.read_text()) or {}
    if not isinstance(demo, dict):
        raise ConfigError(f"{path}: expected a YAML mapping, got {type(demo).__name__}")
    return layer_config(demo, dict(user))
