"""CNN models of the brainlens papers and 3D baselines, behind one registry.

Use :func:`build_model` with a name from :data:`MODELS`. Every model returns logits
(N, n_classes), has a ``cam_layer`` attribute (module whose output is the last convolutional
feature map), uses ``nn.ReLU(inplace=False)`` modules and no in-place ops on activations.

The names below are loaded on first use, so importing a torch-free submodule
(:mod:`brainlens.models.recipes`, read while the workflow's DAG is parsed) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_LAZY = {
    "MODELS": "registry",
    "ModelSpec": "registry",
    "build_model": "registry",
    "count_parameters": "registry",
    "field_of_view": "coverage",
    "field_of_view_mask": "coverage",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'brainlens.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"brainlens.models.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
