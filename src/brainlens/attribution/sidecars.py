"""JSON sidecars and BIDS-like names of the attribution maps.

Every map :func:`brainlens.attribution.fold.attribute_fold` writes (one per test scan, the
mean per true class, the mean of all) is named by :data:`brainlens.derivatives.RELEVANCE`
(``space-``/``res-`` entities, the method as ``desc-``) and gets a ``.json`` sidecar of the
same stem (:func:`write_map`): method, options, model, fold, target class, baseline kind,
sign convention and units (:func:`map_description`), space and ``Resolution``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainlens._io import write_text_atomic
from brainlens.attribution.maps import mean_maps, save_map
from brainlens.attribution.methods import get_method, method_base
from brainlens.derivatives import (
    SPACE,
    relevance_name,
    resolution_description,
    sanitised_labels,
    sidecar_name,
)
from brainlens.errors import ConfigError, InputFileError
from brainlens.grid import RESOLUTIONS

#: MethodSpec.sign -> the sign convention in words.
SIGNS = {
    "absolute": ">= 0, magnitude only: higher = more relevant for the target class",
    "signed": "positive = evidence for the target class, negative = evidence against it",
    "positive": ">= 0 (rectified): higher = more evidence for the target class",
    "normalised": "min-max normalised to [0, 1] per map: higher = more relevant for the "
    "target class (no absolute scale)",
}
#: Registered method -> the units of its values.
UNITS = {
    "gradients": "target logit per unit input (sum over channels of |d logit / d x|)",
    "guided_backprop": "target logit per unit input (guided gradient, absolute, summed over "
    "channels)",
    "integrated_gradients": "target logit: the map sums to logit(x) - logit(baseline)",
    "occlusion": "drop of the target {output} when the patch around a voxel is replaced by "
    "the baseline",
    "region_occlusion": "drop of the target {output} when the voxel's atlas region is "
    "replaced by the baseline",
    "gradcam": "arbitrary units (rectified gradient-weighted layer activation, upsampled)",
    "cam_ng2018": "none ([0, 1] after min-max normalisation)",
    "layer_maps": "arbitrary units (rectified Grad-CAM of the layer)",
}


def grid_resolution(affine: np.ndarray, source: Path | str) -> float:
    """The isotropic voxel size (mm) of an analysis-grid affine (the maps' ``res-``).

    Raises
    ------
    InputFileError
        The grid is not isotropic or not one of :data:`brainlens.grid.RESOLUTIONS`.
    """
    sizes = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))
    match = [r for r in RESOLUTIONS if np.allclose(sizes, r, atol=1e-3)]
    if not match:
        raise InputFileError(
            source,
            f"voxel size {sizes.round(4).tolist()} mm is not an analysis grid "
            f"({list(RESOLUTIONS)} mm isotropic)",
            "pack the preprocessed maps of the workflow (rule pack)",
        )
    return match[0]


def map_description(
    method: str, options: Mapping[str, Any], resolution: float, **fields: Any
) -> dict:
    """Sidecar of one attribution map: ``Method``, ``MethodBase``, ``Options``,
    ``SignConvention``, ``Units``, ``Space``, ``Resolution`` plus ``fields`` (``Model``,
    ``Fold``, ``TargetClass``, ``Baseline``, ...)."""
    base = method_base(method)
    if base not in UNITS:
        raise ConfigError(
            f"attribution method {base!r}: its sidecars need the units of its values. "
            "Fix: add it to brainlens.attribution.sidecars.UNITS"
        )
    output = options.get("output", "logit")
    plain = {k: v for k, v in options.items() if k != "atlas_labels"}
    return {
        "Method": method,
        "MethodBase": base,
        "Options": plain,
        **fields,
        "SignConvention": SIGNS[get_method(method).sign],
        "Units": UNITS[base].format(output=output),
        "Space": SPACE,
        "Resolution": resolution_description(resolution),
    }


def write_map(relevance: np.ndarray, affine: np.ndarray, path: Path, sidecar: dict) -> Path:
    """Save a map (:func:`brainlens.attribution.maps.save_map`) and its ``.json`` sidecar."""
    save_map(relevance, affine, path)
    side = Path(path).with_name(sidecar_name(Path(path).name))
    write_text_atomic(side, json.dumps(sidecar, indent=1, default=str) + "\n")
    return Path(path)


class MapWriter:
    """Writes one fold's maps into ``out_dir`` under their :data:`RELEVANCE` names, each
    with its sidecar (:func:`map_description` with the fold's ``common`` fields)."""

    def __init__(
        self,
        out_dir: Path,
        affine: np.ndarray,
        *,
        resolution: float,
        method: str,
        options: Mapping[str, Any],
        common: Mapping[str, Any],
    ) -> None:
        self.out_dir, self.affine, self.resolution = Path(out_dir), affine, resolution
        self.method, self.options, self.common = method, options, dict(common)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def _describe(self, **fields: Any) -> dict:
        return map_description(self.method, self.options, self.resolution, **self.common, **fields)

    def scan_map(self, relevance: np.ndarray, rec: Mapping[str, Any], row: Mapping) -> Path:
        """One test scan's map (``rec``: its folds row; ``row``: its attribution row)."""
        name = relevance_name(
            "scan", resolution=self.resolution, method=self.method, scan=rec["scan_id"]
        )
        side = self._describe(
            Scan=rec["scan_id"], TrueClass=str(rec["label"]), TargetClass=row["target_class"],
            PredictedClass=row["predicted_class"],
        )  # fmt: skip
        return write_map(relevance, self.affine, self.out_dir / name, side)

    def mean_maps(
        self, maps: list[np.ndarray], labels: list, class_labels: Mapping[str, str]
    ) -> None:
        """The mean map per true class and over all test scans.

        ``class_labels``: :func:`brainlens.derivatives.sanitised_labels` of the model's
        classes (checked again with the test labels: a clash is an error).
        """
        counts = pd.Series(labels).astype(str).value_counts()
        safe = sanitised_labels([*class_labels, *counts.index], "class labels")
        each = "each scan's own target (see its sidecar)"
        for cls, mean in mean_maps(maps, labels).items():
            name = relevance_name(
                "class_mean", resolution=self.resolution, method=self.method,
                label=safe[str(cls)],
            )  # fmt: skip
            side = self._describe(
                Statistic="mean", TrueClass=str(cls), NScans=int(counts[str(cls)]),
                TargetClass=each,
            )  # fmt: skip
            write_map(mean, self.affine, self.out_dir / name, side)
        name = relevance_name("mean", resolution=self.resolution, method=self.method)
        side = self._describe(Statistic="mean", TrueClass="all", NScans=len(maps), TargetClass=each)
        write_map(np.mean(maps, axis=0), self.affine, self.out_dir / name, side)
