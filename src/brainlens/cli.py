"""``brainlens`` command line: small helpers around the workflow.

* ``brainlens demo OUT --seed N [...]``: write the synthetic BIDS demo dataset;
* ``brainlens models``: the model registry with each paper's defaults;
* ``brainlens atlases``: atlases available on this machine.

The pipeline itself runs with ``snakemake`` (see README.md).
"""

from __future__ import annotations

import argparse
import sys


def _models(_: argparse.Namespace) -> int:
    from brainlens.models import MODELS

    for name, spec in sorted(MODELS.items()):
        print(
            f"{name:20s} {spec.ndim}D  lr={spec.lr:g} batch={spec.batch_size} epochs={spec.epochs}  {spec.citation}"
        )
    return 0


def _atlases(_: argparse.Namespace) -> int:
    from brainlens.atlases import available_atlases

    for name, src in sorted(available_atlases().items()):
        kind = "probabilistic->maxprob" if src.probabilistic else "labels"
        print(f"{name:22s} {kind:24s} {src.image}")
    return 0


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
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
