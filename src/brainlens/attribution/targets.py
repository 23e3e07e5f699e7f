"""Which class a map explains, and whether integrated gradients adds up.

``attribution.target`` states the class every map is computed towards, so that
"relevance for this decision" has one sign convention for every scan:

``true_class`` (default)
    the scan's true class: positive signed relevance = evidence for the correct class.
``predicted``
    the model's arg-max class on the scan.
``<class name>``
    one fixed class for every scan (e.g. ``patient``): positive = evidence for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from brainlens.attribution._common import to_model
from brainlens.errors import ConfigError

TARGET_MODES = ("true_class", "predicted")


def check_target_spec(target: str, classes: Sequence[str]) -> None:
    """Raise :class:`ConfigError` unless ``target`` is a mode or one of ``classes``."""
    if target not in TARGET_MODES and target not in list(classes):
        raise ConfigError(
            f"attribution.target: {target!r} is neither one of {list(TARGET_MODES)} nor a "
            f"class of the model (classes: {list(classes)}). Fix: use one of these"
        )


def resolve_target(
    target: str, classes: Sequence[str], true_label: str, logits: torch.Tensor
) -> int:
    """The class index one scan's map is computed towards.

    Parameters
    ----------
    target : str
        ``"true_class"``, ``"predicted"`` or a class name.
    classes : sequence of str
        The model's class names, in output order.
    true_label : str
        The scan's true class.
    logits : torch.Tensor, shape (1, n_classes)
        The model's output on the scan (for ``"predicted"``).

    Returns
    -------
    int
    """
    check_target_spec(target, classes)
    names = list(classes)
    if target == "true_class":
        if true_label not in names:
            raise ConfigError(
                f"attribution.target: true class {true_label!r} is not a class of the model "
                f"({names}). Fix: retrain on these labels or set attribution.target"
            )
        return names.index(true_label)
    if target == "predicted":
        return int(torch.argmax(logits[0]).item())
    return names.index(target)


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits (1, n_classes) on one sample (no gradient, eval mode)."""
    model.eval()
    with torch.no_grad():
        return model(to_model(model, x)).detach().cpu()


def completeness(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor | float,
    target: int,
    attribution_sum: float,
) -> dict[str, float]:
    """Completeness of integrated gradients: sum of attributions vs the logit change.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor, shape (1, C, *spatial)
        The model input.
    baseline : torch.Tensor of shape (1, C, *spatial), or float
        The baseline input used.
    target : int
    attribution_sum : float
        Sum of the attributions over all input voxels and channels.

    Returns
    -------
    dict
        ``logit_delta`` (logit_target(x) - logit_target(baseline)), ``attribution_sum``,
        ``completeness_error`` (sum - delta) and ``completeness_rel_error``
        (|error| / |delta|; NaN when the logit does not change).
    """
    base = baseline if isinstance(baseline, torch.Tensor) else torch.full_like(x, float(baseline))
    delta = float(logits_of(model, x)[0, target] - logits_of(model, base)[0, target])
    err = float(attribution_sum) - delta
    rel = abs(err) / abs(delta) if abs(delta) > 1e-8 else float("nan")
    return {
        "logit_delta": delta,
        "attribution_sum": float(attribution_sum),
        "completeness_error": err,
        "completeness_rel_error": float(np.float64(rel)),
    }


__all__ = [
    "TARGET_MODES",
    "check_target_spec",
    "completeness",
    "logits_of",
    "resolve_target",
]
