"""``brainlens`` command line: small helpers around the workflow.

* ``brainlens demo OUT --seed N [...]``: write the synthetic BIDS demo dataset;
* ``brainlens models``: the model registry with each paper's training recipe;
* ``brainlens atlases``: atlases available on this machine;
* ``brainlens check [--bids-dir DIR] [--configfile FILE ...]``: the checks the workflow
  runs before any job (schema, names, options, classes, folds, layers), on the config
  layered as the workflow layers it (``config/demo.yaml`` only without a bids_dir), and
  a few lines on what would run.

The pipeline itself runs with ``snakemake`` (see README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: The workflow's config schema in this checkout (``--schema`` for another).
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
#: The demo's settings in this checkout, read only when no bids_dir is given (``--demo``).
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


def _models(_: argparse.Namespace) -> int:
    from brainlens.models import MODELS

    for name, spec in sorted(MODELS.items()):
        print(f"{name:20s} {spec.ndim}D  {spec.citation}")
        print(f"{'':24s}paper recipe: {spec.recipe.brief()}")
    print(
        "train.recipe: paper trains with the recipe's values (the config's where the paper "
        "states none); inputs, volume_shape and the 2D image size are checked against the "
        "config. Sections and departures: README, 'Models and their papers' recipes'."
    )
    return 0


def _atlases(_: argparse.Namespace) -> int:
    from brainlens.atlases import available_atlases

    for name, src in sorted(available_atlases().items()):
        kind = "probabilistic->maxprob" if src.probabilistic else "labels"
        print(f"{name:22s} {kind:24s} {src.image}")
    return 0


def _demo_scans(config: dict[str, Any]) -> Any:
    """The demo's scan table (scan, participant_id, label) from its plan, no images."""
    import pandas as pd

    from brainlens.bids import scan_key
    from brainlens.seeding import derive_seed
    from brainlens.synthetic import DemoSpec, plan_dataset

    spec = DemoSpec(**config["demo"])
    plan = plan_dataset(spec, seed=derive_seed(config["seed"], "demo"))
    return pd.DataFrame(
        {
            "scan": [
                scan_key(p, s) for p, s in zip(plan.participant_id, plan.session_id, strict=True)
            ],
            "participant_id": plan.participant_id.astype(str),
            "label": plan[spec.label_column].astype(str),
        }
    )


def check_summary(config: dict[str, Any], scans: Any) -> list[str]:
    """Run the workflow's parse-time checks; return the lines ``brainlens check`` prints.

    Parameters
    ----------
    config : dict
        A config validated with :func:`brainlens.config.validate_config`.
    scans : DataFrame
        The scan table (``scan``, ``participant_id``, ``label``).

    Returns
    -------
    list of str
        Scans and subjects per class, positive class, folds, models, methods per model,
        atlases.

    Raises
    ------
    BrainlensError
        The first failed check, with the same message as the workflow's.
    """
    from brainlens.atlas_custom import atlas_names, custom_atlases
    from brainlens.config import (
        attribution_methods,
        check_config,
        check_dataset,
        check_layers,
        fold_ids,
        labelled_participants,
        model_names,
        positive_class,
    )

    check_config(config)
    check_layers(config)
    counts = check_dataset(config, scans)
    people = labelled_participants(config, scans)
    scans_per = people.groupby("label")["n_scans"].sum()
    classes = list(counts.index)
    pos = positive_class(config, classes)
    folds = config["folds"]
    split = {
        "kfold": f"{folds['n_folds']} folds",
        "repeated": f"{folds['n_repeats']} repeats, test {folds['test_fraction']:g}",
        "holdout": f"1 hold-out split, test {folds['test_fraction']:g}",
    }[folds["mode"]]
    excluded = len(scans) - int(people["n_scans"].sum())
    lines = [
        f"scans: {int(people['n_scans'].sum())} scans of {people['participant_id'].nunique()} "
        f"subjects ({excluded} excluded by exclude_scans)",
        "classes: "
        + ", ".join(f"{c} {counts[c]} subjects / {scans_per[c]} scans" for c in classes),
        f"positive class: {pos} ("
        + ("positive_class" if config.get("positive_class") else "default: last of sorted names")
        + ")"
        if pos
        else "positive class: none (more than two classes: one-vs-rest means)",
        f"folds: {folds['mode']}, {split}, val_fraction {folds['val_fraction']:g} "
        f"({len(fold_ids(config))} training runs per model)",
        f"models: {', '.join(model_names(config))} (inputs "
        f"{', '.join(config['train']['inputs'])}; {config['preprocess']['resolution']:g} mm grid)",
    ]
    for model in model_names(config):
        lines.append(f"methods ({model}): {', '.join(attribution_methods(config, model))}")
    custom = custom_atlases(config)
    names = [f"{a} (own: {custom[a].image})" if a in custom else a for a in atlas_names(config)]
    lines.append("atlases: " + ", ".join(names))
    # the external test sets, read and checked as the workflow does (common.smk)
    from brainlens.external.datasets import external_scan_tables, external_summary_lines

    return lines + external_summary_lines(external_scan_tables(config, scans, classes))


def _check(args: argparse.Namespace) -> int:
    import yaml

    from brainlens.config import validate_config
    from brainlens.config_layers import resolve_config
    from brainlens.errors import BrainlensError, ConfigError

    try:
        user: dict[str, Any] = {}
        for path in args.configfile:
            if not path.is_file():
                raise ConfigError(f"--configfile {path}: file not found. Fix: pass a config file")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"--configfile {path}: expected a YAML mapping of keys")
            user = _deep_update(user, loaded)
        if args.bids_dir is not None:
            user["bids_dir"] = str(args.bids_dir)
        # the workflow's layering (workflow/rules/common.smk): demo.yaml only without bids_dir
        config = validate_config(resolve_config(user, args.demo), args.schema)
        if config.get("bids_dir") is None:
            scans = _demo_scans(config)
            where = "the synthetic demo"
        else:
            from brainlens.bids import scan_table_from_config

            # the workflow's own selection (participants, t1w_filters, t1w_multiple)
            scans = scan_table_from_config(config)
            where = config["bids_dir"]
        lines = check_summary(config, scans)
    except BrainlensError as err:
        print(f"brainlens check: {err}", file=sys.stderr)
        return 1
    files = ", ".join(str(p) for p in args.configfile) or "none"
    layers = f" over {args.demo}" if config.get("bids_dir") is None else ""
    print(f"config {files}{layers}, data {where}: all checks passed")
    print("\n".join(lines))
    return 0


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` merged into a copy of ``base``, as Snakemake merges several --configfile."""
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``brainlens`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from brainlens.synthetic import main as demo_main

        return demo_main(argv[1:])
    parser = argparse.ArgumentParser(prog="brainlens", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="write the synthetic BIDS demo dataset (see brainlens demo -h)")
    sub.add_parser("models", help="list the model registry").set_defaults(func=_models)
    sub.add_parser("atlases", help="list available atlases").set_defaults(func=_atlases)
    check = sub.add_parser(
        "check", help="run the workflow's checks before any job and say what would run"
    )
    check.add_argument("--bids-dir", type=Path, help="BIDS dataset (replaces bids_dir)")
    check.add_argument(
        "--configfile",
        type=Path,
        nargs="+",
        default=[],
        help="workflow config file(s), as snakemake's --configfile (none: the demo)",
    )
    check.add_argument("--schema", type=Path, default=SCHEMA, help="config JSON schema")
    check.add_argument(
        "--demo", type=Path, default=DEMO_CONFIG, help="demo settings, used without bids_dir"
    )
    check.set_defaults(func=_check)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
