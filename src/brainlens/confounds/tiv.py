"""Total intracranial volume from the Jacobian-modulated tissue maps: :func:`write_tiv_table`.

A modulated map is the tissue probability in template space times the Jacobian
determinant of the template-to-native mapping, so its sum times the template voxel
volume is the native tissue volume (the convention tested in
``tests/test_preprocess_modulation.py``). TIV = GM + WM + CSF, in mL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainlens._io import write_text_atomic
from brainlens.errors import InputFileError

TISSUES = ("gm", "wm", "csf")


def tissue_volume_ml(path: str | Path) -> float:
    """Native volume (mL) of one modulated tissue map: sum x voxel volume / 1000.

    Raises
    ------
    InputFileError
        The file is missing, or holds negative or non-finite values (not a modulated
        probability map).
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "modulated tissue map not found", "run preprocessing first")
    img = nib.load(str(p))
    data = np.asanyarray(img.dataobj, dtype=np.float64)
    if not np.isfinite(data).all() or data.min() < 0:
        raise InputFileError(
            p,
            f"values in [{np.nanmin(data):.3g}, {np.nanmax(data):.3g}] with non-finite or "
            "negative entries; a modulated probability map is finite and >= 0",
            "re-run preprocessing for this scan",
        )
    voxel_mm3 = abs(float(np.linalg.det(img.affine[:3, :3])))
    return float(data.sum() * voxel_mm3 / 1000.0)


def write_tiv_table(
    maps: Mapping[str, Sequence[str | Path]],
    scans: Sequence[Mapping[str, str]],
    out_tsv: str | Path,
) -> pd.DataFrame:
    """One row per scan: ``scan_id, participant_id, session_id, gm_ml, wm_ml, csf_ml, tiv_ml``.

    Parameters
    ----------
    maps : dict of {"gm", "wm", "csf"} to list of path
        Modulated tissue maps in template space, one per scan, in the order of ``scans``.
    scans : sequence of dict
        ``scan`` (the scan id), ``participant_id``, ``session_id`` per scan.
    out_tsv : path
        ``results/preprocess/tiv.tsv`` (written atomically).

    Returns
    -------
    DataFrame
    """
    for tissue in TISSUES:
        if len(maps[tissue]) != len(scans):
            raise InputFileError(
                out_tsv,
                f"{len(maps[tissue])} {tissue} maps for {len(scans)} scans",
                "pass one modulated map per tissue and scan, in the scans' order",
            )
    rows = []
    for i, scan in enumerate(scans):
        vol = {f"{t}_ml": tissue_volume_ml(maps[t][i]) for t in TISSUES}
        rows.append(
            {
                "scan_id": scan["scan"],
                "participant_id": scan["participant_id"],
                "session_id": scan.get("session_id", "n/a"),
            }
            | vol
        )
    table = pd.DataFrame(
        rows, columns=["scan_id", "participant_id", "session_id", "gm_ml", "wm_ml", "csf_ml"]
    )
    table["tiv_ml"] = table[["gm_ml", "wm_ml", "csf_ml"]].sum(axis=1)
    write_text_atomic(out_tsv, table.to_csv(sep="\t", index=False, float_format="%.3f"))
    return table
