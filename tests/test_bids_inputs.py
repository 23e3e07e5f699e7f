"""BIDS discovery, dataset-level checks and the input-check stage."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainlens.bids import find_scans, read_participants, scan_key, scan_subdir, scan_table
from brainlens.errors import DatasetError, InputFileError
from brainlens.folds import scan_id
from brainlens.inputs import check_dataset


def _t1w(path: Path, shape=(20, 22, 18), zooms=(2.0, 2.0, 2.0), data=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    arr = rng.random(shape).astype(np.float32) * 100 if data is None else data
    nib.save(nib.Nifti1Image(arr, np.diag([*zooms, 1.0])), str(path))
    return path


def _dataset(root: Path, ids=("sub-01", "sub-02", "sub-03"), sessions=False) -> Path:
    rows = []
    for i, pid in enumerate(ids):
        if sessions:
            _t1w(root / pid / "ses-1" / "anat" / f"{pid}_ses-1_T1w.nii.gz")
        else:
            _t1w(root / pid / "anat" / f"{pid}_T1w.nii.gz")
        rows.append({"participant_id": pid, "diagnosis": "AD" if i % 2 else "CN", "age": 70})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


@pytest.mark.parametrize(
    ("pid", "ses", "expected", "subdir"),
    [
        ("sub-01", "n/a", "sub-01", "sub-01"),
        ("sub-01", "ses-2", "sub-01_ses-2", "sub-01/ses-2"),
        ("sub-01", None, "sub-01", "sub-01"),
        ("sub-01", float("nan"), "sub-01", "sub-01"),
        ("sub-01", "", "sub-01", "sub-01"),
        ("sub-01", "ses-2_run-2", "sub-01_ses-2_run-2", "sub-01/ses-2"),
        ("sub-01", "acq-x_run-2", "sub-01_acq-x_run-2", "sub-01"),
    ],
)
def test_scan_key(pid: str, ses, expected: str, subdir: str) -> None:  # noqa: ANN001
    """One home of scan ids: folds.scan_id gives the same; subdir keeps only the session."""
    assert scan_key(pid, ses) == expected == scan_id(pid, ses)
    assert scan_subdir(pid, ses) == subdir


def test_participants_row_without_scan_is_a_warning(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """A row without a T1w (even with an n/a label) is left out with a warning; the
    input-check stage accepts the same participants.tsv."""
    root = _dataset(tmp_path / "bids")
    _edit_participants(
        root,
        lambda t: pd.concat([t, t.tail(1).assign(participant_id="sub-09", diagnosis="n/a")]),
    )
    with caplog.at_level(logging.WARNING, logger="brainlens"):
        table = scan_table(root, label_column="diagnosis")
    assert list(table["scan"]) == ["sub-01", "sub-02", "sub-03"]
    assert "sub-09" in caplog.text and "without a T1w" in caplog.text
    out = _check(root, tmp_path / "inputs.tsv")
    assert list(out["status"]) == ["ok"] * 3


def test_check_dataset_refuses_a_scan_without_label(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "bids")
    _edit_participants(root, lambda t: t.assign(diagnosis=["CN", "n/a", "AD"]))
    with pytest.raises(DatasetError, match=r"sub-02.*drop_missing_labels"):
        _check(root, tmp_path / "inputs.tsv")


def test_scan_table_joins_labels_with_sessions(tmp_path: Path) -> None:
    table = scan_table(_dataset(tmp_path, sessions=True), label_column="diagnosis")
    assert list(table["scan"]) == ["sub-01_ses-1", "sub-02_ses-1", "sub-03_ses-1"]
    assert list(table["label"]) == ["CN", "AD", "CN"]
    assert set(table["subdir"]) == {"sub-01/ses-1", "sub-02/ses-1", "sub-03/ses-1"}


def _edit_participants(root: Path, fn) -> None:  # noqa: ANN001
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    fn(table).to_csv(root / "participants.tsv", sep="\t", index=False)


CASES = [
    (
        "scan without row",
        lambda r: _t1w(r / "sub-07" / "anat" / "sub-07_T1w.nii.gz"),
        ["sub-07", "missing from participants.tsv"],
    ),
    (
        "duplicate ids",
        lambda r: _edit_participants(r, lambda t: pd.concat([t, t.head(1)])),
        ["duplicate participant_id", "sub-01"],
    ),
    (
        "path characters",
        lambda r: _edit_participants(
            r, lambda t: t.assign(participant_id=["sub-01", "sub-../02", "sub-03"])
        ),
        ["sub-../02", "path characters"],
    ),
    (
        "missing label",
        lambda r: _edit_participants(r, lambda t: t.assign(diagnosis=["CN", "", "AD"])),
        ["sub-02", "diagnosis"],
    ),
    (
        "label column absent",
        lambda r: _edit_participants(r, lambda t: t.drop(columns=["diagnosis"])),
        ["label column 'diagnosis' not found", "label_column"],
    ),
    (
        "bad file name",
        lambda r: _t1w(r / "sub-01" / "anat" / "sub-01_acq_T1w.nii.gz"),
        ["sub-01_acq_T1w.nii.gz", "rename"],
    ),
]


@pytest.mark.parametrize(("name", "edit", "words"), CASES, ids=[c[0] for c in CASES])
def test_dataset_problems_are_named(tmp_path: Path, name: str, edit, words: list[str]) -> None:  # noqa: ANN001
    root = _dataset(tmp_path)
    edit(root)
    with pytest.raises(DatasetError) as err:
        scan_table(root, label_column="diagnosis")
    for word in words:
        assert word in str(err.value)
    assert "Fix" in str(err.value) or "fix" in str(err.value)


def test_no_scans_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "participants.tsv").write_text("participant_id\tdiagnosis\n")
    with pytest.raises(DatasetError, match="no T1w scans"):
        find_scans(tmp_path)


def test_missing_participants_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="participants.tsv"):
        read_participants(tmp_path / "participants.tsv", label_column="diagnosis")


@pytest.mark.parametrize("policy", ["fail", "exclude"])
def test_check_dataset_invalid_scan(tmp_path: Path, policy: str) -> None:
    root = _dataset(tmp_path / "bids")
    bad = root / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti at all"))
    scans = find_scans(root)
    out = tmp_path / "inputs.tsv"
    if policy == "fail":
        with pytest.raises(DatasetError) as err:
            check_dataset(
                scans,
                participants_tsv=root / "participants.tsv",
                label_column="diagnosis",
                on_invalid=policy,
                out_tsv=out,
            )
        assert "sub-02_T1w.nii.gz" in str(err.value) and "exclude" in str(err.value)
        assert not out.exists()
    else:
        table = check_dataset(
            scans,
            participants_tsv=root / "participants.tsv",
            label_column="diagnosis",
            on_invalid=policy,
            out_tsv=out,
        )
        assert out.exists()
        status = dict(zip(table["scan"], table["status"], strict=True))
        assert status == {"sub-01": "ok", "sub-02": "invalid", "sub-03": "ok"}
        assert "sub-02_T1w.nii.gz" in table.loc[table["scan"] == "sub-02", "problem"].iloc[0]
        assert table.loc[table["scan"] == "sub-01", "image_hash"].iloc[0]


def _check(root: Path, out: Path, on_invalid: str = "fail", **kw):  # noqa: ANN003
    """check_dataset on every scan of a test dataset (label column ``diagnosis``)."""
    return check_dataset(
        find_scans(root),
        participants_tsv=root / "participants.tsv",
        label_column="diagnosis",
        on_invalid=on_invalid,
        out_tsv=out,
        **kw,
    )


def test_excluded_scans_skip_checks_and_are_listed(tmp_path: Path) -> None:
    """A scan excluded in the config (e.g. its preprocessing failed) is left out, even
    when its file is broken and on_invalid is "fail", and the table names the reason."""
    root = _dataset(tmp_path / "bids")
    bad = root / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti at all"))
    table = _check(root, tmp_path / "inputs.tsv", excluded={"sub-02": "registration failed"})
    status = dict(zip(table["scan"], table["status"], strict=True))
    assert status == {"sub-01": "ok", "sub-02": "excluded", "sub-03": "ok"}
    problem = table.loc[table["scan"] == "sub-02", "problem"].iloc[0]
    assert "sub-02_T1w.nii.gz" in problem and "registration failed" in problem


def test_excluding_an_unknown_scan_is_an_error(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "bids")
    out = tmp_path / "inputs.tsv"
    with pytest.raises(DatasetError, match=r"not in the dataset: sub-99") as err:
        _check(root, out, excluded={"sub-99": "typo"})
    assert "'sub-01'" in str(err.value)
    assert not out.exists()


def test_identical_images_get_identical_hashes(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "bids")
    data = np.asanyarray(nib.load(str(root / "sub-01/anat/sub-01_T1w.nii.gz")).dataobj)
    _t1w(root / "sub-03/anat/sub-03_T1w.nii.gz", data=np.array(data))
    table = _check(root, tmp_path / "inputs.tsv")
    hashes = dict(zip(table["scan"], table["image_hash"], strict=True))
    assert hashes["sub-01"] == hashes["sub-03"] != hashes["sub-02"]


def test_setup_logging_captures_logging_and_prints(tmp_path: Path) -> None:
    import subprocess
    import sys

    log = tmp_path / "logs" / "rule.log"
    code = (
        "import logging\n"
        "from brainlens.logutil import setup_logging\n"
        f"setup_logging({str(log)!r})\n"
        "logging.getLogger('nipype.workflow').info('hello from a library')\n"
        "print('printed line')\n"
        "raise RuntimeError('boom')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    text = log.read_text()
    assert "hello from a library" in text and "printed line" in text
    assert "RuntimeError: boom" in text and "Traceback" in text
