"""The README's code map, commands, config snippets and file names stay true.

* every rule of ``workflow/rules/*.smk`` has exactly one code-map line, and every line
  names a rule that exists, the script the rule runs, a function that the script
  imports (imported here and looked up with ``getattr``) and the module defining it;
* every ``src/brainlens`` subpackage is named in the package areas, and every
  repository path the README names exists;
* the test command is the one ``.ci/run`` runs, verbatim;
* the minimal study config validates against the schema and passes the config checks;
* every dotted config key the README names exists in the schema.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

from brainlens.config import check_config, validate_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
RULE_HEAD = re.compile(r"^ *(?:rule|checkpoint) (\w+):$", re.M)
SCRIPT = re.compile(r'^ +script:\n +"([^"]+)"', re.M)
#: Top-level folders whose paths, when the README names them, must exist.
REPO_DIRS = ("docs", "config", "profiles", "workflow", "scripts", "benchmarks", "tests", "envs")
#: Files the README names as examples of the user's own (not in the repository).
EXAMPLE_PATHS = {"config/my_study.yaml"}
#: Endings of file names (a `folds.tsv` is a file, not the config key folds.tsv).
FILE_ENDINGS = re.compile(r"\.(tsv|json|yaml|yml|py|smk|nii|gz|npy|npz|pt|png|html|md|h5|log)$")


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown text (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def rules() -> dict[str, str]:
    """Rule name -> the script it runs (repository-relative), from workflow/rules/*.smk."""
    found: dict[str, str] = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        heads = list(RULE_HEAD.finditer(text))
        for head, nxt in zip(heads, [*heads[1:], None][: len(heads)], strict=True):
            body = text[head.end() : nxt.start() if nxt else len(text)]
            script = SCRIPT.search(body)
            assert script, f"{smk.name}: rule {head[1]} has no script: directive"
            path = (smk.parent / script[1]).resolve().relative_to(REPO)
            assert head[1] not in found, f"rule {head[1]} defined twice"
            found[head[1]] = path.as_posix()
    return found


def code_map() -> dict[str, tuple[str, str, str]]:
    """Rule -> (script, function, module) from the README's code-map table."""
    rows: dict[str, tuple[str, str, str]] = {}
    for line in section(README.read_text(), "Code map").splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not line.startswith("| `"):
            continue
        assert cells[0] not in rows, f"code map: rule {cells[0]} has two lines"
        rows[cells[0]] = (cells[1], cells[2], cells[3])
    return rows


def test_every_rule_has_one_code_map_line() -> None:
    defined, mapped = set(rules()), set(code_map())
    assert defined, "no rules found in workflow/rules"
    assert not defined - mapped, f"rules without a README code-map line: {defined - mapped}"
    assert not mapped - defined, f"code-map lines of rules that do not exist: {mapped - defined}"


def _imported(script: Path) -> list[object]:
    """The objects a script imports from brainlens (``from brainlens.x import y``)."""
    objects = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("brainlens"):
            module = importlib.import_module(node.module)
            objects += [getattr(module, alias.name) for alias in node.names]
    return objects


@pytest.mark.parametrize("rule", sorted(code_map()))
def test_code_map_line_is_true(rule: str) -> None:
    script, function, module_path = code_map()[rule]
    expected = rules().get(rule)
    assert script == expected, f"code map: rule {rule} runs {expected}, not {script}"
    module_name, _, name = function.rpartition(".")
    assert module_name.startswith("brainlens."), f"code map: {function} is not in brainlens"
    module = importlib.import_module(module_name)
    assert hasattr(module, name), f"code map: {module_name} has no {name} (rule {rule})"
    func = getattr(module, name)
    defined_in = Path(inspect.getsourcefile(func)).resolve().relative_to(REPO).as_posix()
    assert func.__module__ == module_name, (
        f"code map: {function} is defined in {func.__module__}; name that module (rule {rule})"
    )
    assert module_path == defined_in, f"code map: {function} lives in {defined_in}"
    assert any(obj is func for obj in _imported(REPO / script)), (
        f"code map: {script} does not import {function} (rule {rule})"
    )


def test_package_areas_name_every_subpackage() -> None:
    text = section(README.read_text(), "Code map")
    src = REPO / "src" / "brainlens"
    packages = [p.parent for p in src.rglob("__init__.py")]
    missing = [
        p.relative_to(REPO).as_posix()
        for p in packages
        if p != src and f"`{p.relative_to(REPO).as_posix()}/`" not in text
    ]
    assert not missing, f"README code map: packages without a line: {missing}"


def _backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text) + re.findall(r"\]\(([^)#\s]+)\)", text)


def test_repository_paths_in_the_readme_exist() -> None:
    missing = []
    for token in _backticked(README.read_text()):
        path = token.split()[0].rstrip(",.:")
        if not path.startswith(tuple(f"{d}/" for d in REPO_DIRS) + ("src/", "resources/P")):
            continue
        if any(c in path for c in "<>{}*[]") or path in EXAMPLE_PATHS:
            continue
        if not (REPO / path).exists():
            missing.append(path)
    assert not missing, f"README.md names paths that do not exist: {sorted(set(missing))}"


def test_test_command_is_the_ci_command() -> None:
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text(), f"README.md lacks .ci/run's test command: {ci}"


def _yaml_after(text: str, marker: str) -> dict:
    start = re.search(r"\s+".join(marker.split()), text)
    assert start, f"README.md lacks {marker!r}"
    block = re.search(r"```yaml\n(.*?)```", text[start.end() :], re.S)
    assert block, f"no yaml block after {marker!r}"
    return yaml.safe_load(block[1])


def test_minimal_config_is_valid() -> None:
    config = _yaml_after(README.read_text(), "A minimal study config")
    assert config.get("bids_dir"), "the minimal config must name a bids_dir"
    check_config(validate_config(config, SCHEMA))


def _schema_has(schema: dict, path: list[str]) -> bool:
    node = schema
    for key in path:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        props = node.get("properties")
        if props is None:  # a free mapping (methods, options, scan ids)
            return True
        if key not in props:
            return False
        node = props[key]
    return True


def test_config_keys_in_the_readme_exist() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    top = set(schema["properties"])
    wrong = []
    for token in _backticked(README.read_text()):
        key = re.split(r"[:\s]", token, maxsplit=1)[0]
        parts = key.split(".")
        if len(parts) < 2 or parts[0] not in top or FILE_ENDINGS.search(key):
            continue
        if not _schema_has(schema, parts):
            wrong.append(key)
    assert not wrong, f"README.md names config keys the schema lacks: {sorted(set(wrong))}"


def test_space_labels_are_the_ones_written() -> None:
    from brainlens.grid import HEAD_SPACE, SPACE

    named = set(re.findall(r"space-([A-Za-z0-9]+)", README.read_text()))
    assert named <= {SPACE, HEAD_SPACE}, f"README.md names space labels {named}; code: {SPACE}"
