"""Tests of brainlens.duplicates: near-identical GM maps under two participant IDs."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from brainlens import duplicates
from brainlens.duplicates import (
    DUPLICATE_COLUMNS,
    check_near_duplicates,
    near_duplicate_pairs,
    read_near_duplicates,
    write_near_duplicates,
)
from brainlens.errors import ConfigError, LeakageError
from brainlens.folds import write_folds

SHAPE = (20, 24, 20)
THRESHOLD = 0.98  # the default of folds.duplicate_threshold


def _field(rng: np.random.Generator, sigma: float) -> np.ndarray:
    f = ndi.gaussian_filter(rng.standard_normal(SHAPE), sigma)
    return f / f.std()


def subject_gm(index: int) -> np.ndarray:
    """A toy GM map, shape SHAPE: a shared template, warped and detailed per subject.

    Different subjects correlate at 0.4-0.75 (they share the template's folding), far
    from a copy; the subject index seeds the warp and detail.
    """
    template = _field(np.random.default_rng(0), 1.5)
    rng = np.random.default_rng([1, index])
    idx = np.indices(SHAPE, dtype=float) + np.stack([_field(rng, 3.0) for _ in range(3)])
    g = ndi.map_coordinates(template, idx, order=1, mode="nearest") + 0.3 * _field(rng, 1.0)
    centre = (np.array(SHAPE) - 1) / 2
    radius = np.array(SHAPE) / 2.4
    inside = (((np.indices(SHAPE).T - centre) / radius) ** 2).sum(-1).T < 1
    return (inside / (1 + np.exp(-3 * g))).astype(np.float32)


def rescan(gm: np.ndarray, seed: int = 5, axis: int = 1) -> np.ndarray:
    """The same brain again: segmentation noise (SD 0.05) and a 1-voxel shift."""
    rng = np.random.default_rng(seed)
    noisy = np.clip(gm + rng.normal(0, 0.05, gm.shape) * (gm > 0), 0, 1)
    return np.roll(noisy, 1, axis=axis).astype(np.float32)


def cohort(n: int = 6) -> tuple[np.ndarray, list[str], list[str]]:
    """n different subjects plus sub-dup, a rescan of sub-2 filed under its own ID."""
    maps = [subject_gm(i) for i in range(n)] + [rescan(subject_gm(2))]
    scans = [f"sub-{i}" for i in range(n)] + ["sub-dup"]
    return np.stack(maps), scans, list(scans)


def test_rescan_under_second_id_is_caught_and_different_subjects_are_not():
    maps, scans, subjects = cohort()
    table = near_duplicate_pairs(maps, scans, subjects, threshold=THRESHOLD)
    assert list(table.columns) == DUPLICATE_COLUMNS
    assert table[["scan_a", "scan_b"]].values.tolist() == [["sub-2", "sub-dup"]]
    assert table["correlation"].iloc[0] > THRESHOLD
    # without sub-dup no pair is flagged, and the most similar subjects are far below
    clean = near_duplicate_pairs(maps[:-1], scans[:-1], subjects[:-1], threshold=THRESHOLD)
    assert len(clean) == 0
    assert clean.attrs["max_other"]["correlation"] < 0.9
    assert clean.attrs["min_same"] is None


def test_shift_tolerance_is_what_catches_a_misregistered_copy():
    maps, scans, subjects = cohort()
    rigid = near_duplicate_pairs(maps, scans, subjects, threshold=THRESHOLD, max_shift=0)
    assert len(rigid) == 0  # the 1-voxel shift alone brings it far below the threshold
    shifted = near_duplicate_pairs(maps, scans, subjects, threshold=THRESHOLD)
    assert shifted.attrs["max_shift"] == 1 and len(shifted) == 1


def test_sessions_of_one_subject_are_never_flagged():
    maps, scans, _ = cohort()
    subjects = [f"sub-{i}" for i in range(6)] + ["sub-2"]  # the rescan is sub-2's ses-02
    table = near_duplicate_pairs(maps, scans, subjects, threshold=THRESHOLD)
    assert len(table) == 0
    assert table.attrs["min_same"]["scan_b"] == "sub-dup"
    assert table.attrs["min_same"]["correlation"] > THRESHOLD


def test_blocks_match_brute_force(monkeypatch):
    rng = np.random.default_rng(3)
    maps = rng.random((7, 40)).astype(np.float32)
    maps[5] = maps[1] + 0.01 * rng.random(40)
    subjects = ["a", "b", "c", "d", "e", "f", "a"]
    expected = np.corrcoef(maps)
    monkeypatch.setattr(duplicates, "BLOCK", 3)  # pairs across and within blocks
    mask = np.ones(40, dtype=bool)
    table = near_duplicate_pairs(maps, list("0123456"), subjects, threshold=0.2, mask=mask)
    for r in table.itertuples():
        assert r.correlation == pytest.approx(expected[int(r.scan_a), int(r.scan_b)], abs=2e-3)
    other = [
        (expected[i, j], i, j)
        for i in range(7)
        for j in range(i + 1, 7)
        if subjects[i] != subjects[j]
    ]
    assert len(table) == sum(c > 0.2 for c, _, _ in other)
    best = max(other)
    assert table.attrs["max_other"]["scan_a"] == str(best[1]) == "1"
    assert table.attrs["max_other"]["scan_b"] == str(best[2]) == "5"
    assert table.attrs["min_same"]["correlation"] == pytest.approx(expected[0, 6], abs=2e-3)
    assert list(table["correlation"]) == sorted(table["correlation"], reverse=True)


def test_check_fails_or_warns_naming_pairs_and_fix(caplog):
    maps, scans, subjects = cohort()
    table = near_duplicate_pairs(maps, scans, subjects, threshold=THRESHOLD)
    with pytest.raises(LeakageError) as err:
        check_near_duplicates(table, "fail")
    msg = str(err.value)
    for part in ("sub-2", "sub-dup", f"{table['correlation'].iloc[0]:.4f}", "participant_id"):
        assert part in msg
    assert "folds.duplicate_threshold" in msg and "folds.on_duplicate: warn" in msg
    with caplog.at_level(logging.WARNING, logger="brainlens.duplicates"):
        kept = check_near_duplicates(table, "warn")
    assert len(kept) == 1 and "sub-dup" in caplog.text
    check_near_duplicates(table.iloc[:0], "fail")  # nothing flagged: passes
    with pytest.raises(ConfigError, match="folds.on_duplicate"):
        check_near_duplicates(table, "ignore")
    with pytest.raises(ConfigError, match="folds.duplicate_threshold"):
        near_duplicate_pairs(maps, scans, subjects, threshold=0.0)


def test_identical_images_already_grouped_are_not_flagged_again():
    table = pd.DataFrame(
        [["sub-1_ses-01", "sub-1", "sub-9", "sub-9", 1.0]], columns=DUPLICATE_COLUMNS
    )
    scans = pd.DataFrame(
        {
            "participant_id": ["sub-1", "sub-9"],
            "session_id": ["ses-01", "n/a"],
            "image_hash": ["abc", "abc"],
        }
    )
    assert len(check_near_duplicates(table, "fail", scans=scans)) == 0
    scans.loc[1, "image_hash"] = "def"
    with pytest.raises(LeakageError, match="sub-9"):
        check_near_duplicates(table, "fail", scans=scans)


def _scans_table(ids: list[str]) -> pd.DataFrame:
    labels = ["AD", "CN"] * (len(ids) // 2) + ["AD"] * (len(ids) % 2)
    return pd.DataFrame({"participant_id": ids, "session_id": "n/a", "label": labels})


def test_write_folds_refuses_a_near_duplicate_under_fail(tmp_path, caplog):
    maps, scans, subjects = cohort(9)
    table = near_duplicate_pairs(maps, scans, subjects, threshold=THRESHOLD)
    out = tmp_path / "folds.tsv"
    opts = dict(mode="kfold", n_folds=2, val_fraction=0.2, seed=1)
    with pytest.raises(LeakageError, match="sub-dup"):
        write_folds(_scans_table(scans), out, near_duplicates=table, **opts)
    assert not out.exists()
    with caplog.at_level(logging.WARNING, logger="brainlens.duplicates"):
        folds = write_folds(
            _scans_table(scans), out, near_duplicates=table, on_duplicate="warn", **opts
        )
    assert out.is_file() and len(folds) == 2 * len(scans) and "sub-dup" in caplog.text


def test_write_read_nifti_maps_with_summary(tmp_path):
    maps, scans, subjects = cohort(4)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    paths = []
    for scan, m in zip(scans, maps, strict=True):
        paths.append(tmp_path / f"{scan}_label-GM_probseg.nii.gz")
        nib.save(nib.Nifti1Image(m, affine), paths[-1])
    out = tmp_path / "folds" / "near_duplicates.tsv"
    written = write_near_duplicates(paths, scans, subjects, out, threshold=THRESHOLD)
    back = read_near_duplicates(out)
    assert back[["scan_a", "scan_b"]].values.tolist() == [["sub-2", "sub-dup"]]
    assert back["correlation"].iloc[0] == pytest.approx(written["correlation"].iloc[0], abs=1e-5)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["n_scans"] == 5 and summary["max_shift"] == 1
    assert summary["smooth_fwhm_mm"] == 0.0 and summary["n_voxels"] > 1000
    clean = {
        fwhm: write_near_duplicates(
            paths[:-1], scans[:-1], subjects[:-1], out, threshold=THRESHOLD, smooth_fwhm_mm=fwhm
        )
        for fwhm in (0.0, 8.0)
    }
    assert len(clean[8.0]) == 0 and len(read_near_duplicates(out)) == 0
    # smoothing makes different subjects more alike (still below the threshold here)
    best = {fwhm: t.attrs["max_other"]["correlation"] for fwhm, t in clean.items()}
    assert best[0.0] < best[8.0] < THRESHOLD


def test_report_folds_section_lists_the_pairs(tmp_path):
    from brainlens.report.dataset import DataFacts, folds_section

    maps, scans, subjects = cohort(9)
    folds = write_folds(
        _scans_table(scans),
        tmp_path / "folds.tsv",
        near_duplicates=near_duplicate_pairs(maps, scans, subjects, threshold=THRESHOLD),
        on_duplicate="warn",
        mode="kfold",
        n_folds=2,
        val_fraction=0.2,
        seed=1,
    )
    assert len(folds)
    cfg = {"folds": {"duplicate_threshold": THRESHOLD, "on_duplicate": "warn"}}
    html = folds_section(tmp_path / "folds.tsv", cfg, DataFacts()).body
    assert "near_duplicates.tsv" in html and "is missing" in html
    paths = []
    for scan, m in zip(scans, maps, strict=True):
        paths.append(tmp_path / f"{scan}.nii.gz")
        nib.save(nib.Nifti1Image(m, np.eye(4)), paths[-1])
    out = tmp_path / "near_duplicates.tsv"
    write_near_duplicates(paths, scans, subjects, out, threshold=THRESHOLD)
    html = folds_section(tmp_path / "folds.tsv", cfg, DataFacts()).body
    assert "1 possible near duplicate" in html and "sub-dup" in html and "sub-2" in html
    write_near_duplicates(paths[:-1], scans[:-1], subjects[:-1], out, threshold=THRESHOLD)
    html = folds_section(tmp_path / "folds.tsv", cfg, DataFacts()).body
    assert "No near duplicates" in html and "0.98" in html
