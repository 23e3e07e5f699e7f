"""The one naming table (brainlens.derivatives) against the files the stages write."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from brainlens import derivatives as d
from brainlens.bids import scan_subdir
from brainlens.errors import ConfigError, DatasetError, InputFileError
from brainlens.folds import fold_part
from brainlens.inputs import usable_mask, usable_scans

REPO = Path(__file__).resolve().parents[1]
#: nilearn's ICBM 2009a nonlinear symmetric template (mni_icbm152_*_tal_nlin_sym_09a).
S = "MNI152NLin2009aSym"

#: The names of sub-01_ses-02's derivatives on the 2 mm grid (issue 23 item 8: space-,
#: res-, suffixed QC files; the QC picture in figures/, the rest in anat/).
TODAY_SCAN = {
    "t1w": f"sub-01_ses-02_space-{S}_res-2_desc-preproc_T1w.nii.gz",
    "gm": f"sub-01_ses-02_space-{S}_res-2_label-GM_probseg.nii.gz",
    "wm": f"sub-01_ses-02_space-{S}_res-2_label-WM_probseg.nii.gz",
    "csf": f"sub-01_ses-02_space-{S}_res-2_label-CSF_probseg.nii.gz",
    "gm_modulated": f"sub-01_ses-02_space-{S}_res-2_label-GM_desc-modulated_probseg.nii.gz",
    "wm_modulated": f"sub-01_ses-02_space-{S}_res-2_label-WM_desc-modulated_probseg.nii.gz",
    "csf_modulated": f"sub-01_ses-02_space-{S}_res-2_label-CSF_desc-modulated_probseg.nii.gz",
    "brain_mask": "sub-01_ses-02_desc-brain_mask.nii.gz",
    "xfm_to_std": f"sub-01_ses-02_from-T1w_to-{S}_mode-image_xfm.h5",
    "xfm_from_std": f"sub-01_ses-02_from-{S}_to-T1w_mode-image_xfm.h5",
    "qc_json": "sub-01_ses-02_desc-qc_T1w.json",
    "qc_png": "sub-01_ses-02_desc-qc_T1w.png",
}
#: The names the templates rule writes at 1.5 mm (grid.template_paths).
TODAY_TEMPLATES = {
    "t1w": f"tpl-{S}_res-1p5_T1w.nii.gz",
    "brain_mask": f"tpl-{S}_res-1p5_desc-brain_mask.nii.gz",
    "gm": f"tpl-{S}_res-1p5_label-GM_probseg.nii.gz",
    "wm": f"tpl-{S}_res-1p5_label-WM_probseg.nii.gz",
    "csf": f"tpl-{S}_res-1p5_label-CSF_probseg.nii.gz",
    "head": "tpl-MNI152NLin6Asym_res-1p5_T1w.nii.gz",
    "head_mask": "tpl-MNI152NLin6Asym_res-1p5_desc-brain_mask.nii.gz",
    "provenance": "provenance.json",
}


def _expected_files(names: dict[str, str]) -> set[str]:
    """The table's names plus the .json sidecar of every .nii.gz."""
    return set(names.values()) | {
        d.sidecar_name(n) for n in names.values() if n.endswith(".nii.gz")
    }


def test_table_keeps_todays_names_in_todays_order():
    assert d.derivative_names("sub-01_ses-02", resolution=2.0) == TODAY_SCAN
    assert d.GRID_KEYS == tuple(k for k, v in TODAY_SCAN.items() if "_res-2_" in v)
    assert {k for k, f in d.FOLDERS.items() if f != "anat"} == {"qc_png"}
    assert list(d.DERIVATIVES) == list(TODAY_SCAN)  # the preprocess rule's output order
    assert {k: p.name for k, p in d.template_paths("tpl", 1.5).items()} == TODAY_TEMPLATES
    assert list(d.TEMPLATES) == list(TODAY_TEMPLATES)  # provenance.json lists them in this order
    assert d.TEMPLATE_KEYS == tuple(k for k in TODAY_TEMPLATES if k != "provenance")


def test_one_vocabulary_for_scans_templates_and_config():
    schema = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    (enum,) = re.findall(r"enum: \[(t1w, gm_modulated[^\]]*)\]", schema)
    assert set(enum.split(", ")) <= set(d.DERIVATIVES)  # train.inputs names are table keys
    shared = set(d.DERIVATIVES) & set(d.TEMPLATES)
    assert shared == {"t1w", "brain_mask", "gm", "wm", "csf"}
    assert [d.tissue_key(t) for t in ("GM", "WM", "CSF")] == ["gm", "wm", "csf"]
    assert d.tissue_key("CSF", modulated=True) == "csf_modulated"
    with pytest.raises(ConfigError, match="tissue"):
        d.tissue_key("gm")


@pytest.mark.parametrize(
    ("scan", "participant", "session", "folder"),
    [
        ("sub-01", "sub-01", "n/a", "sub-01"),
        ("sub-01_ses-02", "sub-01", "ses-02", "sub-01/ses-02"),
        ("sub-01_ses-02_run-2", "sub-01", "ses-02_run-2", "sub-01/ses-02"),
        ("sub-01_acq-x_run-1", "sub-01", "acq-x_run-1", "sub-01"),
    ],
)
def test_scan_folder_is_the_bids_subdir(scan, participant, session, folder):
    assert d.scan_folder(scan) == folder == scan_subdir(participant, session)
    path = d.derivative_path("results/preprocess", scan, "qc_png")
    assert str(path) == f"results/preprocess/{folder}/figures/{scan}_desc-qc_T1w.png"
    pattern = d.derivative_pattern("results/preprocess", "qc_png")
    assert pattern.format(subdir=folder, scan=scan) == str(path)
    assert d.scan_of(path, "qc_png") == scan
    gm = d.derivative_path("results/preprocess", scan, "gm", resolution=1.5)
    assert (
        str(gm)
        == f"results/preprocess/{folder}/anat/{scan}_space-{S}_res-1p5_label-GM_probseg.nii.gz"
    )
    assert d.scan_dir("results/preprocess", scan) == gm.parent
    pattern = d.derivative_pattern("results/preprocess", "gm", resolution=1.5)
    assert pattern.format(subdir=folder, scan=scan) == str(gm)
    assert d.scan_of(gm, "gm") == scan  # at any res- label


def test_bad_keys_names_and_ids_are_refused_naming_them():
    with pytest.raises(ConfigError, match="'mask'.*brain_mask"):
        d.derivative_name("sub-01", "mask")
    with pytest.raises(ConfigError, match="'modulated_GM'"):
        d.template_name("modulated_GM", 2.0)
    with pytest.raises(ConfigError, match="scan id 'sub_01'"):
        d.derivative_path("results/preprocess", "sub_01", "t1w")
    with pytest.raises(InputFileError, match="not a 'qc_json' derivative"):
        d.scan_of("sub-01_desc-qc_T1w.png", "qc_json")
    with pytest.raises(InputFileError, match="not a 'gm' derivative"):
        d.scan_of(f"sub-01_space-{S}_res-x_label-GM_probseg.nii.gz", "gm")
    with pytest.raises(ConfigError, match="sidecar"):
        d.sidecar_name("sub-01_desc-qc_T1w.json")
    # a name on the analysis grid cannot be built without the grid's resolution
    with pytest.raises(ConfigError, match="'t1w'.*res-<label>.*preprocess.resolution"):
        d.derivative_path("results/preprocess", "sub-01", "t1w")
    with pytest.raises(ConfigError, match="'gm_modulated'.*resolution="):
        d.derivative_pattern("results/preprocess", "gm_modulated")


def test_templates_rule_writes_exactly_the_table(tmp_path):
    from brainlens.templates import build_templates

    paths = build_templates(tmp_path, resolution=2.0)
    written = {p.name for p in tmp_path.iterdir()}
    table = {d.template_name(k, 2.0) for k in d.TEMPLATES}
    assert written - table == set(), f"written but not in the table: {written - table}"
    assert written == table and paths == d.template_paths(tmp_path, 2.0)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory) -> Path:
    """One cheap phantom preprocessing run (coarse phantom, few registration steps)."""
    from brainlens.preprocess import run_t1w_preproc
    from brainlens.preprocess.phantom import make_phantom
    from brainlens.templates import build_templates

    root = tmp_path_factory.mktemp("derivatives")
    build_templates(root / "tpl", resolution=2.0)
    bids = root / "bids"
    anat = bids / "sub-01" / "ses-02" / "anat"
    ph = make_phantom(anat, seed=11, voxel_size=3.0, name="sub-01_ses-02_T1w")
    run_t1w_preproc(
        ph.t1w, scan="sub-01_ses-02", out_dir=d.scan_dir(root / "preprocess", "sub-01_ses-02"),
        templates_dir=root / "tpl", resolution=2.0, bids_dir=bids,
        skullstrip="ants_template", seed=7, threads=1, work_dir=root / "work",
        registration={"number_of_iterations": [[20, 10, 0], [20, 10, 0], [2, 0, 0]]},
    )  # fmt: skip
    return root / "preprocess"


@pytest.mark.slow
def test_preprocessing_writes_exactly_the_table(preprocessed):
    """Every file under the root is a table entry at its table path (or its sidecar)."""
    written = {str(p.relative_to(preprocessed)) for p in preprocessed.rglob("*") if p.is_file()}
    names = d.derivative_names("sub-01_ses-02", resolution=2.0)
    expected = {str(d.derivative_path(".", "sub-01_ses-02", k, resolution=2.0)) for k in names} | {
        str(d.derivative_path(".", "sub-01_ses-02", k, resolution=2.0).with_name(d.sidecar_name(n)))
        for k, n in names.items()
        if n.endswith(".nii.gz")
    }
    assert written - expected == set(), f"written but not in the table: {written - expected}"
    assert expected - written == set(), f"in the table but not written: {expected - written}"
    assert {Path(p).name for p in written} == _expected_files(TODAY_SCAN)  # today's names
    assert "sub-01/ses-02/figures/sub-01_ses-02_desc-qc_T1w.png" in written


@pytest.mark.slow
def test_preprocessing_sidecars_are_bids_derivatives(preprocessed):
    """Sources are BIDS URIs into the raw dataset; grid outputs describe their res- label."""
    import json

    anat = preprocessed / "sub-01" / "ses-02" / "anat"
    uri = "bids:raw:sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz"
    for side in anat.glob("*.json"):
        meta = json.loads(side.read_text())
        if side.name.endswith("_desc-qc_T1w.json"):
            assert meta["source"] == uri  # the QC metrics name it the same way
            continue
        assert meta["Sources"] == [uri], side.name
        assert "/" + "tmp" not in json.dumps(meta["Sources"])  # no machine path
        if "_res-2_" in side.name:
            assert meta["Resolution"] == d.resolution_description(2.0)
            assert meta["Resolution"].startswith("2 mm isotropic") and S in meta["Resolution"]
            assert meta["Space"] == S
        else:
            assert "Resolution" not in meta, side.name  # the native brain mask


def test_no_other_module_spells_a_derivative_name():
    """Names are spelled only in derivatives.py (prose and the vendored head file excepted)."""
    spelled = re.compile(
        r"_probseg\.nii|desc-brain_mask\.nii|mode-image_xfm|desc-qc_T1w\.|preproc_T1w|_relevance\.nii"
    )
    allowed = {
        "src/brainlens/derivatives.py",
        "src/brainlens/report/dataset.py",  # the page's prose: "…_desc-qc_T1w.png files"
        "src/brainlens/report/build.py",  # docstring
        "src/brainlens/templates.py",  # the vendored source file tpl-MNI152NLin6Asym_res-02_*
        "src/brainlens/preprocess/phantom.py",  # the same vendored file
    }
    files = [*REPO.glob("src/brainlens/**/*.py"), *REPO.glob("workflow/**/*.smk")]
    files += [REPO / "Snakefile", *REPO.glob("scripts/*.py")]
    found = {
        str(f.relative_to(REPO))
        for f in files
        if spelled.search(f.read_text()) and str(f.relative_to(REPO)) not in allowed
    }
    assert found == set()


def test_usable_scans_is_the_ok_rows():
    table = pd.DataFrame(
        {"scan": ["sub-01", "sub-02", "sub-03", "sub-04"],
         "status": ["ok", "invalid", "ok", "excluded"]}
    )  # fmt: skip
    assert usable_scans(table)["scan"].tolist() == ["sub-01", "sub-03"]
    assert usable_mask(table).tolist() == [True, False, True, False]
    with pytest.raises(DatasetError, match="no 'status' column"):
        usable_scans(table.drop(columns="status"))


def test_fold_part_selects_fold_and_roles_with_scan_ids():
    folds = pd.DataFrame(
        {
            "participant_id": ["sub-01", "sub-02", "sub-03", "sub-01", "sub-02", "sub-03"],
            "session_id": ["ses-1", "n/a", "n/a", "ses-1", "n/a", "n/a"],
            "fold": [0, 0, 0, 1, 1, 1],
            "role": ["train", "val", "test", "test", "train", "val"],
            "scan_id": ["sub-01_ses-1", "sub-02", "sub-03"] * 2,
        }
    )
    test0 = fold_part(folds, 0, "test")
    assert test0["scan_id"].tolist() == ["sub-03"] and list(test0.index) == [0]
    assert fold_part(folds, 1, ("train", "val"))["scan_id"].tolist() == ["sub-02", "sub-03"]
    whole = fold_part(folds, 1)
    assert whole["scan_id"].tolist() == ["sub-01_ses-1", "sub-02", "sub-03"]
    assert whole["role"].tolist() == ["test", "train", "val"]
    with pytest.raises(ConfigError, match="'training'"):
        fold_part(folds, 0, "training")
