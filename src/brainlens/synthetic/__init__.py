"""A synthetic BIDS dataset with a planted group effect at a known place.

The demo must run offline, so it is made from the MNI152 2009 symmetric T1 template
that ships with nilearn. Each scan is the template brain, wrapped in a synthetic
CSF gap, skull and scalp, then moved into its own native space:

1. **planted effect** (patients only): regional atrophy inside one atlas region
   (default AAL ``Temporal_Inf_L``, 25.6 mL): tissue is replaced by CSF-like signal by a
   fraction ``effect`` and the region shrinks towards its centroid (a smooth radial
   contraction of ``shrink * effect``), both weighted by a smoothed region mask;
2. a smooth random nonlinear deformation (subject anatomy, a few mm);
3. a random rigid-plus-scale affine (head position), per scan;
4. resampling onto a native grid of ``voxel_size`` mm in a randomly chosen axis
   orientation (so reorientation matters);
5. a smooth multiplicative bias field and Rician noise.

Steps 1-2 are per subject (shared by a subject's sessions), 3-5 per scan. Every
random draw comes from ``numpy.random.default_rng([seed, subject_index, ...])``, so
a subject's images depend only on the master seed and its index.

The dataset root gets ``participants.tsv`` (participant_id, diagnosis, age, sex),
``dataset_description.json`` and ``ground_truth.json`` (atlas, region name exactly as
in that atlas's label table, label value, effect).

Modules: :mod:`~brainlens.synthetic.spec` (:class:`DemoSpec`),
:mod:`~brainlens.synthetic.anatomy` (head, planted effect, scans) and
:mod:`~brainlens.synthetic.dataset` (plan and writers; ``python -m brainlens.synthetic``).
"""

from __future__ import annotations

from brainlens.synthetic.anatomy import ORIENTATIONS, make_scan, min_jacobian, subject_anatomy
from brainlens.synthetic.dataset import (
    main,
    plan_dataset,
    region_mask_on_grid,
    scan_relpath,
    write_demo_dataset,
    write_demo_metadata,
    write_demo_subject,
)
from brainlens.synthetic.spec import DemoSpec

__all__ = [
    "ORIENTATIONS",
    "DemoSpec",
    "main",
    "make_scan",
    "min_jacobian",
    "plan_dataset",
    "region_mask_on_grid",
    "scan_relpath",
    "subject_anatomy",
    "write_demo_dataset",
    "write_demo_metadata",
    "write_demo_subject",
]
