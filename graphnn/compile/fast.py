"""The fast NumPy target for training steps (`gn.compile(..., updates=...)`).

Same straight-line program as the plain printer, lowered for speed:

* every intermediate lives in a preallocated buffer, sized for the batch at the
  first call (`_alloc(B)`) and reused when its value is dead (memory.py);
  kernels write with `out=` (matmul, sums, ufuncs), element-wise ones in place;
* element-wise chains fuse into one SymPy expression printed as a few ufunc
  calls (fusion.py); `transpose` of a matrix is the view `W.T`, broadcasting
  feeding element-wise code is left to NumPy;
* parameter updates that have the same structure (SGD on every parameter, Adam
  on every parameter, ...) run once on flat buffers: the parameters, their
  gradients and optimizer state are views into one flat array per role, so an
  optimizer update is a handful of whole-buffer operations. The gradients are
  computed straight into their views (update_groups.py).

The module is split by job: this file classifies nodes (views, fusion groups,
dot reductions), plans buffers and assembles the module; update_groups.py plans
and prints the update region; fast_text.py renders the body statements once
buffers are known. Target-specific spellings are methods (`xp`, `sum_call`,
`emit_group`, `op_code`, ...), so the CuPy target is a subclass (targets/cupy.py).

The program takes the same arguments as the plain one. Parameters of flat groups
are *adopted* when the Program is built (`_adopt(g.values)` copies them into the
flat buffers and makes `g.values[name]` a view); a call with other arrays still
works (they are copied in and the results copied back).
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

import sympy as sp

from ..version import __version__
from ..graph import Node, fmt_type
from ..ops.registry import get_op
from . import aliasing, fusion, memory
from .fast_common import (_attrs_key, _dname, _is_ew, _shape_code, _small_int_const, _tag,
                          _unique)
from .fast_text import _Texts, _late
from .update_groups import UpdateGroups
from .passes import Function
from .printer import RUN_SOURCE, Namer, comment_name, comment_text, const_definition, helper_source, literal

_VIEW_OPS = ("stop_gradient",)
_BROADCAST = ("broadcast_like", "broadcast_to")


_IDENT = re.compile(r"_g_\w+")
_EXPR_CACHE: dict = {}
_EMIT_CACHE: dict = {}


class FastPrinter(UpdateGroups):
    xp = "np"                 # the array module's name in the generated code
    read_only_fills = True    # NumPy arrays can be made read-only (flags.writeable)

    def __init__(self, fn: Function, name: str = "step", kernels: str = "auto"):
        self.fn = fn
        self.name = name
        self.kernels = kernels  # loops.MODES: fused Numba loops for large updates
        self.loops: list[str] = []  # module-level lines of those loops
        self.namer = Namer(self._helper_names())
        self.order = [n for n in fn.order()]
        self.cut = {id(c) for c in fn.cut}
        self.outputs = {id(o) for o in fn.outputs}
        self.update_of = {id(v): p for p, v in fn.updates}  # value -> param (last wins)
        self.consumers: dict[int, list[Node]] = defaultdict(list)
        for n in self.order:
            for i in n.inputs:
                self.consumers[id(i)].append(n)
        self.helpers: list[str] = []
        self.consts: list[str] = []
        self.globals_: list[str] = []    # module-level lines (flat buffers, views)
        self.optional_views: dict[str, str] = {}  # line -> the view it defines, left out if unread
        self.alloc_lines: list[str] = []
        self.temps: dict[tuple, str] = {}
        self.fills: dict[tuple, str] = {}  # (shape, dtype, number) -> read-only filled array
        self.batch_consts: list[Node] = []
        self.gtemps: dict[tuple, str] = {}
        self._emit_memo: dict = {}
        self.snap: dict[int, str] = {}  # value -> its pre-update copy (see _snapshots)
        # what the passes of source() decide, in order (set there; declared here)
        self.region: set[int] = set()              # update-region nodes (update_groups.py)
        self.transparent: dict[int, Node] = {}     # views and broadcasts read through
        self.alias: dict[int, str | None] = {}     # 2-D transposes printed as `.T`
        self.fold_cands: dict[int, dict] = {}      # affine layers whose bias may fold
        self.inline: set[int] = set()              # element-wise nodes fused into a consumer
        self.dots: dict[int, Node] = {}            # sum(a * b) printed as one vdot
        self.groups: list[dict] = []               # update groups (update_groups.py)
        self.folds: dict[int, dict] = {}           # accepted bias folds
        self.fixed_buffer: dict[int, str] = {}     # values computed into flat-buffer views
        self.flat_params: list[tuple[Node, str]] = []
        self.tail: list[tuple[str, Node]] = []     # code after the body (updates)
        self.deferred: list[tuple[str, Node]] = []  # writes that must wait for every read
        self.foreign_read: set[int] = set()        # params read by another update component
        self.base_of: dict[int, int] = {}          # a transpose view -> the value it views
        self.augs: list[tuple[str, str, Node]] = []  # ([h, 1] buffer, its h view, h)
        self.aug_views: set[str] = set()
        self.region_leaves: set[int] = set()
        self.plan: memory.Plan | None = None       # the buffer plan (after the body)
        self._entries: list = []
        self._group_meta: dict[int, tuple] = {}
        self._by_id: dict[int, Node] = {id(n): n for n in self.order}
        self.param_views = aliasing.updated_views(self.order, {id(p) for p, _ in fn.updates},
                                                  self.cut)

    def _helper_names(self):
        from ..ops.runtime import HELPERS
        names = set(HELPERS)
        for objs in HELPERS.values():
            names.update(o.__name__ for o in objs if hasattr(o, "__name__"))
        return names | {"_erf_scalar", "step", "_alloc", "_adopt", "_foreign", "B"}

    def claim(self, base: str) -> str:
        return _unique(base, self.namer.taken)

    # -- classification ---------------------------------------------------------------------
    def is_arg(self, n: Node) -> bool:
        return n.op in ("input", "param") or id(n) in self.cut

    def classify(self):
        order = self.order
        self.region = self._update_region()
        alias: dict[int, str] = {}       # value -> expression that is a view (no statement)
        transparent: dict[int, Node] = {}  # broadcast feeding only element-wise code
        for n in order:
            if n.is_leaf or id(n) in self.cut:
                continue
            cons = self.consumers[id(n)]
            if n.op in _BROADCAST and cons and id(n) not in self.outputs and \
                    id(n) not in self.update_of and all(_is_ew(c) for c in cons):
                transparent[id(n)] = self.source_of(n.inputs[0], transparent)
            elif n.op in _VIEW_OPS and id(n) not in self.outputs:
                transparent[id(n)] = self.source_of(n.inputs[0], transparent)
            elif n.op == "transpose" and n.ndim == 2 and id(n) not in self.outputs and \
                    n.attrs.get("axes") in (None, (1, 0)):  # a swap, not (0, 1)
                alias[id(n)] = None  # filled when printed
        self.transparent = transparent
        self.alias = alias
        self.fold_cands = self._fold_candidates()
        # fusion: inline single-consumer element-wise nodes into their consumer
        inline, size = set(), {}
        for n in order:
            if n.is_leaf or id(n) in self.cut or id(n) in self.region or not _is_ew(n) \
                    or n.shape == ():
                continue
            total = 1
            for i in set(n.inputs):
                i = self.source_of(i)
                if self._inlinable(i, n) and total + size[id(i)] <= fusion.MAX_GROUP:
                    inline.add(id(i))
                    total += size[id(i)]
            size[id(n)] = total
        self.inline = inline
        for k in [k for k, c in self.fold_cands.items() if id(c["h"]) in inline]:
            del self.fold_cands[k]
        self.dots = self._dot_reductions()

    def _dot_reductions(self) -> dict[int, Node]:
        """Full sums (and means) of a product of two arrays, `sum(a * b)`: one `np.vdot`
        instead of a multiply into a buffer and a reduction (the MSE loss is one)."""
        out = {}
        for n in self.order:
            if n.op not in ("sum", "mean") or n.shape != () or id(n) in self.cut:
                continue
            x = self.source_of(n.inputs[0])
            if x.op != "mul" or x.ndim == 0 or id(x) in self.cut or id(x) in self.outputs or \
                    id(x) in self.update_of or id(x) in self.region or id(x) in self.inline or \
                    id(x) in self.fold_cands or not all(
                        c is n or c.op == "count" or (id(c) in self.transparent and c.op ==
                                                      "broadcast_like" and c.inputs[0] is not x)
                        for c in self.consumers[id(x)]):  # others read x's shape only
                continue
            ins = [self.source_of(i) for i in x.inputs]
            if all(i.shape == x.shape and i.dtype == x.dtype and id(i) not in self.inline
                   and i.op != "const" for i in ins):
                out[id(n)] = x
        return out

    # -- bias folding -------------------------------------------------------------------------


    def source_of(self, n: Node, transparent=None) -> Node:
        t = self.transparent if transparent is None else transparent
        while id(n) in t:
            n = t[id(n)]
        return n

    def _inlinable(self, i: Node, c: Node) -> bool:
        if i.is_leaf or id(i) in self.cut or not _is_ew(i) or i.shape != c.shape:
            return False
        if id(i) in self.outputs or id(i) in self.update_of or id(i) in self.region or \
                id(i) in self.fold_cands:
            return False
        users = {id(u) for u in self._users(i)}
        return users == {id(c)}

    def _users(self, n: Node) -> list[Node]:
        """Consumers, looking through transparent views."""
        out, stack = [], list(self.consumers[id(n)])
        while stack:
            u = stack.pop()
            if id(u) in self.transparent:
                stack.extend(self.consumers[id(u)])
            else:
                out.append(u)
        return out

    # -- the update region: per-parameter element-wise update code --------------------------
    def plan_program(self):
        """The plan every target prints: classification and fusion, the update groups,
        the body statements and their buffer plan. Returns (args, statements, texts);
        `texts` renders the NumPy statements (other targets print their own)."""
        self.classify()
        args = [n for n in self.order if self.is_arg(n)]
        for a in args:
            self.namer(a)
        self.groups = self._groups()
        statements, texts = self._body()
        # buffer plan over body statements (region code uses flat buffers of its own)
        keep = {id(o) for o in self.fn.outputs} | self.region_leaves | {
            id(self.source_of(v)) for _, v in self.fn.updates if id(v) not in self.region}
        self.plan = memory.plan([s for s, _ in statements], base_of=self.base_of, keep=keep)
        for st, n, kind in self._entries:
            if kind[0] == "plain" and kind[1] is not None:
                self.plan.buffer[id(n)] = kind[1]
        return args, statements, texts

    def source(self) -> tuple[str, dict]:
        args, statements, texts = self.plan_program()
        arg_ids = [self.namer(a) for a in args]
        plan = self.plan
        texts = list(texts)  # renders (and names temporaries) now that buffers are known
        for p, v in self.fn.updates:  # updates outside the fused region: copied in last
            if id(v) not in self.region:
                self.tail.append((f"{self.xp}.copyto({self.namer(p)}, {{{id(v)}}})  "
                                  f"# update '{comment_name(p)}' in place", v))
        self.tail.extend((_late(self, t), n) for t, n in self.deferred)
        self.tail = self._snapshots() + [(_late(self, t), n) for t, n in self.tail]
        outs = self._return_values()  # before the header: constants it names are defined there
        batch_arg = next(((a, d) for a in args for d, s in enumerate(a.shape) if s is None), None)
        lines = self.header()
        if self.loops:
            lines[-2:-2] = ["import numba"]
        helpers = self.helper_lines()
        if helpers:
            lines += sum(([h, "", ""] for h in helpers), [])
        lines += self.consts
        lines.append(f"ARGS = {tuple(a.name for a in args)!r}")
        lines.append(f"OUTPUTS = {tuple(o.name for o in self.fn.outputs)!r}")
        lines.append("PARAMS = {}  # default parameter values, by name (see run)")
        lines += ["", "# flat buffers: parameters, gradients and optimizer state, one per role"]
        lines += self.globals_
        if self.loops:
            lines += ["", "", "# fused update loops, compiled by Numba when this program loads "
                      "(graphnn/compile/loops.py)"] + self.loops
        # allocation for batch size B
        bufs = sorted(plan.buffers.items(), key=lambda kv: int(kv[0][4:]))
        alloc_names = [b for b, _ in bufs] + list(self.temps.values()) + list(self.fills.values())
        xp = self.xp
        lines += ["", "_B = None", "", "", "def _alloc(B):",
                  '    """(Re)allocate the buffers of every intermediate for batch size B."""']
        alloc_names += [self.namer(n) for n in self.batch_consts]
        alloc_names += [name for aug in self.augs for name in aug[:2]]
        if alloc_names:
            lines.append("    global _B, " + ", ".join(alloc_names))
        else:
            lines.append("    global _B")
        lines.append("    _B = B")
        for b, (shape, dtype) in bufs:
            lines.append(f"    {b} = {xp}.empty({_shape_code(shape)}, dtype={xp}.{dtype})")
        for n in self.batch_consts:
            x = n.inputs[0]
            from ..ops import shapes
            dims = ["B" if x.shape[a] is None else str(x.shape[a])
                    for a in shapes.norm_axes(n.attrs["axis"], x.ndim, x.shape)]
            lines.append(f"    {self.namer(n)} = {xp}.{_dname(n.dtype)}({' * '.join(dims) or '1'})  "
                         + self.note(n))
        for (shape, dtype, k), t in self.temps.items():
            lines.append(f"    {t} = {xp}.empty({_shape_code(shape)}, dtype={xp}.{dtype})")
        for (shape, dtype, number), f in self.fills.items():
            lines.append(f"    {f} = {xp}.full({_shape_code(shape)}, {number}, dtype={xp}.{dtype})  "
                         "# a read-only operand (faster than a scalar or a reduction)")
            if self.read_only_fills:
                lines.append(f"    {f}.flags.writeable = False")
        for aug, view, h in self.augs:
            k = h.shape[1]
            lines.append(f"    {aug} = {xp}.ones({_shape_code((h.shape[0], k + 1))}, "
                         f"dtype={xp}.{_dname(h.dtype)})  # [{comment_name(h)}, 1]: folded biases")
            lines.append(f"    {view} = {aug}[:, :{k}]")
        lines += ["", ""]
        if batch_arg is None:
            lines += ["_alloc(None)", "", ""]
        # the step
        lines.append(f"def step({', '.join(arg_ids)}):")
        for a, ident in zip(args, arg_ids):
            note = f"'{comment_name(a)}'" if ident != a.name else ""
            lines.append(f"    # {ident}: {fmt_type(a)} {a.op} {note}".rstrip())
        if self.flat_params:
            cond = " or ".join(f"{self.namer(p)} is not {v}" for p, v in self.flat_params)
            lines.append(f"    if {cond}:  # not the adopted arrays: copy in and out")
            lines.append(f"        return _foreign({', '.join(arg_ids)})")
        if batch_arg is not None:
            a, d = batch_arg
            lines.append(f"    if {self.namer(a)}.shape[{d}] != _B:")
            lines.append(f"        _alloc({self.namer(a)}.shape[{d}])")
        lines = "\n".join(lines).split("\n")  # helpers (and array constants) span lines:
        line_nodes = {}  # numbered from here on, one entry per line
        for (st, node), text in zip(statements, texts):
            for t in text:
                lines.append("    " + self._fill(t, node))
                line_nodes[len(lines)] = node
        for text, node in self.tail:
            lines.append("    " + self._fill(text, node))
            line_nodes[len(lines)] = node
        lines.append(f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
        lines += ["", ""] + self._adopt_source(args, arg_ids) + RUN_SOURCE
        return self._drop_unread_views(lines, line_nodes)

    def _snapshots(self) -> list[tuple[str, Node]]:
        """Copies of the values that the tail or the return reads and that may look into
        a parameter the tail writes (aliasing.py): outputs are pre-update values and
        updates are simultaneous. Their readers name the copy (self.snap)."""
        lines = []
        late = [v for _, v in self.fn.updates if id(v) not in self.region] + list(self.fn.outputs)
        for v in aliasing.needs_snapshot(late, self.order, {id(p) for p, _ in self.fn.updates},
                                         self.cut):
            src = self.value_of(v)
            self.snap[id(v)] = self.claim("_pre")
            lines.append((f"{self.snap[id(v)]} = {self.xp}.array({src})  # '{comment_name(v)}' "
                          "before the parameter updates", v))
        return lines

    def header(self) -> list[str]:
        return [
            f"# graphnn program {comment_name(self)} (graph {comment_text(self.fn.graph.name)}), "
            f"generated by graphnn {__version__} (fast training step).",
            "# Buffers are preallocated for the batch size B (_alloc) and reused; element-wise",
            "# chains are fused; parameter updates run on flat buffers (see graphnn/compile/fast.py).",
            "import math", "", "import numpy as np", "",
        ]

    def _return_values(self) -> list[str]:
        """The returned expressions: arrays the caller owns, never a buffer or a view
        of one that the next call overwrites."""
        outs = []
        for o in self.fn.outputs:
            v = self.value_of(o)
            src = self.source_of(o)
            if id(o) in self.snap:
                v = self.snap[id(o)]
            elif src.op == "const":  # a 0-d one is a literal, as in the plain program
                v = v if src.value.ndim == 0 else f"{v}.copy()"
            elif self.plan.shares_buffer(id(src)):  # 0-d views too (a reshape of a buffer)
                v = f"{v}.copy()"
            outs.append(v)
        return outs

    def _drop_unread_views(self, lines, line_nodes):
        """Leave out gradient views no other line names: a gradient computed into a
        bias-folded view `[gW; gb]` is never read on its own (a depth-128 step had 256
        such lines, a tenth of the module Python compiles)."""
        text = "\n".join(lines)
        if not self.optional_views:
            return text, line_nodes
        named = Counter(_IDENT.findall(text))
        drop = {ln for ln, v in self.optional_views.items() if named[v] < 2}
        if not drop:
            return text, line_nodes
        first_body = min(line_nodes, default=len(lines) + 1)  # views are all above it
        kept = [ln for k, ln in enumerate(lines) if k + 1 >= first_body or ln not in drop]
        shift = len(lines) - len(kept)
        return "\n".join(kept), {ln - shift: n for ln, n in line_nodes.items()}

    def _fill(self, text: str, node: Node) -> str:
        return text

    # -- body ----------------------------------------------------------------------------------
    def value_of(self, n: Node) -> str:
        if id(n) in self.snap:
            return self.snap[id(n)]
        n = self.source_of(n)
        if n.op == "const":
            if n.value.ndim == 0:
                return literal(n.value)
            return self.const_name(n)
        if id(n) in self.alias:
            return f"{self.value_of(n.inputs[0])}.T"
        if self.is_arg(n):
            return self.namer(n)
        if self.plan is not None and id(n) in self.plan.buffer:
            return self.plan.buffer[id(n)]
        return self.namer(n)

    def const_name(self, node: Node) -> str:
        ident = self.namer(node)
        if ident not in {c.split(" = ")[0] for c in self.consts}:
            self.consts.append(const_definition(ident, node))
        return ident

    def note(self, n: Node, extra: str = "") -> str:
        notes = [n.op, fmt_type(n)]
        if n.role != "forward":
            notes.append(n.role)
        if n.scope:
            notes.append(comment_text(n.scope))
        return f"# {comment_name(n)}: {' · '.join(notes)}{extra}"

    def _body(self):
        """Statements (for the planner) and their text, as deferred formatters."""
        self.base_of: dict[int, int] = {}
        entries = []  # (Statement, node, render)
        fold_of_a = {id(f["a"]): f for f in self.folds.values()}
        fold_of_grad = {id(f[r]): f for f in self.folds.values() for r in ("gW", "gb")}
        folded_mm = {id(f["m"]) for f in self.folds.values()}
        dotted = {id(x) for x in self.dots.values()}
        self.augs: list[tuple[str, str, Node]] = []  # ([h, 1] buffer, its h view, h)
        self.aug_views: set[str] = set()
        aug_of: dict[int, tuple[str, str]] = {}
        for f in self.folds.values():
            h = f["h"]
            if id(h) not in aug_of:
                tag = comment_text(self.namer(h)) if self.is_arg(h) else str(len(aug_of))
                aug_of[id(h)] = (self.claim(f"_aug_{tag}"), self.claim(f"_augv_{tag}"))
                self.augs.append(aug_of[id(h)] + (h,))
                self.aug_views.add(aug_of[id(h)][1])
                if self.is_arg(h):  # a fed array: copied beside the ones at each call
                    st = memory.Statement(uses=[id(h)])
                    entries.append((st, h, ("copyin", aug_of[id(h)][1])))
                else:  # computed: written straight into the view
                    self.fixed_buffer[id(h)] = aug_of[id(h)][1]
            f["aug"] = aug_of[id(h)][0]
        for n in self.order:
            if n.is_leaf or id(n) in self.cut or id(n) in self.transparent or \
                    id(n) in self.inline or id(n) in self.region or id(n) in folded_mm or \
                    id(n) in dotted:
                continue
            if id(n) in fold_of_a:
                f = fold_of_a[id(n)]
                st = memory.Statement(uses=[id(f["h"])], defines=[memory.Request(
                    id(n), n.shape, _dname(n.dtype), fixed=self.fixed_buffer.get(id(n)))])
                entries.append((st, n, ("affine", f)))
                continue
            if id(n) in fold_of_grad:
                f = fold_of_grad[id(n)]
                if f.get("grad_printed"):
                    continue
                f["grad_printed"] = True
                st = memory.Statement(uses=[id(f["h"]), id(self.source_of(f["dz"]))], defines=[
                    memory.Request(id(f[r]), f[r].shape, _dname(f[r].dtype),
                                   fixed=self.fixed_buffer[id(f[r])]) for r in ("gW", "gb")])
                entries.append((st, n, ("affine_grad", f)))
                continue
            if id(n) in self.alias:
                src = self.source_of(n.inputs[0])
                self.base_of[id(n)] = self.base_of.get(id(src), id(src))
                continue
            fixed = self.fixed_buffer.get(id(n))
            st = memory.Statement()
            if n.shape != () and _is_ew(n):
                expr, leaves = self.group_expr(n)
                st.uses = [id(l) for l in leaves]
                if id(n) not in self.outputs:
                    st.defines = [memory.Request(id(n), n.shape, _dname(n.dtype),
                                                 may_alias=tuple(id(l) for l in leaves
                                                                 if l.shape == n.shape and l.dtype == n.dtype),
                                                 fixed=fixed)]
                else:
                    st.defines = [memory.Request(id(n), n.shape, _dname(n.dtype), fixed=fixed)]
                entries.append((st, n, ("ew", expr, leaves)))
            elif n.op == "matmul" and n.shape != () and n.inputs[0].ndim >= 1:
                st.uses = [id(self.source_of(i)) for i in n.inputs]
                st.defines = [memory.Request(id(n), n.shape, _dname(n.dtype), fixed=fixed)]
                entries.append((st, n, ("matmul",)))
            elif n.op in ("sum", "mean") and n.shape != ():
                st.uses = [id(self.source_of(n.inputs[0]))]
                st.defines = [memory.Request(id(n), n.shape, _dname(n.dtype), fixed=fixed)]
                entries.append((st, n, ("reduce",)))
            elif n.op in ("softmax", "log_softmax") and n.shape != () and \
                    n.dtype.kind == "f" and n.inputs[0].dtype == n.dtype:
                st.uses = [id(self.source_of(n.inputs[0]))]
                st.defines = [memory.Request(id(n), n.shape, _dname(n.dtype), fixed=fixed)]
                entries.append((st, n, ("softmax",)))
            elif id(n) in self.dots and fixed is None:
                st.uses = [id(self.source_of(i)) for i in self.dots[id(n)].inputs]
                entries.append((st, n, ("dot", self.dots[id(n)])))
            elif n.op in ("sum", "mean") and fixed is None:
                st.uses = [id(self.source_of(n.inputs[0]))]
                entries.append((st, n, ("reduce_all",)))
            elif n.op == "count" and fixed is None:
                self.batch_consts.append(n)  # depends on the batch size only: set by _alloc
                continue
            else:
                st.uses = [id(self.source_of(i)) for i in n.inputs]
                if fixed is None:  # NumPy may return a view of an input: share its liveness
                    st.views = {id(n): tuple(st.uses)}
                entries.append((st, n, ("plain", fixed)))
        # update groups read their leaves after the straight line
        self.region_leaves = set()
        for grp in self.groups:
            for member in grp["members"]:
                for leaf in member["leaves"]:
                    self.region_leaves.add(id(self.source_of(leaf)))
        self._entries = entries
        return [(st, n) for st, n, _ in entries], _Texts(self, entries)

    # -- fused element-wise groups ----------------------------------------------------------------
    def group_expr(self, root: Node):
        """(SymPy expression over leaf symbols, leaf nodes) of the fused tree at `root`."""
        leaves: list[Node] = []
        index: dict[int, int] = {}
        key_parts = []

        def leaf(n):
            n = self.source_of(n)
            small = _small_int_const(n)
            if small is not None:  # 1, 2, -1 ... as numbers, so SymPy can simplify them
                key_parts.append(("int", small))
                return sp.Integer(small)
            if id(n) not in index:
                index[id(n)] = len(leaves)
                leaves.append(n)
                key_parts.append(("leaf", self._klass(n, root), n.dtype.str))
            return fusion.leaf_symbol(index[id(n)])

        # post-order over the inlined tree (bounded by MAX_GROUP, explicit stack)
        exprs: dict[int, sp.Expr] = {}
        stack = [(root, False)]
        while stack:
            n, done = stack.pop()
            if done:
                args = []
                for i in n.inputs:
                    s = self.source_of(i)
                    if id(s) in self.inline and id(s) in exprs:
                        args.append(exprs[id(s)])
                    else:
                        args.append(leaf(i))
                exprs[id(n)] = (n, args)
                continue
            stack.append((n, True))
            for i in reversed(n.inputs):
                s = self.source_of(i)
                if id(s) in self.inline and id(s) not in exprs:
                    stack.append((s, False))
        # structure key: ops in post-order with their argument wiring
        wiring = []
        pos = {}
        for k, (nid, (n, args)) in enumerate(exprs.items()):
            pos[nid] = k
            wiring.append((n.op, _attrs_key(n), n.dtype.str,
                           tuple(("n", pos[id(self.source_of(i))]) if id(self.source_of(i)) in pos
                                 else ("i", _small_int_const(self.source_of(i)))
                                 if id(self.source_of(i)) not in index
                                 else ("l", index[id(self.source_of(i))]) for i in n.inputs)))
        subs = self._substitutions(leaves, root)
        key = (tuple(wiring), tuple(p for p in key_parts if p[0] == "leaf"),
               tuple((k, op, ak) for k, op, ak, _ in subs))
        hit = _EXPR_CACHE.get(key)
        if hit is None:
            built: dict[int, sp.Expr] = {}
            for nid, (n, _) in exprs.items():
                args = []
                for i in n.inputs:
                    s = self.source_of(i)
                    small = _small_int_const(s)
                    args.append(built[id(s)] if id(s) in built else sp.Integer(small)
                                if small is not None else fusion.leaf_symbol(index[id(s)]))
                built[nid] = fusion.substitute(n.op, _attrs_key(n), args)
            expr = built[id(root)]
            extra = {}
            for k, op, ak, _node in subs:
                f = fusion.substitute(op, ak, [fusion.leaf_symbol(k)])
                extra[f] = sp.Symbol(f"S{k}_{op}", real=True)
            if extra:
                expr = expr.xreplace(extra)
            hit = _EXPR_CACHE[key] = (expr, key, frozenset(s.name for s in expr.free_symbols))
        expr, key, used = hit
        # substitution symbols become leaves
        sub_leaves = {}
        for k, op, ak, node in subs:
            sname = f"S{k}_{op}"
            if sname in used:
                sub_leaves[sname] = node
        self._group_meta[id(root)] = (key, [l for l in leaves], sub_leaves)
        live = [l for k, l in enumerate(leaves) if fusion.leaf_symbol(k).name in used]
        return expr, live + list(sub_leaves.values())

    def _substitutions(self, leaves, root):
        """Unary element-wise values of a leaf already computed earlier (tanh(z) = h)."""
        out = []
        for k, l in enumerate(leaves):
            if l.shape == ():
                continue
            for c in self.consumers[id(l)]:
                if c.index >= root.index or len(c.inputs) != 1 or not _is_ew(c) or \
                        id(c) in self.inline or id(c) in self.transparent or id(c) in self.region:
                    continue
                out.append((k, c.op, _attrs_key(c), c))
        return out

    def _klass(self, n: Node, root: Node):
        if n.shape == ():
            return "scalar"
        if n.shape == root.shape:
            return "full"
        return n.shape

    def emit_group(self, root: Node, out: str, alias_node: Node | None):
        """Lines computing the fused group at root into `out`."""
        key, leaves, sub_leaves = self._group_meta[id(root)]
        expr = _EXPR_CACHE[key][0]
        if expr.has(sp.erf) and "_erf" not in self.helpers:  # fused gelu & co. call the helper
            self.helpers.append("_erf")
        names = {}
        shapes = {}
        for k, l in enumerate(leaves):
            s = fusion.leaf_symbol(k)
            shapes[s] = "full" if l.shape == root.shape else ("scalar" if l.shape == () else "other")
            names[s.name] = self.value_of(l)
            if l.dtype.kind in "biu" and root.dtype.kind == "f" and l.op != "const":
                # a boolean or integer leaf of a float group is read as the group's type, as
                # the plain program casts it (NumPy has no boolean negative, and integer
                # operands of a fused call would pick integer loops)
                names[s.name] += f".astype(np.{_dname(root.dtype)})"
        for sname, node in sub_leaves.items():
            shapes[sp.Symbol(sname, real=True)] = "full"
            names[sname] = self.value_of(node)
        alias_sym = None
        if alias_node is not None:
            for k, l in enumerate(leaves):
                if l is alias_node:
                    alias_sym = fusion.leaf_symbol(k)
            for sname, node in sub_leaves.items():
                if node is alias_node:
                    alias_sym = sp.Symbol(sname, real=True)
        ekey = (key, alias_sym.name if alias_sym is not None else None,
                tuple(sorted((s.name, c) for s, c in shapes.items())))
        hit = _EMIT_CACHE.get(ekey)
        if hit is None:
            hit = _EMIT_CACHE[ekey] = fusion.emit(expr, shapes, _dname(root.dtype), alias_sym)
        lines, n_t, n_b, fills = hit
        fmt = dict(names)
        fmt["OUT"] = out
        for k in range(n_t):
            fmt[f"T{k}"] = self.temp(root.shape, _dname(root.dtype), k)
        for k in range(n_b):
            fmt[f"B{k}"] = self.temp(root.shape, "bool", k)
        for k, number in enumerate(fills):
            fmt[f"F{k}"] = self.fill(root.shape, _dname(root.dtype), number)
        return [ln.format(**fmt) for ln in lines]

    def matmul_fn(self, n: Node, inputs, out: str) -> str:
        """`np.dot` for products of tiny matrices, else `np.matmul`.

        For 2-D operands they compute the same thing; np.dot has less call overhead
        (measured 1.4 vs 2.2 us for a (4, 3) @ (3, 2) product with `out=`, NumPy
        2.4) but is slower on large ones (5-8 % at 128 x 256 x 256). The batch
        size is not known here, so the test is on the fixed dimensions of (m, k, n),
        a folded bias row aside: their product at most 64 (xor's layers). np.dot's
        `out` must be C-contiguous with the result's dtype: never the [h, 1] views."""
        a, b = inputs
        if n.ndim != 2 or a.ndim != 2 or b.ndim != 2 or out in self.aug_views or \
                not (a.dtype == b.dtype == n.dtype):
            return "np.matmul"
        dims = (a.shape[0], a.shape[1], b.shape[1])
        return "np.dot" if math.prod(d for d in dims if d is not None) <= 64 else "np.matmul"

    def row_sum(self, x: Node, src: str, axis: int, keepdims: bool, out: str) -> str | None:
        """`np.dot(x, ones, out=out)` for a sum over the last axis of a 2-D float array
        of fixed width, or None for np.add.reduce.

        BLAS's matrix-vector product adds a row in a fraction of the reduction's time
        (NumPy 2.4, float64: 0.60 against 2.5 us at 128 x 10, 2.5 against 6.5 us at
        128 x 256). np.dot's `out` must be C-contiguous with the result's dtype: never
        the [h, 1] views, whose inputs it would also copy."""
        if x.ndim != 2 or axis != 1 or x.shape[1] is None or \
                _dname(x.dtype) not in ("float32", "float64") or \
                out in self.aug_views or src in self.aug_views:
            return None
        ones = self.fill((x.shape[1], 1) if keepdims else (x.shape[1],), _dname(x.dtype), "1.0")
        return f"np.dot({src}, {ones}, out={out})"

    def helper_lines(self) -> list[str]:
        return helper_source(self.helpers)

    def op_code(self, n: Node, args: list[str]) -> str:
        """The expression computing an op the printer has no special form for (the
        op's own NumPy code; other targets look it up in their table)."""
        op = get_op(n.op)
        for h in op.helpers:
            if h not in self.helpers:
                self.helpers.append(h)
        return op.numpy(args, n.attrs, n)

    def sum_call(self, src: str, axis: str, out: str | None = None, keepdims: bool = False) -> str:
        """A sum over `axis` ("None" for all), into `out` when given. np.add.reduce with
        positional arguments has the least call overhead of NumPy's spellings."""
        if out is None:
            return f"np.add.reduce({src}, {axis})"
        return f"np.add.reduce({src}, {axis}, None, {out}{', True' if keepdims else ''})"

    def max_call(self, src: str, axis: str, out: str, keepdims: bool) -> str:
        return f"np.maximum.reduce({src}, {axis}, None, {out}{', True' if keepdims else ''})"

    def temp(self, shape, dtype, k) -> str:
        key = (shape, dtype, k)
        if key not in self.temps:
            self.temps[key] = self.claim(f"_tmp{k}_{dtype}_{_tag(shape)}")
        return self.temps[key]

    def fill(self, shape, dtype, number: str) -> str:
        """A read-only array of `shape` filled with `number`: an operand of np.maximum /
        np.minimum (see fusion.Emitter) or of a row sum (row_sum)."""
        key = (shape, dtype, number)
        if key not in self.fills:
            what = {0.0: "zeros", 1.0: "ones"}.get(float(number), "fill")
            self.fills[key] = self.claim(f"_{what}_{dtype}_{_tag(shape)}")
        return self.fills[key]

    # -- update groups ------------------------------------------------------------------------------

