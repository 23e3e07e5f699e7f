"""The training view of packed inputs: :class:`PackedDataset` (a torch Dataset).

:mod:`brainlens.packing` writes and opens packs without torch (the ``pack`` rule does
not need it); this module stacks several opened packs as channels and serves float32
batches on a device, never decoding NIfTI. With ``confounds`` (an audited
:class:`brainlens.confounds.inputs.InputConfounds`) every sample is harmonised as it
is read, before augmentation and the 3D->2D transform, so training, validation, test
and a preloaded copy all hold the harmonised maps (float32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from brainlens.errors import ConfigError
from brainlens.packing import PackSpec, open_packs

__all__ = ["PackedDataset"]


class PackedDataset(torch.utils.data.Dataset):
    """Samples read from one or more packs, stacked as channels.

    Parameters
    ----------
    packs : mapping of str to Pack or (npy, index)
        Inputs in channel order, e.g. ``{"gm_modulated": (npy, tsv), "t1w": (...)}``.
    scan_ids : sequence of str, length N
        The scans of this dataset (e.g. one role of one fold).
    labels : sequence of int, length N, optional
        Class indices; ``__getitem__`` then returns ``(x, y)``, else ``x`` only.
    transform : callable, optional
        Applied per sample to a float32 tensor (C, X, Y, Z) (e.g. the 3D->2D step of
        a 2D model, giving (C', H, W)).
    preload : bool or "auto"
        Copy the selected rows into one tensor (N, C, X, Y, Z) of the pack dtype on
        ``device``. ``"auto"``: only on CUDA, and only if it takes under half of the
        free GPU memory. Without preloading, batches are read from the memory maps.
    device : str or torch.device
        Where :meth:`batch` puts its output (and a preloaded tensor).
    cache_transformed : bool
        Keep transformed samples after their first use, for batches without
        augmentation (validation/test every epoch; training when not augmenting).
        The 2D images of a 3D->2D transform are small; this skips the transform
        after the first epoch.
    confounds : InputConfounds, optional
        The fold's in-fold confound removal
        (:func:`brainlens.confounds.inputs.open_input_confounds`): each sample ``x``
        (C, X, Y, Z) of scan ``s`` is read as ``confounds.apply(x, s)`` (float32).
    """

    def __init__(
        self,
        packs: PackSpec,
        scan_ids: Sequence[str],
        labels: Sequence[int] | None = None,
        *,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        preload: bool | str = False,
        device: str | torch.device = "cpu",
        cache_transformed: bool = True,
        confounds: Any | None = None,
    ) -> None:
        self.packs = open_packs(packs)
        self.confounds = confounds
        self.inputs = list(self.packs)
        self.scan_ids = [str(s) for s in scan_ids]
        self.rows = np.stack([p.rows(self.scan_ids) for p in self.packs.values()])  # (C, N)
        self.labels = (
            None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        )
        if self.labels is not None and len(self.labels) != len(self.scan_ids):
            raise ConfigError(
                f"PackedDataset: {len(self.labels)} labels for {len(self.scan_ids)} scans"
            )
        self.transform = transform
        self.device = torch.device(device)
        self.data: torch.Tensor | None = None
        self.cache_transformed = bool(cache_transformed) and transform is not None
        self._cache: torch.Tensor | None = None  # (N, C', H, W) on device
        self._cached: torch.Tensor | None = None  # (N,) bool, on CPU
        if preload == "auto":
            preload = (
                self.device.type == "cuda"
                and self.nbytes < 0.5 * torch.cuda.mem_get_info(self.device)[0]
            )
        elif preload not in (True, False):
            raise ConfigError(f"preload: expected True, False or 'auto', got {preload!r}")
        if preload:
            self.data = self._read(np.arange(len(self.scan_ids))).to(self.device)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Spatial shape (X, Y, Z)."""
        return next(iter(self.packs.values())).shape

    @property
    def affine(self) -> np.ndarray:
        """Grid affine, shape (4, 4)."""
        return next(iter(self.packs.values())).affine

    @property
    def nbytes(self) -> int:
        """Bytes of all selected samples in the pack dtype."""
        item = 4 if self.confounds is not None else self._dtype.itemsize
        return int(len(self.scan_ids) * len(self.inputs) * np.prod(self.grid_shape) * item)

    @property
    def _dtype(self) -> np.dtype:
        return next(iter(self.packs.values())).array.dtype

    def __len__(self) -> int:
        return len(self.scan_ids)

    def _read(self, idx: np.ndarray) -> torch.Tensor:
        """Rows ``idx`` of every pack, shape (B, C, X, Y, Z), in the pack dtype (CPU).

        With ``confounds``: harmonised, float32.
        """
        first = next(iter(self.packs.values()))
        out = np.empty((len(idx), len(self.packs), *first.shape), dtype=first.array.dtype)
        for c, pack in enumerate(self.packs.values()):
            rows = self.rows[c, idx]
            for i in np.argsort(rows, kind="stable"):  # sequential reads from the memmap
                out[i, c] = pack.array[rows[i]]
        if self.confounds is not None:
            out = self.confounds.apply_many(out, [self.scan_ids[i] for i in idx])
        return torch.from_numpy(out)

    def batch(
        self,
        idx: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """A float32 batch on ``self.device``: read, augment (3D), then transform.

        Parameters
        ----------
        idx : sequence of int, length B
            Sample positions in this dataset.
        augment : callable, optional
            Batch augmentation on (B, C, X, Y, Z), applied before the transform.

        Returns
        -------
        Tensor, shape (B, C, X, Y, Z), or (B, C', H, W) after a 3D->2D transform
        """
        idx_np = np.asarray(torch.as_tensor(idx).cpu(), dtype=np.int64)
        if augment is None and self.cache_transformed:
            return self._cached_batch(idx_np)
        return self._batch(idx_np, augment)

    def _batch(
        self, idx_np: np.ndarray, augment: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> torch.Tensor:
        if self.data is not None:
            x = self.data[torch.as_tensor(idx_np, device=self.data.device)]
        else:
            x = self._read(idx_np)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device, dtype=torch.float32)
        if augment is not None:
            x = augment(x)
        if self.transform is not None:
            x = torch.stack([self.transform(s) for s in x])
        return x

    def _cached_batch(self, idx_np: np.ndarray) -> torch.Tensor:
        if self._cached is None:
            self._cached = torch.zeros(len(self), dtype=torch.bool)
        todo = np.unique(idx_np[~self._cached[torch.from_numpy(idx_np)].numpy()])
        if len(todo):
            fresh = self._batch(todo, None)
            if self._cache is None:
                self._cache = torch.empty(
                    (len(self), *fresh.shape[1:]), dtype=fresh.dtype, device=fresh.device
                )
            self._cache[torch.as_tensor(todo, device=fresh.device)] = fresh
            self._cached[torch.from_numpy(todo)] = True
        return self._cache[torch.as_tensor(idx_np, device=self._cache.device)]

    def targets(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Labels of ``idx`` on ``self.device``, shape (B,)."""
        if self.labels is None:
            raise ConfigError("PackedDataset: no labels were given")
        return self.labels[torch.as_tensor(idx).cpu()].to(self.device)

    def __getitem__(self, i: int):
        x = self.batch([i])[0].cpu()
        if self.labels is None:
            return x
        return x, self.labels[i]
