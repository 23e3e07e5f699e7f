"""Writing the synthetic BIDS demo dataset: plan, scans, metadata, command line."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from brainlens._io import atomic_output, save_image, write_text_atomic
from brainlens.atlases import load_atlas, region_label, resample_labels
from brainlens.bids import scan_key, scan_subdir
from brainlens.errors import ConfigError
from brainlens.synthetic.anatomy import _region_weights, make_scan, subject_anatomy
from brainlens.synthetic.spec import DemoSpec


def plan_dataset(spec: DemoSpec, *, seed: int) -> pd.DataFrame:
    """Who is in the demo dataset, without making any image.

    Returns
    -------
    pandas.DataFrame
        One row per scan: ``participant_id``, ``session_id`` ("n/a" without
        sessions), ``index`` (subject index), ``<label_column>``, ``age``, ``sex``.
    """
    spec.validate()
    rng = np.random.default_rng([seed, 0])
    n = spec.n_subjects
    n_pat = n // 2
    diagnosis = np.array(["patient"] * n_pat + ["control"] * (n - n_pat))
    rng.shuffle(diagnosis)
    age = np.round(rng.normal(70, 6, n), 1)
    sex = rng.choice(["F", "M"], n)
    second = set(rng.choice(n, spec.n_second_session, replace=False).tolist())
    width = max(3, len(str(n)))
    rows = []
    for i in range(n):
        pid = f"sub-{spec.id_prefix}{i + 1:0{width}d}"
        sessions = (
            ["n/a"]
            if spec.n_second_session == 0
            else (["ses-01", "ses-02"] if i in second else ["ses-01"])
        )
        for ses in sessions:
            rows.append(
                {
                    "participant_id": pid,
                    "session_id": ses,
                    "index": i,
                    spec.label_column: diagnosis[i],
                    "age": age[i],
                    "sex": sex[i],
                }
            )
    return pd.DataFrame(rows)


def scan_relpath(participant_id: str, session_id: str) -> str:
    """BIDS path of a T1w scan relative to the dataset root (names from brainlens.bids)."""
    scan = scan_key(participant_id, session_id)
    return f"{scan_subdir(participant_id, session_id)}/anat/{scan}_T1w.nii.gz"


def write_demo_subject(
    out_dir: Path, spec: DemoSpec, *, seed: int, participant_id: str, session_id: str | None = None
) -> list[Path]:
    """Write the scans of one participant (or one of its sessions) of the demo dataset.

    Each file is written to a temporary name and renamed, so an interrupted run leaves
    no half-written image. A participant's images depend only on ``seed``, ``spec`` and
    its index, so subjects can be made in parallel (one workflow job each).

    Parameters
    ----------
    out_dir : Path
        Dataset root.
    spec : DemoSpec
    seed : int
    participant_id : str
    session_id : str, optional
        Only this session ("n/a" in a dataset without sessions); all by default.

    Returns
    -------
    list of Path
        The T1w files written, one per session.
    """
    out_dir = Path(out_dir)
    plan = plan_dataset(spec, seed=seed)
    rows = plan[plan["participant_id"] == participant_id]
    if rows.empty:
        raise ConfigError(f"{participant_id}: not in the demo plan of {spec.n_subjects} subjects")
    index = int(rows["index"].iloc[0])
    is_patient = rows.iloc[0][spec.label_column] == "patient"
    source, disp = subject_anatomy(spec, seed=seed, index=index, is_patient=is_patient)
    written = []
    for k, row in enumerate(rows.to_dict("records")):
        if session_id is not None and row["session_id"] != session_id:
            continue
        scan_rng = np.random.default_rng([seed, 2, index, k])
        img = make_scan(spec, source=source, displacement=disp, rng=scan_rng)
        path = out_dir / scan_relpath(row["participant_id"], row["session_id"])
        save_image(img, path)
        written.append(path)
    return written


def write_demo_metadata(out_dir: Path, spec: DemoSpec, *, seed: int) -> pd.DataFrame:
    """Write ``participants.tsv/.json``, ``dataset_description.json`` and ``ground_truth.json``.

    Returns
    -------
    pandas.DataFrame
        The scan plan (see :func:`plan_dataset`).
    """
    out_dir = Path(out_dir)
    plan = plan_dataset(spec, seed=seed)
    _, _, label = _region_weights(spec.atlas, spec.region)
    out_dir.mkdir(parents=True, exist_ok=True)
    participants = plan.drop_duplicates("participant_id")[
        ["participant_id", spec.label_column, "age", "sex"]
    ]
    with atomic_output(out_dir / "participants.tsv") as tmp:
        participants.to_csv(tmp, sep="\t", index=False)
    levels = {"patient": "planted regional atrophy", "control": "no effect"}
    sidecar = {
        spec.label_column: {"Description": "group", "Levels": levels},
        "age": {"Description": "age", "Units": "years"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    }
    write_text_atomic(out_dir / "participants.json", json.dumps(sidecar, indent=2))
    description = {
        "Name": "brainlens synthetic demo (MNI152 template with a planted effect)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "brainlens.synthetic"}],
    }
    write_text_atomic(out_dir / "dataset_description.json", json.dumps(description, indent=2))
    truth = {
        "atlas": spec.atlas,
        "region": spec.region,
        "label": label,
        "effect": spec.effect,
        "kind": "regional atrophy (tissue loss and shrinkage)",
        "label_column": spec.label_column,
        "positive_class": "patient",
        "seed": seed,
        "spec": asdict(spec),
    }
    write_text_atomic(out_dir / "ground_truth.json", json.dumps(truth, indent=2))
    return plan


def write_demo_dataset(out_dir: Path, spec: DemoSpec, *, seed: int) -> pd.DataFrame:
    """Write the whole synthetic BIDS dataset (metadata and every participant).

    Files are written into a temporary folder beside ``out_dir`` and moved into place
    at the end, so an interrupted run leaves no half-written dataset.

    Parameters
    ----------
    out_dir : Path
        Dataset root to create (replaced if it exists).
    spec : DemoSpec
    seed : int
        Master seed.

    Returns
    -------
    pandas.DataFrame
        The scan plan (see :func:`plan_dataset`) with a ``path`` column (relative).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=out_dir.parent))
    try:
        plan = write_demo_metadata(tmp, spec, seed=seed)
        for pid in plan["participant_id"].unique():
            write_demo_subject(tmp, spec, seed=seed, participant_id=pid)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan.assign(
        path=[
            scan_relpath(p, s)
            for p, s in zip(plan["participant_id"], plan["session_id"], strict=True)
        ]
    )


def region_mask_on_grid(atlas: str, region: str, resolution: float) -> np.ndarray:
    """Boolean mask of a ground-truth region on the analysis grid, shape (X, Y, Z)."""
    img, table = load_atlas(atlas)
    return resample_labels(img, resolution) == region_label(table, region, atlas=atlas)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m brainlens.synthetic OUT_DIR [--n-subjects N] ...``."""
    parser = argparse.ArgumentParser(description="Write the brainlens synthetic BIDS demo dataset.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, required=True, help="master seed")
    defaults = DemoSpec()
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out_dir, seed = args.pop("out_dir"), args.pop("seed")
    plan = write_demo_dataset(out_dir, DemoSpec(**args), seed=seed)
    print(
        f"wrote {len(plan)} scans of {plan['participant_id'].nunique()} participants to {out_dir}"
    )
    return 0
