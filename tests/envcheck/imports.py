"""Collecting a script's imports (AST), followed transitively into the package."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from envcheck.names import PROVIDED_BY_WORKFLOW, _mapped_key


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
