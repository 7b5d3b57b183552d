"""The NumPy target: a schedule (compile/schedule.py) printed as a Python module.

The program the plain printer writes, lowered for speed:

* every intermediate lives in a preallocated buffer, sized for the batch at the
  first call (`_alloc(B)`) and reused when its value is dead (the schedule's
  buffer plan); kernels write with `out=` (matmul, sums, ufuncs), element-wise
  ones in place;
* a fused element-wise group is printed from its SymPy expression as a few ufunc
  calls (fusion.py); a transpose kept as a view is `W.T`;
* a flat update group runs once on flat buffers (numpy_updates.py): a handful of
  whole-buffer operations, or one loop compiled by Numba (loops.py).

Each kernel of the schedule prints through `_print_<Kernel>` (SymPy's printer
pattern), and the spellings a GPU target changes are methods (`xp`, `sum_call`,
`max_call`, `emit_group`, `op_code`, `matmul_fn`, `row_sum`, `helper_lines`,
`header`): the CuPy target is a small subclass (targets/cupy.py).

The program takes the same arguments as the plain one. Parameters of flat groups
are *adopted* when the Program is built (`_adopt(g.values)` copies them into the
flat buffers and makes `g.values[name]` a view); a call with other arrays still
works (they are copied in and the results copied back).
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import sympy as sp

from ...graph import Node, fmt_type
from ...ops import shapes
from ...ops.registry import get_op
from ...version import __version__
from .. import fusion
from ..fast_common import _dname, _shape_code, _tag
from ..passes import Function
from ..printer import (RUN_SOURCE, Namer, comment_name, comment_text, const_definition,
                       helper_source, literal, unique_name)
from ..schedule import (_EXPR_CACHE, Affine, AffineGrad, AugView, Caps, CopyIn, Dot, Fused,
                        Matmul, Opaque, Reduce, ReduceAll, Softmax, lower)
from .numpy_updates import UpdatePrinting

_IDENT = re.compile(r"_g_\w+")
_EMIT_CACHE: dict = {}


class NumpyPrinter(UpdatePrinting):
    xp = "np"                 # the array module's name in the generated code
    read_only_fills = True    # NumPy arrays can be made read-only (flags.writeable)
    caps = Caps()             # every rewrite of the lowering

    def __init__(self, fn: Function, name: str = "step", kernels: str = "auto"):
        self.fn = fn
        self.name = name
        self.kernels = kernels  # loops.MODES: fused Numba loops for large updates
        self.loops: list[str] = []  # module-level lines of those loops
        self.namer = Namer(self._helper_names())
        self.order = list(fn.order())
        self.outputs = {id(o) for o in fn.outputs}
        self.cut = {id(c) for c in fn.cut}
        self.helpers: list[str] = []
        self.consts: list[str] = []
        self.globals_: list[str] = []    # module-level lines (flat buffers, views)
        self.optional_views: dict[str, str] = {}  # line -> the view it defines, left out if unread
        self.temps: dict[tuple, str] = {}
        self.fills: dict[tuple, str] = {}  # (shape, dtype, number) -> read-only filled array
        self.gtemps: dict[tuple, str] = {}
        self._emit_memo: dict = {}
        self.snap: dict[int, str] = {}  # value -> its pre-update copy (see _snapshots)
        self.names: dict[object, str] = {}  # symbolic buffer (FlatView, AugView) -> its name
        self.flat_params: list[tuple[Node, str]] = []
        self.tail: list[tuple[str, Node]] = []     # code after the body (updates)
        self.deferred: list[tuple[str, Node]] = []  # writes that must wait for every read
        self.augs: list[tuple[str, str, Node]] = []  # ([h, 1] buffer, its h view, h)
        self.aug_views: set[str] = set()
        self.fold_views: dict[int, tuple[str, str]] = {}  # fold -> ([W; b], [gW; gb]) views
        self._by_id: dict[int, Node] = {id(n): n for n in self.order}
        # the schedule (set by plan_program)
        self.schedule = None
        self.plan = None
        self._group_meta: dict[int, tuple] = {}
        # what the printers read most (set from the schedule by plan_program)
        self.inline: set[int] = set()        # element-wise nodes fused into a consumer
        self.alias: set[int] = set()         # 2-D transposes printed as views
        self.region: set[int] = set()        # the update region
        self.foreign_read: set[int] = set()  # params another update component reads
        self.fresh_nodes: dict[str, Node] = {}  # a returned value's own buffer -> its node

    def _helper_names(self):
        from ...ops.runtime import HELPERS
        names = set(HELPERS)
        for objs in HELPERS.values():
            names.update(o.__name__ for o in objs if hasattr(o, "__name__"))
        return names | {"_erf_scalar", "step", "_alloc", "_adopt", "_foreign", "B"}

    def claim(self, base: str) -> str:
        return unique_name(base, self.namer.taken)

    # -- what the schedule decided ---------------------------------------------------------
    def is_arg(self, n: Node) -> bool:
        return n.op in ("input", "param") or id(n) in self.cut

    def source_of(self, n: Node) -> Node:
        return self.schedule.source_of(n)

    def buffer_name(self, b) -> str:
        """A planned buffer's name: symbolic ones (flat-buffer views, [h, 1] views) are
        named by this printer, and a returned value's own buffer after its node."""
        if isinstance(b, str):
            node = self.fresh_nodes.get(b)
            return b if node is None else self.namer(node)
        return self.names[b]

    def plan_program(self):
        """Lower the function and name what the schedule decided, in the order names
        are claimed: arguments, the update groups (and their code), the [h, 1] buffers."""
        s = self.schedule = lower(self.fn, self.caps)
        self.plan = s.plan
        self.inline, self.alias, self.region = s.inline, s.views, s.region
        self.foreign_read = s.foreign_read
        self._group_meta = {id(k.node): (k.key, k.all_leaves, k.sub_leaves)
                            for k in s.kernels if isinstance(k, Fused)}
        self.fresh_nodes = {s.plan.buffer[r.key]: self._by_id[r.key] for k in s.kernels
                            for r in k.statement.defines if s.plan.buffer.get(r.key) in s.plan.fresh}
        for a in s.args:
            self.namer(a)
        self.print_groups()
        for f in s.folds.values():
            h = f.h
            if any(aug[2] is h for aug in self.augs):
                continue
            tag = comment_text(self.namer(h)) if self.is_arg(h) else str(len(self.augs))
            aug, view = self.claim(f"_aug_{tag}"), self.claim(f"_augv_{tag}")
            self.augs.append((aug, view, h))
            self.aug_views.add(view)
            if not self.is_arg(h):
                self.names[AugView(id(h))] = view
        return s.args, s.kernels

    def aug_of(self, h: Node) -> tuple[str, str]:
        return next(aug[:2] for aug in self.augs if aug[2] is h)

    # -- the module ---------------------------------------------------------------------------
    def source(self) -> tuple[str, dict]:
        args, kernels = self.plan_program()
        s = self.schedule
        arg_ids = [self.namer(a) for a in args]
        texts = [self.render(k) for k in kernels]  # names temporaries now that buffers are known
        for p, v in s.late_updates:  # updates outside the fused region: copied in last
            self.tail.append((f"{self.xp}.copyto({self.namer(p)}, {{{id(v)}}})  "
                              f"# update '{comment_name(p)}' in place", v))
        self.tail.extend((_late(self, t), n) for t, n in self.deferred)
        self.tail = self._snapshots() + [(_late(self, t), n) for t, n in self.tail]
        outs = self._return_values()  # before the header: constants it names are defined there
        batch_arg = next(((a, d) for a in args for d, sz in enumerate(a.shape) if sz is None), None)
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
        if self.globals_:
            lines += ["", "# flat buffers: parameters, gradients and optimizer state, one per role"]
            lines += self.globals_
        if self.loops:
            lines += ["", "", "# fused update loops, compiled by Numba when this program loads "
                      "(graphnn/compile/loops.py)"] + self.loops
        lines += self._alloc_lines()
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
        for k, text in zip(kernels, texts):
            for t in text:
                lines.append("    " + self._fill(t, k.node))
                line_nodes[len(lines)] = k.node
        for text, node in self.tail:
            lines.append("    " + self._fill(text, node))
            line_nodes[len(lines)] = node
        lines.append(f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
        lines += ["", ""] + (self._adopt_source(args, arg_ids) if self.flat_params else []) + RUN_SOURCE
        return self._drop_unread_views(lines, line_nodes)

    def _alloc_lines(self) -> list[str]:
        """`_alloc(B)`: every buffer, temporary and filled operand for batch size B."""
        xp = self.xp
        bufs = sorted(((b, kind) for b, kind in self.plan.buffers.items() if b not in self.plan.fresh),
                      key=lambda kv: int(kv[0][4:]))
        alloc_names = [b for b, _ in bufs] + list(self.temps.values()) + list(self.fills.values())
        lines = ["", "_B = None", "", "", "def _alloc(B):",
                 '    """(Re)allocate the buffers of every intermediate for batch size B."""']
        alloc_names += [self.namer(n) for n in self.schedule.batch_consts]
        alloc_names += [name for aug in self.augs for name in aug[:2]]
        if alloc_names:
            lines.append("    global _B, " + ", ".join(alloc_names))
        else:
            lines.append("    global _B")
        lines.append("    _B = B")
        for b, (shape, dtype) in bufs:
            lines.append(f"    {b} = {xp}.empty({_shape_code(shape)}, dtype={xp}.{dtype})")
        for n in self.schedule.batch_consts:
            x = n.inputs[0]
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
        return lines + ["", ""]

    def _snapshots(self) -> list[tuple[str, Node]]:
        """Copies of the values that the tail or the return reads and that may look into
        a parameter the tail writes (aliasing.py): outputs are pre-update values and
        updates are simultaneous. Their readers name the copy (self.snap)."""
        lines = []
        for v in self.schedule.snapshots:
            src = self.value_of(v)
            self.snap[id(v)] = self.claim("_pre")
            lines.append((f"{self.snap[id(v)]} = {self.xp}.array({src})  # '{comment_name(v)}' "
                          "before the parameter updates", v))
        return lines

    def header(self) -> list[str]:
        return [
            f"# graphnn program {comment_name(self)} (graph {comment_text(self.fn.graph.name)}), "
            f"generated by graphnn {__version__} (fast program).",
            "# Buffers are preallocated for the batch size B (_alloc) and reused; element-wise",
            "# chains are fused; parameter updates run on flat buffers (see graphnn/compile/schedule.py).",
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
            elif src.op == "const" and src.value.ndim == 0:  # a literal, typed as the plain
                if src.value.dtype == np.float32:         # program types it
                    v = f"{self.xp}.float32({v})"
            elif src.op == "const":
                v = f"{v}.copy()"
            elif self.plan.buffer.get(id(src)) in self.plan.fresh and id(src) == id(o):
                pass  # its own new array (render)
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

    # -- values -------------------------------------------------------------------------------
    def value_of(self, n: Node) -> str:
        if id(n) in self.snap:
            return self.snap[id(n)]
        n = self.source_of(n)
        if n.op == "const":
            return self.const_value(n)
        if id(n) in self.alias:
            return f"{self.value_of(n.inputs[0])}.T"
        if self.is_arg(n):
            return self.namer(n)
        if self.plan is not None and id(n) in self.plan.buffer:
            return self.buffer_name(self.plan.buffer[id(n)])
        return self.unplanned_value(n)

    def const_value(self, n: Node) -> str:
        """A constant: a literal when 0-d, else a module-level array."""
        return literal(n.value) if n.value.ndim == 0 else self.const_name(n)

    def unplanned_value(self, n: Node) -> str:
        """A value with no planned buffer (a 0-d result, a view, an opaque op's own)."""
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

    # -- kernels: one _print_<Kernel> each ------------------------------------------------------
    def render(self, k) -> list[str]:
        """The lines of one kernel of the schedule; a returned value's own buffer is
        allocated first, so the caller gets it without a copy."""
        lines = getattr(self, "_print_" + type(k).__name__)(k, self.value_of(k.node))
        xp, new = self.xp, []
        for r in k.statement.defines:
            b = self.plan.buffer.get(r.key)
            if b in self.plan.fresh:
                new.append(f"{self.buffer_name(b)} = {xp}.empty({_shape_code(r.shape, '_B')}, "
                           f"dtype={xp}.{r.dtype})  # {comment_name(self.fresh_nodes[b])}: "
                           "returned, a new array at each call")
        return new + lines

    def _print_Fused(self, k: Fused, out: str) -> list[str]:
        n = k.node
        if id(n) in self.outputs and id(n) not in self.plan.buffer:
            out = self.namer(n)
        src = self.plan.aliased.get(id(n))
        alias_node = next((l for l in k.leaves if id(l) == src), None) if src else None
        return [self.note(n, f" -> {out}" + _fused_note(self, n))] + self.emit_group(n, out, alias_node)

    def _print_Matmul(self, k: Matmul, out: str) -> list[str]:
        n = k.node
        a, b = (self.value_of(i) for i in n.inputs)
        return [f"{self.matmul_fn(n, n.inputs, out)}({a}, {b}, out={out})  " + self.note(n)]

    def _print_Affine(self, k: Affine, out: str) -> list[str]:
        f, n = k.fold, k.node
        Wb = self.fold_views[id(f)][0]
        return [f"{self.matmul_fn(n, (f.h, f.W), out)}({self.aug_of(f.h)[0]}, {Wb}, "
                f"out={out})  " + self.note(
                    n, f" (fused: {comment_name(f.m)}=matmul; bias folded: "
                       f"[{comment_name(f.h)}, 1] @ [{comment_name(f.W)}; {comment_name(f.b)}])")]

    def _print_AffineGrad(self, k: AffineGrad, out: str) -> list[str]:
        f = k.fold
        gW, gWb = f.gW, self.fold_views[id(f)][1]
        return [f"{self.matmul_fn(gW, gW.inputs, gWb)}({self.aug_of(f.h)[0]}.T, "
                f"{self.value_of(f.dz)}, out={gWb})  " + self.note(
                    gW, f" (fused: {comment_name(f.gb)}=sum, the bias gradient, as the row of ones)")]

    def _print_Softmax(self, k: Softmax, out: str) -> list[str]:
        return [self.note(k.node, f" -> {out}")] + _softmax_lines(self, k.node, out)

    def _print_CopyIn(self, k: CopyIn, out: str) -> list[str]:
        n = k.node
        return [f"{self.xp}.copyto({self.aug_of(n)[1]}, {self.value_of(n)})  # {comment_name(n)}: "
                f"beside a column of ones (folded biases)"]

    def _reduction(self, n: Node):
        """(axes, the axis argument, the mean's divisor text) of a sum or mean."""
        x = n.inputs[0]
        axes = shapes.norm_axes(n.attrs["axis"], x.ndim, x.shape)
        ax = "None" if len(axes) == x.ndim else str(axes[0]) if len(axes) == 1 else str(axes)
        scale = ""
        if n.op == "mean" and axes:  # the mean over no axis (of a 0-d value) is itself
            dims = ["_B" if x.shape[a] is None else str(x.shape[a]) for a in axes]
            scale = f" / ({' * '.join(dims)})" if len(dims) > 1 else f" / {dims[0]}"
            if dims and all(d != "_B" for d in dims):
                scale = f" / {int(np.prod([x.shape[a] for a in axes]))}"
        return axes, ax, scale

    def _print_Dot(self, k: Dot, out: str) -> list[str]:
        n = k.node
        _, _, scale = self._reduction(n)
        a, b = (self.value_of(i) for i in k.product.inputs)
        return [f"{self.namer(n)} = {self.xp}.vdot({a}, {b}){scale}  " + self.note(
            n, f" (fused: {comment_name(k.product)}=mul)")]

    def _print_ReduceAll(self, k: ReduceAll, out: str) -> list[str]:
        n = k.node
        _, ax, scale = self._reduction(n)
        return [f"{self.namer(n)} = {self.sum_call(self.value_of(n.inputs[0]), ax)}{scale}  "
                + self.note(n)]

    def _print_Reduce(self, k: Reduce, out: str) -> list[str]:
        n = k.node
        x = n.inputs[0]
        axes, ax, scale = self._reduction(n)
        keep = bool(n.attrs["keepdims"])
        call = self.row_sum(x, self.value_of(x), axes[0], keep, out) if \
            len(axes) == 1 and n.dtype == x.dtype else None
        call = call or self.sum_call(self.value_of(x), ax, out, keep)
        lines = [f"{call}  " + self.note(n)]
        if scale:
            lines.append(f"{self.xp}.divide({out}, {scale[3:]}, out={out})")
        return lines

    def _print_Opaque(self, k: Opaque, out: str) -> list[str]:
        n = k.node
        code = self.op_code(n, [self.value_of(i) for i in n.inputs])
        ident = self.namer(n)
        if k.fixed is not None:
            return [f"{self.xp}.copyto({self.buffer_name(k.fixed)}, {code})  " + self.note(n)]
        return [f"{ident} = {code}  " + self.note(n)]

    # -- fused element-wise groups ----------------------------------------------------------------
    def emit_group(self, root: Node, out: str, alias_node: Node | None):
        """Lines computing the fused group at root into `out`."""
        key, leaves, sub_leaves = self._group_meta[id(root)]
        expr = _EXPR_CACHE[key][0]
        if expr.has(sp.erf) and "_erf" not in self.helpers:  # fused gelu & co. call the helper
            self.helpers.append("_erf")
        names = {}
        kinds = {}
        for k, l in enumerate(leaves):
            s = fusion.leaf_symbol(k)
            kinds[s] = "full" if l.shape == root.shape else ("scalar" if l.shape == () else "other")
            names[s.name] = self.value_of(l)
            if l.dtype.kind in "biu" and root.dtype.kind == "f" and l.op != "const":
                # a boolean or integer leaf of a float group is read as the group's type, as
                # the plain program casts it (NumPy has no boolean negative, and integer
                # operands of a fused call would pick integer loops)
                names[s.name] += f".astype(np.{_dname(root.dtype)})"
        for sname, node in sub_leaves.items():
            kinds[sp.Symbol(sname, real=True)] = "full"
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
                tuple(sorted((s.name, c) for s, c in kinds.items())))
        hit = _EMIT_CACHE.get(ekey)
        if hit is None:
            hit = _EMIT_CACHE[ekey] = fusion.emit(expr, kinds, _dname(root.dtype), alias_sym)
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

    # -- target spellings -----------------------------------------------------------------------
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


def _softmax_lines(p: NumpyPrinter, n: Node, out: str) -> list[str]:
    """softmax / log_softmax into `out` with preallocated temporaries: the helper
    functions of the plain printer allocate five arrays per call (36 us against
    23 us for mlp's [128, 10] logits, timed in the running step)."""
    x = n.inputs[0]
    ax = shapes.norm_axes((n.attrs["axis"],), x.ndim, x.shape)[0]
    dtype = _dname(n.dtype)
    red = p.temp(tuple(1 if k == ax else d for k, d in enumerate(n.shape)), dtype, 0)
    xs = p.value_of(x)
    xp = p.xp
    lines = [p.max_call(xs, ax, red, True), f"{xp}.subtract({xs}, {red}, out={out})"]  # shifted: the largest is 0

    def row_sum(src):
        return p.row_sum(x, src, ax, True, red) or p.sum_call(src, ax, red, True)
    if n.op == "softmax":
        return lines + [f"{xp}.exp({out}, out={out})", row_sum(out),
                        f"{xp}.divide({out}, {red}, out={out})"]
    e = p.temp(n.shape, dtype, 0)
    return lines + [f"{xp}.exp({out}, out={e})", row_sum(e),
                    f"{xp}.log({red}, out={red})",
                    f"{xp}.subtract({out}, {red}, out={out})"]


def _fused_note(p: NumpyPrinter, n: Node) -> str:
    fused = []
    stack = [n]
    while stack:
        m = stack.pop()
        for i in m.inputs:
            s = p.source_of(i)
            if id(s) in p.inline:
                fused.append(s)
                stack.append(s)
    if not fused:
        return ""
    return " (fused: " + ", ".join(f"{comment_name(f)}={f.op}" for f in reversed(fused)) + ")"


def _late(p: NumpyPrinter, text: str) -> str:
    """`text` with its `{node id}` placeholders filled with the values' names, in the
    code only: a comment holds node names, and a name may read "{0}"."""
    code, sep, comment = text.partition("#")
    code = re.sub(r"\{(\d+)\}", lambda m: p.value_of(p._by_id[int(m.group(1))]), code)
    return code + sep + comment
