"""The fast data path: preprocessed volumes packed once into memory-mapped arrays.

Decoding gzipped NIfTI costs far more than a CNN's forward pass on small data, so
each input kind (e.g. ``gm_modulated``, ``t1w``) is packed once, after
preprocessing, into

* ``<name>.npy``: an array of shape (N, X, Y, Z) (float16 by default), opened
  memory-mapped so an epoch reads only page-cached bytes;
* ``<name>.json`` (beside the ``.npy``): shape, dtype, the grid affine and the
  smoothing applied (``smooth_fwhm_mm``);
* an index TSV with columns ``row, scan_id, path``.

All files are written through :func:`brainlens._io.atomic_output`, so a killed job never
leaves a half-written pack that looks complete.
:class:`brainlens.training.dataset.PackedDataset` reads several packs as channels
and never decodes NIfTI. This module does not import torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainlens._io import atomic_output, write_text_atomic
from brainlens.errors import ConfigError, DatasetError, InputFileError
from brainlens.volumes import fwhm_to_sigma_voxels, load_volume, smooth_volume

DTYPES = ("float16", "float32")
INDEX_COLUMNS = ["row", "scan_id", "path"]


def sidecar_path(npy: str | Path) -> Path:
    """The JSON sidecar of a pack: ``x.npy`` -> ``x.json``."""
    return Path(npy).with_suffix(".json")


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
    with atomic_output(out_npy) as tmp_npy:
        arr = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=dtype, shape=(len(paths), *shape))
        for i, path in enumerate(paths):
            data, aff = (first, affine) if i == 0 else load_volume(path)
            _check_volume(path, data, aff, paths[0], shape, affine, dtype, limit)
            arr[i] = smooth_volume(data, sigma_vox) if fwhm > 0 else data
        arr.flush()
        del arr
    meta = {
        "shape": [len(paths), *shape],
        "dtype": dtype,
        "affine": affine.tolist(),
        "smooth_fwhm_mm": fwhm,
    }
    write_text_atomic(sidecar_path(out_npy), json.dumps(meta, indent=1))
    index = pd.DataFrame({"row": range(len(paths)), "scan_id": scan_ids, "path": map(str, paths)})
    with atomic_output(out_index) as tmp_index:
        index.to_csv(tmp_index, sep="\t", index=False)


def _check_volume(
    path: Path,
    data: np.ndarray,
    aff: np.ndarray,
    first: Path,
    shape: tuple[int, ...],
    affine: np.ndarray,
    dtype: str,
    limit: float,
) -> None:
    """InputFileError unless ``data`` (X, Y, Z) is on the first volume's grid, finite, in range."""
    if data.shape != shape:
        raise InputFileError(
            path,
            f"grid shape {data.shape} differs from {shape} of {first.name}",
            "resample every input onto the same analysis grid",
        )
    if not np.allclose(aff, affine, atol=1e-4):
        raise InputFileError(
            path,
            f"affine differs from that of {first.name}:\n{aff}\nvs\n{affine}",
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
