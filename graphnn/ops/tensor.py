"""Ops that move, reduce, multiply and convolve arrays (everything not element-wise).

Each `register(OpDef(...))` is the whole definition of an op: shape rule,
NumPy code, VJP and JVP as graph-building functions, and (where the NumPy code
does not already mean the right thing on object arrays) the SymPy meaning.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .. import dtypes, limits
from . import runtime, shapes
from .registry import (Mismatch, OpDef, attr_axes, attr_bool, attr_dtype, attr_int,
                       attr_ints, attr_shape, register)
from .shapes import fmt


def _api():
    from . import api
    return api


def _same(inputs, attrs):
    return inputs[0].shape, inputs[0].dtype


def _none(n):
    def vjp(node, ct, needs):
        return [None] * n
    return vjp


# -- matmul ------------------------------------------------------------------------------

def _matmul_infer(inputs, attrs):
    a, b = inputs[0].shape, inputs[1].shape
    if not a or not b:
        raise Mismatch(f"{fmt(a)} @ {fmt(b)}: matmul needs at least 1-d operands")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise Mismatch(f"{fmt(a)} @ {fmt(b)}: inner dimensions {a2[-1]} != {b2[-2]}")
    batch = shapes.broadcast(a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out, dtypes.result_float(inputs[0].dtype, inputs[1].dtype)


def _swap(n):
    axes = list(range(n.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return _api().transpose(n, tuple(axes))


def _matmul_vjp(node, ct, needs):
    api = _api()
    a, b = node.inputs
    a2 = api.reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    b2 = api.reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    g = ct
    if a.ndim == 1:
        g = api.reshape(g, g.shape[:-1] + (1,) + g.shape[-1:]) if b.ndim > 1 else api.reshape(g, (1,))
    if b.ndim == 1:
        g = api.reshape(g, g.shape + (1,))
    da = db = None
    if needs[0]:
        da = api.unbroadcast(g @ _swap(b2), a2.shape)
        if a.ndim == 1:
            da = api.reshape(da, a.shape)
    if needs[1]:
        db = api.unbroadcast(_swap(a2) @ g, b2.shape)
        if b.ndim == 1:
            db = api.reshape(db, b.shape)
    return [da, db]


def _matmul_jvp(node, tangents):
    a, b = node.inputs
    ta, tb = tangents
    terms = []
    if ta is not None:
        terms.append(ta @ b)
    if tb is not None:
        terms.append(a @ tb)
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


register(OpDef("matmul", _matmul_infer, lambda a, at, n: f"{a[0]} @ {a[1]}",
               _matmul_vjp, _matmul_jvp, arity=2, infix="@",
               sym=lambda a, at, n: np.asarray(np.matmul(a[0], a[1]), dtype=object)))


# -- transpose, reshape, broadcasting ------------------------------------------------------

def _transpose_infer(inputs, attrs):
    shape = inputs[0].shape
    axes = attrs["axes"]
    if axes is None:
        return shape[::-1], inputs[0].dtype
    if sorted(axes) != list(range(len(shape))):
        raise Mismatch(f"axes {axes} are not a permutation of the {len(shape)} axes of {fmt(shape)}")
    return tuple(shape[a] for a in axes), inputs[0].dtype


def _transpose_axes(node):
    return node.attrs["axes"] or tuple(range(node.inputs[0].ndim))[::-1]


def _transpose_code(a, attrs, node):
    if attrs["axes"] is None:
        return f"{a[0]}.T"
    return f"np.transpose({a[0]}, {attrs['axes']})"


register(OpDef(
    "transpose", _transpose_infer, _transpose_code,
    vjp=lambda n, ct, needs: [_api().transpose(ct, tuple(np.argsort(_transpose_axes(n)).tolist()))],
    jvp=lambda n, t: _api().transpose(t[0], n.attrs["axes"]),
    attrs={"axes": attr_axes}, defaults={"axes": None}, arity=1))


def _reshape_infer(inputs, attrs):
    src, dst = inputs[0].shape, attrs["shape"]
    if dst.count(None) > 1:
        raise Mismatch(f"target shape {fmt(dst)} has more than one None")
    known_src = limits.elements(src)  # Python ints: np.prod in int64 wraps
    known_dst = limits.elements(dst)
    if (None in src) != (None in dst) or (None not in src and known_src != known_dst) \
            or (None in src and known_src != known_dst):
        raise Mismatch(f"cannot reshape {fmt(src)} into {fmt(dst)}")
    return dst, inputs[0].dtype


def _reshape_code(a, attrs, node):
    shape = tuple(-1 if d is None else d for d in attrs["shape"])
    return f"np.reshape({a[0]}, {shape})"


register(OpDef(
    "reshape", _reshape_infer, _reshape_code,
    vjp=lambda n, ct, needs: [_api().reshape(ct, n.inputs[0].shape)],
    jvp=lambda n, t: _api().reshape(t[0], n.shape),
    attrs={"shape": attr_shape}, arity=1))


def _broadcast_to_infer(inputs, attrs):
    src, dst = inputs[0].shape, attrs["shape"]
    if None in dst:
        raise Mismatch(f"broadcast_to needs a fixed shape, got {fmt(dst)}; use broadcast_like")
    if shapes.broadcast(src, dst) != dst:
        raise Mismatch(f"cannot broadcast {fmt(src)} to {fmt(dst)}")
    return dst, inputs[0].dtype


register(OpDef(
    "broadcast_to", _broadcast_to_infer,
    lambda a, at, n: f"np.broadcast_to({a[0]}, {at['shape']})",
    vjp=lambda n, ct, needs: [_api().unbroadcast(ct, n.inputs[0].shape)],
    jvp=lambda n, t: _api().broadcast_to(t[0], n.shape),
    attrs={"shape": attr_shape}, arity=1,
    sym=lambda a, at, n: np.array(np.broadcast_to(a[0], at["shape"]), dtype=object)))


def _broadcast_like_infer(inputs, attrs):
    src, ref = inputs[0].shape, inputs[1].shape
    if shapes.broadcast(src, ref) != ref:
        raise Mismatch(f"cannot broadcast {fmt(src)} to {fmt(ref)}")
    return ref, inputs[0].dtype


register(OpDef(
    "broadcast_like", _broadcast_like_infer,
    lambda a, at, n: f"np.broadcast_to({a[0]}, np.shape({a[1]}))",
    vjp=lambda n, ct, needs: [_api().unbroadcast(ct, n.inputs[0].shape), None],
    jvp=lambda n, t: None if t[0] is None else _api().broadcast_like(t[0], n.inputs[1]),
    arity=2, sym=lambda a, at, n: np.array(np.broadcast_to(a[0], np.shape(a[1])), dtype=object)))


def _cast_infer(inputs, attrs):
    return inputs[0].shape, np.dtype(attrs["dtype"])


register(OpDef(
    "cast", _cast_infer, lambda a, at, n: f"{a[0]}.astype(np.{at['dtype']})",
    vjp=lambda n, ct, needs: [_api().cast(ct, n.inputs[0].dtype)
                              if dtypes.is_float(n.inputs[0].dtype) else None],
    jvp=lambda n, t: _api().cast(t[0], n.dtype),
    attrs={"dtype": attr_dtype}, arity=1, sym=lambda a, at, n: a[0]))


register(OpDef(
    "zeros_like", _same, lambda a, at, n: f"np.zeros_like({a[0]})", vjp=_none(1),
    jvp=lambda n, t: None, arity=1,
    sym=lambda a, at, n: np.zeros(np.shape(a[0]), dtype=object) * 0))

def _batch_guard_infer(inputs, attrs):
    x = inputs[0]
    if not 0 <= attrs["axis"] < x.ndim or x.shape[attrs["axis"]] is not None:
        raise Mismatch(f"axis {attrs['axis']} of {fmt(x.shape)} is not the batch (None) axis")
    return x.shape, x.dtype


register(OpDef(
    "batch_guard", _batch_guard_infer,
    lambda a, at, n: f"_batch_guard({a[0]}, {at['axis']}, {at['size']})",
    vjp=lambda n, ct, needs: [ct], jvp=lambda n, t: t[0], arity=1,
    attrs={"axis": attr_int, "size": attr_int}, helpers=("_batch_guard",),
    sym=lambda a, at, n: a[0],
    doc="identity that refuses, at run time, a batch size other than the one a symbolic "
        "closed form was derived for"))


register(OpDef(
    "stop_gradient", _same, lambda a, at, n: a[0], vjp=_none(1), jvp=lambda n, t: None,
    arity=1, sym=lambda a, at, n: a[0], doc="identity whose derivative is zero"))


# -- reductions ------------------------------------------------------------------------------

def _reduce_infer(inputs, attrs):
    x = inputs[0]
    axes = shapes.norm_axes(attrs["axis"], x.ndim, x.shape)
    return shapes.reduce_shape(x.shape, axes, attrs["keepdims"]), x.dtype


def _axes(node):
    x = node.inputs[0]
    return shapes.norm_axes(node.attrs["axis"], x.ndim, x.shape)


def _reduce_code(fn):
    def code(a, attrs, node):
        axes = _axes(node)
        kd = ", keepdims=True" if attrs["keepdims"] else ""
        return f"np.{fn}({a[0]}, axis={axes}{kd})"
    return code


def _kept(node, ct):
    """The cotangent with the reduced axes put back as size-1 axes."""
    x = node.inputs[0]
    if node.attrs["keepdims"]:
        return ct
    return _api().reshape(ct, shapes.reduce_shape(x.shape, _axes(node), True))


def _sum_vjp(node, ct, needs):
    return [_api().broadcast_like(_kept(node, ct), node.inputs[0])]


def _mean_vjp(node, ct, needs):
    api = _api()
    x = node.inputs[0]
    return [api.broadcast_like(_kept(node, ct), x) / api.count(x, _axes(node))]


_REDUCE_ATTRS = {"axis": attr_axes, "keepdims": attr_bool}
_REDUCE_DEFAULTS = {"axis": None, "keepdims": False}

register(OpDef("sum", _reduce_infer, _reduce_code("sum"), _sum_vjp,
               lambda n, t: _api().sum(t[0], n.attrs["axis"], n.attrs["keepdims"]),
               attrs=_REDUCE_ATTRS, defaults=_REDUCE_DEFAULTS, arity=1))

register(OpDef("mean", _reduce_infer, _reduce_code("mean"), _mean_vjp,
               lambda n, t: _api().mean(t[0], n.attrs["axis"], n.attrs["keepdims"]),
               attrs=_REDUCE_ATTRS, defaults=_REDUCE_DEFAULTS, arity=1,
               sym=lambda a, at, n: np.asarray(
                   np.sum(a[0], axis=_axes(n), keepdims=at["keepdims"]) /
                   sp.Integer(int(np.prod([np.shape(a[0])[i] for i in _axes(n)]))), dtype=object)))


def _max_mask(node):
    """Where x attains its max, weighted 1/(number of ties) (torch.amax's rule)."""
    api = _api()
    x = node.inputs[0]
    m = api.max(x, _axes(node), keepdims=True)
    hit = api.eq(x, m)
    return hit / api.sum(hit, _axes(node), keepdims=True)


register(OpDef(
    "max", _reduce_infer, _reduce_code("max"),
    vjp=lambda n, ct, needs: [_api().broadcast_like(_kept(n, ct), n.inputs[0]) * _max_mask(n)],
    jvp=lambda n, t: _api().sum(_max_mask(n) * t[0], n.attrs["axis"], n.attrs["keepdims"]),
    attrs=_REDUCE_ATTRS, defaults=_REDUCE_DEFAULTS, arity=1,
    sym=lambda a, at, n: _sym_max(a[0], _axes(n), at["keepdims"])))


def _sym_max(x, axes, keepdims):
    out = np.apply_over_axes(lambda v, ax: np.expand_dims(
        np.apply_along_axis(lambda r: sp.Max(*r), ax, v), ax), x, axes) if axes else x
    return out if keepdims else np.squeeze(out, axis=axes)


def _count_infer(inputs, attrs):
    x = inputs[0]
    shapes.norm_axes(attrs["axis"], x.ndim, x.shape)
    return (), dtypes.result_float(x.dtype)


def _count_code(a, attrs, node):
    x = node.inputs[0]
    axes = _axes(node)
    dims = [str(x.shape[i]) if x.shape[i] is not None else f"np.shape({a[0]})[{i}]" for i in axes]
    return f"np.{node.dtype.name}({' * '.join(dims) or '1'})"


register(OpDef("count", _count_infer, _count_code, vjp=_none(1), jvp=lambda n, t: None,
               attrs={"axis": attr_axes}, defaults={"axis": None}, arity=1,
               sym=lambda a, at, n: np.array(sp.Integer(int(np.prod(
                   [np.shape(a[0])[i] for i in _axes(n)]))), dtype=object),
               doc="number of elements along axes (runtime for the batch axis)"))


# -- concat and indexing ------------------------------------------------------------------------

def _concat_infer(inputs, attrs):
    if not inputs:
        raise Mismatch("concat needs at least one input")
    first = inputs[0].shape
    nd = len(first)
    if not -nd <= attrs["axis"] < nd:
        raise Mismatch(f"axis {attrs['axis']} out of range for {fmt(first)}")
    ax = attrs["axis"] % nd
    total = 0
    for i in inputs:
        s = i.shape
        if len(s) != nd or any(s[k] != first[k] for k in range(nd) if k != ax):
            raise Mismatch("shapes " + ", ".join(fmt(j.shape) for j in inputs) +
                           f" differ outside axis {ax}")
        if s[ax] is None:  # B + B (or B + 3) rows is not the batch size B
            raise Mismatch("cannot concatenate " + ", ".join(fmt(j.shape) for j in inputs) +
                           f" along the batch (None) axis {ax}")
        total += s[ax]
    return first[:ax] + (total,) + first[ax + 1:], dtypes.result_float(*[i.dtype for i in inputs])


def _concat_vjp(node, ct, needs):
    api = _api()
    ax = node.attrs["axis"] % node.ndim
    out, start = [], 0
    for k, i in enumerate(node.inputs):
        size = i.shape[ax]
        if needs[k]:
            key = (slice(None),) * ax + (slice(start, start + size),)
            out.append(api.index(ct, key))
        else:
            out.append(None)
        start += size
    return out


def _concat_jvp(node, tangents):
    api = _api()
    parts = [t if t is not None else api.zeros_like(i) for t, i in zip(tangents, node.inputs)]
    return api.concat(parts, node.attrs["axis"])


register(OpDef(
    "concat", _concat_infer,
    lambda a, at, n: f"np.concatenate([{', '.join(a)}], axis={at['axis']})",
    _concat_vjp, _concat_jvp, attrs={"axis": attr_int}, defaults={"axis": 0},
    sym=lambda a, at, n: np.concatenate(a, axis=at["axis"])))


def attr_index(v):
    """An index is a tuple of entries: ["i", k] | ["s", start, stop, step] | ["n"] (newaxis)."""
    if not isinstance(v, (list, tuple)):
        raise TypeError("index must be a list of entries")
    out = []
    for e in v:
        if not isinstance(e, (list, tuple)) or not e or e[0] not in ("i", "s", "n"):
            raise TypeError(f"bad index entry {e!r}")
        if e[0] == "i" and len(e) == 2:
            out.append(("i", attr_int(e[1])))
        elif e[0] == "s" and len(e) == 4:
            out.append(("s",) + tuple(None if p is None else attr_int(p) for p in e[1:]))
            if out[-1][3] == 0:
                raise TypeError("slice step cannot be zero")
        elif e[0] == "n" and len(e) == 1:
            out.append(("n",))
        else:
            raise TypeError(f"bad index entry {e!r}")
    return tuple(out)


def _index_infer(inputs, attrs):
    shape = inputs[0].shape
    out, axis = [], 0
    for e in attrs["index"]:
        if e[0] == "n":
            out.append(1)
            continue
        if axis >= len(shape):
            raise Mismatch(f"too many indices for {fmt(shape)}")
        d = shape[axis]
        if e[0] == "i":
            if d is not None and not -d <= e[1] < d:
                raise Mismatch(f"index {e[1]} is out of bounds for axis {axis} of size {d} in {fmt(shape)}")
        else:
            if d is None:
                if e[1] is not None or e[2] is not None or e[3] not in (None, 1, -1):
                    # x[1:3] on the batch axis has 2 rows, not the batch size B
                    raise Mismatch(f"slice {index_code([e])[:-1]} of the batch (None) axis {axis} "
                                   f"of {fmt(shape)}: only a full slice (: or ::-1) keeps the batch size")
                out.append(None)
            else:
                out.append(len(range(*slice(*e[1:]).indices(d))))
        axis += 1
    return tuple(out) + tuple(shape[axis:]), inputs[0].dtype


def index_code(index) -> str:
    parts = []
    for e in index:
        if e[0] == "i":
            parts.append(str(e[1]))
        elif e[0] == "n":
            parts.append("None")
        else:
            start, stop, step = ("" if p is None else str(p) for p in e[1:])
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
    return ", ".join(parts) + ("," if len(parts) == 1 else "")


def index_key(index):
    out = []
    for e in index:
        out.append(e[1] if e[0] == "i" else None if e[0] == "n" else slice(*e[1:]))
    return tuple(out)


register(OpDef(
    "index", _index_infer, lambda a, at, n: f"{a[0]}[{index_code(at['index'])}]",
    vjp=lambda n, ct, needs: [_api().apply("scatter", [ct, n.inputs[0]], index=n.attrs["index"])],
    jvp=lambda n, t: _api().apply("index", [t[0]], index=n.attrs["index"]),
    attrs={"index": attr_index}, arity=1,
    sym=lambda a, at, n: np.asarray(a[0][index_key(at["index"])], dtype=object)))


def _scatter_infer(inputs, attrs):
    g, like = inputs
    expect, _ = _index_infer([like], attrs)
    if shapes.broadcast(g.shape, expect) != expect:
        raise Mismatch(f"{fmt(g.shape)} does not fit the index result {fmt(expect)}")
    return like.shape, dtypes.result_float(g.dtype, like.dtype)


def _scatter_sym(a, at, n):
    out = np.zeros(np.shape(a[1]), dtype=object) * sp.Integer(0)
    out[index_key(at["index"])] = a[0]
    return out


register(OpDef(
    "scatter", _scatter_infer,
    lambda a, at, n: f"_scatter({a[0]}, {a[1]}, np.s_[{index_code(at['index'])}])",
    vjp=lambda n, ct, needs: [_api().unbroadcast(  # the written value may have been broadcast
        _api().apply("index", [ct], index=n.attrs["index"]), n.inputs[0].shape), None],
    jvp=lambda n, t: None if t[0] is None else _api().apply("scatter", [t[0], n.inputs[1]],
                                                             index=n.attrs["index"]),
    attrs={"index": attr_index}, arity=2, helpers=("_scatter",), sym=_scatter_sym,
    doc="zeros shaped like the 2nd input, with the 1st written at [index] (VJP of index)"))


# -- labels ------------------------------------------------------------------------------------

def _one_hot_infer(inputs, attrs):
    return inputs[0].shape + (attrs["depth"],), np.dtype(attrs["dtype"])


register(OpDef(
    "one_hot", _one_hot_infer,
    lambda a, at, n: f"(np.asarray({a[0]})[..., None] == np.arange({at['depth']})).astype(np.{at['dtype']})",
    vjp=_none(1), jvp=lambda n, t: None, attrs={"depth": attr_int, "dtype": attr_dtype},
    defaults={"dtype": "float64"}, arity=1,
    sym=lambda a, at, n: _sym_one_hot(a[0], at["depth"])))


def _sym_one_hot(labels, depth):
    # Eq, not ==: a symbolic label compared with == is structurally False
    lab = np.asarray(labels, dtype=object)[..., None]
    return np.vectorize(lambda v, k: sp.Piecewise((1, sp.Eq(v, k)), (0, True)),
                        otypes=[object])(lab, np.arange(depth))


# -- softmax family ------------------------------------------------------------------------------

def _axis_infer(inputs, attrs):
    x = inputs[0]
    shapes.norm_axes((attrs["axis"],), x.ndim, x.shape)
    return x.shape, dtypes.result_float(x.dtype)


def _softmax_vjp(node, ct, needs):
    api, ax = _api(), node.attrs["axis"]
    return [node * (ct - api.sum(ct * node, ax, keepdims=True))]


def _softmax_jvp(node, t):
    api, ax = _api(), node.attrs["axis"]
    return node * (t[0] - api.sum(node * t[0], ax, keepdims=True))


def _sym_softmax(x, axis):
    e = np.vectorize(sp.exp, otypes=[object])(x)
    return e / np.sum(e, axis=axis, keepdims=True)


register(OpDef("softmax", _axis_infer, lambda a, at, n: f"_softmax({a[0]}, {at['axis']})",
               _softmax_vjp, _softmax_jvp, attrs={"axis": attr_int}, defaults={"axis": -1},
               arity=1, helpers=("_softmax",),
               sym=lambda a, at, n: _sym_softmax(a[0], at["axis"])))


# softmax(x) = exp(log_softmax(x)): the derivatives reuse the forward value (one
# element-wise exp, which cannot overflow: log_softmax <= 0) instead of a second softmax
def _log_softmax_vjp(node, ct, needs):
    api, ax = _api(), node.attrs["axis"]
    return [ct - api.exp(node) * api.sum(ct, ax, keepdims=True)]


def _log_softmax_jvp(node, t):
    api, ax = _api(), node.attrs["axis"]
    return t[0] - api.sum(api.exp(node) * t[0], ax, keepdims=True)


register(OpDef("log_softmax", _axis_infer, lambda a, at, n: f"_log_softmax({a[0]}, {at['axis']})",
               _log_softmax_vjp, _log_softmax_jvp, attrs={"axis": attr_int},
               defaults={"axis": -1}, arity=1, helpers=("_log_softmax",),
               sym=lambda a, at, n: np.vectorize(sp.log, otypes=[object])(
                   _sym_softmax(a[0], at["axis"]))))


# -- convolution ------------------------------------------------------------------------------------
# conv2d is bilinear in (x, w); its two partial adjoints are ops of their own, and
# the three are each other's VJPs, so derivatives of any order stay graphs.

def _conv_out(size, k, stride, padding):
    if size is None:
        return None
    return (size + 2 * padding - k) // stride + 1


def attr_pair(v):
    """An int or a pair of ints (height, width)."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise TypeError(f"expected an int or a pair, got {v!r}")
        return (attr_int(v[0]), attr_int(v[1]))
    v = attr_int(v)
    return (v, v)


def _conv2d_infer(inputs, attrs):
    x, w = inputs[0].shape, inputs[1].shape
    (sh, sw), (ph, pw) = attrs["stride"], attrs["padding"]
    if len(x) != 4 or len(w) != 4:
        raise Mismatch(f"conv2d wants x (N, C, H, W) and w (O, C, KH, KW), got {fmt(x)} and {fmt(w)}")
    if x[1] != w[1]:
        raise Mismatch(f"channels differ: x {fmt(x)} has {x[1]}, w {fmt(w)} expects {w[1]}")
    if min(sh, sw) < 1 or min(ph, pw) < 0:
        raise Mismatch(f"stride must be >= 1 and padding >= 0, got stride={attrs['stride']}, "
                       f"padding={attrs['padding']}")
    oh, ow = _conv_out(x[2], w[2], sh, ph), _conv_out(x[3], w[3], sw, pw)
    if (oh is not None and oh < 1) or (ow is not None and ow < 1):
        raise Mismatch(f"kernel {w[2:]} larger than padded input {x[2:]} (padding {attrs['padding']})")
    return (x[0], w[0], oh, ow), dtypes.result_float(inputs[0].dtype, inputs[1].dtype)


_CONV_ATTRS = {"stride": attr_pair, "padding": attr_pair}
_CONV_DEFAULTS = {"stride": (1, 1), "padding": (0, 0)}


def _conv_attrs(node):
    return {"stride": node.attrs["stride"], "padding": node.attrs["padding"]}


def _conv2d_vjp(node, ct, needs):
    api = _api()
    x, w = node.inputs
    a = _conv_attrs(node)
    return [api.apply("conv2d_grad_input", [ct, w, x], **a) if needs[0] else None,
            api.apply("conv2d_grad_weight", [x, ct], kernel=w.shape[2:], **a) if needs[1] else None]


def _bilinear_jvp(op, extra=None):
    def jvp(node, t):
        api = _api()
        a, b = node.inputs[0], node.inputs[1]
        rest = list(node.inputs[2:])
        terms = []
        if t[0] is not None:
            terms.append(api.apply(op, [t[0], b] + rest, **node.attrs))
        if t[1] is not None:
            terms.append(api.apply(op, [a, t[1]] + rest, **node.attrs))
        return terms[0] if len(terms) == 1 else (terms[0] + terms[1] if terms else None)
    return jvp


def _sym_conv(fn):
    def meaning(a, at, n):
        return np.asarray(fn(runtime, *a, n, at), dtype=object)
    return meaning


register(OpDef(
    "conv2d", _conv2d_infer,
    lambda a, at, n: f"_conv2d({a[0]}, {a[1]}, {at['stride']}, {at['padding']})",
    _conv2d_vjp, _bilinear_jvp("conv2d"), attrs=_CONV_ATTRS, defaults=_CONV_DEFAULTS,
    arity=2, helpers=("_conv2d",),
    sym=_sym_conv(lambda rt, x, w, n, at: rt._conv2d(x, w, at["stride"], at["padding"]))))


def _check_adjoint(x, w_shape, g, attrs):
    """The cotangent `g` must be shaped like conv2d(x, w) for the adjoint ops to make sense."""
    if len(x) != 4 or len(g) != 4 or len(w_shape) != 4:
        raise Mismatch(f"want 4-d x, w and cotangent, got {fmt(x)}, {fmt(w_shape)}, {fmt(g)}")
    (sh, sw), (ph, pw) = attrs["stride"], attrs["padding"]
    expect = (x[0], w_shape[0], _conv_out(x[2], w_shape[2], sh, ph), _conv_out(x[3], w_shape[3], sw, pw))
    if x[1] != w_shape[1] or any(a is not None and b is not None and a != b for a, b in zip(g, expect)) \
            or (g[0] is None) != (x[0] is None):
        raise Mismatch(f"cotangent {fmt(g)} does not match conv2d of x {fmt(x)} with w {fmt(w_shape)} "
                       f"(expected {fmt(expect)})")


def _gi_infer(inputs, attrs):
    g, w, like = inputs
    _check_adjoint(like.shape, w.shape, g.shape, attrs)
    return like.shape, dtypes.result_float(g.dtype, w.dtype)


def _gi_vjp(node, ct, needs):
    api = _api()
    g, w, x = node.inputs
    a = _conv_attrs(node)
    return [api.apply("conv2d", [ct, w], **a) if needs[0] else None,
            api.apply("conv2d_grad_weight", [ct, g], kernel=w.shape[2:], **a) if needs[1] else None,
            None]


register(OpDef(
    "conv2d_grad_input", _gi_infer,
    lambda a, at, n: f"_conv2d_grad_input({a[0]}, {a[1]}, {a[2]}, {at['stride']}, {at['padding']})",
    _gi_vjp, _bilinear_jvp("conv2d_grad_input"), attrs=_CONV_ATTRS, defaults=_CONV_DEFAULTS,
    arity=3, helpers=("_conv2d_grad_input",),
    sym=_sym_conv(lambda rt, g, w, x, n, at: rt._conv2d_grad_input(
        g, w, x, at["stride"], at["padding"])),
    doc="adjoint of conv2d in x (3rd input only gives the shape)"))


def _gw_infer(inputs, attrs):
    x, g = inputs
    if len(g.shape) != 4 or len(x.shape) != 4:
        raise Mismatch(f"want 4-d x and cotangent, got {fmt(x.shape)} and {fmt(g.shape)}")
    w_shape = (g.shape[1], x.shape[1]) + tuple(attrs["kernel"])
    _check_adjoint(x.shape, w_shape, g.shape, attrs)
    return w_shape, dtypes.result_float(x.dtype, g.dtype)


def _gw_vjp(node, ct, needs):
    api = _api()
    x, g = node.inputs
    a = _conv_attrs(node)
    return [api.apply("conv2d_grad_input", [g, ct, x], **a) if needs[0] else None,
            api.apply("conv2d", [x, ct], **a) if needs[1] else None]


register(OpDef(
    "conv2d_grad_weight", _gw_infer,
    lambda a, at, n: (f"_conv2d_grad_weight({a[0]}, {a[1]}, {at['kernel'][0]}, {at['kernel'][1]}, "
                      f"{at['stride']}, {at['padding']})"),
    _gw_vjp, _bilinear_jvp("conv2d_grad_weight"),
    attrs={"kernel": attr_ints, **_CONV_ATTRS}, defaults=_CONV_DEFAULTS, arity=2,
    helpers=("_conv2d_grad_weight",),
    sym=_sym_conv(lambda rt, x, g, n, at: rt._conv2d_grad_weight(
        x, g, at["kernel"][0], at["kernel"][1], at["stride"], at["padding"])),
    doc="adjoint of conv2d in w"))
