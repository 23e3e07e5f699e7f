"""BIDS-Derivatives done right (issue 23 item 8): dataset_description.json links the raw
dataset, a .bidsignore lists what is not BIDS, Sources are BIDS URIs, attribution maps
carry space-/res- entities and sidecars, label values in file names are sanitised."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainlens import derivatives as d
from brainlens.errors import ConfigError, InputFileError
from brainlens.preprocess.description import (
    BIDS_VERSION,
    write_bidsignore,
    write_dataset_description,
)
from brainlens.preprocess.outputs import source_of, write_sidecars

REPO = Path(__file__).resolve().parents[1]
S = "MNI152NLin2009aSym"
torch.set_num_threads(1)


def _raw(tmp_path: Path, description: dict | None) -> Path:
    bids = tmp_path / "project" / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    if description is not None:
        (bids / "dataset_description.json").write_text(json.dumps(description))
    return bids


# --- dataset_description.json and .bidsignore ---------------------------------------------


def test_dataset_description_links_the_raw_dataset(tmp_path: Path) -> None:
    bids = _raw(tmp_path, {"Name": "x", "BIDSVersion": "1.8.0", "DatasetDOI": "doi:10.1/ds1"})
    root = tmp_path / "project" / "results" / "preprocess"
    desc = json.loads(write_dataset_description(root, bids_dir=bids, resolution=4.0).read_text())
    assert desc["DatasetType"] == "derivative"
    assert tuple(map(int, desc["BIDSVersion"].split("."))) >= (1, 8, 0)  # BIDS URIs, links
    assert desc["BIDSVersion"] == BIDS_VERSION
    link = desc["DatasetLinks"]["raw"]
    assert link == "../../bids" and not os.path.isabs(link)  # no machine path
    assert (root / link).resolve() == bids.resolve()
    assert desc["SourceDatasets"] == [{"URL": "bids:raw:", "DOI": "doi:10.1/ds1"}]
    assert desc["Resolution"] == {"4": d.resolution_description(4.0)}
    assert S in desc["GeneratedBy"][0]["Description"]
    assert "2009cSym" not in json.dumps(desc)


def test_dataset_description_without_a_doi_and_without_the_dataset(tmp_path: Path) -> None:
    bids = _raw(tmp_path, None)  # a raw dataset without dataset_description.json
    desc = json.loads(
        write_dataset_description(tmp_path / "out", bids_dir=bids, resolution=1.5).read_text()
    )
    assert desc["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert desc["Resolution"] == {"1p5": d.resolution_description(1.5)}
    with pytest.raises(InputFileError, match="BIDS dataset folder not found"):
        write_dataset_description(tmp_path / "out", bids_dir=tmp_path / "nope", resolution=2)
    (bids / "dataset_description.json").write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        write_dataset_description(tmp_path / "out", bids_dir=bids, resolution=2)


def _root_files_the_workflow_writes() -> set[str]:
    """Names of the files the rules put directly in results/preprocess/."""
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    text += (REPO / "Snakefile").read_text()
    return set(re.findall(r"results/preprocess/([A-Za-z0-9_.]+)\"", text))


def test_bidsignore_lists_every_non_bids_file_at_the_root(tmp_path: Path) -> None:
    written = {line for line in write_bidsignore(tmp_path).read_text().splitlines()}
    assert set(d.BIDSIGNORE) <= written
    at_root = _root_files_the_workflow_writes()
    assert {"inputs.tsv", "qc.tsv", "tiv.tsv", "failed_scans.tsv"} <= at_root  # found them
    assert at_root - {"dataset_description.json", ".bidsignore"} <= set(d.BIDSIGNORE)
    assert "figures/" in written and "*_desc-qc_T1w.json" in written


def test_the_qc_table_rule_writes_description_and_bidsignore() -> None:
    rule = (REPO / "workflow/rules/preprocess.smk").read_text().split("rule qc_table:")[1]
    assert 'bidsignore="results/preprocess/.bidsignore"' in rule
    assert "bids_dir=BIDS_DIR" in rule and "resolution=RESOLUTION" in rule


# --- Sources as BIDS URIs -----------------------------------------------------------------


def test_sources_are_bids_uris(tmp_path: Path) -> None:
    bids = _raw(tmp_path, {})
    t1w = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    t1w.write_bytes(b"")
    assert d.source_uri(t1w, bids) == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
    assert source_of(t1w, bids) == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
    assert source_of(t1w, None) == t1w.resolve().as_uri()  # outside a dataset: a file URI
    with pytest.raises(InputFileError, match="not inside the BIDS dataset"):
        d.source_uri(tmp_path / "elsewhere.nii.gz", bids)
    for bad in ("/abs/sub-01_T1w.nii.gz", "../sub-01_T1w.nii.gz", ""):
        with pytest.raises(ConfigError, match="BIDS URI path"):
            d.bids_uri(bad)

    stage = tmp_path / "stage"
    names = d.derivative_names("sub-01", resolution=2.0)
    files = {k: stage / d.FOLDERS[k] / n for k, n in names.items()}
    params = {"Space": S, "Resolution": d.resolution_description(2.0)}
    write_sidecars(files, source=source_of(t1w, bids), versions={}, params=params)
    for key in ("t1w", "gm_modulated", "brain_mask"):
        side = json.loads(files[key].with_name(d.sidecar_name(files[key].name)).read_text())
        assert side["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
        assert ("Resolution" in side) == (key in d.GRID_KEYS)  # the native mask has no res-


def test_the_preprocess_rule_passes_the_dataset() -> None:
    rule = (REPO / "workflow/rules/preprocess.smk").read_text().split("rule preprocess_t1w:")[1]
    assert "bids_dir=BIDS_DIR" in rule.split("rule ")[0]
    assert "bids_dir=snakemake.params.bids_dir" in (REPO / "scripts/preprocess_t1w.py").read_text()


# --- label values in file names -----------------------------------------------------------


def test_label_values_are_sanitised_and_a_clash_is_an_error() -> None:
    assert d.sanitise_label("MCI-early") == "MCIearly"
    assert d.sanitise_label("integrated_gradients@fine") == "integratedgradientsfine"
    assert d.sanitised_labels(["CN", "MCI-early", "CN"], "classes") == {
        "CN": "CN",
        "MCI-early": "MCIearly",
    }
    with pytest.raises(ConfigError, match=r"classes: 'a-b' and 'ab' both become 'ab'"):
        d.sanitised_labels(["a-b", "ab"], "classes")
    with pytest.raises(ConfigError, match="no letter or digit"):
        d.sanitise_label("--")
    name = d.relevance_name("class_mean", resolution=4.0, method="gradcam@b2", label="A/D")
    assert name == f"class-AD_space-{S}_res-4_stat-mean_desc-gradcamb2_relevance.nii.gz"
    assert Path(name).match(d.relevance_glob("class_mean", label="A/D"))
    assert not Path(name).match(d.relevance_glob("mean"))


# --- attribution maps: entities and sidecars ----------------------------------------------

SIDE = 16
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -16


def _trained(root: Path, labels: tuple[str, str]) -> tuple[Path, list, Path]:
    """A tiny 3D model trained one epoch on 12 toy scans of classes ``labels``."""
    from brainlens.folds import write_folds
    from brainlens.packing import pack_volumes
    from brainlens.training import train_fold

    rng = np.random.default_rng(0)
    rows, paths, ids = [], [], []
    for i in range(12):
        v = rng.normal(0, 0.2, (SIDE,) * 3).astype(np.float32)
        v[3:7, 6:10, 4:8] += 2.0 * (i % 2)
        p = root / f"sub-{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(v, AFFINE), str(p))
        rows.append({"participant_id": f"sub-{i:02d}", "session_id": "n/a", "label": labels[i % 2]})
        paths.append(p)
        ids.append(f"sub-{i:02d}")
    pack_volumes(paths, scan_ids=ids, out_npy=root / "gm.npy", out_index=root / "gm.tsv")
    write_folds(
        pd.DataFrame(rows), root / "folds.tsv", mode="kfold", n_folds=3, val_fraction=0.25, seed=1
    )
    train_fold(
        packs={"gm": (root / "gm.npy", root / "gm.tsv")}, folds_tsv=root / "folds.tsv", fold=0,
        out_dir=root / "m", model="eitel_baseline_3d", epochs=1, batch_size=4, lr=1e-3,
        seed=2, progress=False, device="cpu",
    )  # fmt: skip
    return root / "m" / "model.pt", [(root / "gm.npy", root / "gm.tsv")], root / "folds.tsv"


def _attribute(
    model: Path, packs: list, folds: Path, out: Path, method: str, options: dict
) -> pd.DataFrame:
    from brainlens.attribution.fold import attribute_fold

    return attribute_fold(
        model_path=model, packs=packs, folds_tsv=folds, fold=0, method=method,
        options=options, atlas_nii=None, out_dir=out / "maps",
        out_table=out / "maps.tsv", seed=3,
    )  # fmt: skip


def test_attribution_maps_have_entities_and_sidecars(tmp_path: Path) -> None:
    from brainlens.report.brainmaps import fold_class_means

    model, packs, folds = _trained(tmp_path, ("CN", "MCI-early"))
    method = "integrated_gradients@fine"
    table = _attribute(model, packs, folds, tmp_path, method, {"n_steps": 4})
    maps = tmp_path / "maps"
    for rec in table.to_dict("records"):
        path = Path(rec["path"])
        assert (
            path.name
            == f"{rec['scan_id']}_space-{S}_res-2_desc-integratedgradientsfine_relevance.nii.gz"
        )
        side = json.loads(path.with_name(d.sidecar_name(path.name)).read_text())
        assert side["Method"] == method and side["MethodBase"] == "integrated_gradients"
        assert side["Model"] == "eitel_baseline_3d" and side["Fold"] == 0
        assert side["TargetClass"] == rec["target_class"] == rec["label"]  # true_class target
        assert side["Baseline"] == rec["baseline"] == "zero"
        assert side["SignConvention"].startswith("positive = evidence for the target class")
        assert "logit(x) - logit(baseline)" in side["Units"]
        assert side["Space"] == S and side["Resolution"] == d.resolution_description(2.0)
        assert side["Options"] == {"n_steps": 4}
    classes = set(table["label"])
    assert classes == {"CN", "MCI-early"}
    expected = {
        d.relevance_name("class_mean", resolution=2.0, method=method, label=c) for c in classes
    } | {d.relevance_name("mean", resolution=2.0, method=method)}
    assert (
        f"class-MCIearly_space-{S}_res-2_stat-mean_desc-integratedgradientsfine_relevance.nii.gz"
        in expected
    )
    written = {p.name for p in maps.glob("*.nii.gz")}
    assert expected <= written and len(written) == len(table) + len(expected)
    assert {p.name for p in maps.glob("*.json")} == {d.sidecar_name(n) for n in written}
    mean = json.loads((maps / d.sidecar_name(min(expected))).read_text())
    assert mean["Statistic"] == "mean" and mean["NScans"] >= 1
    # the report finds the mean maps by the table's names (none recomputed)
    means, computed, notes = fold_class_means(tmp_path / "maps.tsv")
    assert set(means) == {"all", *classes} and computed == 0, notes


def test_class_names_that_clash_in_file_names_are_refused(tmp_path: Path) -> None:
    model, packs, folds = _trained(tmp_path, ("A-D", "AD"))
    with pytest.raises(ConfigError, match="'A-D' and 'AD' both become 'AD'"):
        _attribute(model, packs, folds, tmp_path, "gradients", {})
    assert not (tmp_path / "maps").exists()  # refused before any map was written


def test_every_method_has_units_and_a_sign_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    from brainlens.attribution.methods import METHODS, MethodSpec
    from brainlens.attribution.sidecars import SIGNS, UNITS, map_description

    assert set(UNITS) == set(METHODS)
    assert {spec.sign for spec in METHODS.values()} <= set(SIGNS)
    side = map_description("occlusion@p8", {"output": "probability", "patch": 8}, 4.0)
    assert side["Units"].startswith("drop of the target probability")
    assert side["Resolution"] == d.resolution_description(4.0) and side["Space"] == S
    monkeypatch.setitem(METHODS, "newmethod", MethodSpec(lambda m, x, target: x, "signed"))
    with pytest.raises(ConfigError, match="'newmethod'.*units.*sidecars.UNITS"):
        map_description("newmethod", {}, 4.0)
