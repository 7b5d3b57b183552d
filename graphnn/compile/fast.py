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
  computed straight into their views.

The program takes the same arguments as the plain one. Parameters of flat groups
are *adopted* when the Program is built (`_adopt(g.values)` copies them into the
flat buffers and makes `g.values[name]` a view); a call with other arrays still
works (they are copied in and the results copied back).
"""
from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter, defaultdict

import numpy as np
import sympy as sp

from .. import __version__
from ..graph import Node, fmt_type
from ..ops.registry import get_op
from . import aliasing, fusion, loops, memory
from .passes import Function
from .printer import RUN_SOURCE, Namer, comment_text, const_definition, helper_source, literal

_VIEW_OPS = ("stop_gradient",)
_BROADCAST = ("broadcast_like", "broadcast_to")


def _is_ew(n: Node) -> bool:
    return not n.is_leaf and get_op(n.op).elementwise is not None


def _attrs_key(n: Node) -> tuple:
    return tuple(sorted(n.attrs.items()))


def _shape_code(shape, batch="B") -> str:
    dims = [batch if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


@functools.lru_cache(maxsize=64)
def _dname(dtype: np.dtype) -> str:
    """dtype.name, remembered (NumPy works it out in Python at every access)."""
    return dtype.name


def _tag(shape) -> str:
    return "x".join("B" if d is None else str(d) for d in shape) or "s"


# names of gradient views (see _drop_unread_views); no leading \b, which makes the
# search 20x slower: a longer name ending in one (`a_g_x`) only keeps a view
_IDENT = re.compile(r"_g_\w+")
_EXPR_CACHE: dict = {}
_EMIT_CACHE: dict = {}


class FastPrinter:
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
        self.param_views = aliasing.updated_views(self.order, {id(p) for p, _ in fn.updates},
                                                  self.cut)

    def _helper_names(self):
        from .runtime import HELPERS
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
    def _fold_candidates(self) -> dict[int, dict]:
        """Affine layers `add(matmul(h, W), b)` whose bias can ride inside the matmul.

        With W and b adjacent in the flat parameter buffer, `[W; b]` is one (k+1, n)
        view, and with h kept beside a column of ones (`[h, 1]`, a (B, k+1) buffer)
        the layer is one matmul `[h, 1] @ [W; b]`; the gradients of W and b (adjacent
        in the flat gradient buffer) are one matmul too: `[h, 1].T @ dz`. That removes
        the bias add and the bias-gradient reduction. Here: the structural part; the
        flat-buffer part is checked when the update groups are known (_groups)."""
        upd = {id(p) for p, _ in self.fn.updates}
        out = {}
        for a in self.order:
            if a.op != "add" or a.ndim != 2 or id(a) in self.cut or id(a) in self.outputs \
                    or id(a) in self.update_of or id(a) in self.region:
                continue
            m, b = a.inputs
            if m.op != "matmul":
                b, m = m, b
            b = self.source_of(b)
            if m.op != "matmul" or b.op != "param" or id(b) not in upd:
                continue
            h, W = m.inputs
            if W.op != "param" or id(W) not in upd or W.ndim != 2 or h.ndim != 2 or \
                    b.shape != (W.shape[1],) or m.shape != a.shape or W is b or \
                    len({a.dtype, m.dtype, h.dtype, W.dtype, b.dtype}) != 1:
                continue
            if [id(c) for c in self.consumers[id(m)]] != [id(a)] or id(m) in self.outputs \
                    or id(m) in self.update_of or id(m) in self.cut:
                continue
            if self.is_arg(h):
                if h.op == "param":
                    continue
            elif h.is_leaf or not _is_ew(h) or id(h) in self.region or id(h) in self.outputs \
                    or id(h) in self.update_of or id(h) in self.transparent:
                continue
            grads = None  # gW = matmul(transpose(h), dz) and gb = sum(dz, axis=0)
            for t in self.consumers[id(h)]:
                if t.op != "transpose" or id(t) not in self.alias:
                    continue
                for gW in self.consumers[id(t)]:
                    if gW.op != "matmul" or gW.inputs[0] is not t or gW.shape != W.shape:
                        continue
                    dz = gW.inputs[1]
                    for gb in self.consumers[id(dz)]:
                        if gb.op == "sum" and gb.attrs.get("axis") == (0,) and \
                                not gb.attrs.get("keepdims") and gb.shape == b.shape:
                            grads = (gW, gb, dz)
            if grads is None:
                continue
            out[id(a)] = dict(a=a, m=m, h=h, W=W, b=b, gW=grads[0], gb=grads[1], dz=grads[2])
        return out

    def _accept_folds(self, groups) -> None:
        """Keep the candidates whose W and b are updated by one flat group with their
        gradients as the same flat slot, and place b's member right after W's."""
        self.folds: dict[int, dict] = {}
        member = {}
        for gi, grp in enumerate(groups):
            for mb in grp["members"]:  # (Adam's member updates W and its two moments)
                for p in mb["params"]:
                    member[id(p)] = (gi, mb)
        partner = {}
        for key, c in self.fold_cands.items():
            (gi, mW), (gj, mb) = member.get(id(c["W"]), (None, None)), member.get(id(c["b"]), (-1, None))
            if gi != gj or not _flat_group(groups[gi]["members"]):
                continue
            slots = [k for k, l in enumerate(mW["leaves"]) if l is c["gW"]]
            if len(slots) != 1 or mW["kinds"][slots[0]][0] != "f" or \
                    mb["leaves"][slots[0]] is not c["gb"] or c["W"] not in mW["leaves"] or \
                    mb["leaves"][mW["leaves"].index(c["W"])] is not c["b"] or \
                    not (self._can_fix(c["gW"]) and self._can_fix(c["gb"])) or \
                    id(mW) in partner or id(mb) in partner.values():
                continue
            c["slot"], c["param_slot"] = slots[0], mW["leaves"].index(c["W"])
            partner[id(mW)] = id(mb)
            self.folds[key] = c
        if not partner:
            return
        for grp in groups:
            ms, placed = grp["members"], []
            by_id = {id(x): x for x in ms}
            follows = set(partner.values())
            for x in ms:
                if id(x) in follows:
                    continue
                placed.append(x)
                if id(x) in partner:
                    placed.append(by_id[partner[id(x)]])
            grp["members"] = placed

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
    def _update_region(self) -> set[int]:
        cand: set[int] = set()
        shape_of: dict[int, tuple] = {}
        for p, v in self.fn.updates:
            if p.shape == () or not _is_ew(v) or v.shape != p.shape:
                continue
            stack = [v]
            while stack:
                n = stack.pop()
                if id(n) in cand or n.is_leaf or id(n) in self.cut or not _is_ew(n) \
                        or n.shape != p.shape:
                    continue
                cand.add(id(n))
                shape_of[id(n)] = p.shape
                stack.extend(n.inputs)
        updated_vals = {id(v) for _, v in self.fn.updates}
        for n in reversed(self.order):
            if id(n) not in cand:
                continue
            if id(n) in self.outputs or any(id(c) not in cand for c in self.consumers[id(n)]):
                if not (id(n) in updated_vals and all(id(c) in cand for c in self.consumers[id(n)])
                        and id(n) not in self.outputs):
                    cand.discard(id(n))
        return cand

    # -- printing ----------------------------------------------------------------------------
    def source(self) -> tuple[str, dict]:
        self.classify()
        args = [n for n in self.order if self.is_arg(n)]
        arg_ids = [self.namer(a) for a in args]
        self.groups = self._groups()
        statements, texts = self._body()
        # buffer plan over body statements (region code uses flat buffers of its own)
        keep = {id(o) for o in self.fn.outputs} | self.region_leaves | {
            id(self.source_of(v)) for _, v in self.fn.updates if id(v) not in self.region}
        plan = memory.plan([s for s, _ in statements], base_of=self.base_of, keep=keep)
        self.plan = plan
        for st, n, kind in self._entries:
            if kind[0] == "plain" and kind[1] is not None:
                plan.buffer[id(n)] = kind[1]
        texts = list(texts)  # renders (and names temporaries) now that buffers are known
        for p, v in self.fn.updates:  # updates outside the fused region: copied in last
            if id(v) not in self.region:
                self.tail.append((f"{self.xp}.copyto({self.namer(p)}, {{{id(v)}}})  "
                                  f"# update '{comment_text(p.name)}' in place", v))
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
                         f"dtype={xp}.{_dname(h.dtype)})  # [{comment_text(h.name)}, 1]: folded biases")
            lines.append(f"    {view} = {aug}[:, :{k}]")
        lines += ["", ""]
        if batch_arg is None:
            lines += ["_alloc(None)", "", ""]
        # the step
        lines.append(f"def step({', '.join(arg_ids)}):")
        for a, ident in zip(args, arg_ids):
            note = f"'{comment_text(a.name)}'" if ident != a.name else ""
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
            lines.append((f"{self.snap[id(v)]} = {self.xp}.array({src})  # '{comment_text(v.name)}' "
                          "before the parameter updates", v))
        return lines

    def header(self) -> list[str]:
        return [
            f"# graphnn program {comment_text(self.name)} (graph {comment_text(self.fn.graph.name)}), "
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
            elif self.plan.shares_buffer(id(src)) and o.shape != ():
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
        if hasattr(self, "plan") and id(n) in self.plan.buffer:
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
        return f"# {comment_text(n.name)}: {' · '.join(notes)}{extra}"

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
        self._group_meta = getattr(self, "_group_meta", {})
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
    def _groups(self):
        """Components of the update region, grouped by identical structure."""
        region = self.region
        self.fixed_buffer: dict[int, str] = {}
        self.flat_params: list[tuple[Node, str]] = []
        self.tail: list[tuple[str, Node]] = []
        self.deferred: list[tuple[str, Node]] = []  # writes that must wait for every read
        self.foreign_read: set[int] = set()
        self.folds = {}
        if not region:
            return []
        parent = {}

        def find(a):
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for n in self.order:
            if id(n) in region:
                find(id(n))
                for i in n.inputs:
                    if id(i) in region:
                        parent[find(id(i))] = find(id(n))
        comps: dict[int, list[Node]] = defaultdict(list)
        for n in self.order:
            if id(n) in region:
                comps[find(id(n))].append(n)
        writes: dict[int, list[Node]] = defaultdict(list)  # value -> params it updates
        for p, v in self.fn.updates:
            if id(v) in region:
                writes[id(v)].append(p)
        members = []
        for nodes in comps.values():
            local = {id(n): k for k, n in enumerate(nodes)}
            leaves: list[Node] = []
            lidx: dict[int, int] = {}
            wiring = []
            for n in nodes:
                refs = []
                for i in n.inputs:
                    if id(i) in local:
                        refs.append(("n", local[id(i)]))
                        continue
                    s = self.source_of(i)
                    if id(s) not in lidx:
                        lidx[id(s)] = len(leaves)
                        leaves.append(s)
                    refs.append(("l", lidx[id(s)]))
                wiring.append((n.op, _attrs_key(n), n.dtype.str, tuple(refs)))
            shape = nodes[0].shape
            params = [p for n in nodes for p in writes.get(id(n), [])]
            kinds = []
            for l in leaves:
                if l.shape == ():
                    kinds.append(("s", id(l)))       # shared scalar: the same node
                elif l.shape == shape:
                    kinds.append(("p", params.index(l)) if l in params else ("f",))
                else:
                    kinds.append(("o", l.shape))
            outs = tuple((local[id(n)], params.index(p)) for n in nodes for p in writes.get(id(n), []))
            sig = (tuple(wiring), tuple(kinds), outs)
            members.append({"nodes": nodes, "leaves": leaves, "params": params, "sig": sig,
                            "shape": shape, "kinds": kinds})
        # a param one component updates and another reads (itself or through a view,
        # `A - B.T`): write it last
        for m in members:
            own = {id(p) for p in m["params"]}
            for l in m["leaves"]:
                self.foreign_read |= set(self.param_views.get(id(l), ())) - own
        by_sig: dict = {}
        for m in members:
            by_sig.setdefault(m["sig"], []).append(m)
        groups = [{"members": ms, "sig": sig} for sig, ms in by_sig.items()]
        self._accept_folds(groups)
        self._plan_groups(groups)
        return groups

    def _plan_groups(self, groups):
        """Flat buffers, views, and the group code (appended to self.tail)."""
        readers = Counter(id(l) for grp in groups for mb in grp["members"] for l in mb["leaves"])
        read_late = {id(self.source_of(v)) for _, v in self.fn.updates} | \
            {id(self.source_of(o)) for o in self.fn.outputs}
        for gi, grp in enumerate(groups):
            ms = grp["members"]
            m0 = ms[0]
            flat = _flat_group(ms)
            dtype = _dname(m0["nodes"][0].dtype)
            if not flat:
                for m in ms:
                    self._emit_component(m, {}, None, dtype)
                continue
            sizes = [math.prod(m["shape"]) for m in ms]
            total = sum(sizes)
            offs = np.concatenate([[0], np.cumsum(sizes)]).tolist()
            names: dict = {}
            first = m0["nodes"][0]
            label = f"{gi}"
            self.globals_.append(f"# group {gi}: {len(ms)} parameters updated by the same rule "
                                 f"({' · '.join(sorted({n.op for n in m0['nodes']}))}), {total} elements")

            def flat_buffer(tag, views, optional=False):
                fname = self.claim(f"_flat{label}_{tag}")
                self.globals_.append(f"{fname} = {self.xp}.zeros({total}, dtype={self.xp}.{dtype})")
                for (vname, shape), a, b in zip(views, offs[:-1], offs[1:]):
                    line = f"{vname} = {fname}[{a}:{b}].reshape({_shape_code(shape)})"
                    if optional:
                        self.optional_views[line] = vname
                    self.globals_.append(line)
                return fname

            slot_names, scratch = {}, {}
            for k, kind in enumerate(m0["kinds"]):
                if kind[0] == "p":
                    ps = [m["params"][kind[1]] for m in ms]
                    views = [(self.claim(f"_v_{self.namer(p)}"), p.shape) for p in ps]
                    fname = flat_buffer(comment_text(self.namer(ps[0])).lower() + "s", views)
                    slot_names[k] = fname
                    for p, (vname, _) in zip(ps, views):
                        self.flat_params.append((p, vname))
                elif kind[0] == "f":
                    ls = [m["leaves"][k] for m in ms]
                    views = [(self.claim(f"_g_{self.namer(l)}"), l.shape) for l in ls]
                    fname = flat_buffer(f"leaf{k}", views, optional=True)
                    slot_names[k] = fname
                    seen = set()
                    for l, (vname, _) in zip(ls, views):
                        if self._can_fix(l) and id(l) not in seen and id(l) not in self.fixed_buffer:
                            self.fixed_buffer[id(l)] = vname
                        else:
                            self.tail.append((f"{self.xp}.copyto({vname}, {{{id(l)}}})  # into flat buffer",
                                              l))
                        seen.add(id(l))
                    if all(readers[id(l)] == 1 and id(l) not in read_late for l in ls):
                        scratch[k] = fname  # this group's copy, read by nobody after it
            self._fold_views(ms, slot_names, offs)
            self._emit_component(m0, slot_names, total, dtype, flat_label=label, scratch=scratch)

    def _fold_views(self, ms, slot_names, offs) -> None:
        """The (k+1, n) views [W; b] and [gW; gb] of the accepted folds in this group."""
        pos = {id(p): j for j, m in enumerate(ms) for p in m["params"]}
        for key, f in list(self.folds.items()):
            j = pos.get(id(f["W"]))
            if j is None:
                continue
            W, b = f["W"], f["b"]
            k, n = W.shape
            if j + 1 >= len(ms) or ms[j + 1]["leaves"][f["param_slot"]] is not b or \
                    not self.fixed_buffer.get(id(f["gW"])) or not self.fixed_buffer.get(id(f["gb"])):
                del self.folds[key]
                continue
            a, e = offs[j], offs[j] + (k + 1) * n
            shape = _shape_code((k + 1, n))
            f["Wb"] = self.claim(f"_v_{self.namer(W)}_{self.namer(b)}")
            self.globals_.append(f"{f['Wb']} = {slot_names[f['param_slot']]}[{a}:{e}].reshape({shape})"
                                 f"  # [{comment_text(W.name)}; {comment_text(b.name)}]")
            f["gWb"] = self.claim(f"_g_{self.namer(f['gW'])}_{self.namer(f['gb'])}")
            self.globals_.append(f"{f['gWb']} = {slot_names[f['slot']]}[{a}:{e}].reshape({shape})"
                                 f"  # their gradients, one matmul")

    def _can_fix(self, l: Node) -> bool:
        if l.is_leaf or id(l) in self.cut or id(l) in self.alias or id(l) in self.transparent \
                or id(l) in self.outputs or id(l) in self.inline or id(l) in self.region:
            return False
        return (_is_ew(l) and l.shape != ()) or l.op == "matmul" or (l.op in ("sum", "mean")
                                                                       and l.shape != ())

    def _component_exprs(self, m):
        """The roots of a component (update values and multi-use nodes, which are
        materialized) and, per node, its SymPy expression over leaf symbols `Lk` and
        root symbols `Rj` (j: the node's position in the component), the leaves it
        reads, and the params each root writes."""
        nodes, leaves = m["nodes"], m["leaves"]
        local = {id(n): k for k, n in enumerate(nodes)}
        writes = defaultdict(list)
        for p, v in self.fn.updates:
            if id(v) in local:
                writes[id(v)].append(p)
        uses = defaultdict(int)
        for n in nodes:
            for i in set(n.inputs):
                if id(i) in local:
                    uses[id(i)] += 1
        roots = [n for n in nodes if writes.get(id(n)) or uses[id(n)] != 1]
        root_ids = {id(n) for n in roots}
        root_pos = {id(r): j for j, r in enumerate(roots)}
        expr_of: dict[int, sp.Expr] = {}
        reads: dict[int, set] = {}
        for n in nodes:
            args, rd = [], set()
            for i in n.inputs:
                if id(i) in local:
                    if id(i) in root_ids:
                        args.append(sp.Symbol(f"R{local[id(i)]}", real=True))
                    else:
                        args.append(expr_of[id(i)])
                        rd |= reads[id(i)]
                else:
                    k = leaves.index(self.source_of(i))
                    args.append(fusion.leaf_symbol(k))
                    rd.add(k)
            expr_of[id(n)] = fusion.substitute(n.op, _attrs_key(n), args)
            reads[id(n)] = rd
        return roots, root_pos, expr_of, reads, writes

    def _emit_component(self, m, slot_names, total, dtype, flat_label=None, scratch=None):
        """Code for one component (or a whole flat group through its first member).

        `scratch` maps leaf slots to flat gradient buffers that nothing reads after
        this component: once a slot's last reader has run, its buffer serves as a
        temporary, so updates run in place (`g *= lr; p -= g`) instead of writing a
        third array, which costs NumPy about three times as much on large buffers.
        The roots (values the component materializes) are emitted in the order that
        makes the most calls in place (every order is tried when there are few)."""
        nodes = m["nodes"]
        roots, root_pos, expr_of, reads, writes = self._component_exprs(m)
        deps = [{root_pos[id(nodes[int(s.name[1:])])] for s in expr_of[id(r)].free_symbols
                 if s.name.startswith("R")} for r in roots]
        scratch = scratch or {}
        orders = [list(range(len(roots)))]
        if scratch and 1 < len(roots) <= 5:
            orders = [list(o) for o in itertools.permutations(range(len(roots)))
                      if all(deps[r] <= set(o[:k]) for k, r in enumerate(o))]
        plans = [self._plan_roots(m, roots, root_pos, expr_of, reads, writes, o, slot_names,
                                  total, dtype, scratch) for o in orders]
        best = min(plans, key=lambda pl: pl["cost"])  # min keeps the first (natural) of ties
        if self._emit_loop(m, roots, expr_of, writes, best, slot_names, total, dtype, flat_label):
            return
        shape = (total,) if total is not None else m["shape"]
        renamed = {}
        for j, _ in best["roots"]:
            dest = best["code"][j][0]
            if dest.startswith("_upd"):  # a materialized value of its own: a buffer
                renamed[dest] = self.claim(dest)
                self.globals_.append(f"{renamed[dest]} = {self.xp}.zeros({_shape_code(shape)}, "
                                     f"dtype={self.xp}.{dtype})")
        for j, r in best["roots"]:
            dest, ps, lines, fmt, n_t, n_b, fills, deferred = best["code"][j]
            dest = renamed.get(dest, dest)
            fmt = {s: renamed.get(v, v) for s, v in fmt.items()}
            for k in range(n_t):
                fmt.setdefault(f"T{k}", self.global_temp(shape, dtype, k))
            for k in range(n_b):
                fmt[f"B{k}"] = self.global_temp(shape, "bool", k)
            for k, number in enumerate(fills):
                fmt[f"F{k}"] = self.fill(shape, dtype, number)
            what = f"'{comment_text(r.name)}'" + (f" (and the same for every parameter of group "
                                                   f"{flat_label})" if total is not None else "")
            upd = ", ".join(f"'{comment_text(p.name)}'" for p in ps)
            self.tail.append((f"# {what}: {r.op} · update" + (f" -> {upd} in place"
                                                             if ps and not deferred else ""), r))
            for ln in lines:
                self.tail.append((ln.format(**fmt), r))
            self.deferred.extend((t.replace("{DEST}", dest), r) for t in deferred)

    def _emit_loop(self, m, roots, expr_of, writes, best, slot_names, total, dtype,
                   flat_label) -> bool:
        """Print a flat group's update as one fused loop (loops.py) when that pays
        and means the same; returns False to leave it to the NumPy calls."""
        if self.kernels == "numpy" or total is None or dtype != "float64":
            return False
        calls = sum(len(best["code"][j][2]) for j, _ in best["roots"])
        if self.kernels == "auto" and (total < loops.MIN_ELEMENTS or calls < loops.MIN_CALLS
                                       or not loops.available()):
            return False
        leaves = m["leaves"]
        slot_of = {id(l): k for k, l in enumerate(leaves)}
        for r in roots:
            if not loops.printable(expr_of[id(r)]):
                return False
            for p in writes.get(id(r), []):
                if id(p) in self.foreign_read or slot_of.get(id(p)) not in slot_names:
                    return False  # written where the loop cannot: a later reader waits for it
        if any(kind[0] not in ("s", "p", "f") or (kind[0] != "s" and k not in slot_names)
               for k, kind in enumerate(m["kinds"])):
            return False
        taken = {"i", "math", "min", "abs", "range", "numba"}  # the loop's own names

        def local(base: str) -> str:
            return _unique(base, taken)

        used = sorted({int(s.name[1:]) for r in roots for s in expr_of[id(r)].free_symbols
                       if s.name.startswith("L")})
        array_of: dict[str, str] = {}  # flat buffer -> loop parameter

        def array(buf: str) -> str:
            if buf not in array_of:
                array_of[buf] = local(buf.lstrip("_"))
            return array_of[buf]

        subs, literals, scalars, call_scalars, loads = {}, {}, [], [], []
        invariant: set = set()
        for k in used:
            if m["kinds"][k][0] == "s" and leaves[k].op == "const":  # a literal, as NumPy prints it
                literals[fusion.leaf_symbol(k)] = loops.literal(float(leaves[k].value))
                continue
            if m["kinds"][k][0] == "s":
                name = local(self.namer(leaves[k]))
                scalars.append(name)
                invariant.add(sp.Symbol(name, real=True))
                call_scalars.append(f"float({self.value_of_late(leaves[k])})")
            else:
                name = local(array(slot_names[k]) + "_i")
                loads.append((name, array(slot_names[k])))
            subs[fusion.leaf_symbol(k)] = sp.Symbol(name, real=True)
        nodes = m["nodes"]
        root_name = {}
        for r in roots:
            root_name[id(r)] = local(self.namer(r))
            subs[sp.Symbol(f"R{nodes.index(r)}", real=True)] = sp.Symbol(root_name[id(r)], real=True)
        printer = loops.LoopPrinter({subs.get(s, s): t for s, t in literals.items()},
                                    frozenset(invariant))
        shapes = {s: "scalar" if s in invariant or s in literals else "full"
                  for s in list(subs.values()) + list(literals)}
        pull = fusion.Emitter(shapes, dtype, None)._pull_scalars
        steps, notes = [], []
        for r in roots:  # in graph order, so every root comes after the roots it reads
            stores = [array(slot_names[slot_of[id(p)]]) for p in writes.get(id(r), [])]
            expr = fusion.rewrite_products(expr_of[id(r)].xreplace(subs), pull)
            steps.append((root_name[id(r)], printer.doprint(expr), stores))
            ps = ", ".join(f"'{comment_text(p.name)}'" for p in writes.get(id(r), []))
            notes.append(f"'{comment_text(r.name)}'" + (f" -> {ps}" if ps else ""))
        name = self.claim(f"_loop{flat_label}")
        arrays = list(array_of.values())
        self.loops += loops.kernel_source(
            name, arrays, scalars, loads, steps,
            f"Group {flat_label}: {'; '.join(notes)}; one pass over {total} elements.")
        args = list(array_of) + call_scalars
        r0 = roots[-1]
        self.tail.append((f"# group {flat_label} ({len(roots)} values, {calls} NumPy calls): "
                          f"one fused loop, in place (Numba)", r0))
        self.tail.append((f"{name}({', '.join(args)})", r0))
        return True

    def _plan_roots(self, m, roots, root_pos, expr_of, reads, writes, order, slot_names, total,
                    dtype, scratch) -> dict:
        """The code of a component's roots emitted in `order`, and its estimated cost
        (one per in-place call, more for a call writing a third array or a copy)."""
        leaves, nodes = m["leaves"], m["nodes"]
        pidx = {id(p): k for k, p in enumerate(m["params"])}
        leaf_of_param = {id(l): k for k, l in enumerate(leaves) if id(l) in pidx}
        rank = {r: k for k, r in enumerate(order)}
        last_read: dict[int, int] = {}  # leaf -> position (in order) of its last reading root
        for j, r in enumerate(roots):
            for k in reads[id(r)]:
                last_read[k] = max(last_read.get(k, -1), rank[j])

        def leaf_name(k):
            if total is not None and k in slot_names:
                return slot_names[k]
            return self.value_of_late(leaves[k])

        code, names, cost = {}, {}, 0.0
        for pos, j in enumerate(order):
            r = roots[j]
            expr = expr_of[id(r)]
            ps = writes.get(id(r), [])
            dest, alias, deferred = None, None, []
            if ps:
                p = ps[0]
                k = leaf_of_param.get(id(p))
                old_read_later = (k is not None and last_read.get(k, -1) > pos) or \
                    id(p) in self.foreign_read
                if not old_read_later:
                    dest = slot_names[leaves.index(p)] if (total is not None and id(p) in leaf_of_param
                                                           and leaves.index(p) in slot_names) \
                        else (self._param_flat(p, m, slot_names, total) if total is not None
                              else self.namer(p))
                    alias = fusion.leaf_symbol(k) if k is not None and k in reads[id(r)] else None
            if dest is None:
                dest = f"_upd{len(self.globals_)}_{self.namer(r)}"
                for p in ps:
                    target = (self._param_flat(p, m, slot_names, total) if total is not None
                              else self.namer(p))
                    deferred.append(f"{self.xp}.copyto({target}, {{DEST}})  # update '{comment_text(p.name)}'")
                    cost += 2.5
            names[j] = dest
            shapes, fmt = {}, {}
            for s in expr.free_symbols:
                if s.name.startswith("R"):
                    fmt[s.name] = names[root_pos[id(nodes[int(s.name[1:])])]]
                    shapes[s] = "full"
                else:
                    k = int(s.name[1:])
                    fmt[s.name] = leaf_name(k)
                    shapes[s] = "scalar" if leaves[k].shape == () else (
                        "full" if leaves[k].shape == m["shape"] else "other")
            key = (expr, alias, tuple(sorted((s.name, c) for s, c in shapes.items())))
            hit = self._emit_memo.get(key)
            if hit is None:
                hit = self._emit_memo[key] = fusion.emit(expr, shapes, dtype, alias)
            lines, n_t, n_b, fills = hit
            fmt["OUT"] = dest
            # temporaries in dead scratch buffers: slots no later root reads, or read by
            # this root only up to the call that first writes the temporary
            free = [k for k in scratch if last_read.get(k, -1) < pos]
            soon = [k for k in scratch if last_read.get(k, -1) == pos]
            taken = set()
            for t in range(n_t):
                reg = f"{{T{t}}}"
                first = next((i for i, ln in enumerate(lines) if f"out={reg}" in ln), None)
                if first is None:
                    continue
                pick = next((k for k in free if k not in taken), None)
                if pick is None:
                    pick = next((k for k in soon if k not in taken and all(
                        i <= first for i, ln in enumerate(lines) if f"{{L{k}}}" in ln)), None)
                if pick is not None:
                    taken.add(pick)
                    fmt[f"T{t}"] = scratch[pick]
            full = {s.name for s, c in shapes.items() if c == "full"}
            cost += sum(_call_cost(ln, fmt, full) for ln in lines)
            code[j] = (dest, ps, lines, fmt, n_t, n_b, fills, deferred)
        return {"cost": cost, "code": code, "names": names,
                "roots": [(j, roots[j]) for j in order]}

    def _param_flat(self, p, m, slot_names, total):
        k = m["leaves"].index(p) if p in m["leaves"] else None
        if k is not None and k in slot_names:
            return slot_names[k]
        return self.namer(p)

    def global_temp(self, shape, dtype, k) -> str:
        key = (shape, dtype, k)
        if key not in self.gtemps:
            name = self.claim(f"_utmp{k}_{dtype}_{_tag(shape)}")
            self.gtemps[key] = name
            self.globals_.append(f"{name} = {self.xp}.empty({_shape_code(shape)}, dtype={self.xp}.{dtype})")
        return self.gtemps[key]

    def value_of_late(self, n: Node) -> str:
        """A placeholder resolved after buffer planning."""
        return "{" + str(id(n)) + "}"

    # -- module parts ----------------------------------------------------------------------------------
    def _adopt_source(self, args, arg_ids):
        # table-driven (not one statement per parameter): a depth-1024 step has 2048
        # parameters, and Python's compiler is slow on long straight-line module code
        views = {id(p): v for p, v in self.flat_params}
        pairs = [(k, a, views[id(a)]) for k, a in enumerate(args) if id(a) in views]
        out = ["# parameters kept in flat buffers: (argument position, graph name, view)",
               "FLAT_ARGS = (" + "".join(f"\n    ({k}, {a.name!r}, {v})," for k, a, v in pairs)
               + ("\n)" if pairs else ")"), "", "",
               "def _adopt(values):",
               '    """Copy parameters into the flat buffers; make values[name] their views."""',
               "    for _, name, view in FLAT_ARGS:",
               "        if name in values:",
               f"            {self.xp}.copyto(view, values[name])",
               "            values[name] = view",
               "", "",
               "def _foreign(*args):",
               '    """Run on arrays that are not the adopted views: copy in, step, copy out."""',
               "    own = list(args)",
               "    for k, _, view in FLAT_ARGS:",
               f"        {self.xp}.copyto(view, args[k])",
               "        own[k] = view",
               "    result = step(*own)",
               "    for k, _, view in FLAT_ARGS:",
               f"        {self.xp}.copyto(args[k], view)",
               "    return result"]
        return out + ["", ""]


class _Texts:
    """Renders body statements after buffer planning (buffer names are known then)."""

    def __init__(self, printer: FastPrinter, entries):
        self.p = printer
        self.entries = entries

    def __iter__(self):
        p = self.p
        plan = p.plan
        for st, n, kind in self.entries:
            out = p.value_of(n)
            if kind[0] == "ew":
                expr, leaves = kind[1], kind[2]
                if id(n) in p.outputs and id(n) not in plan.buffer:
                    out = p.namer(n)
                src = plan.aliased.get(id(n))
                alias_node = next((l for l in leaves if id(l) == src), None) if src else None
                lines = p.emit_group(n, out, alias_node)
                yield [p.note(n, f" -> {out}" + _fused_note(p, n))] + lines
            elif kind[0] == "matmul":
                a, b = (p.value_of(i) for i in n.inputs)
                yield [f"{p.matmul_fn(n, n.inputs, out)}({a}, {b}, out={out})  " + p.note(n)]
            elif kind[0] == "affine":
                f = kind[1]
                yield [f"{p.matmul_fn(n, (f['h'], f['W']), out)}({f['aug']}, {f['Wb']}, "
                       f"out={out})  " + p.note(
                    n, f" (fused: {comment_text(f['m'].name)}=matmul; bias folded: "
                       f"[{comment_text(f['h'].name)}, 1] @ [{comment_text(f['W'].name)}; "
                       f"{comment_text(f['b'].name)}])")]
            elif kind[0] == "affine_grad":
                f = kind[1]
                gW = f["gW"]
                yield [f"{p.matmul_fn(gW, gW.inputs, f['gWb'])}({f['aug']}.T, {p.value_of(f['dz'])}, "
                       f"out={f['gWb']})  " + p.note(
                    f["gW"], f" (fused: {comment_text(f['gb'].name)}=sum, the bias gradient, "
                             f"as the row of ones)")]
            elif kind[0] == "softmax":
                yield [p.note(n, f" -> {out}")] + _softmax_lines(p, n, out)
            elif kind[0] == "copyin":
                yield [f"{p.xp}.copyto({kind[1]}, {p.value_of(n)})  # {comment_text(n.name)}: "
                       f"beside a column of ones (folded biases)"]
            elif kind[0] in ("reduce", "reduce_all", "dot"):
                x = n.inputs[0]
                from ..ops import shapes
                axes = shapes.norm_axes(n.attrs["axis"], x.ndim, x.shape)
                ax = "None" if len(axes) == x.ndim else str(axes[0]) if len(axes) == 1 else str(axes)
                scale = ""
                if n.op == "mean" and axes:  # the mean over no axis (of a 0-d value) is itself
                    dims = ["_B" if x.shape[a] is None else str(x.shape[a]) for a in axes]
                    scale = f" / ({' * '.join(dims)})" if len(dims) > 1 else f" / {dims[0]}"
                    if dims and all(d != "_B" for d in dims):
                        scale = f" / {int(np.prod([x.shape[a] for a in axes]))}"
                if kind[0] == "dot":
                    a, b = (p.value_of(i) for i in kind[1].inputs)
                    yield [f"{p.namer(n)} = {p.xp}.vdot({a}, {b}){scale}  " + p.note(
                        n, f" (fused: {comment_text(kind[1].name)}=mul)")]
                elif kind[0] == "reduce_all":
                    ident = p.namer(n)
                    yield [f"{ident} = {p.sum_call(p.value_of(x), ax)}{scale}  " + p.note(n)]
                else:
                    kd = ", True" if n.attrs["keepdims"] else ""
                    call = p.row_sum(x, p.value_of(x), axes[0], bool(kd), out) if \
                        len(axes) == 1 and n.dtype == x.dtype else None
                    call = call or p.sum_call(p.value_of(x), ax, out, bool(kd))
                    lines = [f"{call}  " + p.note(n)]
                    if scale:
                        lines.append(f"{p.xp}.divide({out}, {scale[3:]}, out={out})")
                    yield lines
            else:
                code = p.op_code(n, [p.value_of(i) for i in n.inputs])
                ident = p.namer(n)
                fixed = kind[1]
                if fixed is not None:
                    yield [f"{p.xp}.copyto({fixed}, {code})  " + p.note(n)]
                else:
                    yield [f"{ident} = {code}  " + p.note(n)]


def _unique(base: str, taken: set) -> str:
    """`base`, or `base_2`, `base_3`, ... : the first not in `taken` (which records it)."""
    ident, k = base, 2
    while ident in taken:
        ident, k = f"{base}_{k}", k + 1
    taken.add(ident)
    return ident


def _softmax_lines(p: FastPrinter, n: Node, out: str) -> list[str]:
    """softmax / log_softmax into `out` with preallocated temporaries: the helper
    functions of the plain printer allocate five arrays per call (36 us against
    23 us for mlp's [128, 10] logits, timed in the running step)."""
    from ..ops import shapes
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


def _flat_group(ms) -> bool:
    """Members that share one flat buffer per role (see _plan_groups)."""
    m0 = ms[0]
    return len(ms) > 1 and all(k[0] in ("s", "p", "f") for k in m0["kinds"]) and \
        all(p in m0["leaves"] for p in m0["params"])


_PLACE = re.compile(r"\{(\w+)\}")


def _call_cost(line: str, fmt: dict, full: set[str]) -> float:
    """Estimated cost of one generated call, in units of an in-place call.

    On whole-buffer updates (85,002 elements, NumPy 2.4) a call that touches three
    arrays (`np.add(a, b, out=c)`) measured about three times one that touches two
    (`np.add(a, b, out=a)`, `np.multiply(a, 0.1, out=c)`); splitting the buffers
    into cache-sized chunks did not change that. A copy touches two."""
    arrays = {fmt.get(n, n) for n in _PLACE.findall(line)
              if n in full or n == "OUT" or n[0] in "TB"}
    return 1.0 if len(arrays) <= 2 else 3.0


def _fused_note(p: FastPrinter, n: Node) -> str:
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
    return " (fused: " + ", ".join(f"{comment_text(f.name)}={f.op}" for f in reversed(fused)) + ")"


def _late(p: FastPrinter, text: str) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: p.value_of(_node_by_id(p, int(m.group(1)))), text)


def _node_by_id(p: FastPrinter, i: int) -> Node:
    if not hasattr(p, "_by_id"):
        p._by_id = {id(n): n for n in p.order}
    return p._by_id[i]


def _small_int_const(n: Node):
    """The value of a constant whose elements all equal one small integer, else None."""
    if n.op != "const" or n.value.size == 0 or n.value.size > 64 or n.value.dtype.kind not in "fiu":
        return None
    v = n.value.flat[0]
    if not np.all(n.value == v) or v != int(v) or abs(v) > 16:
        return None
    return int(v)
