"""The fast data path: preprocessed volumes packed once into memory-mapped arrays.

Decoding gzipped NIfTI costs far more than a CNN's forward pass on small data, so
each input kind (e.g. ``gm_modulated``, ``t1w``) is packed once, after
preprocessing, into

* ``<name>.npy``: an array of shape (N, X, Y, Z) (float16 by default), opened
  memory-mapped so an epoch reads only page-cached bytes;
* ``<name>.json`` (beside the ``.npy``): shape, dtype, the grid affine and the
  smoothing applied (``smooth_fwhm_mm``);
* an index TSV with columns ``row, scan_id, path``.

All files are written to temporary names and renamed, so a killed job never
leaves a half-written pack that looks complete. :class:`PackedDataset` reads
several packs as channels and never decodes NIfTI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainlens.errors import ConfigError, DatasetError, InputFileError
from brainlens.volumes import fwhm_to_sigma_voxels, load_volume, smooth_volume

DTYPES = ("float16", "float32")
INDEX_COLUMNS = ["row", "scan_id", "path"]


def sidecar_path(npy: str | Path) -> Path:
    """The JSON sidecar of a pack: ``x.npy`` -> ``x.json``."""
    return Path(npy).with_suffix(".json")


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def pack_volumes(
    paths: Sequence[str | Path],
    *,
    scan_ids: Sequence[str],
    out_npy: str | Path,
    out_index: str | Path,
    dtype: str = "float16",
    smooth_fwhm_mm: float = 0.0,
) -> None:
    """Pack NIfTI volumes on one grid into a ``.npy`` array, an index and a sidecar.

    Parameters
    ----------
    paths : sequence of path, length N
        Preprocessed 3D volumes, all with the same shape (X, Y, Z) and affine.
    scan_ids : sequence of str, length N
        Unique scan identifiers (``sub-01`` or ``sub-01_ses-02``), one per path.
    out_npy : path
        Output array, shape (N, X, Y, Z). Its sidecar ``<stem>.json`` holds the affine.
    out_index : path
        Output TSV with columns ``row, scan_id, path``.
    dtype : {"float16", "float32"}
        Storage type. float16 halves I/O; values must lie within +-65504.
    smooth_fwhm_mm : float
        Isotropic Gaussian smoothing (full width at half maximum, mm) applied to every
        volume before packing, as VBM smooths modulated tissue maps (CAT12's
        ``smwp1``). The kernel's sigma per axis is ``fwhm / sqrt(8 ln 2)`` divided by
        that axis' voxel size (from the affine). 0 packs the volumes unchanged. The
        value is recorded in the sidecar.

    Raises
    ------
    InputFileError
        A volume is missing, unreadable, not 3D, on another grid than the first one,
        non-finite, or out of the dtype's range.
    ConfigError
        Mismatched lengths, duplicate scan IDs, an unknown dtype or no volumes.
    """
    paths = [Path(p) for p in paths]
    scan_ids = [str(s) for s in scan_ids]
    if dtype not in DTYPES:
        raise ConfigError(f"pack dtype: expected one of {list(DTYPES)}, got {dtype!r}")
    if len(paths) != len(scan_ids):
        raise ConfigError(
            f"pack_volumes: {len(paths)} paths but {len(scan_ids)} scan_ids; expected one each"
        )
    if not paths:
        raise ConfigError("pack_volumes: no volumes given; expected at least one")
    fwhm = float(smooth_fwhm_mm)
    if not np.isfinite(fwhm) or fwhm < 0:
        raise ConfigError(
            f"pack smooth_fwhm_mm: expected a finite number >= 0 (mm; 0 = no smoothing), "
            f"got {smooth_fwhm_mm!r}"
        )
    dup = sorted({s for s in scan_ids if scan_ids.count(s) > 1})
    if dup:
        raise ConfigError(f"pack_volumes: duplicate scan_ids {dup[:5]}; expected unique IDs")
    out_npy, out_index = Path(out_npy), Path(out_index)
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    out_index.parent.mkdir(parents=True, exist_ok=True)
    limit = float(np.finfo(dtype).max)

    first, affine = load_volume(paths[0])
    shape = first.shape
    sigma_vox = fwhm_to_sigma_voxels(fwhm, affine)
    tmp_npy = _tmp(out_npy)
    arr = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=dtype, shape=(len(paths), *shape))
    try:
        for i, path in enumerate(paths):
            data, aff = (first, affine) if i == 0 else load_volume(path)
            if data.shape != shape:
                raise InputFileError(
                    path,
                    f"grid shape {data.shape} differs from {shape} of {paths[0].name}",
                    "resample every input onto the same analysis grid",
                )
            if not np.allclose(aff, affine, atol=1e-4):
                raise InputFileError(
                    path,
                    f"affine differs from that of {paths[0].name}:\n{aff}\nvs\n{affine}",
                    "resample every input onto the same analysis grid",
                )
            if not np.isfinite(data).all():
                raise InputFileError(
                    path,
                    f"{int((~np.isfinite(data)).sum())} non-finite voxels (nan/inf)",
                    "write 0 outside the brain in preprocessing",
                )
            peak = float(np.abs(data).max())
            if peak > limit:
                raise InputFileError(
                    path,
                    f"max |value| {peak:g} exceeds the {dtype} range {limit:g}",
                    "rescale the intensities in preprocessing or pack with dtype float32",
                )
            arr[i] = smooth_volume(data, sigma_vox) if fwhm > 0 else data
        arr.flush()
        del arr
        tmp_npy.replace(out_npy)
    except BaseException:
        tmp_npy.unlink(missing_ok=True)
        raise
    side = sidecar_path(out_npy)
    meta = {
        "shape": [len(paths), *shape],
        "dtype": dtype,
        "affine": affine.tolist(),
        "smooth_fwhm_mm": fwhm,
    }
    tmp_side = _tmp(side)
    tmp_side.write_text(json.dumps(meta, indent=1))
    tmp_side.replace(side)
    index = pd.DataFrame({"row": range(len(paths)), "scan_id": scan_ids, "path": map(str, paths)})
    tmp_index = _tmp(out_index)
    index.to_csv(tmp_index, sep="\t", index=False)
    tmp_index.replace(out_index)


@dataclass(frozen=True)
class Pack:
    """An opened pack.

    Attributes
    ----------
    array : ndarray, shape (N, X, Y, Z)
        Read-only memory map.
    index : DataFrame
        ``row, scan_id, path``.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of the grid.
    npy : Path
        The array file.
    """

    array: np.ndarray
    index: pd.DataFrame
    affine: np.ndarray
    npy: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (X, Y, Z)."""
        return tuple(self.array.shape[1:])  # type: ignore[return-value]

    def rows(self, scan_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of ``scan_ids`` (shape (len(scan_ids),)); DatasetError if absent."""
        lookup = dict(zip(self.index["scan_id"], self.index["row"], strict=True))
        missing = [s for s in scan_ids if s not in lookup]
        if missing:
            raise DatasetError(
                f"pack {self.npy}: scan(s) {missing[:5]} ({len(missing)} in all) not packed. "
                "Fix: re-run the packing step with every scan in the folds table"
            )
        return np.array([lookup[s] for s in scan_ids], dtype=np.int64)


def open_pack(npy: str | Path, index: str | Path) -> Pack:
    """Open a pack written by :func:`pack_volumes` (memory-mapped, read-only).

    Parameters
    ----------
    npy, index : path
        The array and its index TSV; the sidecar JSON must lie beside the array.

    Returns
    -------
    Pack
    """
    npy, index = Path(npy), Path(index)
    for p in (npy, index, sidecar_path(npy)):
        if not p.is_file():
            raise InputFileError(p, "pack file not found", "run the packing step first")
    try:
        array = np.load(npy, mmap_mode="r")
    except ValueError as err:
        raise InputFileError(npy, f"not a .npy array ({err})", "re-run the packing step") from err
    table = pd.read_csv(index, sep="\t", dtype={"scan_id": str, "path": str})
    if list(table.columns) != INDEX_COLUMNS:
        raise InputFileError(
            index,
            f"expected columns {INDEX_COLUMNS}, got {list(table.columns)}",
            "re-run the packing step",
        )
    if array.ndim != 4 or len(table) != array.shape[0] or (table["row"] != range(len(table))).any():
        raise InputFileError(
            index,
            f"{len(table)} index rows do not match the array of shape {array.shape}",
            "re-run the packing step (the files come from different runs)",
        )
    meta = json.loads(sidecar_path(npy).read_text())
    if list(meta["shape"]) != list(array.shape):
        raise InputFileError(
            sidecar_path(npy),
            f"shape {meta['shape']} != array shape {list(array.shape)}",
            "re-run the packing step",
        )
    return Pack(array=array, index=table, affine=np.asarray(meta["affine"]), npy=npy)


PackSpec = Mapping[str, "Pack | tuple[str | Path, str | Path]"]


def open_packs(packs: PackSpec) -> dict[str, Pack]:
    """Open several packs (input name -> Pack or (npy, index)) and check they share a grid."""
    if not packs:
        raise ConfigError("inputs: expected at least one packed input, got none")
    opened = {name: p if isinstance(p, Pack) else open_pack(*p) for name, p in packs.items()}
    names = list(opened)
    ref = opened[names[0]]
    for name in names[1:]:
        p = opened[name]
        if p.shape != ref.shape or not np.allclose(p.affine, ref.affine, atol=1e-4):
            raise InputFileError(
                p.npy,
                f"input {name!r} is on grid {p.shape} but {names[0]!r} on {ref.shape} "
                "(or their affines differ)",
                "preprocess all inputs onto the same analysis grid",
            )
    return opened


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
    ) -> None:
        self.packs = open_packs(packs)
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
        item = next(iter(self.packs.values())).array.dtype.itemsize
        return int(len(self.scan_ids) * len(self.inputs) * np.prod(self.grid_shape) * item)

    def __len__(self) -> int:
        return len(self.scan_ids)

    def _read(self, idx: np.ndarray) -> torch.Tensor:
        """Rows ``idx`` of every pack, shape (B, C, X, Y, Z), in the pack dtype (CPU)."""
        first = next(iter(self.packs.values()))
        out = np.empty((len(idx), len(self.packs), *first.shape), dtype=first.array.dtype)
        for c, pack in enumerate(self.packs.values()):
            rows = self.rows[c, idx]
            for i in np.argsort(rows, kind="stable"):  # sequential reads from the memmap
                out[i, c] = pack.array[rows[i]]
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
