"""Covariates, TIV, in-fold residualisation and ComBat, and the site-confound tests.

A small synthetic feature-level dataset (no preprocessing): three sites shift and scale
the "grey matter" voxels, and the diagnosis is confounded with the site (most patients
at site A, most controls at site C), with no true diagnosis effect in the images. So a
model without harmonisation scores above chance on site alone, and after ComBat fitted
in each fold the site is no longer predictable from the harmonised test features.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from brainlens.confounds.combat import apply_combat, fit_combat
from brainlens.confounds.covariates import check_covariates, covariate_values
from brainlens.confounds.infold import (
    check_confound_provenance,
    check_confounds_config,
    fit_fold_confounds,
    save_fold_confounds,
)
from brainlens.confounds.residualize import apply_residualizer, fit_residualizer
from brainlens.confounds.tiv import write_tiv_table
from brainlens.errors import ConfigError, DatasetError, LeakageError
from brainlens.folds import make_folds, read_folds
from brainlens.linear import train_linear_fold, write_fold_confounds
from brainlens.linear.confounds import apply_fold_confounds, fold_parts
from brainlens.linear.features import fold_features

GRID = (4, 4, 4)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SITES = ("A", "B", "C")
N_FOLDS = 3


@pytest.fixture(scope="module")
def site_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """150 participants at 3 sites; P(patient | site) = 0.85, 0.5, 0.15; no true effect."""
    root = tmp_path_factory.mktemp("confounds")
    rng = np.random.default_rng(11)
    n = 150
    ids = [f"sub-{i:03d}" for i in range(n)]
    site = np.array(SITES)[np.arange(n) % 3]
    p_patient = np.select([site == "A", site == "B"], [0.85, 0.5], 0.15)
    diag = np.where(rng.random(n) < p_patient, "patient", "control")
    age = np.round(rng.normal(65, 7, n), 1)
    v = int(np.prod(GRID))
    shift = {s: rng.normal(0, 0.6, v) for s in SITES}
    scale = {"A": 1.0, "B": 1.4, "C": 0.8}
    maps = np.empty((n, *GRID), np.float32)
    for i in range(n):
        noise = rng.standard_normal(v) * 0.1 * scale[site[i]]
        maps[i] = (0.5 + 0.1 * shift[site[i]] + noise).reshape(GRID)
    np.save(root / "gm.npy", maps.astype(np.float32))
    pd.DataFrame({"row": range(n), "scan_id": ids, "path": ids}).to_csv(
        root / "gm.tsv", sep="\t", index=False
    )
    (root / "gm.json").write_text(json.dumps({"shape": [n, *GRID], "affine": AFFINE.tolist()}))
    nib.save(nib.Nifti1Image(np.ones(GRID, np.uint8), AFFINE), str(root / "mask.nii.gz"))
    table = pd.DataFrame({"participant_id": ids, "diagnosis": diag, "age": age, "site": site})
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    scans = table.assign(session_id="n/a")
    make_folds(
        scans[["participant_id", "session_id", "diagnosis", "site"]],
        label_column="diagnosis",
        n_folds=N_FOLDS,
        stratify=["site"],
        seed=5,
    ).to_csv(root / "folds.tsv", sep="\t", index=False)
    return {"root": root, "pack": (root / "gm.npy", root / "gm.tsv"), "table": table}


def _files(data: dict, name: str, fold: int) -> tuple[Path, Path]:
    return data["root"] / f"{name}-{fold}.npz", data["root"] / f"{name}-{fold}.json"


def _fit(data: dict, fold: int, method: str, covariates=(), name: str | None = None, **kw):
    root = data["root"]
    npz, js = _files(data, name or method, fold)
    write_fold_confounds(
        kind="voxels",
        folds_tsv=root / "folds.tsv",
        fold=fold,
        out_npz=npz,
        out_json=js,
        participants_tsv=root / "participants.tsv",
        covariates=list(covariates),
        method=method,
        pack=data["pack"],
        mask_nii=root / "mask.nii.gz",
        **kw,
    )
    return npz, js


def _train(data: dict, model: str, fold: int, out: Path, **kw) -> dict:
    root = data["root"]
    return train_linear_fold(
        model=model,
        folds_tsv=root / "folds.tsv",
        fold=fold,
        out_dir=out,
        pack=data["pack"],
        mask_nii=root / "mask.nii.gz",
        participants_tsv=root / "participants.tsv",
        seed=0,
        **kw,
    )


def _features(data: dict, fold: int, confounds=None, participants=None) -> tuple[dict, dict]:
    root = data["root"]
    parts = fold_parts(read_folds(root / "folds.tsv"), fold)
    x, _ = fold_features(
        "voxels",
        parts,
        pack=data["pack"],
        mask_nii=root / "mask.nii.gz",
        atlas_nii=None,
        atlas_tsv=None,
    )
    if confounds is not None:
        x = apply_fold_confounds(
            x,
            parts,
            npz=confounds[0],
            sidecar=confounds[1],
            folds_tsv=root / "folds.tsv",
            fold=fold,
            participants_tsv=participants or root / "participants.tsv",
        )
    return x, parts


def _site_accuracy(data: dict, fold: int, confounds=None) -> float:
    """Balanced accuracy of a site classifier trained on train, scored on test features."""
    x, parts = _features(data, fold, confounds)
    site = data["table"].set_index("participant_id")["site"]
    y = {r: site.loc[p["participant_id"]].to_numpy() for r, p in parts.items()}
    clf = LogisticRegression(max_iter=2000).fit(x["train"], y["train"])
    return balanced_accuracy_score(y["test"], clf.predict(x["test"]))


def test_site_confound_is_learned_without_harmonisation(site_data, tmp_path: Path) -> None:
    """confounds_only on site and the voxel model on raw features score above chance."""
    for model, kw in (("confounds_only", {"covariates": ["site"]}), ("linear_svm_voxels", {})):
        scores = [
            _train(site_data, model, k, tmp_path / f"{model}-{k}", **kw)["balanced_accuracy"]
            for k in range(N_FOLDS)
        ]
        assert np.mean(scores) > 0.65, (model, scores)
    raw = [_site_accuracy(site_data, k) for k in range(N_FOLDS)]
    assert min(raw) > 0.9, raw


def test_combat_in_fold_makes_site_unpredictable(site_data, tmp_path: Path) -> None:
    """After ComBat fitted on each training part, site and label are at chance on test."""
    site_scores, label_scores = [], []
    for k in range(N_FOLDS):
        files = _fit(site_data, k, "combat", covariates=["age"])
        check_confound_provenance(files[1], site_data["root"] / "folds.tsv", k)
        meta = json.loads(files[1].read_text())
        assert meta["fit_on"] == "train" and meta["method"] == "combat"
        site_scores.append(_site_accuracy(site_data, k, files))
        label_scores.append(
            _train(site_data, "linear_svm_voxels", k, tmp_path / f"f{k}", confounds=files)[
                "balanced_accuracy"
            ]
        )
    assert np.mean(site_scores) < 0.5, site_scores  # chance is 1/3
    assert np.mean(label_scores) < 0.62, label_scores


def test_residualize_removes_a_linear_covariate_effect() -> None:
    rng = np.random.default_rng(3)
    n, v = 400, 30
    age = rng.normal(65, 8, n)
    x = 0.15 * np.outer(age - 65, rng.uniform(0.5, 1.5, v)) + rng.standard_normal((n, v))
    train = np.arange(n) < 300
    c = age[:, None]
    params = fit_residualizer(x, c, train)
    out = apply_residualizer(x, c, params)

    def mean_abs_corr(m):
        return np.mean([abs(np.corrcoef(m[~train, j], age[~train])[0, 1]) for j in range(v)])

    assert mean_abs_corr(x) > 0.5
    assert mean_abs_corr(out) < 0.15
    # one sample at a time (a Dataset's __getitem__) gives the same
    np.testing.assert_allclose(apply_residualizer(x[-1], c[-1], params), out[-1])
    # the fit reads the training rows only: changing test rows changes nothing
    x2 = x.copy()
    x2[~train] += 100.0
    np.testing.assert_allclose(fit_residualizer(x2, c, train)["beta"], params["beta"])


def test_combat_reproduces_neurocombat(site_data) -> None:
    """The numpy apply equals neuroCombat on the fit rows and neuroCombatFromTraining
    on new rows (no covariates: FromTraining takes none)."""
    from neuroCombat import neuroCombat, neuroCombatFromTraining

    table = site_data["table"]
    x = np.load(site_data["pack"][0]).reshape(len(table), -1).astype(np.float64)
    site = table["site"].to_numpy(str)
    c = ((table["age"].to_numpy() - 65) / 7)[:, None]
    train = np.arange(len(x)) < 100
    params = fit_combat(x, site, c, train)
    covars = pd.DataFrame({"site": site[train], "c0": c[train, 0]})
    ref = neuroCombat(x[train].T.copy(), covars, "site", continuous_cols=["c0"])["data"].T
    np.testing.assert_allclose(
        apply_combat(x[train], site[train], c[train], params), ref, atol=1e-6
    )
    plain = fit_combat(x, site, np.zeros((len(x), 0)), train)
    est = neuroCombat(x[train].T.copy(), covars[["site"]], "site")["estimates"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        new = neuroCombatFromTraining(x[~train].T.copy(), site[~train], est)["data"].T
    got = apply_combat(x[~train], site[~train], np.zeros(((~train).sum(), 0)), plain)
    np.testing.assert_allclose(got, new, atol=1e-6)
    np.testing.assert_allclose(
        apply_combat(x[-1], site[-1], c[-1], params),
        apply_combat(x[-1:], site[-1:], c[-1:], params)[0],
    )


def test_audit_catches_a_fit_on_all_rows(site_data, tmp_path: Path) -> None:
    root = site_data["root"]
    x, parts = _features(site_data, 0)
    rows = pd.concat([p.assign(role=r) for r, p in parts.items()], ignore_index=True)
    values, kinds = covariate_values(
        pd.read_csv(root / "participants.tsv", sep="\t", dtype=str), ["age"], rows
    )
    site = rows.merge(site_data["table"], on="participant_id")["site"].to_numpy(str)
    xa = np.concatenate([x[r] for r in parts])
    for method in ("residualize", "combat"):
        params, meta = fit_fold_confounds(
            xa,
            rows,
            values,
            kinds,
            method=method,
            fold=0,
            site=site,
            fit_rows=np.ones(len(rows), bool),  # the bug: fitted on every row
        )
        meta |= {"covariates": ["age"], "site_column": "site" if method == "combat" else None}
        npz, js = tmp_path / f"{method}.npz", tmp_path / f"{method}.json"
        save_fold_confounds(params, meta, npz, js)
        with pytest.raises(LeakageError, match=r"outside its training part.*\((val|test)\)"):
            check_confound_provenance(js, root / "folds.tsv", 0)
        with pytest.raises(LeakageError):
            _train(site_data, "linear_svm_voxels", 0, tmp_path / method, confounds=(npz, js))
        honest, meta = fit_fold_confounds(xa, rows, values, kinds, method=method, fold=0, site=site)
        save_fold_confounds(honest, meta, npz, js)
        check_confound_provenance(js, root / "folds.tsv", 0)
        with pytest.raises(LeakageError, match="fold 0 used for fold 1"):
            check_confound_provenance(js, root / "folds.tsv", 1)


def test_unseen_test_site_is_an_error_naming_it(site_data, tmp_path: Path) -> None:
    files = _fit(site_data, 0, "combat", name="unseen")
    table = site_data["table"].copy()
    folds = pd.read_csv(site_data["root"] / "folds.tsv", sep="\t")
    test_ids = folds.loc[(folds["fold"] == 0) & (folds["role"] == "test"), "participant_id"]
    table.loc[table["participant_id"].isin(test_ids[:3]), "site"] = "Z9"
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    with pytest.raises(DatasetError, match=r"'Z9'.*never occur"):
        _features(site_data, 0, files, participants=tmp_path / "participants.tsv")


def test_fit_on_train_controls_uses_only_training_controls(site_data) -> None:
    _, js = _fit(
        site_data, 1, "residualize", covariates=["age"], name="ctrl", fit_on="train_controls"
    )
    meta = json.loads(js.read_text())
    folds = pd.read_csv(site_data["root"] / "folds.tsv", sep="\t")
    part = folds[(folds["fold"] == 1) & (folds["role"] == "train")]
    controls = set(part.loc[part["label"] == "control", "participant_id"])
    assert set(meta["fit_scan_ids"]) == controls and meta["fit_on"] == "train_controls"


def _participants(tmp_path: Path, **columns) -> Path:
    base = {"participant_id": ["sub-01", "sub-02", "sub-03"], "diagnosis": ["a", "b", "a"]}
    pd.DataFrame(base | columns).to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    return tmp_path / "p.tsv"


def test_bad_covariate_values_name_the_column_and_value(tmp_path: Path) -> None:
    p = _participants(tmp_path, age=["61", "4O", "70"], sex=["F", "M", "n/a"], site=["1", "2", "1"])
    with pytest.raises(ConfigError, match=r"column 'age'.*'4O' \(sub-02\)"):
        check_covariates(p, ["age"], "diagnosis")
    with pytest.raises(ConfigError, match=r"column 'sex' is n/a for participant\(s\) \['sub-03'\]"):
        check_covariates(p, ["sex"], "diagnosis")
    with pytest.raises(ConfigError, match=r"\['bmi'\] not in participants.tsv"):
        check_covariates(p, ["bmi", "tiv"], "diagnosis")
    with pytest.raises(ConfigError, match="label column"):
        check_covariates(p, ["diagnosis"], "diagnosis")
    with pytest.raises(ConfigError, match="unknown kind"):
        check_covariates(p, [{"site": "ordinal"}], "diagnosis")
    assert check_covariates(p, ["site", "tiv"], "diagnosis") == {"site": "numeric"}
    assert check_covariates(p, [{"site": "categorical"}]) == {"site": "categorical"}
    # only the participants used are checked
    assert check_covariates(p, ["sex"], participant_ids=["sub-01", "sub-02"])


def test_config_checks(tmp_path: Path) -> None:
    base = {"label_column": "diagnosis", "train": {"model": "rieke2018_3d"}, "baselines": {}}
    check_confounds_config(base | {"covariates": ["age", "sex"]})
    with pytest.raises(ConfigError, match="top-level key covariates"):
        check_confounds_config(base | {"baselines": {"covariates": ["age"]}})
    # scope all (the default) harmonises the CNN inputs too (tests/test_confounds_cnn.py)
    check_confounds_config(base | {"confounds": {"method": "combat"}})
    check_confounds_config(base | {"confounds": {"method": "combat", "scope": "baselines"}})
    with pytest.raises(ConfigError, match="site column 'site' is also in covariates"):
        check_confounds_config(
            base | {"covariates": ["site"], "confounds": {"method": "combat", "scope": "baselines"}}
        )
    with pytest.raises(ConfigError, match="nothing to regress out"):
        check_confounds_config(
            base | {"confounds": {"method": "residualize", "scope": "baselines"}}
        )
    with pytest.raises(ConfigError, match="label column"):
        check_confounds_config(base | {"covariates": ["diagnosis"]})


def test_tiv_is_the_sum_of_the_modulated_tissue_volumes(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm3 voxels
    maps = {}
    for tissue, value in (("gm", 0.5), ("wm", 0.25), ("csf", 1.0)):
        data = np.zeros((10, 10, 10), np.float32)
        data[:5] = value  # 500 voxels
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{tissue}.nii.gz"))
        maps[tissue] = [tmp_path / f"{tissue}.nii.gz"]
    scans = [{"scan": "sub-01_ses-1", "participant_id": "sub-01", "session_id": "ses-1"}]
    table = write_tiv_table(maps, scans, tmp_path / "tiv.tsv")
    row = pd.read_csv(tmp_path / "tiv.tsv", sep="\t").iloc[0]
    assert row["scan_id"] == "sub-01_ses-1"
    assert row["gm_ml"] == pytest.approx(2.0) and row["csf_ml"] == pytest.approx(4.0)
    assert row["tiv_ml"] == pytest.approx(2.0 + 1.0 + 4.0) == table["tiv_ml"][0]
