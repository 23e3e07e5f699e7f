"""HTML building blocks: the page shell with inline CSS, tables, figures, notes.

No JavaScript and no external resources: the page works offline and can be
zipped with its ``figures/`` folder and sent.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS = """
:root { --fg:#1f2328; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --panel:#f6f8fa;
  --accent:#0072B2; --ok:#1a7f37; --okbg:#dafbe1; --warn:#9a6700; --warnbg:#fff8c5;
  --bad:#b3261e; --badbg:#ffebe9; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin:0; font:15px/1.55 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
  color:var(--fg); background:var(--bg); }
.layout { display:flex; align-items:flex-start; max-width:1500px; margin:0 auto; }
nav.toc { position:sticky; top:0; align-self:flex-start; width:250px; flex:0 0 250px;
  max-height:100vh; overflow-y:auto; padding:18px 12px 18px 18px; font-size:13.5px;
  border-right:1px solid var(--line); background:var(--panel); }
nav.toc h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted);
  margin:0 0 8px; }
nav.toc ul { list-style:none; margin:0; padding-left:0; }
nav.toc ul ul { padding-left:14px; font-size:12.5px; }
nav.toc li { margin:3px 0; }
nav.toc a { color:var(--fg); text-decoration:none; }
nav.toc a:hover { color:var(--accent); text-decoration:underline; }
main { flex:1 1 auto; min-width:0; padding:24px 36px 80px; }
header.page h1 { margin:0 0 4px; font-size:28px; }
.meta { color:var(--muted); font-size:13.5px; margin-bottom:14px; }
.question { font-size:16px; border-left:4px solid var(--accent); padding:6px 14px;
  background:var(--panel); margin:14px 0; }
.summary { font-size:15.5px; max-width:70em; }
h2 { margin-top:44px; padding-bottom:6px; border-bottom:2px solid var(--line); font-size:23px; }
h3 { margin-top:30px; font-size:19px; }
h4 { margin-top:22px; font-size:16px; color:#333; }
p, li { max-width:75em; }
table { border-collapse:collapse; margin:10px 0 6px; font-size:13.5px;
  font-variant-numeric:tabular-nums; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:right;
  vertical-align:top; }
th { background:var(--panel); font-weight:600; border-bottom:2px solid var(--line); }
td.text, th.text { text-align:left; }
tr.summary-row td { background:#f0f4f9; font-weight:600; }
tr.flag td { background:var(--badbg); }
tr.good td { background:var(--okbg); }
.tablewrap { overflow-x:auto; max-width:100%; }
.tablecaption { color:var(--muted); font-size:13px; max-width:75em; margin:2px 0 16px; }
figure { margin:14px 0 22px; max-width:100%; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px;
  background:#fff; }
figcaption { color:var(--muted); font-size:13px; max-width:75em; margin-top:4px; }
figcaption b { color:var(--fg); }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(380px, 1fr)); gap:10px 24px; }
.note { border-radius:6px; padding:9px 14px; margin:12px 0; max-width:75em;
  border:1px solid var(--line); background:var(--panel); }
.note.warn { background:var(--warnbg); border-color:#d4a72c; }
.note.bad { background:var(--badbg); border-color:#ff8182; }
.note.ok { background:var(--okbg); border-color:#4ac26b; }
.banner { font-size:16px; font-weight:600; }
.badge { display:inline-block; padding:0 7px; border-radius:10px; font-size:12px; font-weight:600;
  white-space:nowrap; }
.badge.ok { background:var(--okbg); color:var(--ok); }
.badge.bad { background:var(--badbg); color:var(--bad); }
.badge.warn { background:var(--warnbg); color:var(--warn); }
.kpis { display:flex; flex-wrap:wrap; gap:12px; margin:14px 0; }
.kpi { border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:150px;
  background:var(--panel); }
.kpi .v { font-size:21px; font-weight:650; }
.kpi .l { font-size:12px; color:var(--muted); }
details { margin:8px 0; }
summary { cursor:pointer; color:var(--accent); }
pre { background:var(--panel); padding:10px; border-radius:6px; overflow-x:auto; font-size:12.5px; }
code { font-size:90%; }
footer { margin-top:60px; color:var(--muted); font-size:12.5px; }
@media (max-width: 900px) { .layout { display:block; } nav.toc { position:static; width:auto;
  max-height:none; border-right:none; } main { padding:16px; } }
@media print { nav.toc { display:none; } }
"""


def esc(text: object) -> str:
    """HTML-escape any value's string form."""
    return html.escape(str(text), quote=True)


def slug(*parts: object) -> str:
    """An HTML id from parts: lower case, ``[a-z0-9-]`` only."""
    s = "-".join(str(p) for p in parts).lower()
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "section"


@dataclass
class Section:
    """One heading of the page and its body; nested sections appear in the TOC.

    Attributes
    ----------
    id : str
        Anchor id.
    title : str
        Heading text (plain text, escaped on output).
    body : str
        HTML that follows the heading.
    level : int
        2 for top-level sections, 3 and 4 below.
    children : list of Section
    """

    id: str
    title: str
    body: str = ""
    level: int = 2
    children: list[Section] = field(default_factory=list)

    def render(self) -> str:
        """The heading, body and children as HTML."""
        head = f'<h{self.level} id="{esc(self.id)}">{esc(self.title)}</h{self.level}>'
        return "\n".join([head, self.body, *(c.render() for c in self.children)])


def toc(sections: Sequence[Section], depth: int = 3) -> str:
    """A nested table of contents of the sections up to heading level ``depth``."""

    def items(secs: Sequence[Section]) -> str:
        out = []
        for s in secs:
            sub = [c for c in s.children if c.level <= depth]
            inner = f"<ul>{items(sub)}</ul>" if sub else ""
            out.append(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a>{inner}</li>')
        return "".join(out)

    return f'<nav class="toc"><h2>Contents</h2><ul>{items(sections)}</ul></nav>'


def page(title: str, header: str, sections: Sequence[Section], footer: str) -> str:
    """The complete HTML document."""
    body = "\n".join(s.render() for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<div class="layout">
{toc(sections)}
<main>
{header}
{body}
<footer>{footer}</footer>
</main>
</div>
</body>
</html>
"""


def note(text_html: str, kind: str = "info") -> str:
    """A boxed note; ``kind`` is ``info``, ``ok``, ``warn`` or ``bad``. Takes HTML."""
    return f'<div class="note {esc(kind)}">{text_html}</div>'


def badge(text: str, kind: str) -> str:
    """A small coloured label (``ok``, ``warn``, ``bad``)."""
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def figure(src: str, caption_html: str, alt: str) -> str:
    """An image with a caption below it; ``src`` is relative to the page."""
    return (
        f'<figure><a href="{esc(src)}"><img src="{esc(src)}" alt="{esc(alt)}" loading="lazy"></a>'
        f"<figcaption>{caption_html}</figcaption></figure>"
    )


def table(
    df: pd.DataFrame,
    *,
    caption_html: str = "",
    text_columns: Iterable[str] = (),
    row_class: Sequence[str] | None = None,
    escape: bool = True,
    index: bool = False,
) -> str:
    """Render a DataFrame of already formatted cells as an HTML table.

    Parameters
    ----------
    df : pandas.DataFrame
        Cells are converted with ``str``; format numbers before (see
        :func:`brainlens.report.io.fmt`).
    caption_html : str
        Explanation printed under the table (HTML).
    text_columns : iterable of str
        Columns aligned left (default: right, for numbers).
    row_class : sequence of str, optional
        One CSS class per row (``"flag"``, ``"summary-row"``, ``""``).
    escape : bool
        Escape cell contents (set False for cells that hold HTML, e.g. badges).
    index : bool
        Also print the index as the first column.
    """
    if index:
        df = df.reset_index()
    text = set(text_columns)
    cols = list(df.columns)
    head = "".join(f'<th class="{"text" if c in text else ""}">{esc(c)}</th>' for c in cols)
    rows = []
    for i, rec in enumerate(df.itertuples(index=False, name=None)):
        cls = row_class[i] if row_class is not None else ""
        cells = "".join(
            f'<td class="{"text" if c in text else ""}">{esc(v) if escape else v}</td>'
            for c, v in zip(cols, rec, strict=True)
        )
        rows.append(f'<tr class="{esc(cls)}">{cells}</tr>')
    cap = f'<div class="tablecaption">{caption_html}</div>' if caption_html else ""
    return (
        f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{cap}"
    )


def kpis(items: Sequence[tuple[str, str]]) -> str:
    """A row of headline numbers: ``(value, label)`` pairs (plain text)."""
    cells = "".join(
        f'<div class="kpi"><div class="v">{esc(v)}</div><div class="l">{esc(lab)}</div></div>'
        for v, lab in items
    )
    return f'<div class="kpis">{cells}</div>'


def relpath(target: Path, start: Path) -> str:
    """``target`` relative to folder ``start``, with forward slashes (for ``src``/``href``)."""
    import os

    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()
