"""Static tables of the registries' names and options, for checks before any job.

The workflow checks the configuration when Snakemake parses it (before any job
runs), and ``brainlens check`` runs the same checks. Importing the real registries
(:data:`brainlens.models.MODELS`, :data:`brainlens.attribution.methods.METHODS`)
would import torch and captum at that point, which takes seconds and needs the
training environment. This module holds the same names and options as plain
tables; ``tests/test_parse_checks.py`` checks that they agree with the registries,
so a model or method added there must be added here too.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

from brainlens.errors import ConfigError

#: Model name -> keyword options of its builder (``ModelSpec.default_options()``).
MODEL_OPTIONS: Final = MappingProxyType(
    {
        "avgpool_vgg11": ("attention", "dropout", "pretrained", "width"),
        "dynimg_vgg11_att": ("attention", "dropout", "pretrained", "width"),
        "eitel_baseline_3d": ("dropout", "filters"),
        "maxpool_vgg11": ("attention", "dropout", "pretrained", "width"),
        "ng2018_3d": ("dropout",),
        "pif_3d": ("dropout", "filters", "grid", "pif_filters"),
        "rao_2d": ("dropout",),
        "rao_2d_deep": ("dropout",),
        "resnet3d": ("dropout", "width"),
        "rieke2018_3d": ("dropout", "dropout2", "pool_ceil", "pool_sizes"),
        "vgg3d": ("dropout", "width"),
    }
)

#: Method name -> keyword options of its function (``MethodSpec.options()``).
METHOD_OPTIONS: Final = MappingProxyType(
    {
        "cam_ng2018": ("layer",),
        "gradcam": ("layer", "relu"),
        "gradients": (),
        "guided_backprop": (),
        "integrated_gradients": ("n_steps", "baseline", "internal_batch_size"),
        "layer_maps": ("layers", "kind"),
        "occlusion": ("patch", "stride", "baseline", "output", "batch_size"),
        "region_occlusion": (
            "atlas_labels",
            "background_label",
            "baseline",
            "output",
            "batch_size",
        ),
    }
)

#: Options a method key may carry in the config beyond its function's own: the
#: workflow turns ``atlas`` into ``atlas_labels`` (``brainlens.attribution.fold``).
CONFIG_METHOD_OPTIONS: Final = MappingProxyType({"region_occlusion": ("atlas",)})

#: ``attribution.target`` values other than a class name
#: (:data:`brainlens.attribution.targets.TARGET_MODES`).
TARGET_MODES: Final = ("true_class", "predicted")

#: Methods that return one map per layer and so cannot be run by the workflow.
DICT_METHODS: Final = frozenset({"layer_maps"})

#: ``<method>@<label>``: a second configured instance of a method (as in
#: :func:`brainlens.attribution.methods.method_base`).
_METHOD_KEY = re.compile(r"^([a-z0-9_]+)(@[A-Za-z0-9_-]+)?$")


def method_base(key: str) -> str:
    """The method of a configured method key (``"gradcam@b2"`` -> ``"gradcam"``), torch-free.

    Raises :class:`~brainlens.errors.ConfigError` for malformed keys or unknown methods.
    """
    match = _METHOD_KEY.match(key) if isinstance(key, str) else None
    if match is None or match.group(1) not in METHOD_OPTIONS:
        raise ConfigError(
            f"attribution method: expected one of {sorted(METHOD_OPTIONS)}, optionally "
            f"followed by '@<label>' (letters, digits, '_', '-'), got {key!r}"
        )
    return match.group(1)
