"""Which input voxels can a model see at all? (its field of view on a given grid)

A CNN whose pooling drops trailing positions (floor rounding) or whose crops cut
the feature maps never looks at some voxels of its input: their values cannot
change the output, whatever the weights. Every attribution method then gives them
zero (or interpolated) relevance, region tables rank the regions there last, and
a map comparison that includes them counts the shared zeros as agreement.

:func:`field_of_view` finds these voxels exactly, without assumptions about the
layers, by NaN propagation: a NaN placed in the input reaches the output through
every convolution, normalisation, activation, pooling window and dense layer that
reads it (NaN times a zero weight is still NaN), and never through one that does
not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from brainlens.errors import ModelError


def _reaches_output(
    model: nn.Module, in_shape: tuple[int, ...], axis: int, lo: int, hi: int
) -> bool:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros((1, *in_shape), device=device)
    index: list[slice] = [slice(None)] * len(in_shape)
    index[1 + axis] = slice(lo, hi)
    x[(slice(None), *index)] = float("nan")
    with torch.no_grad():
        return bool(torch.isnan(model(x)).any())


def field_of_view(model: nn.Module, in_shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Index range along each spatial axis whose voxels can change the model's output.

    Per axis, binary searches over slabs of NaN find the first and the last index
    that reaches the output: 3 forward passes of one sample per axis when the first
    and the last voxel are seen, up to about 2 log2(n) + 3 otherwise.
    The model is evaluated in ``eval`` mode (its mode is restored afterwards).

    Parameters
    ----------
    model : nn.Module
        Maps a batch (N, *in_shape) to outputs (N, ...).
    in_shape : sequence of int
        One sample, (C, *spatial), e.g. (1, 91, 109, 91).

    Returns
    -------
    tuple of (int, int)
        Per spatial axis, ``(start, stop)``: voxels ``start <= i < stop`` are seen.
        The whole axis is ``(0, n)``. The field of view is the box of these ranges;
        indices inside a range are assumed seen (true for convolution and pooling
        stacks whose windows do not skip positions, i.e. kernel >= stride).

    Raises
    ------
    ModelError
        If no voxel reaches the output (the output does not depend on the input,
        or the model removes NaNs, e.g. with ``nan_to_num``).
    """
    in_shape = tuple(int(n) for n in in_shape)
    if len(in_shape) < 2 or any(n < 1 for n in in_shape):
        raise ModelError(f"field_of_view: in_shape {in_shape}: expected (C, *spatial) positive")
    was_training = model.training
    model.eval()
    try:
        ranges = []
        for axis, n in enumerate(in_shape[1:]):
            if not _reaches_output(model, in_shape, axis, 0, n):
                raise ModelError(
                    f"field_of_view: no input voxel reaches the output of "
                    f"{type(model).__name__} (NaNs along axis {axis} are not propagated): "
                    "the output does not depend on the input, or the model replaces NaNs"
                )
            # first seen index: smallest i such that slab [0, i + 1) reaches the output
            # (the first voxel itself is checked first: most models see the whole axis)
            a, b = 0, (0 if _reaches_output(model, in_shape, axis, 0, 1) else n - 1)
            while a < b:
                mid = (a + b) // 2
                if _reaches_output(model, in_shape, axis, 0, mid + 1):
                    b = mid
                else:
                    a = mid + 1
            start = a
            # last seen index: largest i such that slab [i, n) reaches the output
            a, b = start, n - 1
            if _reaches_output(model, in_shape, axis, n - 1, n):
                a = n - 1  # the last voxel itself is seen
            while a < b:
                mid = (a + b + 1) // 2
                if _reaches_output(model, in_shape, axis, mid, n):
                    a = mid
                else:
                    b = mid - 1
            ranges.append((start, a + 1))
        return tuple(ranges)
    finally:
        model.train(was_training)


def field_of_view_mask(model: nn.Module, in_shape: Sequence[int]) -> np.ndarray:
    """Boolean mask of the voxels the model can see (see :func:`field_of_view`).

    Returns
    -------
    np.ndarray of bool, shape in_shape[1:]
    """
    ranges = field_of_view(model, in_shape)
    mask = np.zeros(tuple(int(n) for n in in_shape[1:]), dtype=bool)
    mask[tuple(slice(a, b) for a, b in ranges)] = True
    return mask
