"""The printer base shared by the code-generating backends.

A backend is a subclass that says how to spell one node (`expr`), the module
header and the imports; this base walks the function in topological order,
names every value after its node (sanitized, unique, never a keyword), writes
one statement per node with a comment giving op, scope and role, and keeps a
line -> node map so run-time errors point back at the node.
"""
from __future__ import annotations

import builtins
import inspect
import keyword
import re

import numpy as np

from ..graph import Node, fmt_type
from ..ops.registry import get_op
from .passes import Function

_BAD = re.compile(r"[^0-9A-Za-z_]")
RESERVED = {"np", "cp", "math", "os", "run", "step", "ARGS", "FEEDS", "PARAMS", "OUTPUTS",
            "_load_params"}  # module-level names of generated programs


def comment_text(s: str) -> str:
    """A name made safe for a one-line comment: ASCII only, no control characters."""
    return ascii(s)[1:-1]


def comment_name(node) -> str:
    """A node's name for a comment (escaped as comment_text does); never an identifier."""
    return comment_text(node.name)


def unique_name(base: str, taken: set) -> str:
    """`base`, or `base_2`, `base_3`, ... : the first not in `taken` (which records it)."""
    ident, k = base, 2
    while ident in taken:
        ident, k = f"{base}_{k}", k + 1
    taken.add(ident)
    return ident


class Namer:
    """Valid, unique Python identifiers for arbitrary node names.

    An identifier made from a node name never starts with "_": the printers name
    their own buffers, temporaries and helpers with a leading underscore (and
    claim them here), so no user name can collide with one (`_B`, `_buf1`)."""

    def __init__(self, reserved=()):
        self.taken = set(RESERVED) | set(reserved)
        self.of: dict[int, str] = {}

    def __call__(self, node: Node) -> str:
        got = self.of.get(id(node))
        if got is not None:
            return got
        base = _BAD.sub("_", node.name) or "v"
        if base[0].isdigit() or base[0] == "_":  # names the printers make start with "_"
            base = "v" + base if base[0] == "_" else "v_" + base
        if keyword.iskeyword(base) or hasattr(builtins, base) or base.startswith("__"):
            base = base + "_"
        ident = self.of[id(node)] = unique_name(base, self.taken)
        return ident


def literal(value: np.ndarray) -> str:
    """A Python literal for a scalar constant (weakly typed, so it keeps array dtypes)."""
    v = value.item()
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, float):
        if v != v:
            return "np.nan"
        if v in (float("inf"), float("-inf")):
            return "np.inf" if v > 0 else "-np.inf"
        return repr(v)
    return repr(v)


def const_definition(ident: str, node: Node, alias: str = "np") -> str:
    """The module-level line defining an array constant (values printed to round-trip exactly)."""
    arr = node.value
    if arr.size == 0:  # array2string prints [] for every empty shape: keep the shape
        return (f"{ident} = {alias}.zeros({arr.shape!r}, dtype={alias}.{arr.dtype.name})"
                f"  # const {comment_name(node)} {fmt_type(node)}")
    body = np.array2string(arr, separator=", ", threshold=np.inf, floatmode="unique",
                           max_line_width=10 ** 9).replace("nan", "np.nan").replace("inf", "np.inf")
    return (f"{ident} = {alias}.array({body}, dtype={alias}.{arr.dtype.name})"
            f"  # const {comment_name(node)} {fmt_type(node)}")


class Printer:
    """Walks a Function; subclasses spell nodes for one target language/library."""

    module = "numpy"
    alias = "np"
    helpers_from = None  # module with helper functions whose source is embedded

    def __init__(self, fn: Function, name: str = "step"):
        self.fn = fn
        self.name = name
        self.namer = Namer(self.helper_names())
        self.lines: list[str] = []
        self.line_nodes: dict[int, Node] = {}
        self.consts: list[str] = []
        self.helpers: list[str] = []

    # hooks ---------------------------------------------------------------------------
    def helper_names(self):
        return ()

    def expr(self, node: Node, args: list[str]) -> str:
        return get_op(node.op).numpy(args, node.attrs, node)

    def header(self) -> list[str]:
        return [f"import {self.module} as {self.alias}"]

    # walk ------------------------------------------------------------------------------
    def arg_nodes(self) -> list[Node]:
        order = self.fn.order()
        cut = {id(c) for c in self.fn.cut}
        return [n for n in order if n.op in ("input", "param") or id(n) in cut]

    def value_of(self, node: Node) -> str:
        if node.op == "const":
            if node.value.ndim == 0:
                if node.value.dtype == np.float32:  # a bare literal is float64 inside np.log(...)
                    v = node.value[()]
                    text = str(v) if np.isfinite(v) else literal(node.value)
                    return f"{self.alias}.float32({text})"
                return literal(node.value)
            return self.const_name(node)
        return self.namer(node)

    def const_name(self, node: Node) -> str:
        ident = self.namer(node)
        if ident not in {c.split(" = ")[0] for c in self.consts}:
            self.consts.append(const_definition(ident, node, self.alias))
        return ident

    def statement(self, node: Node) -> str:
        ident = self.namer(node)
        code = self.expr(node, [self.value_of(i) for i in node.inputs])
        notes = [node.op, fmt_type(node)]
        if ident != node.name:
            notes.append(f"'{comment_name(node)}'")
        if node.role != "forward":
            notes.append(node.role)
        if node.scope:
            notes.append(comment_text(node.scope))
        return f"{ident} = {code}  # {' · '.join(notes)}"

    def body(self) -> list[str]:
        out = []
        cut = {id(c) for c in self.fn.cut}
        for node in self.fn.order():
            if node.is_leaf or id(node) in cut:
                continue
            out.append((self.statement(node), node))
            for h in get_op(node.op).helpers:
                if h not in self.helpers:
                    self.helpers.append(h)
        return out

    def helper_source(self) -> list[str]:
        return helper_source(self.helpers)


def helper_source(helpers) -> list[str]:
    """Source text of the runtime helpers a program calls (copied in: programs stand alone)."""
    if not helpers:
        return []
    from ..ops import runtime
    seen, src = set(), []
    for h in helpers:
        for obj in runtime.HELPERS[h]:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if inspect.isfunction(obj):
                src.append(inspect.getsource(obj).rstrip())
            else:  # the ufunc built at import
                src.append("_erf_scalar = np.frompyfunc(math.erf, 1, 1)")
    return src


# `run(**feeds)`: feeds by graph name, parameters defaulting to PARAMS (every program has it)
RUN_SOURCE = [
    "def run(**feeds):",
    '    """Run the program with inputs (and optionally parameters) by graph name."""',
    "    unknown = set(feeds) - set(ARGS)",
    "    if unknown:",
    "        raise TypeError(f'unknown feed(s) {sorted(unknown)}; expected {list(ARGS)}')",
    "    args = []",
    "    for name in ARGS:",
    "        if name in feeds:",
    "            args.append(feeds[name])",
    "        elif name in PARAMS:",
    "            args.append(PARAMS[name])",
    "        else:",
    "            raise TypeError(f'missing feed {name!r}')",
    "    return step(*args)",
    "",
]
