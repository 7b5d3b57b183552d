"""`gn.to_onnx`: graphnn nodes as an ONNX model (opset 18) that onnxruntime runs.

Element-wise ops, their derivatives included, are written from their one SymPy
expression (the same one the NumPy and CUDA printers use), so every element-wise
op graphnn has or derives exports without a table of its own; the other registry
ops map onto ONNX ops one by one (`_EXPORTERS`). Params become initializers,
constants `Constant` nodes (so importers keep them constant), inputs graph inputs whose batch axis is the symbolic
dimension "batch". With `gradients=...` the model also outputs the gradient graph
(reverse mode, built by `gn.grad`) of its first, scalar output.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import sympy as sp

from .errors import GraphError
from .graph import Graph, Node
from .ops.registry import get_op

OPSET = 18
_DTYPES = {"float32": 1, "float64": 11, "int64": 7, "int32": 6, "bool": 9}
_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


class _Writer:
    def __init__(self, names: set[str]):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self.taken = set(names)
        self.consts: dict = {}
        self.node = None  # the graphnn node being written (scope for ONNX node names)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name = f"{base}__{k}"
            k += 1
        self.taken.add(name)
        return name

    def add(self, op: str, inputs: Sequence[str], out: str | None = None, **attrs) -> str:
        base = self.node.name if self.node is not None else op
        out = out or self.fresh(f"{base}/{op}")
        scope = self.node.scope if self.node is not None else ""
        self.nodes.append(self.helper.make_node(
            op, list(inputs), [out], name=self.fresh(f"/{scope}/{op}" if scope else f"/{op}"),
            **attrs))
        return out

    def const(self, value, dtype) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self.consts:
            name = self.fresh("const")
            self.constant(arr, name)
            self.consts[key] = name
        return self.consts[key]

    def constant(self, arr, name: str) -> None:
        """A Constant node (not an initializer: importers keep initializers trainable)."""
        self.nodes.append(self.helper.make_node(
            "Constant", [], [name], name=self.fresh(f"/{name}/Constant"),
            value=self.numpy_helper.from_array(np.asarray(arr), name)))

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), np.int64)


# -- element-wise ops from their SymPy expression -------------------------------------------------

_FUNCS = {sp.exp: "Exp", sp.log: "Log", sp.tanh: "Tanh", sp.erf: "Erf", sp.Abs: "Abs",
          sp.sign: "Sign", sp.sin: "Sin", sp.cos: "Cos"}
_RELS = {sp.StrictGreaterThan: "Greater", sp.StrictLessThan: "Less",
         sp.GreaterThan: "GreaterOrEqual", sp.LessThan: "LessOrEqual", sp.Equality: "Equal"}


def _expr(w: _Writer, e, env: dict, dt) -> str:
    """ONNX nodes computing SymPy expression `e` (symbols looked up in `env`)."""
    if e in env:
        return env[e]
    if e.is_Number or isinstance(e, sp.NumberSymbol):
        return w.const(float(e), dt)
    if isinstance(e, sp.Add):
        out = None
        for t in e.args:
            if t.is_Mul and t.args[0].is_Number and t.args[0] < 0 and out is not None:
                out = w.add("Sub", [out, _expr(w, -t, env, dt)])
                continue
            v = _expr(w, t, env, dt)
            out = v if out is None else w.add("Add", [out, v])
        return out
    if isinstance(e, sp.Mul):
        num, den = [], []
        for t in e.args:
            if t.is_Pow and t.exp.is_Number and t.exp < 0:
                den.append(t.base ** (-t.exp))
            elif t.is_Rational and t.q != 1:
                num.append(sp.Integer(t.p))
                den.append(sp.Integer(t.q))
            else:
                num.append(t)
        def prod(ts):
            out = None
            for t in ts:
                if t == 1:
                    continue
                v = _expr(w, t, env, dt)
                out = v if out is None else w.add("Mul", [out, v])
            return out
        top = prod(num) or w.const(1.0, dt)
        bottom = prod(den)
        return top if bottom is None else w.add("Div", [top, bottom])
    if isinstance(e, sp.Pow):
        b, x = e.base, e.exp
        if x == sp.Rational(1, 2):
            return w.add("Sqrt", [_expr(w, b, env, dt)])
        if x == 2:
            v = _expr(w, b, env, dt)
            return w.add("Mul", [v, v])
        if x.is_Number and x < 0:
            return w.add("Div", [w.const(1.0, dt), _expr(w, b ** (-x), env, dt)])
        if b == sp.E:
            return w.add("Exp", [_expr(w, x, env, dt)])
        return w.add("Pow", [_expr(w, b, env, dt), _expr(w, x, env, dt)])
    if e.func in _FUNCS:
        return w.add(_FUNCS[e.func], [_expr(w, e.args[0], env, dt)])
    if isinstance(e, (sp.Max, sp.Min)):
        return w.add("Max" if isinstance(e, sp.Max) else "Min", [_expr(w, a, env, dt) for a in e.args])
    if isinstance(e, sp.Heaviside):
        u = _expr(w, e.args[0], env, dt)
        zero = w.const(0.0, dt)
        half = w.add("Where", [w.add("Less", [u, zero]), zero, w.const(0.5, dt)])
        return w.add("Where", [w.add("Greater", [u, zero]), w.const(1.0, dt), half])
    if isinstance(e, sp.Piecewise):
        *branches, (last, cond) = e.args
        out = _expr(w, last, env, dt) if cond == sp.true else w.const(math.nan, dt)
        for val, c in reversed(branches):
            out = w.add("Where", [_cond(w, c, env, dt), _expr(w, val, env, dt), out])
        return out
    raise GraphError(f"to_onnx: cannot write the expression {e} of {w.node.op!r} "
                     f"(node {w.node.name!r}) as ONNX")


def _cond(w, c, env, dt) -> str:
    if type(c) in _RELS:
        return w.add(_RELS[type(c)], [_expr(w, c.lhs, env, dt), _expr(w, c.rhs, env, dt)])
    if isinstance(c, sp.Unequality):
        return w.add("Not", [w.add("Equal", [_expr(w, c.lhs, env, dt), _expr(w, c.rhs, env, dt)])])
    if isinstance(c, (sp.And, sp.Or)):
        parts = [_cond(w, a, env, dt) for a in c.args]
        out = parts[0]
        for p in parts[1:]:
            out = w.add("And" if isinstance(c, sp.And) else "Or", [out, p])
        return out
    raise GraphError(f"to_onnx: cannot write the condition {c} of {w.node.op!r} as ONNX")


def _elementwise(w: _Writer, n: Node, ins: list[str], out: str) -> None:
    spec = get_op(n.op).elementwise
    dt = n.dtype
    env = {}
    for sym, i, name in zip(spec.arg_symbols, n.inputs, ins):
        env[sym] = name if i.dtype == dt else w.add("Cast", [name], to=_DTYPES[dt.name])
    expr = spec.concrete(n.attrs)
    res = _expr(w, expr, env, dt)
    used = expr.free_symbols
    if not any(sym in used and i.shape == n.shape for sym, i in zip(spec.arg_symbols, n.inputs)):
        # the expression does not carry the broadcast shape (a constant derivative, say)
        if None not in n.shape:
            res = w.add("Expand", [res, w.ints(n.shape)])
        else:
            for name in ins:
                res = w.add("Expand", [res, w.add("Shape", [name])])
    w.add("Identity", [res], out)


# -- the other ops ----------------------------------------------------------------------------

def _reshape_shape(w, shape):
    return w.ints(-1 if d is None else d for d in shape)


def _index(w: _Writer, n: Node, x: str, out: str) -> None:
    src = n.inputs[0].shape
    starts, ends, axes, steps, squeeze, unsq = [], [], [], [], [], []
    axis = 0
    pos = 0  # position in the output (for newaxis)
    for e in n.attrs["index"]:
        if e[0] == "n":
            unsq.append(pos)
            pos += 1
            continue
        if e[0] == "i":
            i = e[1]
            starts.append(i)
            ends.append(i + 1 if i != -1 else _I64_MAX)
            steps.append(1)
            axes.append(axis)
            squeeze.append(axis)
        else:
            b, e_, st = e[1], e[2], e[3] or 1
            if (b, e_, st) != (None, None, 1):
                starts.append(b if b is not None else (0 if st > 0 else _I64_MAX))
                ends.append(e_ if e_ is not None else (_I64_MAX if st > 0 else _I64_MIN))
                steps.append(st)
                axes.append(axis)
            pos += 1
        axis += 1
    del src
    v = x
    if axes:
        v = w.add("Slice", [v, w.ints(starts), w.ints(ends), w.ints(axes), w.ints(steps)])
    if squeeze:
        v = w.add("Squeeze", [v, w.ints(squeeze)])
    if unsq:
        v = w.add("Unsqueeze", [v, w.ints(unsq)])
    w.add("Identity", [v], out)


def _scatter(w: _Writer, n: Node, ins: list[str], out: str) -> None:
    """zeros like the 2nd input with the 1st written at [index]: unit-step slices and
    integer indices only (a Pad of the value)."""
    g, like = n.inputs
    v = ins[0]
    shape = like.shape
    expect = _index_shape_keep(n.attrs["index"], shape)
    plain = tuple(d for k, d in enumerate(expect[0]) if k not in expect[1])  # x[index]'s shape
    if g.shape != plain:  # the written value was broadcast
        if None in plain:
            raise GraphError(f"to_onnx: scatter {n.name!r} of a broadcast value on a batch axis")
        v = w.add("Expand", [v, w.ints(plain)])
    if expect[1]:
        v = w.add("Unsqueeze", [v, w.ints(expect[1])])
    begins, ends = [], []
    axis = 0
    for e in n.attrs["index"]:
        if e[0] == "n":
            raise GraphError(f"to_onnx: scatter {n.name!r} with a new axis is not supported")
        d = shape[axis]
        if e[0] == "i":
            i = e[1] % d
            begins.append(i)
            ends.append(d - i - 1)
        else:
            if e[3] not in (None, 1):
                raise GraphError(f"to_onnx: scatter {n.name!r}: slice steps other than 1 "
                                 f"are not supported")
            if d is None:
                begins.append(0)
                ends.append(0)
            else:
                b, stop, _ = slice(e[1], e[2]).indices(d)
                stop = max(stop, b)
                begins.append(b)
                ends.append(d - stop)
        axis += 1
    begins += [0] * (len(shape) - axis)
    ends += [0] * (len(shape) - axis)
    w.add("Pad", [v, w.ints(begins + ends)], out)


def _index_shape_keep(index, shape):
    """Shape of x[index] with integer-indexed axes kept (size 1), and those axes."""
    out, kept, axis = [], [], 0
    for e in index:
        d = shape[axis]
        if e[0] == "i":
            out.append(1)
            kept.append(axis)
        else:
            out.append(None if d is None else len(range(*slice(*e[1:]).indices(d))))
        axis += 1
    return tuple(out) + tuple(shape[axis:]), kept


def _reduce(onnx_op):
    def fn(w, n, ins, out):
        x = n.inputs[0]
        axes = n.attrs["axis"]
        axes = list(range(x.ndim)) if axes is None else [a % x.ndim for a in axes]
        if not axes:
            w.add("Identity", [ins[0]], out)
            return
        w.add(onnx_op, [ins[0], w.ints(axes)], out, keepdims=int(n.attrs["keepdims"]))
    return fn


def _count(w, n, ins, out):
    x = n.inputs[0]
    axes = n.attrs["axis"]
    axes = list(range(x.ndim)) if axes is None else [a % x.ndim for a in axes]
    dims = w.add("Gather", [w.add("Shape", [ins[0]]), w.ints(axes)])
    w.add("Cast", [w.add("ReduceProd", [dims], keepdims=0)], out, to=_DTYPES[n.dtype.name])


def _conv2d(w, n, ins, out):
    (sh, sw), (ph, pw) = n.attrs["stride"], n.attrs["padding"]
    w.add("Conv", ins, out, strides=[sh, sw], pads=[ph, pw, ph, pw])


def _conv2d_grad_input(w, n, ins, out):
    g, wt, like = n.inputs
    (sh, sw), (ph, pw) = n.attrs["stride"], n.attrs["padding"]
    op_ = [like.shape[2 + k] - ((g.shape[2 + k] - 1) * s - 2 * p + wt.shape[2 + k])
           for k, (s, p) in enumerate(((sh, ph), (sw, pw)))]
    w.add("ConvTranspose", ins[:2], out, strides=[sh, sw], pads=[ph, pw, ph, pw],
          output_padding=op_)


def _conv2d_grad_weight(w, n, ins, out):
    """sum over the batch and positions of g * (the strided slice of x under each kernel
    offset): one batched MatMul per offset (no batch axis moved into a channel axis, so
    the file imports back)."""
    x, g = n.inputs
    (sh, sw), (ph, pw) = n.attrs["stride"], n.attrs["padding"]
    kh, kw = n.attrs["kernel"]
    oh, ow = g.shape[2], g.shape[3]
    o, c = g.shape[1], x.shape[1]
    xp = w.add("Pad", [ins[0], w.ints([0, 0, ph, pw, 0, 0, ph, pw])]) if ph or pw else ins[0]
    gm = w.add("Reshape", [ins[1], w.ints([-1, o, oh * ow])])                  # (N, O, P)
    parts = []
    for i in range(kh):
        for j in range(kw):
            sl = w.add("Slice", [xp, w.ints([i, j]), w.ints([i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1]),
                                 w.ints([2, 3]), w.ints([sh, sw])])             # (N, C, OH, OW)
            xm = w.add("Transpose", [w.add("Reshape", [sl, w.ints([-1, c, oh * ow])])],
                       perm=[0, 2, 1])                                         # (N, P, C)
            prod = w.add("ReduceSum", [w.add("MatMul", [gm, xm]), w.ints([0])], keepdims=0)
            parts.append(w.add("Unsqueeze", [prod, w.ints([2])]))              # (O, C, 1)
    cat = parts[0] if len(parts) == 1 else w.add("Concat", parts, axis=2)
    w.add("Reshape", [cat, w.ints([o, c, kh, kw])], out)


def _windows(w, n, ins, out):
    """Slices, one per kernel offset, stacked on new trailing axes."""
    x = n.inputs[0]
    kernel, stride, dil = n.attrs["kernel"], n.attrs["stride"], n.attrs["dilation"]
    k = len(kernel)
    outs = n.shape[x.ndim - k:x.ndim]
    axes = list(range(x.ndim - k, x.ndim))
    parts = []
    for offs in np.ndindex(*kernel):
        starts = [o * d for o, d in zip(offs, dil)]
        ends = [s0 + s * (m - 1) + 1 for s0, s, m in zip(starts, stride, outs)]
        sl = w.add("Slice", [ins[0], w.ints(starts), w.ints(ends), w.ints(axes), w.ints(stride)])
        parts.append(w.add("Unsqueeze", [sl, w.ints([x.ndim])]))
    cat = parts[0] if len(parts) == 1 else w.add("Concat", parts, axis=x.ndim)
    w.add("Reshape", [cat, _reshape_shape(w, n.shape)], out)


def _windows_adjoint(w, n, ins, out):
    """col2im as a grouped ConvTranspose with one-hot weights (each window position
    sends its value to one place; zeros elsewhere)."""
    g, like = n.inputs
    kernel, stride, dil = n.attrs["kernel"], n.attrs["stride"], n.attrs["dilation"]
    k = len(kernel)
    lead = like.shape[:like.ndim - k]
    if None in lead[1:] or len(lead) < 1:
        raise GraphError(f"to_onnx: windows_adjoint {n.name!r} on {like.shape}")
    c = math.prod(lead[1:])
    kp = math.prod(kernel)
    outs = g.shape[like.ndim - k:like.ndim]
    # (L0, L..., O..., K...) -> (L0, c, K..., O...) -> (L0, c * kp, O...)
    nl = len(lead)
    perm = list(range(nl)) + list(range(nl + k, nl + 2 * k)) + list(range(nl, nl + k))
    v = w.add("Transpose", [ins[0]], perm=perm)
    v = w.add("Reshape", [v, _reshape_shape(w, (lead[0], c * kp) + tuple(outs))])
    span = [(m - 1) * d + 1 for m, d in zip(kernel, dil)]
    wt = np.zeros((c * kp, 1) + tuple(span), dtype=n.dtype)
    for ci in range(c):
        for j, offs in enumerate(np.ndindex(*kernel)):
            wt[(ci * kp + j, 0) + tuple(o * d for o, d in zip(offs, dil))] = 1
    sizes = like.shape[like.ndim - k:]
    opad = [s_ - ((m - 1) * st + sp_) for s_, m, st, sp_ in zip(sizes, outs, stride, span)]
    y = w.add("ConvTranspose", [v, w.const(wt, n.dtype)], group=c, strides=list(stride),
              output_padding=opad)
    w.add("Reshape", [y, _reshape_shape(w, like.shape)], out)


def _pad(w, n, ins, out):
    w.add("Pad", [ins[0], w.ints(n.attrs["pads"]), w.const(n.attrs["value"], n.dtype)], out,
          mode="constant")


def _one_hot(w, n, ins, out):
    lab = w.add("Unsqueeze", [ins[0], w.ints([-1])])
    rng = w.const(np.arange(n.attrs["depth"]), n.inputs[0].dtype)
    w.add("Cast", [w.add("Equal", [lab, rng])], out, to=_DTYPES[n.dtype.name])


def _take_adjoint(w, n, ins, out):
    g, idx, like = n.inputs
    ax = n.attrs["axis"] % like.ndim
    if ax != 0 or idx.ndim != 1:
        raise GraphError(f"to_onnx: take_adjoint {n.name!r}: only axis 0 with 1-d indices")
    zeros = w.add("ConstantOfShape", [w.add("Shape", [ins[2]])],
                  value=w.numpy_helper.from_array(np.zeros(1, n.dtype)))
    w.add("ScatterND", [zeros, w.add("Unsqueeze", [ins[1], w.ints([-1])]), ins[0]], out,
          reduction="add")


_EXPORTERS = {
    "matmul": lambda w, n, ins, out: w.add("MatMul", ins, out),
    "transpose": lambda w, n, ins, out: w.add(
        "Transpose", ins, out, perm=list(n.attrs["axes"]) if n.attrs["axes"] is not None
        else list(range(n.inputs[0].ndim))[::-1]),
    "reshape": lambda w, n, ins, out: w.add("Reshape", [ins[0], _reshape_shape(w, n.shape)], out),
    "broadcast_to": lambda w, n, ins, out: w.add("Expand", [ins[0], w.ints(n.shape)], out),
    "broadcast_like": lambda w, n, ins, out: w.add(
        "Expand", [ins[0], w.add("Shape", [ins[1]])], out),
    "cast": lambda w, n, ins, out: w.add("Cast", ins, out, to=_DTYPES[n.dtype.name]),
    "zeros_like": lambda w, n, ins, out: w.add(
        "ConstantOfShape", [w.add("Shape", ins)], out,
        value=w.numpy_helper.from_array(np.zeros(1, n.dtype))),
    "batch_guard": lambda w, n, ins, out: w.add("Identity", ins, out),
    "stop_gradient": lambda w, n, ins, out: w.add("Identity", ins, out),
    "sum": _reduce("ReduceSum"), "mean": _reduce("ReduceMean"), "max": _reduce("ReduceMax"),
    "count": _count,
    "concat": lambda w, n, ins, out: w.add("Concat", ins, out, axis=n.attrs["axis"]),
    "index": lambda w, n, ins, out: _index(w, n, ins[0], out),
    "scatter": _scatter,
    "one_hot": _one_hot,
    "softmax": lambda w, n, ins, out: w.add("Softmax", ins, out, axis=n.attrs["axis"]),
    "log_softmax": lambda w, n, ins, out: w.add("LogSoftmax", ins, out, axis=n.attrs["axis"]),
    "conv2d": _conv2d, "conv2d_grad_input": _conv2d_grad_input,
    "conv2d_grad_weight": _conv2d_grad_weight,
    "pad": _pad, "windows": _windows, "windows_adjoint": _windows_adjoint,
    "take": lambda w, n, ins, out: w.add("Gather", ins, out, axis=n.attrs["axis"]),
    "take_adjoint": _take_adjoint,
}


def _pool_of(n: Node):
    """(x, ONNX attributes) when `n` is max pooling (max over windows of x padded with
    -inf) or average pooling counting the padding (mean over windows of x padded with
    0) of an (N, C, *S) array: written as one MaxPool / AveragePool node."""
    if n.op not in ("max", "mean") or n.attrs["keepdims"] or n.inputs[0].op != "windows":
        return None
    win = n.inputs[0]
    kernel, stride, dil = win.attrs["kernel"], win.attrs["stride"], win.attrs["dilation"]
    k = len(kernel)
    if n.attrs["axis"] is None or sorted(a % win.ndim for a in n.attrs["axis"]) != \
            list(range(win.ndim - k, win.ndim)):
        return None
    x = win.inputs[0]
    pads = [0] * (2 * k)
    if x.op == "pad":
        fill = -math.inf if n.op == "max" else 0.0
        pp = x.attrs["pads"]
        nd = x.ndim
        if x.attrs["value"] != fill or any(pp[:nd - k]) or any(pp[nd:2 * nd - k]):
            return None
        pads = list(pp[nd - k:nd]) + list(pp[2 * nd - k:])
        x = x.inputs[0]
    if x.ndim != k + 2 or x.dtype.kind != "f" or (n.op == "mean" and any(d != 1 for d in dil)):
        return None  # AveragePool has dilations from opset 19 only
    attrs = {"kernel_shape": list(kernel), "strides": list(stride), "pads": pads}
    if n.op == "max":
        attrs["dilations"] = list(dil)
    else:
        attrs["count_include_pad"] = 1
    return x, attrs


def _live(outputs, pools) -> list[Node]:
    """The nodes the outputs need, in topological order, reading a pooling node as a
    function of its (unpadded) input only."""
    seen: dict[int, Node] = {}
    stack = list(outputs)
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen[id(n)] = n
        stack.extend([pools[id(n)][0]] if id(n) in pools else n.inputs)
    return sorted(seen.values(), key=lambda n: n.index)


def _value_info(helper, name: str, node: Node):
    shape = ["batch" if d is None else d for d in node.shape]
    return helper.make_tensor_value_info(name, _DTYPES[node.dtype.name], shape)


def to_onnx(graph_or_outputs, path=None, gradients=False, name: str | None = None):
    """Write nodes (a Graph's `outputs`, else its nodes no other node reads) as an ONNX
    model; returns the ModelProto and saves it to `path` when given.

    `gradients=True` (or a list of nodes) adds the reverse-mode gradients of the first
    output, which must be a scalar, w.r.t. every float param (or those nodes), as
    outputs named `grad/<name>`."""
    import onnx
    from onnx import helper
    if isinstance(graph_or_outputs, Graph):
        g = graph_or_outputs
        outputs = list(getattr(g, "outputs", None) or [])
        if not outputs:
            read = {id(i) for n in g.nodes for i in n.inputs}
            outputs = [n for n in g.nodes if id(n) not in read and not n.is_leaf]
    elif isinstance(graph_or_outputs, Node):
        outputs = [graph_or_outputs]
    else:
        outputs = list(graph_or_outputs)
    if not outputs or not all(isinstance(o, Node) for o in outputs):
        raise GraphError("to_onnx: give a Graph, a Node or a list of Nodes")
    g = outputs[0].graph
    out_names = [o.name for o in outputs]
    if gradients:
        from .autodiff.api import grad
        loss = outputs[0]
        if loss.shape != ():
            raise GraphError(f"to_onnx: gradients need a scalar first output; {loss.name!r} "
                             f"has shape {loss.shape}")
        wrt = list(gradients) if not isinstance(gradients, bool) else [
            p for p in g.params if p.dtype.kind == "f"]
        grads = grad(loss, wrt)
        outputs += grads
        out_names += [f"grad/{p.name}" for p in wrt]
    pools = {id(n): p for n in g.ancestors(outputs) if (p := _pool_of(n)) is not None}
    order = _live(outputs, pools)
    w = _Writer({n.name for n in order} | set(out_names))
    inputs = []
    for n in order:
        w.node = n
        if id(n) in pools:
            x, attrs = pools[id(n)]
            w.add("MaxPool" if n.op == "max" else "AveragePool", [x.name], n.name, **attrs)
        elif n.op == "input":
            inputs.append(_value_info(helper, n.name, n))
        elif n.op == "param":
            w.inits.append(w.numpy_helper.from_array(np.asarray(g.values[n.name], n.dtype), n.name))
        elif n.op == "const":
            w.constant(n.value, n.name)
        else:
            ins = [i.name for i in n.inputs]
            if get_op(n.op).elementwise is not None:
                _elementwise(w, n, ins, n.name)
            elif n.op in _EXPORTERS:
                _EXPORTERS[n.op](w, n, ins, n.name)
            else:
                raise GraphError(f"to_onnx: op {n.op!r} (node {n.name!r}) has no ONNX form yet")
    w.node = None
    outs = []
    for o, oname in zip(outputs, out_names):
        if oname != o.name or o.op in ("input",) or oname in [x.name for x in outs]:
            w.nodes.append(helper.make_node("Identity", [o.name], [oname],
                                            name=w.fresh(f"/output/{oname}")))
        outs.append(_value_info(helper, oname, o))
    graph = helper.make_graph(w.nodes, name or g.name, inputs, outs, initializer=w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", OPSET)],
                              producer_name="graphnn")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
