"""Nipype interfaces around :mod:`brainlens.preprocess.fileops` (the top layer)."""

from __future__ import annotations

import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from brainlens.preprocess import fileops

#: Extension of the workflow's intermediate images. They are written uncompressed: gzip
#: costs about 0.3 s per float volume written and would save little space on float data
#: (10.2 of 11.3 MB for a 1.5 mm head); about 30 intermediates are written per scan. The
#: published derivatives are ``.nii.gz`` (see :func:`brainlens.preprocess.run_t1w_preproc`).
WORK_EXT = ".nii"


def _out(runtime, name: str) -> str:  # noqa: ANN001 - nipype runtime object
    """``name`` (without extension) + :data:`WORK_EXT` inside the node's folder."""
    return os.path.join(runtime.cwd, name + WORK_EXT)


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w image")


class _OutFileSpec(TraitedSpec):
    out_file = File(exists=True)


class Reorient(SimpleInterface):
    """Reorder axes to RAS+ (no resampling), float32."""

    input_spec = _ReorientInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        self._results["out_file"] = str(
            fileops.reorient_file(self.inputs.in_file, _out(runtime, "t1w_ras"))
        )
        return runtime


class _DeepBetInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w head, RAS+")
    num_threads = traits.Int(1, usedefault=True)


class _MaskOutputSpec(TraitedSpec):
    out_mask = File(exists=True)


class DeepBet(SimpleInterface):
    """Brain mask with deepbet on CPU."""

    input_spec = _DeepBetInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        self._results["out_mask"] = str(
            fileops.deepbet_mask_file(
                self.inputs.in_file,
                _out(runtime, "brain_mask"),
                threads=self.inputs.num_threads,
            )
        )
        return runtime


class _ThresholdInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="warped soft mask")
    threshold = traits.Float(0.5, usedefault=True)


class ThresholdMask(SimpleInterface):
    """Binarise a warped mask, keep the largest component, fill holes."""

    input_spec = _ThresholdInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        self._results["out_mask"] = str(
            fileops.threshold_mask_file(
                self.inputs.in_file,
                _out(runtime, "brain_mask"),
                threshold=self.inputs.threshold,
            )
        )
        return runtime


class _ApplyMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    in_mask = File(exists=True, mandatory=True)


class ApplyMask(SimpleInterface):
    """Zero the image outside the mask."""

    input_spec = _ApplyMaskInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        self._results["out_file"] = str(
            fileops.apply_mask_file(
                self.inputs.in_file, self.inputs.in_mask, _out(runtime, "brain")
            )
        )
        return runtime


class _SegmentationGridInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="native head, RAS+")
    in_mask = File(exists=True, mandatory=True, desc="its brain mask")
    min_voxel_mm = traits.Float(mandatory=True, desc="smallest voxel of the output grid")


class _SegmentationGridOutputSpec(TraitedSpec):
    out_file = File(exists=True)
    out_mask = File(exists=True)


class SegmentationGrid(SimpleInterface):
    """The head and mask on a native grid no finer than ``min_voxel_mm`` (or unchanged)."""

    input_spec = _SegmentationGridInputSpec
    output_spec = _SegmentationGridOutputSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        out_file, out_mask = fileops.segmentation_grid_files(
            self.inputs.in_file,
            self.inputs.in_mask,
            _out(runtime, "seg_head"),
            _out(runtime, "seg_mask"),
            min_voxel_mm=self.inputs.min_voxel_mm,
        )
        self._results["out_file"] = str(out_file)
        self._results["out_mask"] = str(out_mask)
        return runtime


class _PriorsInputSpec(BaseInterfaceInputSpec):
    in_priors = InputMultiObject(File(exists=True), mandatory=True, desc="class order")
    in_mask = File(exists=True, mandatory=True)
    floor = traits.Float(0.01, usedefault=True)


class _PriorsOutputSpec(TraitedSpec):
    prior_pattern = traits.Str(desc="Atropos pattern prior_%02d.nii")


class MakePriors(SimpleInterface):
    """Normalised Atropos prior images from warped template priors."""

    input_spec = _PriorsInputSpec
    output_spec = _PriorsOutputSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        self._results["prior_pattern"] = fileops.make_priors_file(
            list(self.inputs.in_priors),
            self.inputs.in_mask,
            Path(runtime.cwd),
            floor=self.inputs.floor,
            ext=WORK_EXT,
        )
        return runtime


class _ModulateInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True)
    jacobian = File(exists=True, mandatory=True)


class _ModulateOutputSpec(TraitedSpec):
    out_files = OutputMultiObject(File(exists=True))


class Modulate(SimpleInterface):
    """Multiply template-space tissue maps by det(J); see ``core.modulate``."""

    input_spec = _ModulateInputSpec
    output_spec = _ModulateOutputSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        outs = []
        for i, f in enumerate(self.inputs.in_files):
            outs.append(
                str(fileops.modulate_file(f, self.inputs.jacobian, _out(runtime, f"mod_{i:02d}")))
            )
        self._results["out_files"] = outs
        return runtime


class _AntiAliasInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True)
    target_mm = traits.Float(mandatory=True, desc="voxel size of the target grid")


class AntiAlias(SimpleInterface):
    """Gaussian pre-filter of native images before resampling to a coarser grid."""

    input_spec = _AntiAliasInputSpec
    output_spec = _ModulateOutputSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        self._results["out_files"] = [
            str(
                fileops.antialias_file(
                    f, _out(runtime, f"aa_{i:02d}"), target_mm=self.inputs.target_mm
                )
            )
            for i, f in enumerate(self.inputs.in_files)
        ]
        return runtime


class _ResampleToGridInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image on an MNI analysis grid")
    resolution = traits.Float(mandatory=True, desc="target MNI grid resolution (mm)")


class ResampleToGrid(SimpleInterface):
    """Resample (anti-aliased, linear) onto ``brainlens.grid.mni_grid(resolution)``."""

    input_spec = _ResampleToGridInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):  # noqa: ANN001, ANN202
        self._results["out_file"] = str(
            fileops.resample_to_grid_file(
                self.inputs.in_file,
                _out(runtime, "resampled"),
                resolution=self.inputs.resolution,
            )
        )
        return runtime
