"""Reading rules' ``conda:`` and ``script:`` directives from ``.smk`` files statically."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_RULE_RE = re.compile(r"^(?P<indent>[ \t]*)(?:rule|checkpoint)(?:[ \t]+(?P<name>\w+))?[ \t]*:")
_USE_RULE_RE = re.compile(
    r"^(?P<indent>[ \t]*)use[ \t]+rule[ \t]+(?P<src>\w+)(?:[ \t]+from[ \t]+\w+)?"
    r"[ \t]+as[ \t]+(?P<name>\w+)(?P<with>[ \t]+with)?[ \t]*:?"
)
_DIRECTIVE_RE = re.compile(r"^(?P<indent>[ \t]+)(?P<key>conda|script)[ \t]*:[ \t]*(?P<value>.*)$")


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
