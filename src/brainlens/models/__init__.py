"""CNN models of the brainlens papers and 3D baselines, behind one registry.

Use :func:`build_model` with a name from :data:`MODELS`. Every model returns logits
(N, n_classes), has a ``cam_layer`` attribute (module whose output is the last convolutional
feature map), uses ``nn.ReLU(inplace=False)`` modules and no in-place ops on activations.
"""

from brainlens.models.coverage import field_of_view, field_of_view_mask
from brainlens.models.registry import MODELS, ModelSpec, build_model, count_parameters

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_model",
    "count_parameters",
    "field_of_view",
    "field_of_view_mask",
]
