"""Every op in the registry against a plain NumPy reference, in float32 and float64.

The coverage test iterates `graphnn.ops.REGISTRY`: an op added without a forward
case here fails it. Element-wise ops are checked on broadcasting shapes
((3,1)+(4,), (None,3)+(3,), Python scalars), the None batch dimension, and for
dtype preservation through the op *and* its reverse-mode gradient.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import REGISTRY, api
from graphnn.ops.elementwise import ELEMENTWISE
from graphnn.ops.registry import get_op

B = 5  # the batch size fed for None dimensions
DTYPES = ("float32", "float64")

_erf = np.vectorize(math.erf, otypes=[float])


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# name -> (reference on float64 arrays, domain of each argument, attribute variants)
ELEMENTWISE_REFS = {
    "add": (np.add, ("any", "any"), [{}]),
    "sub": (np.subtract, ("any", "any"), [{}]),
    "mul": (np.multiply, ("any", "any"), [{}]),
    "div": (np.divide, ("any", "nonzero"), [{}]),
    "pow": (np.power, ("pos", "any"), [{}]),
    "neg": (np.negative, ("any",), [{}]),
    "exp": (np.exp, ("any",), [{}]),
    "log": (np.log, ("pos",), [{}]),
    "sqrt": (np.sqrt, ("pos",), [{}]),
    "abs": (np.abs, ("nonzero",), [{}]),
    "square": (np.square, ("any",), [{}]),
    "maximum": (np.maximum, ("any", "any"), [{}]),
    "minimum": (np.minimum, ("any", "any"), [{}]),
    "where": (lambda c, y, z: np.where(c != 0, y, z), ("mask", "any", "any"), [{}]),
    "gt": (lambda x, y: (x > y).astype(float), ("int", "int"), [{}]),
    "lt": (lambda x, y: (x < y).astype(float), ("int", "int"), [{}]),
    "ge": (lambda x, y: (x >= y).astype(float), ("int", "int"), [{}]),
    "le": (lambda x, y: (x <= y).astype(float), ("int", "int"), [{}]),
    "eq": (lambda x, y: (x == y).astype(float), ("int", "int"), [{}]),
    "sigmoid": (_sig, ("any",), [{}]),
    "tanh": (np.tanh, ("any",), [{}]),
    "relu": (lambda x: np.maximum(x, 0.0), ("nonzero",), [{}]),
    "sign": (np.sign, ("nonzero",), [{}]),
    "leaky_relu": (lambda x, alpha=0.01: np.where(x > 0, x, alpha * x), ("nonzero",),
                   [{}, {"alpha": 0.2}]),
    "elu": (lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(x)), ("nonzero",),
            [{}, {"alpha": 0.5}]),
    "gelu": (lambda x: x * (1 + _erf(x / np.sqrt(2.0))) / 2, ("any",), [{}]),
    "silu": (lambda x: x * _sig(x), ("any",), [{}]),
    "softplus": (lambda x: np.logaddexp(0.0, x), ("any",), [{}]),
    "prelu": (lambda x, a: np.where(x > 0, x, a * x), ("nonzero", "any"), [{}]),
    "trainable_swish": (lambda x, a, b, c, d: (c * x + d) * _sig(a * x + b),
                        ("any",) * 5, [{}]),
    "erf": (_erf, ("any",), [{}]),
}

SHAPES = {  # arity -> argument shape lists ("scalar" = a Python number)
    1: [[(3, 4)], [(None, 3)], [()]],
    2: [[(3, 4), (3, 4)], [(3, 1), (4,)], [(None, 3), (3,)], [(2, 3), "scalar"],
        ["scalar", (2, 3)], [(None, 1), (None, 3)]],
    3: [[(3, 4), (4,), (3, 1)], [(None, 2), (2,), "scalar"]],
    5: [[(3, 4), (4,), (3, 1), (), (3, 4)], [(None, 2), "scalar", (2,), (1, 2), "scalar"]],
}


def concrete(shape):
    return tuple(B if d is None else d for d in shape)


def sample(rng, shape, domain):
    s = concrete(shape)
    if domain == "any":
        return rng.normal(size=s)
    if domain == "pos":
        return rng.uniform(0.5, 2.0, size=s)
    if domain == "nonzero":
        return rng.choice([-1.0, 1.0], size=s) * rng.uniform(0.2, 2.0, size=s)
    if domain == "mask":
        return rng.integers(0, 2, size=s).astype(float)
    if domain == "int":  # many ties, so comparisons meet equality
        return rng.integers(-1, 2, size=s).astype(float)
    raise ValueError(domain)


def _tol(dtype):
    return dict(rtol=3e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)


def _compile_and_run(out, feeds):
    return gn.compile(out)(**feeds)


def _check_grad_dtypes(out, wrt, feeds, dtype):
    """Reverse-mode gradients keep the float dtype, symbolically and at run time."""
    if not wrt:
        return
    weight = api.lift(np.linspace(-1, 1, max(1, out.shape[-1] if out.shape and out.shape[-1] else 1))
                      .astype(dtype), out) if out.shape and out.shape[-1] else 1.0
    loss = api.sum(out * weight)
    grads = gn.grad(loss, wrt)
    for w, gw in zip(wrt, grads):
        assert gw.dtype == np.dtype(dtype), (w.name, gw)
        assert gw.shape == w.shape
    for fast in (False, None):  # the plain program, then the default (lowered) one
        vals = gn.compile(grads, fast=fast)(**feeds)
        for w, v in zip(wrt, vals):
            assert np.asarray(v).dtype == np.dtype(dtype), (fast, w.name, np.asarray(v).dtype)
            assert np.asarray(v).shape == concrete(w.shape)


def _elementwise_cases():
    for name, (ref, domains, variants) in ELEMENTWISE_REFS.items():
        for shapes in SHAPES[len(domains)]:
            for attrs in variants:
                sid = "+".join("s" if s == "scalar" else "x".join(map(str, s)).replace("None", "B")
                               or "()" for s in shapes)
                aid = ",".join(f"{k}={v}" for k, v in attrs.items())
                yield pytest.param(name, shapes, attrs, id=f"{name}-{sid}" + (f"-{aid}" if aid else ""))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shapes,attrs", list(_elementwise_cases()))
def test_elementwise_forward(name, shapes, attrs, dtype, rng):
    ref, domains, _ = ELEMENTWISE_REFS[name]
    g = gn.Graph("ew", dtype=dtype)
    args, feeds, ref_args, inputs = [], {}, [], []
    for k, (shape, dom) in enumerate(zip(shapes, domains)):
        if shape == "scalar":
            v = float(np.asarray(sample(rng, (), dom), dtype=dtype))
            args.append(v)
            ref_args.append(np.float64(v))
        else:
            node = g.input(f"in{k}", shape, dtype=dtype)
            v = sample(rng, shape, dom).astype(dtype)
            feeds[node.name] = v
            args.append(node)
            inputs.append(node)
            ref_args.append(v.astype(np.float64))
    out = api.apply(name, args, **attrs)
    assert out.op == name
    assert out.dtype == np.dtype(dtype)
    got = _compile_and_run(out, feeds)
    want = ref(*ref_args, **attrs)
    assert got.dtype == np.dtype(dtype)
    assert got.shape == concrete(out.shape) == np.shape(want)
    np.testing.assert_allclose(got, want, **_tol(dtype))
    _check_grad_dtypes(out, inputs, feeds, dtype)


# -- the other ops -----------------------------------------------------------------------------

def conv2d_ref(x, w, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out


def conv2d_grad_input_ref(gy, w, xshape, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = xshape
    kh, kw = w.shape[2:]
    dxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    for i in range(gy.shape[2]):
        for j in range(gy.shape[3]):
            dxp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += np.einsum("no,ockl->nckl", gy[:, :, i, j], w)
    return dxp[:, :, ph:ph + h, pw:pw + wd]


def conv2d_grad_weight_ref(x, gy, kernel, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = kernel
    dw = np.zeros((gy.shape[1], x.shape[1], kh, kw))
    for i in range(gy.shape[2]):
        for j in range(gy.shape[3]):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            dw += np.einsum("no,nckl->ockl", gy[:, :, i, j], patch)
    return dw


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class Case:
    """A builder: `inp` makes an input with a random feed, `check` records the expectation."""

    def __init__(self, dtype, rng):
        self.g = gn.Graph("case", dtype=dtype)
        self.dtype = dtype
        self.rng = rng
        self.feeds = {}
        self.vals = {}

    def inp(self, name, shape, domain="any", dtype=None):
        dt = dtype or self.dtype
        node = self.g.input(name, shape, dtype=dt)
        v = sample(self.rng, shape, domain)
        v = v.astype(dt) if np.dtype(dt).kind == "f" else self.rng.integers(0, 4, size=concrete(shape)).astype(dt)
        self.feeds[name] = v
        self.vals[name] = v.astype(np.float64) if np.dtype(dt).kind == "f" else v
        return node, self.vals[name]


def _matmul(shape_a, shape_b):
    def build(c):
        a, av = c.inp("a", shape_a)
        b, bv = c.inp("b", shape_b)
        return a @ b, av @ bv
    return build


def _reduce(op, shape, axis, keepdims):
    def build(c):
        x, xv = c.inp("x", shape)
        out = getattr(x, op)(axis=axis, keepdims=keepdims)
        npax = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        return out, getattr(np, {"sum": "sum", "mean": "mean", "max": "amax"}[op])(xv, axis=npax, keepdims=keepdims)
    return build


def _index(shape, key):
    def build(c):
        x, xv = c.inp("x", shape)
        return x[key], xv[key]
    return build


def _scatter(shape, key):
    def build(c):
        like, lv = c.inp("like", shape)
        tshape = np.zeros(concrete(shape))[key].shape
        gshape = tuple(None if (shape and shape[0] is None and k == 0 and isinstance(key, tuple)
                                and key[0] == slice(None)) else d for k, d in enumerate(tshape))
        gy, gv = c.inp("g", gshape)
        out = api.apply("scatter", [gy, like], index=api._index_entries(like, key))
        want = np.zeros(lv.shape)
        want[key] = gv
        return out, want
    return build


def _softmax(op, shape, axis):
    def build(c):
        x, xv = c.inp("x", shape)
        out = getattr(gn, op)(x, axis=axis)
        s = softmax_ref(xv, axis)
        return out, s if op == "softmax" else np.log(s)
    return build


def _conv(xs, ws, stride, padding):
    def build(c):
        x, xv = c.inp("x", xs)
        w, wv = c.inp("w", ws)
        st = stride if isinstance(stride, tuple) else (stride, stride)
        pd = padding if isinstance(padding, tuple) else (padding, padding)
        return gn.conv2d(x, w, stride=stride, padding=padding), conv2d_ref(xv, wv, st, pd)
    return build


def _conv_grad_input(xs, ws, stride, padding):
    def build(c):
        x, xv = c.inp("x", xs)
        w, wv = c.inp("w", ws)
        ys = gn.conv2d(x, w, stride=stride, padding=padding).shape
        gy, gv = c.inp("gy", ys)
        out = api.apply("conv2d_grad_input", [gy, w, x], stride=stride, padding=padding)
        return out, conv2d_grad_input_ref(gv, wv, xv.shape, stride, padding)
    return build


def _pad(shape, pads, value):
    def build(c):
        x, xv = c.inp("x", shape)
        nd = len(shape)
        return gn.pad(x, pads, value), np.pad(xv, list(zip(pads[:nd], pads[nd:])), constant_values=value)
    return build


def _windows_ref(xv, kernel, stride, dilation):
    k = len(kernel)
    lead, sizes = xv.shape[:-k], xv.shape[-k:]
    outs = [(d - (n - 1) * dl - 1) // s + 1 for d, n, s, dl in zip(sizes, kernel, stride, dilation)]
    out = np.zeros(lead + tuple(outs) + tuple(kernel), xv.dtype)
    for o in np.ndindex(*outs):
        for kk in np.ndindex(*kernel):
            src = tuple(oi * s + ki * dl for oi, ki, s, dl in zip(o, kk, stride, dilation))
            out[(Ellipsis,) + o + kk] = xv[(Ellipsis,) + src]
    return out


def _windows(shape, kernel, stride, dilation):
    def build(c):
        x, xv = c.inp("x", shape)
        out = api.apply("windows", [x], kernel=kernel, stride=stride, dilation=dilation)
        return out, _windows_ref(xv, kernel, stride, dilation)
    return build


def _windows_adjoint(shape, kernel, stride, dilation):
    def build(c):
        like, lv = c.inp("like", shape)
        wshape = api.apply("windows", [like], kernel=kernel, stride=stride, dilation=dilation).shape
        gy, gv = c.inp("gy", wshape)
        out = api.apply("windows_adjoint", [gy, like], kernel=kernel, stride=stride, dilation=dilation)
        k = len(kernel)
        want = np.zeros(lv.shape)
        for o in np.ndindex(*gv.shape[lv.ndim - k:lv.ndim]):
            for kk in np.ndindex(*kernel):
                dst = tuple(oi * s + ki * dl for oi, ki, s, dl in zip(o, kk, stride, dilation))
                want[(Ellipsis,) + dst] += gv[(Ellipsis,) + o + kk]
        return out, want
    return build


def _take(shape, idx, axis):
    def build(c):
        x, xv = c.inp("x", shape)
        out = api.apply("take", [x, c.g.const(None, np.array(idx))], axis=axis)
        return out, np.take(xv, np.array(idx), axis=axis)
    return build


def _take_adjoint(shape, idx, axis):
    def build(c):
        like, lv = c.inp("like", shape)
        ii = np.array(idx)
        gshape = shape[:axis] + ii.shape + shape[axis + 1:]
        gy, gv = c.inp("gy", gshape)
        out = api.apply("take_adjoint", [gy, c.g.const(None, ii), like], axis=axis)
        want = np.zeros(lv.shape)
        for pos in np.ndindex(*ii.shape):
            j = ii[pos] % lv.shape[axis]
            src = (slice(None),) * axis + pos
            dst = (slice(None),) * axis + (j,)
            want[dst] += gv[src]
        return out, want
    return build


def _conv_grad_weight(xs, ws, stride, padding):
    def build(c):
        x, xv = c.inp("x", xs)
        ys = gn.conv2d(x, c.g.const(None, np.zeros(ws, c.dtype)), stride=stride, padding=padding).shape
        gy, gv = c.inp("gy", ys)
        out = api.apply("conv2d_grad_weight", [x, gy], kernel=ws[2:], stride=stride, padding=padding)
        return out, conv2d_grad_weight_ref(xv, gv, ws[2:], stride, padding)
    return build


def _conv1d(c):
    x, xv = c.inp("x", (2, 3, 7))
    w, wv = c.inp("w", (4, 3, 3))
    out = gn.conv1d(x, w, stride=2, padding=1)
    want = conv2d_ref(xv[:, :, None, :], wv[:, :, None, :], (1, 2), (0, 1))[:, :, 0, :]
    return out, want


def _simple(fn, shapes, ref, domain="any"):
    def build(c):
        nodes, vals = zip(*(c.inp(f"x{k}", s, domain) for k, s in enumerate(shapes)))
        return fn(*nodes), ref(*vals)
    return build


def _one_hot(c):
    lab, lv = c.inp("labels", (None,), dtype="int64")
    out = gn.one_hot(lab, 4, dtype=c.dtype)
    return out, np.eye(4)[lv]


def _count(c):
    x, xv = c.inp("x", (None, 3))
    return gn.count(x, axis=0), np.float64(xv.shape[0])


def _cast(c):
    x, xv = c.inp("x", (None, 3))
    other = "float64" if c.dtype == "float32" else "float32"
    out = gn.cast(x, other)
    assert out.dtype == np.dtype(other)
    return out, xv.astype(c.dtype).astype(other)


# (op, id, builder); the op must appear in the built graph
TENSOR_CASES = [
    ("matmul", "2d", _matmul((3, 4), (4, 2))),
    ("matmul", "batchdim", _matmul((None, 3), (3, 2))),
    ("matmul", "batched", _matmul((2, 3, 4), (2, 4, 5))),
    ("matmul", "broadcast-batch", _matmul((2, 1, 3, 4), (5, 4, 2))),
    ("matmul", "3d@2d", _matmul((2, 3, 4), (4, 5))),
    ("matmul", "1d@2d", _matmul((4,), (4, 2))),
    ("matmul", "2d@1d", _matmul((3, 4), (4,))),
    ("matmul", "1d@1d", _matmul((4,), (4,))),
    ("matmul", "batched@1d", _matmul((None, 3, 4), (4,))),
    ("transpose", "T", _simple(lambda x: x.T, [(2, 3)], lambda x: x.T)),
    ("transpose", "axes", _simple(lambda x: x.transpose(1, 2, 0), [(2, 3, 4)], lambda x: x.transpose(1, 2, 0))),
    ("transpose", "batch", _simple(lambda x: x.T, [(None, 3)], lambda x: x.T)),
    ("reshape", "fixed", _simple(lambda x: x.reshape(3, 4), [(2, 6)], lambda x: x.reshape(3, 4))),
    ("reshape", "batch", _simple(lambda x: x.reshape(-1, 6), [(None, 2, 3)], lambda x: x.reshape(-1, 6))),
    ("reshape", "infer", _simple(lambda x: x.reshape(2, -1), [(6,)], lambda x: x.reshape(2, -1))),
    ("broadcast_to", "up", _simple(lambda x: gn.broadcast_to(x, (2, 3, 4)), [(3, 1)],
                                   lambda x: np.broadcast_to(x, (2, 3, 4)))),
    ("broadcast_to", "scalar", _simple(lambda x: gn.broadcast_to(x, (2, 2)), [()],
                                       lambda x: np.broadcast_to(x, (2, 2)))),
    ("broadcast_like", "batch", _simple(gn.broadcast_like, [(1, 3), (None, 3)],
                                        lambda x, r: np.broadcast_to(x, r.shape))),
    ("cast", "float", _cast),
    ("zeros_like", "batch", _simple(gn.zeros_like, [(None, 3)], np.zeros_like)),
    ("stop_gradient", "id", _simple(gn.stop_gradient, [(None, 3)], lambda x: x)),
    ("batch_guard", "id", lambda c: (lambda x, xv: (gn.ops.api.apply("batch_guard", [x], axis=0,
                                                                     size=xv.shape[0]), xv))(
        *c.inp("x", (None, 3)))),
    ("sum", "all", _reduce("sum", (2, 3, 4), None, False)),
    ("sum", "axis0", _reduce("sum", (2, 3, 4), 0, False)),
    ("sum", "axes-keep", _reduce("sum", (2, 3, 4), (0, 2), True)),
    ("sum", "batch", _reduce("sum", (None, 3), 0, False)),
    ("mean", "all", _reduce("mean", (2, 3, 4), None, False)),
    ("mean", "neg-keep", _reduce("mean", (2, 3, 4), -1, True)),
    ("mean", "batch", _reduce("mean", (None, 3), (0,), False)),
    ("mean", "batch-row", _reduce("mean", (None, 3), 1, True)),
    ("max", "all", _reduce("max", (2, 3, 4), None, False)),
    ("max", "axis1", _reduce("max", (2, 3, 4), 1, False)),
    ("max", "batch-keep", _reduce("max", (None, 3), 0, True)),
    ("count", "batch", _count),
    ("concat", "axis0", _simple(lambda a, b: gn.concat([a, b], axis=0), [(2, 3), (4, 3)],
                                lambda a, b: np.concatenate([a, b], 0))),
    ("concat", "batch-axis1", _simple(lambda a, b, c: gn.concat([a, b, c], axis=1),
                                      [(None, 2), (None, 3), (None, 1)],
                                      lambda a, b, c: np.concatenate([a, b, c], 1))),
    ("concat", "neg-axis", _simple(lambda a, b: gn.concat([a, b], axis=-1), [(2, 3), (2, 1)],
                                   lambda a, b: np.concatenate([a, b], -1))),
    ("index", "int", _index((4, 3), 1)),
    ("index", "neg-int", _index((4, 3), (-1, 2))),
    ("index", "slice", _index((4, 5), (slice(None), slice(1, 3)))),
    ("index", "step", _index((5, 4), (slice(None, None, 2), -1))),
    ("index", "rev", _index((4, 3), (slice(-2, None), slice(None, None, -1)))),
    ("index", "newaxis", _index((4, 3), (None, slice(1, None)))),
    ("index", "ellipsis", _index((2, 3, 4), (Ellipsis, 0))),
    ("index", "batch", _index((None, 4), (slice(None), 2))),
    ("index", "batch-rev", _index((None, 4), (slice(None, None, -1), 1))),
    ("scatter", "slice", _scatter((4, 5), (slice(None), slice(1, 3)))),
    ("scatter", "int", _scatter((4, 3), (1,))),
    ("scatter", "batch", _scatter((None, 4), (slice(None), 2))),
    ("one_hot", "labels", _one_hot),
    ("softmax", "last", _softmax("softmax", (3, 5), -1)),
    ("softmax", "axis0", _softmax("softmax", (3, 5), 0)),
    ("softmax", "batch", _softmax("softmax", (None, 4), 1)),
    ("log_softmax", "last", _softmax("log_softmax", (3, 5), -1)),
    ("log_softmax", "axis0", _softmax("log_softmax", (None, 4), 0)),
    ("conv2d", "plain", _conv((2, 3, 6, 5), (4, 3, 3, 2), 1, 0)),
    ("conv2d", "stride2-pad1", _conv((2, 3, 6, 5), (4, 3, 3, 3), 2, 1)),
    ("conv2d", "mixed", _conv((1, 2, 5, 6), (3, 2, 2, 3), (2, 1), (0, 1))),
    ("conv2d", "batch", _conv((None, 2, 4, 4), (3, 2, 3, 3), 1, 1)),
    ("conv2d", "conv1d", _conv1d),
    ("conv2d_grad_input", "plain", _conv_grad_input((2, 3, 6, 5), (4, 3, 3, 2), (1, 1), (0, 0))),
    ("conv2d_grad_input", "stride2-pad1", _conv_grad_input((2, 3, 7, 6), (4, 3, 3, 3), (2, 2), (1, 1))),
    ("conv2d_grad_weight", "plain", _conv_grad_weight((2, 3, 6, 5), (4, 3, 3, 2), (1, 1), (0, 0))),
    ("conv2d_grad_weight", "stride2-pad1", _conv_grad_weight((2, 3, 7, 6), (4, 3, 3, 3), (2, 1), (1, 0))),
    ("pad", "2d", _pad((3, 2), (1, 0, 0, 2), -1.5)),
    ("pad", "batch", _pad((None, 2, 3), (0, 1, 2, 0, 0, 1), 0.0)),
    ("windows", "1d", _windows((2, 7), (3,), (2,), (1,))),
    ("windows", "2d-dilated", _windows((None, 2, 6, 7), (2, 3), (1, 2), (2, 1))),
    ("windows_adjoint", "1d", _windows_adjoint((2, 7), (3,), (2,), (1,))),
    ("windows_adjoint", "2d-dilated", _windows_adjoint((None, 2, 6, 7), (2, 3), (1, 2), (2, 1))),
    ("take", "rows", _take((5, 3), [[0, 4], [-1, 2]], 0)),
    ("take", "batch-cols", _take((None, 4), [3, 0, 3], 1)),
    ("take_adjoint", "rows", _take_adjoint((5, 3), [[0, 4], [-1, 0]], 0)),
    ("take_adjoint", "cols", _take_adjoint((2, 4), [3, 3, 1], 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,build", [pytest.param(op, b, id=f"{op}-{i}") for op, i, b in TENSOR_CASES])
def test_tensor_op_forward(op, build, dtype, rng):
    c = Case(dtype, rng)
    out, want = build(c)
    assert any(n.op == op for n in c.g.nodes), f"case for {op} built {[n.op for n in c.g.nodes]}"
    got = gn.compile(out)(**c.feeds)
    got = np.asarray(got)
    if op != "cast":
        assert out.dtype == np.dtype(dtype)
        assert got.dtype == np.dtype(dtype), got.dtype
    assert got.shape == concrete(out.shape) == np.shape(want)
    np.testing.assert_allclose(got, want, **_tol(dtype))
    if op not in ("count", "one_hot", "zeros_like", "cast"):
        wrt = [n for n in c.g.inputs if n.dtype.kind == "f"]
        _check_grad_dtypes(out, wrt, c.feeds, dtype)


def _base_ops():
    """Every declared op (derived element-wise derivatives like sigmoid_dx excluded)."""
    return {name for name, op in REGISTRY.items()
            if op.elementwise is None or op.elementwise.base is None}


def test_every_registered_op_has_a_forward_case():
    covered = set(ELEMENTWISE_REFS) | {op for op, _, _ in TENSOR_CASES}
    missing = _base_ops() - covered
    assert not missing, f"ops without a NumPy-reference test in test_ops.py: {sorted(missing)}"


def test_element_wise_ops_in_catalog_are_registered():
    for name, spec in ELEMENTWISE.items():
        assert REGISTRY[name].elementwise is spec


# -- derived ops: the derivative of each element-wise op is an op of its own -----------------------

def _derived_cases():
    for name, (ref, domains, variants) in ELEMENTWISE_REFS.items():
        for k, arg in enumerate(ELEMENTWISE[name].args):
            if domains[k] in ("int", "mask"):
                continue  # piecewise-constant in this argument
            for attrs in variants:
                yield pytest.param(name, k, attrs, id=f"{name}_d{arg}" + ("-" + str(attrs) if attrs else ""))


@pytest.mark.parametrize("name,k,attrs", list(_derived_cases()))
def test_derived_derivative_ops_match_finite_differences(name, k, attrs, rng):
    """Each partial derivative (an op like `sigmoid_dx`, found on demand) vs central differences."""
    from graphnn.ops.elementwise import DERIVED_ARGS, derivative_expr
    ref, domains, _ = ELEMENTWISE_REFS[name]
    spec = ELEMENTWISE[name]
    arg = spec.args[k]
    vals = [sample(rng, (7,), d) for d in domains]
    h = 1e-6
    up = [v.copy() for v in vals]
    dn = [v.copy() for v in vals]
    up[k] = up[k] + h
    dn[k] = dn[k] - h
    fd = (ref(*up, **attrs) - ref(*dn, **attrs)) / (2 * h)
    d = derivative_expr(spec, arg)
    if d.is_Number:
        np.testing.assert_allclose(fd, float(d), rtol=1e-6, atol=1e-7)
        return
    opname = f"{name}_d{arg}"
    opdef = get_op(opname)
    assert opdef.elementwise.base == name and REGISTRY[opname] is opdef
    used = DERIVED_ARGS[opname]
    g = gn.Graph("d")
    nodes = [g.input(f"in{j}", (7,)) for j in range(len(vals))]
    out = g.apply(opname, [nodes[spec.args.index(a)] for a in used], attrs)
    got = gn.compile(out)(**{f"in{j}": v for j, v in enumerate(vals)})
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7)


def test_generated_elementwise_code_has_no_select_or_pow_call():
    """Piecewise prints as np.where (not np.select); powers never as pow(x, 2)."""
    g = gn.Graph("p")
    x = g.input("x", (3,))
    outs = [api.apply(n, [x] * len(ELEMENTWISE_REFS[n][1])) for n in ELEMENTWISE_REFS]
    src = gn.compile(outs, optimize=False).source
    assert "np.where(" in src
    assert "select" not in src
    assert "pow(" not in src
