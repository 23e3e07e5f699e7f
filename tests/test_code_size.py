"""The package stays readable: no module over 500 lines, no function over 100 lines.

Counted on the source of ``src/brainlens`` (tests, scripts and benchmarks excluded): a
module's lines as the editor shows them, a function's (or method's, nested or not) from
its ``def`` line (decorators excluded) to its last line, docstring included, from the
syntax tree. A stage that outgrows this is split into named helpers with clear contracts
(issue 22), not cut at an arbitrary line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "brainlens"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100


def module_sizes(root: Path) -> dict[str, int]:
    """Lines per ``.py`` file under ``root``, keyed by the path relative to ``root``."""
    return {
        str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines())
        for p in sorted(root.rglob("*.py"))
    }


def function_sizes(source: str) -> dict[str, int]:
    """Lines per function of ``source`` (``end_lineno - lineno + 1``), keyed by dotted name."""
    sizes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                sizes[name] = child.end_lineno - child.lineno + 1
                name += "."
            elif isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}."
            visit(child, name)

    visit(ast.parse(source), "")
    return sizes


def test_the_counters_see_long_code(tmp_path: Path) -> None:
    """The checks below can fail: a long module and a long (nested) function are seen."""
    body = "\n".join(f"            x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"class A:\n    def short(self):\n        def inner():\n{body}\n        return 1\n"
    sizes = function_sizes(source)
    assert sizes["A.short.inner"] == MAX_FUNCTION_LINES + 1
    assert sizes["A.short"] == MAX_FUNCTION_LINES + 3
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert module_sizes(tmp_path) == {"sub/big.py": MAX_MODULE_LINES + 1}


def test_package_is_found() -> None:
    sizes = module_sizes(PACKAGE)
    assert "folds.py" in sizes and "training/fold.py" in sizes, sorted(sizes)[:10]


def test_no_module_over_500_lines() -> None:
    long = {m: n for m, n in module_sizes(PACKAGE).items() if n > MAX_MODULE_LINES}
    assert not long, (
        f"modules of src/brainlens over {MAX_MODULE_LINES} lines: {long}. Fix: move a coherent "
        "part (a stage's I/O, its checks) into its own module"
    )


@pytest.mark.parametrize("module", sorted(module_sizes(PACKAGE)))
def test_no_function_over_100_lines(module: str) -> None:
    sizes = function_sizes((PACKAGE / module).read_text(encoding="utf-8"))
    long = {f: n for f, n in sizes.items() if n > MAX_FUNCTION_LINES}
    assert not long, (
        f"src/brainlens/{module}: function(s) over {MAX_FUNCTION_LINES} lines {long}. Fix: "
        "split them into named helpers with clear contracts"
    )
