"""Attribution maps for 3D (and 2D slice) CNN classifiers, and checks that they mean something.

Sign convention
---------------
Every map returned here follows one rule: **higher = more relevant for the
target class**. Per method:

==================== ============ ==========================================================
method               sign         why
==================== ============ ==========================================================
gradients            |.|, >= 0    a gradient's sign says which way an intensity change moves
                                  the logit, not whether the voxel matters; magnitude =
                                  sensitivity (Simonyan et al.; Rieke et al. 2018)
guided_backprop      |.|, >= 0    same reason as gradients
integrated_gradients signed       attributions add up to logit(x) - logit(baseline);
                                  positive = evidence for the target, negative = against
occlusion            signed       score(x) - score(occluded x); positive = the patch
                                  supported the target
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
"""

from brainlens.attribution._common import AttributionError, count_forward_passes
from brainlens.attribution.maps import mean_maps, save_map
from brainlens.attribution.methods import METHODS, MethodSpec, attribute, method_base
from brainlens.attribution.scans import attribute_scans, relevance_path

__all__ = [
    "METHODS",
    "AttributionError",
    "MethodSpec",
    "attribute",
    "attribute_scans",
    "count_forward_passes",
    "mean_maps",
    "method_base",
    "relevance_path",
    "save_map",
]
