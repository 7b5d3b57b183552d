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
_SURROGATE = re.compile("[\ud800-\udfff]")


def dot_text(text: str, max_len: int | None = None) -> graphviz.quoting.NoHtml:
    """`text` as a DOT string literal body: shown verbatim, newlines as line breaks."""
    s = str(text)
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    s = _CONTROL.sub(" ", s.replace("\r\n", "\n").replace("\r", "\n"))
    s = _SURROGATE.sub("\ufffd", s)  # a lone surrogate cannot be encoded: shown as U+FFFD
    # the embedded Graphviz traps on labels whose first line is empty (issue 14, D10):
    # an empty line is drawn the same with a space on it
    s = "\n".join(line or " " for line in s.split("\n")) if "\n" in s else s
    s = s.replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return graphviz.nohtml(s)


def html_text(text: str) -> str:
    """Text for HTML element content or attribute values."""
    return _SURROGATE.sub("\ufffd", html.escape(str(text), quote=True))
