"""Attribution maps for 3D (and 2D slice) CNN classifiers, and checks that they mean something.

Sign convention
---------------
Every map returned here follows one rule: **higher = more relevant for the
target class**. The workflow states the target (``attribution.target``: each scan's
true class by default, :mod:`brainlens.attribution.targets`), so positive signed
relevance means "evidence for this scan's decision" for every scan. Integrated
gradients, occlusion and region occlusion start from a baseline
(``attribution.baseline``: the voxel-wise mean of the fold's training scans by
default, never a validation or test scan, :mod:`brainlens.attribution.baselines`);
a zero baseline on grey-matter maps makes a patient's remaining tissue argue
against "patient". ``MethodSpec.sign`` says which maps are signed. Per method:

==================== ============ ==========================================================
method               sign         why
==================== ============ ==========================================================
gradients            |.|, >= 0    a gradient's sign says which way an intensity change moves
                                  the logit, not whether the voxel matters; magnitude =
                                  sensitivity (Simonyan et al.; Rieke et al. 2018)
guided_backprop      |.|, >= 0    same reason as gradients
integrated_gradients signed       attributions add up to logit(x) - logit(baseline)
                                  (the stage tables each scan's completeness error);
                                  positive = evidence for the target, negative = against
occlusion            signed       score(x) - score(x with the patch set to the baseline);
                                  positive = the patch supported the target
region_occlusion     signed       same, one value per atlas region painted on its voxels
gradcam              >= 0 (ReLU)  negative Grad-CAM is evidence for other classes
                                  (``relu=False`` keeps the sign)
cam_ng2018           [0, 1]       channel-summed last-conv activations, min-max normalised;
                                  most active = 1 (never inverted), class-invariant
layer_maps           >= 0         per-layer rectified Grad-CAM (or normalised activations)
==================== ============ ==========================================================

Channels are reduced as follows: gradient methods sum |.| over input channels,
integrated gradients sums the signed attributions (keeps completeness),
occlusion methods occlude all channels together (one value per voxel), CAM
methods work on layer channels. Gradient-based methods explain the target
**logit** (softmax saturates); occlusion methods take ``output="logit"`` or
``"probability"``.

Placement of CAM maps
---------------------
Grad-CAM, CAM and layer maps live on a layer's grid. Each layer position is placed
at the centre of its receptive field on the input grid (``start + i * step`` voxels
per axis, measured from the layer stack by NaN propagation,
:func:`brainlens.attribution.geometry.layer_geometry`), the map is interpolated
linearly between these centres and the edge values are held beyond the first and
last centre (:func:`~brainlens.attribution.geometry.resample_layer_map`). With
unpadded convolutions the centres start half a field in from the edge, so
stretching the layer grid over the input would misplace the map by up to half a
receptive field.
"""

from brainlens.attribution._common import AttributionError, count_forward_passes
from brainlens.attribution.maps import mean_maps, save_map
from brainlens.attribution.methods import METHODS, MethodSpec, attribute, method_base

__all__ = [
    "METHODS",
    "AttributionError",
    "MethodSpec",
    "attribute",
    "count_forward_passes",
    "mean_maps",
    "method_base",
    "save_map",
]
