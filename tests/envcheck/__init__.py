"""Check that every rule's conda env provides what its script imports.

For each rule in ``workflow/rules/*.smk`` the ``conda:`` and ``script:`` directives
are read statically (no Snakemake import). The script's imports are collected from
its AST, including lazy imports inside functions, and followed transitively into
every ``brainlens`` module it reaches (package ``__init__`` files included).
Literal ``importlib.import_module("x")``, ``importlib.util.find_spec("x")`` (a
package whose data files are read by path) and ``importlib.metadata.version("x")``
count as imports too. Standard-library modules are skipped (``sys.stdlib_module_names``), as are
modules the workflow itself provides (``snakemake``, which Snakemake puts on the
script's path, and ``brainlens``, whose own imports are checked instead).
Imports guarded by ``try: ... except ImportError`` and ``if TYPE_CHECKING:`` are
optional and not required.

Each remaining top-level import name is mapped to the distribution names that
provide it (:data:`IMPORT_TO_DISTRIBUTIONS`, e.g. ``sklearn`` -> ``scikit-learn``)
and must be listed in the env file's conda or pip dependencies.

A test helper, not part of the package: ``tests/test_envs.py`` imports it (pytest puts
``tests/`` on ``sys.path``). Modules: :mod:`envcheck.names` (import -> distribution
names), :mod:`envcheck.rules` (``.smk`` directives), :mod:`envcheck.imports` (script
imports), :mod:`envcheck.check` (env-file lint, rule check, command line).

Command line (from the repository root)::

    PYTHONPATH=tests python -m envcheck [workflow/rules] [--src src/brainlens]
"""

from __future__ import annotations

from envcheck.check import (
    EnvProblem,
    check_rules,
    check_workflow,
    env_dependencies,
    lint_env_file,
    main,
)
from envcheck.imports import collect_imports, required_imports
from envcheck.names import (
    IMPORT_TO_DISTRIBUTIONS,
    PROVIDED_BY_WORKFLOW,
    distributions_for,
    normalize_name,
    requirement_name,
)
from envcheck.rules import RuleSpec, parse_rules

__all__ = [
    "IMPORT_TO_DISTRIBUTIONS",
    "PROVIDED_BY_WORKFLOW",
    "EnvProblem",
    "RuleSpec",
    "check_rules",
    "check_workflow",
    "collect_imports",
    "distributions_for",
    "env_dependencies",
    "lint_env_file",
    "main",
    "normalize_name",
    "parse_rules",
    "required_imports",
    "requirement_name",
]
