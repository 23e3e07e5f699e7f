"""run_t1w_preproc end to end on a synthetic 2 mm head (slow), and its failure contract."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from brainlens.errors import InputFileError, PreprocessingError
from brainlens.grid import mni_grid
from brainlens.preprocess import init_t1w_preproc_wf, output_names, run_t1w_preproc
from brainlens.preprocess.core import dice
from brainlens.preprocess.phantom import make_phantom
from brainlens.templates import build_templates

SPACE = "MNI152NLin2009aSym"


def _real_sources(wf, node_name: str) -> set[tuple[str, str]]:
    """(source node, input field) of every connection into ``node_name`` once nipype has
    flattened the sub-workflows and dropped their identity nodes (what really runs)."""
    from copy import deepcopy

    from nipype.pipeline.engine.utils import generate_expanded_graph

    graph = generate_expanded_graph(deepcopy(wf._create_flat_graph()))
    (node,) = [n for n in graph.nodes() if n.name == node_name]
    return {
        (src.name, field)
        for src, _, data in graph.in_edges(node, data=True)
        for _, field in data["connect"]
    }


@pytest.fixture(scope="module")
def tpl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("templates")
    build_templates(d, resolution=2.0)
    return d


def test_output_names_are_the_contract():
    n = output_names("sub-01_ses-02", resolution=1.5)
    assert n["t1w"] == f"sub-01_ses-02_space-{SPACE}_res-1p5_desc-preproc_T1w.nii.gz"
    assert (
        n["gm_modulated"]
        == f"sub-01_ses-02_space-{SPACE}_res-1p5_label-GM_desc-modulated_probseg.nii.gz"
    )
    assert n["csf"] == f"sub-01_ses-02_space-{SPACE}_res-1p5_label-CSF_probseg.nii.gz"
    assert n["brain_mask"] == "sub-01_ses-02_desc-brain_mask.nii.gz"
    assert n["xfm_to_std"] == f"sub-01_ses-02_from-T1w_to-{SPACE}_mode-image_xfm.h5"
    assert n["xfm_from_std"] == f"sub-01_ses-02_from-{SPACE}_to-T1w_mode-image_xfm.h5"
    assert {n["qc_json"], n["qc_png"]} == {
        "sub-01_ses-02_desc-qc_T1w.json",
        "sub-01_ses-02_desc-qc_T1w.png",
    }


@pytest.mark.parametrize("method", ["deepbet", "ants_template"])
@pytest.mark.parametrize("seg", ["native", "analysis"])
def test_workflow_builds_with_expected_nodes(tpl_dir, method, seg):
    from brainlens.templates import template_paths

    wf = init_t1w_preproc_wf(
        templates=template_paths(tpl_dir, 2.0), resolution=2.0, skullstrip=method,
        seed=3, omp_nthreads=1, segmentation_grid=seg,
    )  # fmt: skip
    names = set(wf.list_node_names())
    assert {
        "reorient", "n4", "apply_mask", "registration_wf.t1w2std", "segmentation_wf.atropos",
        "modulation_wf.jacobian", "modulation_wf.modulate",
    } <= names  # fmt: skip
    assert ("skullstrip_wf.deepbet" in names) == (method == "deepbet")
    assert ("skullstrip_wf.head_reg" in names) == (method == "ants_template")
    assert wf.get_node("registration_wf.t1w2std").inputs.random_seed == 3
    sources = _real_sources(wf, "atropos")
    mask = "deepbet" if method == "deepbet" else "threshold_mask"
    if seg == "analysis":
        # Atropos segments on a native grid no finer than the 2 mm maps' grid
        assert wf.get_node("segmentation_wf.seg_grid").inputs.min_voxel_mm == 2.0
        assert sources == {
            ("make_priors", "prior_image"),
            ("seg_grid", "intensity_images"),
            ("seg_grid", "mask_image"),
        }
        assert _real_sources(wf, "seg_grid") == {("n4", "in_file"), (mask, "in_mask")}
    else:
        assert "segmentation_wf.seg_grid" not in names
        assert sources == {
            ("make_priors", "prior_image"),
            ("n4", "intensity_images"),
            (mask, "mask_image"),  # through the skull-strip and segmentation contracts
        }
    # the registration moves the skull-stripped brain; modulation uses its transform
    assert _real_sources(wf, "t1w2std") == {("apply_mask", "moving_image")}
    assert _real_sources(wf, "modulate") == {
        ("tissue_to_std", "in_files"),
        ("jacobian", "jacobian"),
    }


def test_unknown_segmentation_grid_is_refused(tpl_dir):
    from brainlens.errors import ConfigError
    from brainlens.templates import template_paths

    with pytest.raises(ConfigError, match=r"segmentation_grid: expected one of \['native'"):
        init_t1w_preproc_wf(
            templates=template_paths(tpl_dir, 2.0), resolution=2.0, skullstrip="deepbet",
            seed=3, omp_nthreads=1, segmentation_grid="1mm",
        )  # fmt: skip


def test_failures_leave_out_dir_empty_and_name_the_scan(tmp_path, tpl_dir):
    ph = make_phantom(tmp_path / "in", seed=5, voxel_size=3.0)
    out = tmp_path / "out"
    kw = dict(scan="sub-01", out_dir=out, resolution=2.0, seed=1, threads=1)
    with pytest.raises(PreprocessingError, match=str(ph.t1w)) as err:
        run_t1w_preproc(
            ph.t1w, templates_dir=tpl_dir, skullstrip="bet2", work_dir=tmp_path / "w1", **kw
        )
    # the message names the way to finish the study without this scan
    assert "exclude_scans: {sub-01: <reason>}" in str(err.value)
    with pytest.raises(InputFileError, match="build_templates"):
        run_t1w_preproc(
            ph.t1w,
            templates_dir=tmp_path / "nowhere",
            skullstrip="deepbet",
            work_dir=tmp_path / "w2",
            **kw,
        )
    with pytest.raises(InputFileError, match="does not exist"):
        run_t1w_preproc(
            tmp_path / "missing_T1w.nii.gz",
            templates_dir=tpl_dir,
            skullstrip="deepbet",
            work_dir=tmp_path / "w3",
            **kw,
        )
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_run_t1w_preproc_on_synthetic_head(tmp_path, tpl_dir):
    ph = make_phantom(tmp_path / "in", seed=11, voxel_size=2.0, name="sub-01_T1w")
    out = tmp_path / "out" / "sub-01" / "anat"
    qc = run_t1w_preproc(
        ph.t1w, scan="sub-01", out_dir=out, templates_dir=tpl_dir, resolution=2.0,
        skullstrip="ants_template", seed=7, threads=2, work_dir=tmp_path / "work",
    )  # fmt: skip
    names = output_names("sub-01", resolution=2.0)
    niftis = [v for v in names.values() if v.endswith(".nii.gz")]
    expected = set(names.values()) | {v.replace(".nii.gz", ".json") for v in niftis}
    assert {p.name for p in out.iterdir()} == expected - {names["qc_png"]}
    assert [p.name for p in (out.parent / "figures").iterdir()] == [names["qc_png"]]
    assert not (tmp_path / "work").exists()  # scratch removed after a success
    for v in niftis:  # intermediates are uncompressed; published files must be gzip
        assert (out / v).read_bytes()[:2] == b"\x1f\x8b", v

    shape, affine = mni_grid(2.0)
    for key in ("t1w", "gm", "wm", "csf", "gm_modulated"):
        img = nib.load(out / names[key])
        assert img.shape == shape and img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    side = json.loads((out / names["t1w"].replace(".nii.gz", ".json")).read_text())
    assert {"antspyx", "nipype", "deepbet", "brainlens", "ANTs"} <= set(side["SoftwareVersions"])

    saved = json.loads((out / names["qc_json"]).read_text())
    for k in ("tiv_ml", "gm_ml", "wm_ml", "csf_ml", "corr_template", "dice_template_mask",
              "jac_min", "jac_max", "jac_frac_nonpos", "seconds", "skullstrip", "resolution"):  # fmt: skip
        assert k in saved, k
    print(
        {
            k: qc[k]
            for k in ("corr_template", "dice_template_mask", "gm_modulation_ratio", "seconds")
        }
    )
    assert qc["corr_template"] > 0.85
    assert qc["dice_template_mask"] > 0.85
    assert qc["jac_frac_nonpos"] == 0.0
    for t in ("gm", "wm", "csf"):
        assert qc[f"{t}_modulation_ratio"] == pytest.approx(1.0, abs=0.05)
    assert 1300 < qc["tiv_ml"] < 2600
    mask = np.asarray(nib.load(out / names["brain_mask"]).dataobj) > 0
    true = nib.as_closest_canonical(nib.load(ph.brain_mask))  # the mask is written in RAS
    assert dice(mask, np.asarray(true.dataobj) > 0) > 0.9


def test_coarse_grid_needs_registration_grid_templates(tmp_path, tpl_dir):
    # a 4 mm analysis grid is registered on the 2 mm grid: without its templates the
    # run stops before any work, naming the missing piece and how to build it
    ph = make_phantom(tmp_path / "in", seed=5, voxel_size=3.0)
    build_templates(tmp_path / "tpl4", resolution=4.0)
    with pytest.raises(InputFileError, match="reg_templates_dir") as err:
        run_t1w_preproc(
            ph.t1w, scan="sub-01", out_dir=tmp_path / "out", templates_dir=tmp_path / "tpl4",
            resolution=4.0, skullstrip="ants_template", seed=1, threads=1,
            work_dir=tmp_path / "w",
        )  # fmt: skip
    assert "resolution=2.0" in str(err.value)
    with pytest.raises(InputFileError, match="registration template"):
        run_t1w_preproc(
            ph.t1w, scan="sub-01", out_dir=tmp_path / "out", templates_dir=tmp_path / "tpl4",
            resolution=4.0, skullstrip="ants_template", seed=1, threads=1,
            work_dir=tmp_path / "w", reg_templates_dir=tmp_path / "nowhere",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_coarse_grid_workflow_registers_on_the_registration_grid(tmp_path, tpl_dir):
    from brainlens.templates import template_paths

    build_templates(tmp_path / "tpl4", resolution=4.0)
    wf = init_t1w_preproc_wf(
        templates=template_paths(tmp_path / "tpl4", 4.0), resolution=4.0,
        skullstrip="ants_template", seed=3, omp_nthreads=1,
        reg_templates=template_paths(tpl_dir, 2.0), segmentation_grid="analysis",
    )  # fmt: skip
    names = set(wf.list_node_names())
    assert {
        "registration_wf.t1w_to_grid", "modulation_wf.probseg_to_grid",
        "modulation_wf.modulated_to_grid",
    } <= names  # fmt: skip
    # registration, priors and the head template are the 2 mm ones
    reg = wf.get_node("registration_wf.t1w2std")
    assert all("res-2_" in f for f in reg.inputs.fixed_image)
    priors = wf.get_node("segmentation_wf.priors_to_t1w")
    assert all("res-2_" in f for f in priors.inputs.input_image)
    assert all("res-2_" in f for f in wf.get_node("skullstrip_wf.head_reg").inputs.moving_image)
    assert wf.get_node("modulation_wf.modulated_to_grid").inputs.resolution == 4.0
    assert wf.get_node("registration_wf.t1w_to_grid").inputs.resolution == 4.0
    # the registration grid
    assert wf.get_node("segmentation_wf.seg_grid").inputs.min_voxel_mm == 2.0
    # a 2 mm analysis grid has no resampling step
    wf2 = init_t1w_preproc_wf(
        templates=template_paths(tpl_dir, 2.0), resolution=2.0, skullstrip="deepbet",
        seed=3, omp_nthreads=1,
    )  # fmt: skip
    assert "modulation_wf.modulated_to_grid" not in set(wf2.list_node_names())
    assert "registration_wf.t1w_to_grid" not in set(wf2.list_node_names())


@pytest.mark.slow
def test_run_t1w_preproc_on_the_4mm_grid(tmp_path, tpl_dir):
    # registered, segmented and modulated on 2 mm, outputs resampled onto 4 mm: the
    # modulated maps still sum to the native tissue volumes
    ph = make_phantom(tmp_path / "in", seed=11, voxel_size=2.0, name="sub-01_T1w")
    build_templates(tmp_path / "tpl4", resolution=4.0)
    out = tmp_path / "out"
    qc = run_t1w_preproc(
        ph.t1w, scan="sub-01", out_dir=out, templates_dir=tmp_path / "tpl4", resolution=4.0,
        skullstrip="ants_template", seed=7, threads=2, work_dir=tmp_path / "work",
        reg_templates_dir=tpl_dir,
    )  # fmt: skip
    names = output_names("sub-01", resolution=4.0)
    shape, affine = mni_grid(4.0)
    for key in ("t1w", "gm", "gm_modulated", "wm_modulated"):
        img = nib.load(out / names[key])
        assert img.shape == shape
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    print({k: qc[k] for k in ("corr_template", "gm_modulation_ratio", "seconds")})
    assert qc["corr_template"] > 0.85
    for t in ("gm", "wm", "csf"):
        assert qc[f"{t}_modulation_ratio"] == pytest.approx(1.0, abs=0.05)
    side = json.loads((out / names["gm_modulated"].replace(".nii.gz", ".json")).read_text())
    assert side["Resolution"].startswith("4 mm isotropic")
    assert side["OutputsResampledFromGridResolution"] == 2.0
    assert "_res-4_" in names["gm_modulated"]
