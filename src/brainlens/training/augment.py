"""Batch augmentation on the 3D grid: random flips per axis and small voxel shifts.

Axes are those of the analysis grid (RAS+): ``x`` = left-right, ``y`` =
posterior-anterior, ``z`` = inferior-superior. A left-right flip swaps hemispheres,
which destroys the label of a lateralized task (e.g. left vs right TLE), so it is
refused when ``lateralized=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from brainlens.errors import ConfigError

AXES = ("x", "y", "z")
KEYS = ("flip_axes", "flip_prob", "shift_voxels")


@dataclass(frozen=True)
class Augmenter:
    """Random flips and integer shifts of a batch (B, C, X, Y, Z).

    Attributes
    ----------
    flip : tuple of float
        Flip probability per axis (x, y, z).
    shift : tuple of int
        Maximum shift in voxels per axis; each sample is shifted by a uniform integer
        in [-shift, shift], filled with zeros (no wrap-around).
    """

    flip: tuple[float, float, float]
    shift: tuple[int, int, int]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch; random draws come from ``generator`` (CPU) only.

        Parameters
        ----------
        x : Tensor, shape (B, C, X, Y, Z)
        generator : torch.Generator
            CPU generator; the same state gives the same augmentation.

        Returns
        -------
        Tensor, shape (B, C, X, Y, Z)
        """
        b = x.shape[0]
        flips = torch.rand((b, 3), generator=generator) < torch.tensor(self.flip)
        hi = torch.tensor(self.shift)
        shifts = (torch.rand((b, 3), generator=generator) * (2 * hi + 1)).floor().long() - hi
        out = []
        for i in range(b):
            s = x[i]
            dims = [d + 1 for d in range(3) if flips[i, d]]
            if dims:
                s = s.flip(dims)
            if any(self.shift):
                s = _shift(s, [int(v) for v in shifts[i]])
            out.append(s)
        return torch.stack(out)


def _shift(s: torch.Tensor, shift: list[int]) -> torch.Tensor:
    """Shift (C, X, Y, Z) by integer voxels, zero-filled."""
    pad = []
    for d in (2, 1, 0):  # F.pad order: last axis first
        pad += [max(shift[d], 0), max(-shift[d], 0)]
    padded = F.pad(s, pad)
    idx = tuple(slice(max(-shift[d], 0), max(-shift[d], 0) + s.shape[d + 1]) for d in range(3))
    return padded[(slice(None), *idx)]


def _axis_index(axis: Any) -> int:
    if isinstance(axis, str) and axis in AXES:
        return AXES.index(axis)
    if isinstance(axis, int) and not isinstance(axis, bool) and 0 <= axis <= 2:
        return axis
    raise ConfigError(
        f"augmentation.flip_axes: unknown axis {axis!r}; expected 0/1/2 or 'x'/'y'/'z' "
        "(x = left-right, y = posterior-anterior, z = inferior-superior)"
    )


def _shifts(value: Any) -> tuple[int, int, int]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(AXES))
        if unknown:
            raise ConfigError(
                f"augmentation.shift_voxels: unknown axis {unknown}; expected keys among {list(AXES)}"
            )
        vals = [value.get(a, 0) for a in AXES]
    else:
        vals = [value] * 3
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in vals):
        raise ConfigError(
            f"augmentation.shift_voxels: expected an integer >= 0 (or one per axis), got {value!r}"
        )
    return tuple(vals)  # type: ignore[return-value]


def make_augmenter(
    augmentation: Mapping[str, Any] | None, *, lateralized: bool
) -> Augmenter | None:
    """Validate an augmentation config and build the augmenter.

    Parameters
    ----------
    augmentation : mapping or None
        ``{"flip_axes": ["y"], "flip_prob": 0.5, "shift_voxels": 2}``: each listed axis
        (0/1/2 or "x"/"y"/"z"; 0 = x = left-right) is flipped with probability
        ``flip_prob`` (default 0.5), independently per sample; every sample is shifted
        by up to ``shift_voxels`` voxels (an int, or ``{"x": .., "y": .., "z": ..}``).
        ``None`` or ``{}``: no augmentation.
    lateralized : bool
        The task depends on the side of the brain; a left-right (x) flip is refused.

    Returns
    -------
    Augmenter or None
        ``None`` when nothing would change the data.

    Raises
    ------
    ConfigError
        Unknown keys or axes, a probability outside [0, 1], negative shifts, or an x
        flip with ``lateralized=True``.
    """
    if not augmentation:
        return None
    if not isinstance(augmentation, Mapping):
        raise ConfigError(f"augmentation: expected a mapping, got {augmentation!r}")
    unknown = sorted(set(augmentation) - set(KEYS))
    if unknown:
        raise ConfigError(f"augmentation: unknown key(s) {unknown}; expected among {list(KEYS)}")
    axes = augmentation.get("flip_axes", []) or []
    if isinstance(axes, (str, int)):
        raise ConfigError(f"augmentation.flip_axes: expected a list of axes, got {axes!r}")
    idx = {_axis_index(a) for a in axes}
    prob = augmentation.get("flip_prob", 0.5)
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ConfigError(f"augmentation.flip_prob: expected a number in [0, 1], got {prob!r}")
    flip = tuple(float(prob) if d in idx else 0.0 for d in range(3))
    shift = _shifts(augmentation.get("shift_voxels", 0))
    if lateralized and flip[0] > 0:
        raise ConfigError(
            f"augmentation.flip_axes={list(axes)}: a left-right (x, axis 0) flip swaps the "
            "hemispheres, but the task is lateralized (lateralized=True), so it would corrupt "
            "the labels. Fix: remove x/0 from flip_axes (y/z flips and shifts are fine)"
        )
    if not any(flip) and not any(shift):
        return None
    return Augmenter(flip=flip, shift=shift)  # type: ignore[arg-type]
