"""Escaping text for DOT labels and for HTML.

DOT quoted strings treat backslash sequences (`\\n`, `\\l`, `\\N`) and HTML
entities (`&amp;`) specially, and python-graphviz treats any string that
looks like `<...>` as an HTML-like label. Every label and tooltip graphviz
sees goes through `dot_text`, which neutralizes all three, so a node named
`<"a"&\\b>` draws exactly as written.
"""
from __future__ import annotations

import html
import re

import graphviz

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def dot_text(text: str, max_len: int | None = None) -> graphviz.quoting.NoHtml:
    """`text` as a DOT string literal body: shown verbatim, newlines as line breaks."""
    s = str(text)
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    s = _CONTROL.sub(" ", s.replace("\r\n", "\n").replace("\r", "\n"))
    s = s.replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return graphviz.nohtml(s)


def html_text(text: str) -> str:
    """Text for HTML element content or attribute values."""
    return html.escape(str(text), quote=True)
