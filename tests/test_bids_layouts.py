"""BIDS subsets on datasets laid out like the public BIDS examples.

Layouts: no sessions with an MEG ``sub-emptyroom`` row (ds000247), ``ses-test`` /
``ses-retest`` (ds000114), ``ses-mri`` with ``acq-mprage`` (ds000117), ``task-`` /
``acq-`` / ``rec-`` variants of one session (``sub-02_task-still_acq-t1tirmPMCoff_
rec-wore_T1w.nii``), ``run-01`` / ``run-02``, and derivatives (fMRIPrep-like).
Selection follows pybids/snakebids: participant labels with or without ``sub-``,
entity filters with ``run-01`` == 1, ``true``/``false`` for present/absent.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from brainlens.bids import scan_subdir, scan_table, scan_table_from_config
from brainlens.errors import ConfigError, DatasetError
from brainlens.folds import make_folds, scan_id

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def _touch(root: Path, name: str) -> None:
    """An (empty) T1w file at its BIDS place; discovery never opens it."""
    sub = name.split("_")[0]
    ses = re.search(r"_(ses-[A-Za-z0-9]+)", name)
    folder = root / sub / (ses.group(1) if ses else "") / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"")


def _bids(root: Path, files: list[str], labels: dict[str, str]) -> Path:
    """A dataset with these T1w file names and participants.tsv rows (id -> label)."""
    for name in files:
        _touch(root, name)
    rows = [{"participant_id": p, "diagnosis": v, "age": "70"} for p, v in labels.items()]
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    return root


def _table(root: Path, **kw) -> pd.DataFrame:  # noqa: ANN003
    return scan_table(root, label_column="diagnosis", **kw)


def _consistent(table: pd.DataFrame) -> None:
    """Every scan id is what the rest of brainlens derives from its (participant, session)."""
    assert table["scan"].is_unique
    for row in table.itertuples():
        assert scan_id(row.participant_id, row.session_id) == row.scan
        assert row.subdir == scan_subdir(row.participant_id, row.session_id)
        assert Path(row.path).name.startswith(row.scan)
        assert re.fullmatch(
            SCHEMA["properties"]["exclude_scans"]["propertyNames"]["pattern"], row.scan
        )


# --- no sessions, MEG empty-room row ------------------------------------------------


def _meg(tmp_path: Path) -> Path:
    files = [f"sub-0{i}_T1w.nii.gz" for i in range(1, 5)]
    labels = {f"sub-0{i}": "CN" if i % 2 else "AD" for i in range(1, 5)}
    return _bids(tmp_path, files, labels | {"sub-emptyroom": "n/a"})


def test_participant_without_t1w_is_a_warning(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    with caplog.at_level(logging.WARNING, logger="brainlens"):
        table = _table(_meg(tmp_path))
    assert list(table["scan"]) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert list(table["session_id"]) == ["n/a"] * 4
    assert "sub-emptyroom" in caplog.text and "without a T1w" in caplog.text
    assert table.attrs["left_out"]["sub-emptyroom"] == "no T1w in the dataset"
    _consistent(table)


def test_t1w_without_participants_row_stays_an_error(tmp_path: Path) -> None:
    root = _meg(tmp_path)
    _touch(root, "sub-09_T1w.nii.gz")
    with pytest.raises(DatasetError, match=r"missing from participants.tsv: sub-09"):
        _table(root)
    # ... unless that participant is left out on purpose (with or without sub-)
    assert "sub-09" not in set(
        _table(root, participants={"exclude_participant_label": ["09"]})["participant_id"]
    )


def test_participant_label_with_or_without_prefix(tmp_path: Path) -> None:
    root = _meg(tmp_path)
    table = _table(root, participants={"participant_label": ["01", "sub-02", "03"]})
    assert list(table["scan"]) == ["sub-01", "sub-02", "sub-03"]
    table = _table(root, participants={"exclude_participant_label": "sub-01"})
    assert list(table["scan"]) == ["sub-02", "sub-03", "sub-04"]
    with pytest.raises(ConfigError, match=r"sub-1\b.*quote"):
        _table(root, participants={"participant_label": [1]})
    with pytest.raises(ConfigError, match="participant label"):
        _table(root, participants={"participant_label": ["../01"]})


def test_include_labels_keeps_two_of_three_classes(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    labels = {"sub-01": "CN", "sub-02": "MCI", "sub-03": "AD", "sub-04": "CN", "sub-05": "MCI"}
    root = _bids(tmp_path, [f"{p}_T1w.nii.gz" for p in labels], labels)
    with caplog.at_level(logging.WARNING, logger="brainlens"):
        table = _table(root, participants={"include_labels": ["CN", "AD"]})
    assert dict(zip(table["scan"], table["label"], strict=True)) == {
        "sub-01": "CN",
        "sub-03": "AD",
        "sub-04": "CN",
    }
    assert "'MCI'" in caplog.text and "sub-02" in caplog.text and "sub-05" in caplog.text
    with pytest.raises(ConfigError, match=r"\['Ad'\].*values: \['AD', 'CN', 'MCI'\]"):
        _table(root, participants={"include_labels": ["CN", "Ad"]})


def test_missing_labels_error_or_dropped(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    labels = {"sub-01": "CN", "sub-02": "n/a", "sub-03": "AD", "sub-04": ""}
    root = _bids(tmp_path, [f"{p}_T1w.nii.gz" for p in labels], labels)
    with pytest.raises(DatasetError, match=r"sub-02, sub-04.*drop_missing_labels"):
        _table(root)
    with caplog.at_level(logging.WARNING, logger="brainlens"):
        table = _table(root, participants={"drop_missing_labels": True})
    assert list(table["scan"]) == ["sub-01", "sub-03"]
    assert "sub-02" in caplog.text and "sub-04" in caplog.text


# --- sessions test / retest -----------------------------------------------------------


def _test_retest(tmp_path: Path) -> Path:
    subs = [f"sub-{i:02d}" for i in range(1, 4)]
    files = [f"{s}_ses-{x}_T1w.nii.gz" for s in subs for x in ("test", "retest")]
    return _bids(tmp_path, files, dict(zip(subs, ["CN", "AD", "CN"], strict=True)))


def test_sessions_test_retest_and_session_filter(tmp_path: Path) -> None:
    root = _test_retest(tmp_path)
    table = _table(root)
    assert len(table) == 6 and set(table["subdir"]) >= {"sub-01/ses-test", "sub-01/ses-retest"}
    _consistent(table)
    for ses in ("test", "ses-test", ["test"]):
        only = _table(root, t1w_filters={"ses": ses})
        assert list(only["scan"]) == ["sub-01_ses-test", "sub-02_ses-test", "sub-03_ses-test"]
    assert len(_table(root, t1w_filters={"session": ["test", "retest"]})) == 6
    with pytest.raises(DatasetError, match="leaves no T1w"):
        _table(root, t1w_filters={"ses": "baseline"})


# --- ses-mri with acq-mprage (ds000117) -----------------------------------------------


def test_acq_mprage_keeps_the_short_scan_id(tmp_path: Path) -> None:
    files = [f"sub-{i:02d}_ses-mri_acq-mprage_T1w.nii.gz" for i in range(1, 4)]
    root = _bids(tmp_path, files, {"sub-01": "CN", "sub-02": "AD", "sub-03": "CN"})
    table = _table(root, t1w_filters={"acquisition": "mprage"})
    assert list(table["scan"]) == ["sub-01_ses-mri", "sub-02_ses-mri", "sub-03_ses-mri"]
    assert list(table["entities"]) == ["acq-mprage"] * 3
    _consistent(table)
    assert len(_table(root, exclude_scans={"sub-02_ses-mri": "motion"})) == 3
    with pytest.raises(
        DatasetError,
        match=r"sub-02_ses-mri_acq-mprage \(the file of scan 'sub-02_ses-mri': use that id",
    ):
        _table(root, exclude_scans={"sub-02_ses-mri_acq-mprage": "motion"})
    with pytest.raises(DatasetError, match="sub-07"):
        _table(root, exclude_scans={"sub-07": "typo"})


# --- task-/acq-/rec- variants of one session --------------------------------------------


VARIANTS = [
    "sub-01_T1w.nii",
    "sub-02_task-still_acq-t1tirmPMCoff_rec-wore_T1w.nii",
    "sub-02_task-still_acq-t1tirmPMCon_rec-wore_T1w.nii",
    "sub-02_task-nod_acq-t1tirmPMCon_rec-wore_T1w.nii",
    "sub-03_task-still_acq-t1tirmPMCon_T1w.nii",
]


def _variants(tmp_path: Path) -> Path:
    return _bids(tmp_path, VARIANTS, {"sub-01": "CN", "sub-02": "AD", "sub-03": "CN"})


def test_several_t1w_per_session_is_an_error_listing_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        _table(_variants(tmp_path))
    text = str(err.value)
    for name in VARIANTS[1:4]:
        assert name in text
    assert "sub-01_T1w" not in text and "sub-03" not in text
    assert "t1w_filters" in text and "t1w_multiple: first" in text


def test_entity_filters_choose_one_variant(tmp_path: Path) -> None:
    root = _variants(tmp_path)
    with pytest.raises(DatasetError, match="task-nod"):  # still two left for sub-02
        _table(root, t1w_filters={"acq": "t1tirmPMCon"})
    table = _table(root, t1w_filters={"acq": "t1tirmPMCon", "task": "still"})
    assert list(table["scan"]) == ["sub-02", "sub-03"]  # sub-01 has no acq-: left out
    assert table.attrs["left_out"]["sub-01"] == "every T1w left out by t1w_filters"
    assert Path(table["path"].iloc[0]).name == VARIANTS[2]
    # false = entity absent, true = present (pybids Query.NONE / Query.ANY)
    assert list(_table(root, t1w_filters={"rec": False})["scan"]) == ["sub-01", "sub-03"]
    table = _table(root, t1w_filters={"rec": True, "acq": ["t1tirmPMCoff"]})
    assert list(table["stem"]) == ["sub-02_task-still_acq-t1tirmPMCoff_rec-wore"]
    with pytest.raises(ConfigError, match="'sub'.*participant_label"):
        _table(root, t1w_filters={"sub": "01"})


def test_all_variants_become_scans_with_distinct_ids(tmp_path: Path) -> None:
    table = _table(_variants(tmp_path), t1w_multiple="all")
    assert list(table["scan"]) == [
        "sub-01",
        "sub-02_task-nod_acq-t1tirmPMCon_rec-wore",
        "sub-02_task-still_acq-t1tirmPMCoff_rec-wore",
        "sub-02_task-still_acq-t1tirmPMCon_rec-wore",
        "sub-03",
    ]
    assert set(table.loc[table["participant_id"] == "sub-02", "subdir"]) == {"sub-02"}
    _consistent(table)


# --- run-01 / run-02 ---------------------------------------------------------------------


def _runs(tmp_path: Path) -> Path:
    files = []
    labels = {}
    for i in range(1, 7):
        sub = f"sub-{i:02d}"
        labels[sub] = "CN" if i % 2 else "AD"
        runs = (1, 2) if i <= 2 else (1,)
        files += [f"{sub}_ses-01_run-{r:02d}_T1w.nii.gz" for r in runs]
    return _bids(tmp_path, files, labels)


def test_runs_first_keeps_the_lowest_run(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    root = _runs(tmp_path)
    with pytest.raises(
        DatasetError, match=r"sub-01_ses-01_run-01_T1w.nii.gz, sub-01_ses-01_run-02"
    ):
        _table(root)
    with caplog.at_level(logging.WARNING, logger="brainlens"):
        table = _table(root, t1w_multiple="first")
    assert list(table["scan"]) == [f"sub-{i:02d}_ses-01" for i in range(1, 7)]
    assert all("run-01" in Path(p).name for p in table["path"])
    assert "sub-01_ses-01_run-02" in caplog.text
    _consistent(table)
    config = {"bids_dir": str(root), "label_column": "diagnosis", "t1w_multiple": "first"}
    assert scan_table_from_config(config)["scan"].equals(table["scan"])


@pytest.mark.parametrize("run", [1, "1", "01", [1]])
def test_run_filter_compares_numbers(tmp_path: Path, run) -> None:  # noqa: ANN001
    table = _table(_runs(tmp_path), t1w_filters={"run": run})
    assert len(table) == 6 and all("run-01" in Path(p).name for p in table["path"])


def test_runs_all_split_by_participant_and_excludable(tmp_path: Path) -> None:
    root = _runs(tmp_path)
    table = _table(root, t1w_multiple="all", exclude_scans={"sub-01_ses-01_run-02": "motion"})
    both = table[table["participant_id"] == "sub-01"]
    assert list(both["scan"]) == ["sub-01_ses-01_run-01", "sub-01_ses-01_run-02"]
    assert list(both["session_id"]) == ["ses-01_run-01", "ses-01_run-02"]
    assert set(both["subdir"]) == {"sub-01/ses-01"}
    assert table.loc[table["participant_id"] == "sub-03", "scan"].item() == "sub-03_ses-01"
    _consistent(table)
    folds = make_folds(table, label_column="label", seed=1, n_folds=2, val_fraction=0.4)
    assert folds.groupby(["fold", "participant_id"])["role"].nunique().max() == 1
    ids = {scan_id(p, s) for p, s in zip(folds["participant_id"], folds["session_id"], strict=True)}
    assert ids == set(table["scan"])


# --- derivatives -------------------------------------------------------------------------


def test_derivatives_dataset_is_refused(tmp_path: Path) -> None:
    raw = _runs(tmp_path / "raw")
    fmriprep = raw / "derivatives" / "fmriprep"
    _bids(fmriprep, ["sub-01_ses-01_desc-preproc_T1w.nii.gz"], {"sub-01": "CN"})
    (fmriprep / "dataset_description.json").write_text(
        json.dumps({"Name": "fMRIPrep", "BIDSVersion": "1.9.0", "DatasetType": "derivative"})
    )
    with pytest.raises(DatasetError, match="DatasetType derivative") as err:
        _table(fmriprep)
    assert "raw BIDS dataset" in str(err.value) and str(raw.resolve()) in str(err.value)
    # no description, but processed names
    (fmriprep / "dataset_description.json").unlink()
    _touch(fmriprep, "sub-01_ses-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")
    with pytest.raises(DatasetError, match=r"space-MNI152NLin2009cAsym_desc-preproc_T1w.*bids_dir"):
        _table(fmriprep)
    # the raw dataset itself (derivatives/ inside it) is fine
    assert len(_table(raw, t1w_multiple="first")) == 6


# --- the workflow: checked at DAG parse time, before any job -------------------------------


def _workflow_bids(root: Path) -> Path:
    """12 participants (enough for the small config's folds), two runs for sub-01."""
    labels = {f"sub-{i:02d}": "CN" if i % 2 else "AD" for i in range(1, 13)}
    files = [f"{s}_ses-01_run-01_T1w.nii.gz" for s in labels] + ["sub-01_ses-01_run-02_T1w.nii.gz"]
    root = _bids(root, files, labels | {"sub-emptyroom": "n/a"})
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    table.assign(sex="F").to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


@pytest.mark.workflow
def test_workflow_refuses_derivatives_and_plans_selected_runs(tmp_path: Path) -> None:
    from conftest import snakemake

    bids = _workflow_bids(tmp_path / "bids")
    fmriprep = bids / "derivatives" / "fmriprep"
    _bids(fmriprep, ["sub-01_desc-preproc_T1w.nii.gz"], {"sub-01": "CN"})
    (fmriprep / "dataset_description.json").write_text(json.dumps({"DatasetType": "derivative"}))
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(work, "-n", "--cores", "1", "--config", f"bids_dir={fmriprep}", check=False)
    assert proc.returncode != 0 and "raw BIDS dataset" in proc.stdout, proc.stdout[-3000:]
    proc = snakemake(work, "-n", "--cores", "1", "--config", f"bids_dir={bids}", check=False)
    assert proc.returncode != 0 and "sub-01_ses-01_run-02_T1w.nii.gz" in proc.stdout
    assert "t1w_multiple" in proc.stdout
    out = snakemake(
        work,
        "-n",
        "--cores",
        "1",
        "--config",
        f"bids_dir={bids}",
        "t1w_multiple=all",
        "exclude_scans={sub-01_ses-01_run-02: motion}",
    ).stdout
    assert "sub-emptyroom" in out and "without a T1w" in out
    assert "check_inputs" in out and "sub-01_ses-01_run-02_T1w.nii.gz" in out
    assert not (work / "results").exists()
