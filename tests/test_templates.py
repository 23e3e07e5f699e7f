"""build_templates: files, grid, value ranges, provenance."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from brainlens.grid import mni_grid
from brainlens.templates import TEMPLATE_KEYS, build_templates, template_paths


@pytest.fixture(scope="module")
def tpl2(tmp_path_factory):
    out = tmp_path_factory.mktemp("tpl")
    return build_templates(out, resolution=2.0)


def _load(p):
    return np.asarray(nib.load(p).dataobj, np.float64)


def test_keys_and_names_are_stable(tpl2, tmp_path):
    assert set(tpl2) == {*TEMPLATE_KEYS, "provenance"}
    assert tpl2 == template_paths(tpl2["t1w"].parent, 2.0)
    assert tpl2["t1w"].name == "tpl-MNI152NLin2009aSym_res-2_T1w.nii.gz"
    assert tpl2["gm"].name == "tpl-MNI152NLin2009aSym_res-2_label-GM_probseg.nii.gz"
    assert template_paths(tmp_path, 1.5)["brain_mask"].name == (
        "tpl-MNI152NLin2009aSym_res-1p5_desc-brain_mask.nii.gz"
    )


@pytest.mark.parametrize("key", TEMPLATE_KEYS)
def test_every_image_is_on_the_grid(tpl2, key):
    shape, affine = mni_grid(2.0)
    img = nib.load(tpl2[key])
    assert img.shape == shape
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


@pytest.mark.parametrize(
    ("key", "lo_ml", "hi_ml"),
    [("brain_mask", 1700, 2000), ("head_mask", 1700, 2000), ("gm", 600, 1100), ("wm", 450, 750)],
)
def test_volumes_are_plausible(tpl2, key, lo_ml, hi_ml):
    ml = _load(tpl2[key]).sum() * 8 / 1000
    assert lo_ml < ml < hi_ml, ml


def test_priors_are_probabilities_that_sum_to_at_most_one(tpl2):
    gm, wm, csf = (_load(tpl2[k]) for k in ("gm", "wm", "csf"))
    for p in (gm, wm, csf):
        assert p.min() >= 0 and p.max() <= 1
    total = gm + wm + csf
    assert total.max() <= 1.0 + 1e-3
    mask = _load(tpl2["brain_mask"]) > 0
    assert total[mask].mean() > 0.9  # priors cover the brain
    assert total[~mask].mean() < 0.02
    # CSF prior: plausible total, and near 1 inside the lateral ventricles (central box)
    assert 150 < csf.sum() * 8 / 1000 < 400
    shape, affine = mni_grid(2.0)
    xyz = (
        np.einsum("ij,j...->i...", affine[:3, :3], np.indices(shape))
        + affine[:3, 3, None, None, None]
    )
    box = (np.abs(xyz[0]) < 25) & (xyz[1] > -35) & (xyz[1] < 10) & (xyz[2] > 10) & (xyz[2] < 30)
    assert (csf[box] > 0.8).sum() * 8 / 1000 > 3  # ml


def test_head_template_has_a_skull_and_brain_template_does_not(tpl2):
    head, t1 = _load(tpl2["head"]), _load(tpl2["t1w"])
    hm = _load(tpl2["head_mask"]) > 0
    shell = (head > 0.1 * head.max()) & ~hm
    assert shell.sum() * 8 / 1000 > 300  # ml of scalp/skull signal outside the brain
    assert (t1[~(_load(tpl2["brain_mask"]) > 0)] > 0.2).mean() < 0.01


def test_provenance_lists_every_file_with_matching_hash(tpl2):
    prov = json.loads(tpl2["provenance"].read_text())
    assert prov["space"] == "MNI152NLin2009aSym"
    for k in TEMPLATE_KEYS:
        entry = prov["files"][tpl2[k].name]
        assert entry["key"] == k
        assert entry["licence"]
        assert entry["sources"] and all(s["sha256"] for s in entry["sources"])
        assert entry["sha256"] == hashlib.sha256(tpl2[k].read_bytes()).hexdigest()
