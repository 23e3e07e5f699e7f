"""Tests of brainlens.folds: subject-level, stratified, seeded, audited splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainlens.errors import ConfigError, DatasetError, LeakageError
from brainlens.folds import audit_folds, make_folds, read_folds, scan_id, write_folds


def toy_scans(n_per_class=(12, 8), sessions=2, sites=("a", "b"), seed=0) -> pd.DataFrame:
    """Participants with 1..sessions sessions, labels AD/CN, sex and site columns."""
    rng = np.random.default_rng(seed)
    rows = []
    i = 0
    for label, n in zip(("AD", "CN"), n_per_class, strict=False):
        for _ in range(n):
            i += 1
            sex = ["F", "M"][i % 2]
            site = sites[i % len(sites)]
            for s in range(1, rng.integers(1, sessions + 1) + 1):
                rows.append(
                    {
                        "participant_id": f"sub-{i:03d}",
                        "session_id": f"ses-{s:02d}",
                        "label": label,
                        "sex": sex,
                        "site": site,
                        "image_hash": f"h{i:03d}{s}",
                    }
                )
    return pd.DataFrame(rows)


MODES = [
    dict(mode="kfold", n_folds=5, val_fraction=0.2),
    dict(mode="kfold", n_folds=4, val_fraction=0.15, stratify=("sex", "site")),
    dict(mode="repeated", n_repeats=10, val_fraction=0.1, test_fraction=0.1),
    dict(mode="holdout", val_fraction=0.2, test_fraction=0.2, stratify=("sex",)),
]


@pytest.mark.parametrize("opts", MODES)
def test_no_subject_on_two_sides_and_balanced(opts):
    scans = toy_scans(n_per_class=(20, 20))
    folds = make_folds(scans, seed=7, **opts)
    audit_folds(folds, scans=scans)
    n_expected = {"kfold": opts.get("n_folds"), "repeated": 10, "holdout": 1}[opts["mode"]]
    assert folds["fold"].nunique() == n_expected
    # every scan appears exactly once per fold
    assert (folds.groupby("fold").size() == len(scans)).all()
    sides = folds.groupby(["fold", "participant_id"])["role"].nunique()
    assert sides.max() == 1
    whole = scans.drop_duplicates("participant_id")["label"].value_counts(normalize=True)
    subj = folds.drop_duplicates(["fold", "participant_id"])
    for (_, role), g in subj.groupby(["fold", "role"]):
        share = g["label"].value_counts(normalize=True).reindex(whole.index, fill_value=0)
        # test parts: within 0.15; small val parts: within 0.15 or one participant
        tol = 0.15 if role == "test" else max(0.15, 1.0 / len(g))
        assert (share - whole).abs().max() <= tol, (role, share.to_dict())


def test_kfold_test_parts_partition_subjects():
    scans = toy_scans()
    folds = make_folds(scans, mode="kfold", n_folds=4, seed=3)
    test = folds[folds["role"] == "test"].drop_duplicates(["fold", "participant_id"])
    assert test["participant_id"].is_unique
    assert set(test["participant_id"]) == set(scans["participant_id"])


def test_kfold_val_fraction_is_share_of_all():
    scans = toy_scans(n_per_class=(30, 30), sessions=1)
    folds = make_folds(scans, mode="kfold", n_folds=5, val_fraction=0.2, seed=1)
    shares = folds.groupby("fold")["role"].value_counts(normalize=True).unstack()
    assert np.allclose(shares["test"], 0.2, atol=0.02)
    assert np.allclose(shares["val"], 0.2, atol=0.04)


def test_extra_strata_are_spread():
    scans = toy_scans(n_per_class=(20, 20), sessions=1)
    folds = make_folds(scans, mode="kfold", n_folds=4, stratify=("site",), seed=5)
    test = folds[folds["role"] == "test"].merge(scans[["participant_id", "site"]])
    counts = test.groupby(["fold", "label", "site"]).size().unstack(["label", "site"])
    assert counts.shape[1] == 4
    assert (counts.max() - counts.min()).max() <= 1  # each label x site stratum within +-1


@pytest.mark.parametrize("opts", MODES)
def test_seeded_reproducibility(opts):
    scans = toy_scans(n_per_class=(20, 20))
    a = make_folds(scans, seed=11, **opts)
    b = make_folds(scans, seed=11, **opts)
    c = make_folds(scans, seed=12, **opts)
    pd.testing.assert_frame_equal(a, b)
    assert not a["role"].equals(c["role"])


def test_repeats_differ_from_each_other():
    folds = make_folds(
        toy_scans(n_per_class=(20, 20)),
        mode="repeated",
        n_repeats=3,
        seed=0,
        val_fraction=0.1,
        test_fraction=0.1,
    )
    tests = [frozenset(g.loc[g.role == "test", "participant_id"]) for _, g in folds.groupby("fold")]
    assert len(set(tests)) == 3


def test_random_labels_shuffle_within_each_part_of_the_real_split():
    scans = toy_scans(n_per_class=(20, 20))
    real = make_folds(scans, mode="kfold", n_folds=5, seed=2)
    rand = make_folds(scans, mode="kfold", n_folds=5, seed=2, random_labels=True)
    assert rand.attrs["random_labels"] and rand["random_labels"].all()
    assert not real["random_labels"].any()
    key = ["fold", "participant_id", "session_id"]
    pd.testing.assert_series_equal(real.set_index(key)["role"], rand.set_index(key)["role"])

    def counts(f: pd.DataFrame) -> pd.Series:
        return (
            f.drop_duplicates(["fold", "participant_id"]).groupby(["fold", "role", "label"]).size()
        )

    pd.testing.assert_series_equal(counts(real), counts(rand))  # each part keeps its classes
    assert rand.groupby(["fold", "participant_id"])["label"].nunique().max() == 1  # sessions agree
    assert (rand["label"] != real["label"]).any()
    again = make_folds(scans, mode="kfold", n_folds=5, seed=2, random_labels=True)
    pd.testing.assert_frame_equal(rand, again)


@pytest.mark.parametrize("source", ["train", "val"])
@pytest.mark.parametrize("mode", ["kfold", "repeated"])
def test_random_labels_leave_no_train_test_association(mode, source):
    """A model that learnt the real signal perfectly must score chance on random labels.

    Such a model predicts, on the test part, the true class mapped through whatever
    chance association the training part's shuffled labels have with it (or the
    validation part's, when the epoch is selected there); its test score is then set
    by the test part's own chance association.
    """
    scans = toy_scans(n_per_class=(20, 20))
    truth = scans.drop_duplicates("participant_id").set_index("participant_id")["label"]
    other = {"AD": "CN", "CN": "AD"}
    scores = []
    for seed in range(40):
        folds = make_folds(
            scans,
            mode=mode,
            n_folds=5,
            n_repeats=5,
            test_fraction=0.2,
            seed=seed,
            random_labels=True,
        ).drop_duplicates(["fold", "participant_id"])
        for _, g in folds.groupby("fold"):
            train, test = g[g.role == source], g[g.role == "test"]
            agree = (train["label"].to_numpy() == truth[train["participant_id"]].to_numpy()).mean()
            pred = truth[test["participant_id"]].to_numpy()
            if agree < 0.5:
                pred = np.array([other[p] for p in pred])
            y = test["label"].to_numpy()
            recalls = [(pred[y == c] == c).mean() for c in ("AD", "CN")]
            scores.append(float(np.mean(recalls)))
    # every fold, not just the mean: a plain permutation gives 0.0-1.0 here
    assert max(abs(v - 0.5) for v in scores) <= 0.1, (min(scores), max(scores))


def test_identical_images_across_subjects_are_grouped():
    scans = toy_scans(n_per_class=(10, 10), sessions=1)
    # sub-001 and sub-002 share an image (same label)
    scans.loc[scans.participant_id == "sub-002", "image_hash"] = scans.loc[
        scans.participant_id == "sub-001", "image_hash"
    ].iloc[0]
    for seed in range(5):
        folds = make_folds(scans, mode="kfold", n_folds=5, seed=seed)
        audit_folds(folds, scans=scans)
        roles = folds[folds.participant_id.isin(["sub-001", "sub-002"])]
        assert (roles.groupby("fold")["role"].nunique() == 1).all()


def test_session_id_absent_becomes_na():
    scans = toy_scans(sessions=1).drop(columns="session_id")
    folds = make_folds(scans, mode="holdout", seed=0)
    assert (folds["session_id"] == "n/a").all()
    assert scan_id("sub-01", "n/a") == "sub-01"
    assert scan_id("sub-01", "ses-02") == "sub-01_ses-02"


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(mode="kfold", n_folds=9), "class 'CN' has only 8"),
        (dict(mode="kfold", n_folds=1), "n_folds"),
        (dict(mode="kfold", n_folds=5, val_fraction=0.85), "no training data"),
        (dict(mode="repeated", test_fraction=0.05), "test part"),
        (dict(mode="holdout", test_fraction=0.5, val_fraction=0.5), "sum < 1"),
        (dict(mode="bootstrap"), "folds.mode"),
        (dict(mode="kfold", val_fraction=0.0), "val_fraction"),
    ],
)
def test_impossible_requests_raise_config_error(opts, match):
    with pytest.raises(ConfigError, match=match):
        make_folds(toy_scans(n_per_class=(12, 8)), seed=0, **opts)


def _two_labels(scans):
    s = scans.copy()
    multi = s.groupby("participant_id").size()
    pid = multi[multi > 1].index[0]
    first = s.index[s.participant_id == pid][0]
    s.loc[first, "label"] = "CN" if s.loc[first, "label"] == "AD" else "AD"
    return s


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s.drop(columns="label"), "missing column"),
        (lambda s: pd.concat([s, s.iloc[:1]]), "duplicate"),
        (lambda s: s.assign(label=s["label"].where(s.index != 0, None)), "without a 'label'"),
        (_two_labels, "more than one label"),
    ],
)
def test_bad_scans_raise_dataset_error(mutate, match):
    with pytest.raises(DatasetError, match=match):
        make_folds(mutate(toy_scans(sessions=2, seed=1)), seed=0)


def _clean_folds():
    scans = toy_scans(n_per_class=(10, 10), sessions=2, seed=4)
    return scans, make_folds(scans, mode="kfold", n_folds=5, seed=0)


def _subject_two_sides(scans, folds):
    f = folds.copy()
    multi = f[(f.fold == 0)].groupby("participant_id").size()
    pid = multi[multi > 1].index[0]
    idx = f[(f.fold == 0) & (f.participant_id == pid)].index
    f.loc[idx[0], "role"] = "test" if f.loc[idx[1], "role"] != "test" else "train"
    return scans, f


def _hash_two_sides(scans, folds):
    s = scans.copy()
    f0 = folds[folds.fold == 0]
    a = f0[f0.role == "train"].iloc[0]
    b = f0[f0.role == "test"].iloc[0]
    mask_b = (s.participant_id == b.participant_id) & (s.session_id == b.session_id)
    mask_a = (s.participant_id == a.participant_id) & (s.session_id == a.session_id)
    s.loc[mask_b, "image_hash"] = s.loc[mask_a, "image_hash"].iloc[0]
    return s, folds


def _scan_two_roles(scans, folds):
    f = folds.copy()
    row = f[(f.fold == 1) & (f.role == "train")].iloc[[0]].assign(role="val")
    return scans, pd.concat([f, row], ignore_index=True)


def _no_val(scans, folds):
    f = folds.copy()
    f.loc[(f.fold == 2) & (f.role == "val"), "role"] = "train"
    return scans, f


def _no_test(scans, folds):
    f = folds.copy()
    f.loc[(f.fold == 3) & (f.role == "test"), "role"] = "train"
    return scans, f


@pytest.mark.parametrize(
    "plant, match",
    [
        (_subject_two_sides, "fold 0: participant"),
        (_hash_two_sides, "identical image content"),
        (_scan_two_roles, "more than one role"),
        (_no_val, "no 'val' part"),
        (_no_test, "no 'test' part"),
    ],
)
def test_planted_leakage_is_caught(plant, match):
    scans, folds = _clean_folds()
    audit_folds(folds, scans=scans)  # clean passes
    bad_scans, bad_folds = plant(scans, folds)
    with pytest.raises(LeakageError, match=match):
        audit_folds(bad_folds, scans=bad_scans)


def test_write_and_read_roundtrip(tmp_path):
    scans = toy_scans()
    scans_tsv = tmp_path / "scans.tsv"
    scans.to_csv(scans_tsv, sep="\t", index=False)
    out = tmp_path / "sub" / "folds.tsv"
    written = write_folds(scans_tsv, out, mode="kfold", n_folds=4, seed=9)
    back = read_folds(out)
    assert list(back.columns) == list(written.columns)
    assert (back["role"].to_numpy() == written["role"].to_numpy()).all()
    assert back["fold"].dtype.kind == "i"
    audit_folds(back, scans=scans)


def test_folds_table_carries_the_one_scan_id(tmp_path):
    """folds.tsv has scan_id from bids.scan_key; fold_part reads it, never rebuilds it."""
    from brainlens.bids import scan_key
    from brainlens.folds import fold_part

    scans = toy_scans().drop(columns="session_id").head(30)  # single-session: "n/a"
    scans["session_id"] = ["ses-01" if i % 3 == 0 else "n/a" for i in range(len(scans))]
    scans = scans.drop_duplicates(["participant_id", "session_id"])
    out = tmp_path / "folds.tsv"
    written = write_folds(scans, out, mode="kfold", n_folds=3, val_fraction=0.25, seed=2)
    back = read_folds(out)
    pairs = zip(back["participant_id"], back["session_id"], strict=True)
    assert back["scan_id"].tolist() == [scan_key(p, s) for p, s in pairs]
    assert back["scan_id"].tolist() == written["scan_id"].tolist()
    single = back.loc[back["session_id"] == "n/a", ["participant_id", "scan_id"]]
    assert len(single) and (single["scan_id"] == single["participant_id"]).all()
    assert back.loc[back["session_id"] == "ses-01", "scan_id"].str.endswith("_ses-01").all()
    # the column is read, not rebuilt: a planted id comes back as written
    back.loc[back["fold"] == 0, "scan_id"] = "sub-planted"
    assert set(fold_part(back, 0)["scan_id"]) == {"sub-planted"}


def test_old_folds_table_without_scan_id_gives_the_fix(tmp_path):
    """A folds.tsv from before scan_id is still read, but fold_part names file and fix."""
    from brainlens.folds import fold_part

    out = tmp_path / "folds.tsv"
    write_folds(toy_scans(), out, mode="kfold", n_folds=3, seed=2)
    old = tmp_path / "old_folds.tsv"
    pd.read_csv(out, sep="\t").drop(columns="scan_id").to_csv(old, sep="\t", index=False)
    folds = read_folds(old)  # the report and the summary need no scan ids
    assert "scan_id" not in folds and folds["fold"].dtype.kind == "i"
    with pytest.raises(DatasetError, match=r"old_folds\.tsv: no 'scan_id' column.*folds rule"):
        fold_part(folds, 0, "train")
    with pytest.raises(DatasetError, match="folds table: no 'scan_id'"):
        fold_part(pd.DataFrame(folds.to_dict("list")), 0)  # a frame read elsewhere


def test_audit_refuses_a_scan_id_that_is_not_the_rows_scan():
    """A hand-edited scan_id would give another scan's map this row's role."""
    scans, folds = _clean_folds()
    audit_folds(folds, scans=scans)
    bad = folds.copy()
    bad.loc[bad.index[0], "scan_id"] = folds["scan_id"].iloc[-1]
    with pytest.raises(DatasetError, match="scan_id is not the scan of their participant_id"):
        audit_folds(bad, scans=scans)
