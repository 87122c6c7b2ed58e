"""A report as a few plain blocks, rendered twice: markdown to read in a terminal or a diff, HTML to open.

The demo report says the same thing in both formats; writing each by hand
would let them drift, so its content is built once as blocks (paragraph,
bullets, table, figure, note) and each renderer only lays them out.

The HTML is one self-contained file: figures inlined as base64 ``data:`` URIs,
CSS inline, no script, and a Content-Security-Policy that forbids fetching
anything, so it opens the same from disk, from a copied folder or from a mail
attachment. All text is escaped here and only here: names in a report come
from files (body parts, methods, paths), and a name must never become markup.
Markdown gets ``<`` escaped too (viewers render raw HTML in markdown).
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    path: Path  # a PNG file (checked by ``figure``); embedded in HTML, linked relative in markdown
    title: str  # a few words: the image's alt text and the caption's lead
    caption: str  # how to read it


@dataclass(frozen=True)
class Note:
    """Something the reader would expect here is absent, and why."""

    text: str


Block = Paragraph | Bullets | Table | Figure | Note


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    intro: tuple[Block, ...]
    sections: tuple[Section, ...]
    footer: str = ""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    return Table(tuple(header), tuple(tuple(str(c) for c in r) for r in rows))


def figure(path: Path, title: str, caption: str, *, label: str) -> Figure | Note:
    """The figure, or a note naming ``label`` (e.g. ``eval/roc.png``) when the file is absent or not a PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(PNG_SIGNATURE))
    except FileNotFoundError:
        return Note(f"{title}: {label} is absent, so this figure is left out.")
    if head != PNG_SIGNATURE:
        return Note(f"{title}: {label} is not a PNG image, so this figure is left out.")
    return Figure(path, title, caption)


# ---------------------------------------------------------------- markdown


def _md(text: str) -> str:
    return text.replace("<", "&lt;")


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def _md_block(block: Block, base: Path) -> str:
    if isinstance(block, Paragraph):
        return _md(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md(item)}" for item in block.items)
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(h) for h in block.header) + " |", "|" + "---|" * len(block.header)]
        return "\n".join(lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows])
    if isinstance(block, Figure):
        target = Path(os.path.relpath(block.path, base)).as_posix()
        target = f"<{target}>" if re.search(r"[\s()<>]", target) else target
        alt = _md(block.title).replace("[", "\\[").replace("]", "\\]")
        return f"![{alt}]({target})\n\n**{_md(block.title)}.** {_md(block.caption)}"
    return f"> **Note:** {_md(block.text)}"


def to_markdown(doc: Document, base: Path) -> str:
    """Markdown; figures are linked relative to ``base`` (the folder the file is written into)."""
    parts = [f"# {_md(doc.title)}", *(_md_block(b, base) for b in doc.intro)]
    for section in doc.sections:
        parts += [f"## {_md(section.title)}", *(_md_block(b, base) for b in section.blocks)]
    if doc.footer:
        parts.append(f"---\n\n{_md(doc.footer)}")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- html

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2329; background: #fff;
       margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.7rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d6dbe0; padding-bottom: 0.2rem; }
nav ol { columns: 2; font-size: 0.95rem; }
a { color: #1f5f99; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d6dbe0; padding: 0.25rem 0.55rem; text-align: left; white-space: nowrap; }
th { background: #f1f4f7; }
tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; }
figcaption { font-size: 0.9rem; color: #4a545e; margin-top: 0.3rem; }
.note { border-left: 4px solid #d9a400; background: #fff8e1; padding: 0.4rem 0.8rem; margin: 0.8rem 0; }
footer { margin-top: 3rem; font-size: 0.85rem; color: #5f6b76; }
"""

# Nothing may be fetched: only inline styles and data: images. A slip in the markup fails closed.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_h(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_h(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_h(h)}</th>" for h in block.header)
        body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        return (f'<figure><img src="{_data_uri(block.path)}" alt="{_h(block.title)}">'
                f"<figcaption><strong>{_h(block.title)}.</strong> {_h(block.caption)}</figcaption></figure>")
    return f'<p class="note"><strong>Note:</strong> {_h(block.text)}</p>'


def to_html(doc: Document) -> str:
    """One HTML page holding everything it shows (see the module docstring)."""
    anchors = [f"s{i + 1}" for i in range(len(doc.sections))]
    nav = "".join(f'<li><a href="#{a}">{_h(s.title)}</a></li>' for a, s in zip(anchors, doc.sections, strict=True))
    body = [f"<h1>{_h(doc.title)}</h1>", *(_html_block(b) for b in doc.intro), f"<nav><ol>{nav}</ol></nav>"]
    for anchor, section in zip(anchors, doc.sections, strict=True):
        body += [f'<section id="{anchor}"><h2>{_h(section.title)}</h2>',
                 *(_html_block(b) for b in section.blocks), "</section>"]
    if doc.footer:
        body.append(f"<footer>{_h(doc.footer)}</footer>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(doc.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body><main>",
        *body,
        "</main></body>",
        "</html>",
    ]) + "\n"


__all__ = ["Block", "Bullets", "Document", "Figure", "Note", "Paragraph", "Section", "Table", "figure", "table",
           "to_html", "to_markdown"]
