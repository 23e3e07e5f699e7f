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
KEYS = ("flip", "shift")


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


def _per_axis(value: Any, key: str, kind: type) -> tuple:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(AXES))
        if unknown:
            raise ConfigError(
                f"augmentation.{key}: unknown axis {unknown}; expected keys among {list(AXES)}"
            )
        vals = tuple(value.get(a, 0) for a in AXES)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        vals = (value,) * 3 if key == "shift" else None
        if vals is None:
            raise ConfigError(
                f"augmentation.flip: expected a mapping axis -> probability, e.g. "
                f"{{'x': 0.5}}, got {value!r}"
            )
    else:
        raise ConfigError(f"augmentation.{key}: expected a mapping per axis, got {value!r}")
    try:
        vals = tuple(kind(v) for v in vals)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"augmentation.{key}: expected numbers, got {value!r}") from err
    return vals


def make_augmenter(
    augmentation: Mapping[str, Any] | None, *, lateralized: bool
) -> Augmenter | None:
    """Validate an augmentation config and build the augmenter.

    Parameters
    ----------
    augmentation : mapping or None
        ``{"flip": {"x": 0.5, "y": 0.0, "z": 0.0}, "shift": 2}``; ``shift`` may also be a
        per-axis mapping. Missing axes default to 0. ``None`` or ``{}``: no augmentation.
    lateralized : bool
        The task depends on the side of the brain; a left-right (``x``) flip is refused.

    Returns
    -------
    Augmenter or None
        ``None`` when nothing would change the data.

    Raises
    ------
    ConfigError
        Unknown keys or axes, probabilities outside [0, 1], negative shifts, or an
        ``x`` flip with ``lateralized=True``.
    """
    if not augmentation:
        return None
    if not isinstance(augmentation, Mapping):
        raise ConfigError(f"augmentation: expected a mapping, got {augmentation!r}")
    unknown = sorted(set(augmentation) - set(KEYS))
    if unknown:
        raise ConfigError(f"augmentation: unknown key(s) {unknown}; expected among {list(KEYS)}")
    flip = _per_axis(augmentation.get("flip", {}), "flip", float)
    shift = _per_axis(augmentation.get("shift", 0), "shift", int)
    if any(not 0.0 <= p <= 1.0 for p in flip):
        raise ConfigError(f"augmentation.flip: probabilities must lie in [0, 1], got {flip}")
    if any(s < 0 for s in shift):
        raise ConfigError(f"augmentation.shift: expected voxels >= 0, got {shift}")
    if lateralized and flip[0] > 0:
        raise ConfigError(
            f"augmentation.flip.x={flip[0]}: a left-right flip swaps the hemispheres, but the "
            "task is lateralized (lateralized=True), so it would corrupt the labels. Fix: set "
            "the x flip probability to 0 (y/z flips and shifts are fine)"
        )
    if not any(flip) and not any(shift):
        return None
    return Augmenter(flip=flip, shift=shift)  # type: ignore[arg-type]
