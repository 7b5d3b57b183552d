"""Constant padding and sliding windows: the two ops pooling and general convolution
are built from (declared once here; the functions users call are in `pooling.py`).

* `pad(x)`: x with `value` around its axes (pads = begins then ends, ONNX's order);
  its VJP is a slice (`index`), so it differentiates to any order.
* `windows(x)`: the sliding windows over the trailing k axes of x, with strides and
  dilations: (..., S1..Sk) -> (..., O1..Ok, K1..Kk). It only moves elements, so it is
  linear; its adjoint `windows_adjoint` adds every window back where it came from
  (col2im). Each is the other's VJP, as conv2d and its adjoints are.

Max pooling is then `max(windows(x), window axes)` and average pooling a `mean` (or
a sum divided by the number of real elements): their derivatives (ties shared as
torch.amax shares them) come from the reductions, not from new rules.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import sympy as sp

from . import runtime
from .registry import Mismatch, OpDef, attr_ints, register
from .shapes import fmt


def _api():
    from . import api
    return api


def attr_pad_value(v):
    """A float, infinities allowed (max pooling pads with -inf); not NaN."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
        raise TypeError(f"expected a number (infinities allowed), got {v!r}")
    return float(v)


def _float_code(v: float) -> str:
    if math.isinf(v):
        return "np.inf" if v > 0 else "-np.inf"
    return repr(float(v))


# -- pad ------------------------------------------------------------------------------------

def _pad_pairs(pads, ndim):
    return tuple((pads[i], pads[i + ndim]) for i in range(ndim))


def _pad_infer(inputs, attrs):
    x = inputs[0]
    pads = attrs["pads"]
    if len(pads) != 2 * x.ndim:
        raise Mismatch(f"pads {pads} must have 2 entries per axis of {fmt(x.shape)} "
                       f"(begins then ends)")
    out = []
    for d, (b, e) in zip(x.shape, _pad_pairs(pads, x.ndim)):
        if b < 0 or e < 0:
            raise Mismatch(f"pads {pads} must be >= 0 (crop with an index instead)")
        if d is None:
            if b or e:
                raise Mismatch(f"cannot pad the batch (None) axis of {fmt(x.shape)}")
            out.append(None)
        else:
            out.append(d + b + e)
    return tuple(out), x.dtype


def _pad_code(a, attrs, node):
    pairs = _pad_pairs(attrs["pads"], node.inputs[0].ndim)
    return f"np.pad({a[0]}, {pairs}, constant_values={_float_code(attrs['value'])})"


def _pad_vjp(node, ct, needs):
    x = node.inputs[0]
    entries = []
    for d, (b, e) in zip(x.shape, _pad_pairs(node.attrs["pads"], x.ndim)):
        entries.append(("s", None, None, None) if d is None else ("s", b, b + d, None))
    return [_api().apply("index", [ct], index=tuple(entries))]


def _pad_sym(a, at, n):
    x = np.asarray(a[0], dtype=object)
    v = at["value"]
    fill = sp.oo if v == math.inf else -sp.oo if v == -math.inf else sp.Float(v) if v else sp.Integer(0)
    pairs = _pad_pairs(at["pads"], x.ndim)
    out = np.full(tuple(d + b + e for d, (b, e) in zip(x.shape, pairs)), fill, dtype=object)
    out[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, pairs))] = x
    return out


register(OpDef(
    "pad", _pad_infer, _pad_code, _pad_vjp,
    jvp=lambda n, t: _api().apply("pad", [t[0]], pads=n.attrs["pads"], value=0.0),
    attrs={"pads": attr_ints, "value": attr_pad_value}, defaults={"value": 0.0}, arity=1,
    sym=_pad_sym, doc="x surrounded by a constant (pads: all begins, then all ends)"))


# -- windows ----------------------------------------------------------------------------------

def _window_out(shape, attrs):
    """Output spatial sizes of the windows over the trailing axes of `shape`."""
    kernel, stride, dilation = attrs["kernel"], attrs["stride"], attrs["dilation"]
    k = len(kernel)
    if not k or len(stride) != k or len(dilation) != k:
        raise Mismatch(f"kernel {kernel}, stride {stride} and dilation {dilation} must be "
                       f"non-empty and of one length")
    if len(shape) < k + 1:
        raise Mismatch(f"{k}-d windows need an input of at least {k + 1} axes, got {fmt(shape)}")
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise Mismatch(f"kernel {kernel}, stride {stride}, dilation {dilation} must be >= 1")
    out = []
    for d, n, s, dil in zip(shape[-k:], kernel, stride, dilation):
        if d is None:
            raise Mismatch(f"windows over the batch (None) axis of {fmt(shape)}")
        span = (n - 1) * dil + 1
        if span > d:
            raise Mismatch(f"window {kernel} (dilation {dilation}) is larger than the "
                           f"axes {fmt(shape[-k:])} of {fmt(shape)}")
        out.append((d - span) // s + 1)
    return tuple(out)


def _windows_infer(inputs, attrs):
    x = inputs[0].shape
    k = len(attrs["kernel"])
    return x[:len(x) - k] + _window_out(x, attrs) + tuple(attrs["kernel"]), inputs[0].dtype


def _wattrs(node):
    return {k: node.attrs[k] for k in ("kernel", "stride", "dilation")}


def _wargs(at):
    return f"{at['kernel']}, {at['stride']}, {at['dilation']}"


def _sym_runtime(name):
    def meaning(a, at, n):
        return np.asarray(getattr(runtime, name)(*[np.asarray(v, dtype=object) for v in a],
                                                 at["kernel"], at["stride"], at["dilation"]),
                          dtype=object)
    return meaning


_WINDOW_ATTRS = {"kernel": attr_ints, "stride": attr_ints, "dilation": attr_ints}

register(OpDef(
    "windows", _windows_infer, lambda a, at, n: f"_windows({a[0]}, {_wargs(at)})",
    vjp=lambda n, ct, needs: [_api().apply("windows_adjoint", [ct, n.inputs[0]], **_wattrs(n))],
    jvp=lambda n, t: _api().apply("windows", [t[0]], **_wattrs(n)),
    attrs=_WINDOW_ATTRS, arity=1, helpers=("_windows",), sym=_sym_runtime("_windows"),
    doc="sliding windows over the trailing axes: (..., S) -> (..., O, K) (a read-only view)"))


def _adjoint_infer(inputs, attrs):
    g, like = inputs
    expect, _ = _windows_infer([like], attrs)
    if len(g.shape) != len(expect) or any(a != b for a, b in zip(g.shape, expect)):
        raise Mismatch(f"{fmt(g.shape)} is not the shape {fmt(expect)} of the windows of "
                       f"{fmt(like.shape)}")
    return like.shape, g.dtype


register(OpDef(
    "windows_adjoint", _adjoint_infer,
    lambda a, at, n: f"_windows_adjoint({a[0]}, {a[1]}, {_wargs(at)})",
    vjp=lambda n, ct, needs: [_api().apply("windows", [ct], **_wattrs(n)), None],
    jvp=lambda n, t: None if t[0] is None else _api().apply(
        "windows_adjoint", [t[0], n.inputs[1]], **_wattrs(n)),
    attrs=_WINDOW_ATTRS, arity=2, helpers=("_windows_adjoint",),
    sym=_sym_runtime("_windows_adjoint"),
    doc="adjoint of windows: every window added back where it came from (2nd input: the shape)"))

