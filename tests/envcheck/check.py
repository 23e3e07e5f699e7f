"""Env-file lint and the rule check: does each rule's env provide its script's imports?"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from envcheck.imports import collect_imports, required_imports
from envcheck.names import _split_requirement, distributions_for, normalize_name
from envcheck.rules import RuleSpec, parse_rules


@dataclass(frozen=True)
class EnvProblem:
    """One import a rule's env does not provide, or a rule that cannot be checked.

    Attributes
    ----------
    rule : str
        Rule name.
    script : Path or None
        The rule's script.
    env_file : Path or None
        The rule's conda env file.
    module : str
        The missing import (empty for problems that are not about one import).
    importer : Path or None
        File containing the import (the script or a brainlens module).
    message : str
        Human-readable explanation with the fix.
    """

    rule: str
    script: Path | None
    env_file: Path | None
    module: str
    importer: Path | None
    message: str

    def __str__(self) -> str:
        """Return a one-line report naming rule, script, import and env file."""
        return (
            f"rule {self.rule}: script {self.script}, env {self.env_file}"
            + (f": import {self.module!r} (in {self.importer})" if self.module else "")
            + f": {self.message}"
        )


def env_dependencies(env_file: Path) -> tuple[set[str], set[str]]:
    """Return normalized conda and pip dependency names of a conda env file.

    Parameters
    ----------
    env_file : Path
        Conda environment YAML.

    Returns
    -------
    tuple of (set of str, set of str)
        Conda names and pip names.
    """
    data = yaml.safe_load(env_file.read_text()) or {}
    conda: set[str] = set()
    pip: set[str] = set()
    for dep in data.get("dependencies") or []:
        if isinstance(dep, str):
            name, _ = _split_requirement(dep)
            if name:
                conda.add(normalize_name(name))
        elif isinstance(dep, dict):
            for entry in dep.get("pip") or []:
                entry = str(entry).strip()
                if entry.startswith("-"):
                    continue
                name, _ = _split_requirement(entry)
                if name:
                    pip.add(normalize_name(name))
    return conda, pip


def lint_env_file(env_file: Path) -> list[str]:
    """Return problems with an env file's channels and pins (empty if fine).

    Rules: valid YAML mapping with ``channels`` containing ``conda-forge`` and not
    ``defaults``; a ``python`` dependency; every conda dependency pinned to a
    version (``name=1.2`` / ``name==1.2`` / ``name 1.2``, no ranges); every pip
    dependency pinned with ``==`` or given as a direct reference (``name @ url``).

    Parameters
    ----------
    env_file : Path
        Conda environment YAML.

    Returns
    -------
    list of str
        Problems, each naming the file.
    """
    try:
        data = yaml.safe_load(env_file.read_text())
    except yaml.YAMLError as exc:
        return [f"{env_file}: not valid YAML: {exc}"]
    if not isinstance(data, dict):
        return [f"{env_file}: expected a mapping with channels/dependencies"]
    problems = []
    channels = data.get("channels") or []
    if "conda-forge" not in channels:
        problems.append(f"{env_file}: channels {channels} lack conda-forge")
    if "defaults" in channels:
        problems.append(f"{env_file}: channels must not include 'defaults' (licence, mixing)")
    deps = data.get("dependencies")
    if not isinstance(deps, list) or not deps:
        return [*problems, f"{env_file}: no dependencies list"]
    names = set()
    for dep in deps:
        if isinstance(dep, str):
            name, version = _split_requirement(dep)
            names.add(normalize_name(name))
            if name == "pip" and not version:
                continue  # pip itself may float
            if not re.match(r"^(==?|\s*)\d[\w.*+!-]*(=[\w.*]+)?$", version):
                problems.append(f"{env_file}: conda dependency {dep!r} is not pinned to a version")
        elif isinstance(dep, dict) and set(dep) == {"pip"}:
            for entry in dep["pip"] or []:
                entry = str(entry).strip()
                if entry.startswith("-"):
                    problems.append(f"{env_file}: pip option {entry!r} is not portable")
                    continue
                name, version = _split_requirement(entry)
                if not (re.match(r"^==\s*\S+$", version) or version.startswith("@")):
                    problems.append(f"{env_file}: pip dependency {entry!r} is not pinned with ==")
        else:
            problems.append(f"{env_file}: unexpected dependency entry {dep!r}")
    if "python" not in names:
        problems.append(f"{env_file}: no pinned python")
    return problems


def check_rules(
    specs: Sequence[RuleSpec],
    src_root: Path,
    require_env: bool = True,
    require_package: str | None = None,
) -> list[EnvProblem]:
    """Check that each rule's env provides its script's imports.

    Parameters
    ----------
    specs : sequence of RuleSpec
        Rules from :func:`parse_rules`.
    src_root : Path
        Package directory followed transitively (e.g. ``src/brainlens``).
    require_env : bool
        Report rules that have a script but no ``conda:`` env.
    require_package : str, optional
        If given (e.g. ``"brainlens"``), envs of scripts that import this package
        must install it themselves (conda or pip dependency, e.g.
        ``brainlens @ git+https://...@v0.1.0``) instead of relying on the workflow.

    Returns
    -------
    list of EnvProblem
        Empty if every import is provided.
    """
    problems: list[EnvProblem] = []
    for spec in specs:

        def problem(module: str, importer: Path | None, message: str, s: RuleSpec = spec) -> None:
            problems.append(EnvProblem(s.name, s.script, s.conda, module, importer, message))

        if spec.unresolved:
            problem(
                "",
                spec.smk_file,
                f"cannot read directive statically ({spec.unresolved}); use a string literal",
            )
            continue
        if spec.script is None:
            continue  # shell/run rules: nothing to scan
        if not spec.script.is_file():
            problem("", spec.smk_file, "script file does not exist")
            continue
        if spec.conda is None:
            if require_env:
                problem("", spec.smk_file, "rule has a script but no conda: env")
            continue
        if not spec.conda.is_file():
            problem("", spec.smk_file, "conda env file does not exist")
            continue
        conda, pip = env_dependencies(spec.conda)
        provided = conda | pip
        if require_package and normalize_name(require_package) not in provided:
            uses = [
                m for m, _ in collect_imports(spec.script) if m.split(".")[0] == require_package
            ]
            if uses:
                problem(
                    require_package,
                    spec.script,
                    f"the env does not install {require_package}; add it to the pip list",
                )
        for module, importer in sorted(required_imports(spec.script, src_root).items()):
            wanted = distributions_for(module)
            if not provided.intersection(wanted):
                problem(
                    module,
                    importer,
                    f"not provided by the env; add one of {', '.join(wanted)} "
                    "to its conda or pip dependencies (or map the import name in "
                    "IMPORT_TO_DISTRIBUTIONS in tests/envcheck/names.py)",
                )
    return problems


def check_workflow(
    rules_dir: Path, src_root: Path, require_package: str | None = None
) -> list[EnvProblem]:
    """Parse ``rules_dir/*.smk`` and check every rule's env.

    Parameters
    ----------
    rules_dir : Path
        Directory of ``.smk`` files.
    src_root : Path
        Package directory (e.g. ``src/brainlens``).
    require_package : str, optional
        See :func:`check_rules`.

    Returns
    -------
    list of EnvProblem
        Empty if every import is provided.
    """
    specs = parse_rules(sorted(Path(rules_dir).glob("*.smk")))
    return check_rules(specs, src_root, require_package=require_package)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: print problems, return 1 if there are any.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(
        description="Check that every rule's conda env provides what its script imports."
    )
    parser.add_argument("rules_dir", nargs="?", default="workflow/rules", type=Path)
    parser.add_argument("--src", default=Path("src/brainlens"), type=Path)
    parser.add_argument("--envs", default=Path("envs"), type=Path, help="env files to lint")
    parser.add_argument(
        "--require-package",
        metavar="NAME",
        help="envs of scripts importing NAME must install it (e.g. brainlens)",
    )
    args = parser.parse_args(argv)
    found = check_workflow(args.rules_dir, args.src, require_package=args.require_package)
    problems = [str(p) for p in found]
    for env_file in sorted(args.envs.glob("*.yaml")):
        problems += lint_env_file(env_file)
    for p in problems:
        print(p)
    n_rules = len(parse_rules(sorted(args.rules_dir.glob("*.smk"))))
    print(f"{n_rules} rules checked, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0
