"""Where and how reproducibly torch runs: device resolution, threads, deterministic flags.

:func:`torch_settings` sets the global torch switches for one training call and puts
back the previous values when it ends (also on an error), so a caller's settings are
not changed by :func:`brainlens.training.train_fold`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from brainlens.errors import ConfigError

__all__ = ["resolve_device", "torch_settings"]


def resolve_device(device: str) -> torch.device:
    """The torch device of a ``device`` setting.

    Parameters
    ----------
    device : str
        "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:1", ...

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        A CUDA device was asked for where CUDA is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r}: CUDA is not available here. Fix: use 'auto' or 'cpu'"
        )
    return dev


@contextmanager
def torch_settings(
    device: torch.device, *, deterministic: bool, num_threads: int | None
) -> Iterator[None]:
    """Set threads and deterministic algorithms for the block; restore them after.

    Parameters
    ----------
    device : torch.device
        On CUDA: cuDNN deterministic (benchmark off) and
        ``use_deterministic_algorithms(..., warn_only=True)``, and
        ``CUBLAS_WORKSPACE_CONFIG`` set if unset; on CPU deterministic algorithms are
        enforced (an op without a deterministic version raises).
    deterministic : bool
        Whether to ask for deterministic algorithms at all.
    num_threads : int, optional
        CPU threads for torch in the block; None keeps the current number.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.get_num_threads(),
    )
    try:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = bool(deterministic)
            torch.backends.cudnn.benchmark = not deterministic
            torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
        else:
            torch.use_deterministic_algorithms(bool(deterministic))
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic = saved[2]
        torch.backends.cudnn.benchmark = saved[3]
        torch.set_num_threads(saved[4])
