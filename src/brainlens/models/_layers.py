"""Shape arithmetic and small building blocks shared by the model families.

Every model computes the sizes of its dense layers from ``in_shape`` with the
pure integer functions below (no dummy forward pass, so building a model for a
1 mm grid costs no memory), and checks the input is large enough with
:func:`require_spatial`, which reports the minimum size in its error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from brainlens.errors import ModelError


def conv_out(n: int, kernel: int = 3, stride: int = 1, padding: int = 0) -> int:
    """Length of one spatial axis after a convolution (0 if the input is too short)."""
    if n <= 0:
        return 0
    return max(0, (n + 2 * padding - kernel) // stride + 1)


def pool_out(n: int, kernel: int = 2, stride: int | None = None, *, ceil: bool = False) -> int:
    """Length of one spatial axis after max pooling (no padding).

    ``ceil=False`` is PyTorch's default (floor): trailing positions that do not fill a
    window are dropped, so the model never sees them. ``ceil=True`` matches
    ``ceil_mode=True``: a last, partial window covers them (a window must still
    start inside the input).
    """
    stride = kernel if stride is None else stride
    if n <= 0:
        return 0
    if not ceil:
        return 0 if n < kernel else (n - kernel) // stride + 1
    out = (n - kernel + stride - 1) // stride + 1
    if (out - 1) * stride >= n:
        out -= 1
    return max(out, 0)


def minimum_size(axis_fn: Callable[[int], int], needed: int = 1, limit: int = 4096) -> int:
    """Smallest input length ``n`` with ``axis_fn(n) >= needed``.

    Parameters
    ----------
    axis_fn : callable
        Maps the input length of one spatial axis to the length of the last feature map.
    needed : int
        Required length of the last feature map along that axis.
    limit : int
        Search bound.

    Returns
    -------
    int
        The minimum input length.
    """
    for n in range(1, limit + 1):
        if axis_fn(n) >= needed:
            return n
    raise ModelError(f"no input length up to {limit} reaches a feature map of length {needed}")


def require_spatial(
    model: str,
    spatial: Sequence[int],
    axis_fn: Callable[[int], int],
    needed: Sequence[int] | int = 1,
) -> tuple[int, ...]:
    """Feature-map shape for ``spatial``, or a :class:`ModelError` that names the minimum.

    Parameters
    ----------
    model : str
        Registry name, used in the message.
    spatial : sequence of int
        Spatial part of ``in_shape``.
    axis_fn : callable
        Per-axis map from input length to last feature-map length.
    needed : int or sequence of int
        Minimum feature-map length per axis.

    Returns
    -------
    tuple of int
        Last feature-map length per axis.
    """
    needs = [needed] * len(spatial) if isinstance(needed, int) else list(needed)
    out = tuple(axis_fn(int(n)) for n in spatial)
    for axis, (n, o, need) in enumerate(zip(spatial, out, needs, strict=True)):
        if o < need:
            minimum = minimum_size(axis_fn, need)
            raise ModelError(
                f"model {model!r}: in_shape spatial size {tuple(spatial)} is too small along "
                f"spatial axis {axis}: expected at least {minimum} voxels, got {n}. Fix: use a "
                f"larger grid (e.g. the 2 mm MNI grid 91x109x91) or pad the input to >= {minimum}."
            )
    return out


def check_positive_int(model: str, option: str, value: object) -> int:
    """Validate an integer option that must be >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(
            f"model {model!r}: option {option}={value!r} is invalid: expected a positive "
            f"integer. Fix: pass e.g. {option}=8."
        )
    return value


def check_probability(model: str, option: str, value: object) -> float:
    """Validate a dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ModelError(
            f"model {model!r}: option {option}={value!r} is invalid: expected a float in "
            f"[0, 1). Fix: pass e.g. {option}=0.5."
        )
    return float(value)


def check_bool(model: str, option: str, value: object) -> bool:
    """Validate a true/false option (no 0/1 or strings)."""
    if not isinstance(value, bool):
        raise ModelError(
            f"model {model!r}: option {option}={value!r} is invalid: expected true or false. "
            f"Fix: pass {option}=true."
        )
    return value


def check_int_tuple(model: str, option: str, value: object, length: int | None = None) -> tuple:
    """Validate a tuple/list of positive ints (optionally of a given length)."""
    ok = isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    )
    if ok and length is not None:
        ok = len(value) == length
    if not ok or len(value) == 0:
        want = f"{length} positive integers" if length else "a non-empty list of positive integers"
        raise ModelError(
            f"model {model!r}: option {option}={value!r} is invalid: expected {want}. "
            f"Fix: pass a list such as {[8] * (length or 2)}."
        )
    return tuple(int(v) for v in value)


def conv_bn_relu_3d(in_ch: int, out_ch: int, padding: int = 1) -> nn.Sequential:
    """Conv3d(3x3x3) -> BatchNorm3d -> ReLU (ReLU as a module, not in place)."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=padding),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=False),
    )


def glorot_init(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform weights and zero biases for conv and dense layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def prod(values: Sequence[int]) -> int:
    """Product of integers."""
    out = 1
    for v in values:
        out *= int(v)
    return out
