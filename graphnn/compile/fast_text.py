"""The fast program's statements as text, rendered once buffers are planned."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ..graph import Node
from .fast_common import _dname
from .printer import comment_name

if TYPE_CHECKING:
    from .fast import FastPrinter


class _Texts:
    """Renders body statements after buffer planning (buffer names are known then)."""

    def __init__(self, printer: "FastPrinter", entries):
        self.p = printer
        self.entries = entries

    def __iter__(self):
        p = self.p
        plan = p.plan
        for st, n, kind in self.entries:
            out = p.value_of(n)
            if kind[0] == "ew":
                leaves = kind[2]
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
                    n, f" (fused: {comment_name(f['m'])}=matmul; bias folded: "
                       f"[{comment_name(f['h'])}, 1] @ [{comment_name(f['W'])}; "
                       f"{comment_name(f['b'])}])")]
            elif kind[0] == "affine_grad":
                f = kind[1]
                gW = f["gW"]
                yield [f"{p.matmul_fn(gW, gW.inputs, f['gWb'])}({f['aug']}.T, {p.value_of(f['dz'])}, "
                       f"out={f['gWb']})  " + p.note(
                    f["gW"], f" (fused: {comment_name(f['gb'])}=sum, the bias gradient, "
                             f"as the row of ones)")]
            elif kind[0] == "softmax":
                yield [p.note(n, f" -> {out}")] + _softmax_lines(p, n, out)
            elif kind[0] == "copyin":
                yield [f"{p.xp}.copyto({kind[1]}, {p.value_of(n)})  # {comment_name(n)}: "
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
                        n, f" (fused: {comment_name(kind[1])}=mul)")]
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


def _softmax_lines(p: "FastPrinter", n: Node, out: str) -> list[str]:
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


def _fused_note(p: "FastPrinter", n: Node) -> str:
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


def _late(p: "FastPrinter", text: str) -> str:
    """`text` with its `{node id}` placeholders filled with the values' names, in the
    code only: a comment holds node names, and a name may read "{0}"."""
    code, sep, comment = text.partition("#")
    code = re.sub(r"\{(\d+)\}", lambda m: p.value_of(_node_by_id(p, int(m.group(1)))), code)
    return code + sep + comment


def _node_by_id(p: "FastPrinter", i: int) -> Node:
    return p._by_id[i]
