"""`take`: elements picked along one axis by an integer index array (ONNX Gather,
embedding lookups), and its adjoint `take_adjoint` (np.add.at). Each is the other's
VJP in the gathered values, so derivatives of any order stay graphs."""
from __future__ import annotations

import numpy as np

from .. import dtypes
from . import runtime
from .registry import Mismatch, OpDef, attr_int, register
from .shapes import fmt


def _api():
    from . import api
    return api


def _axis(x_shape, axis):
    if not -len(x_shape) <= axis < len(x_shape):
        raise Mismatch(f"axis {axis} is out of range for {fmt(x_shape)}")
    return axis % len(x_shape)


def _take_infer(inputs, attrs):
    x, idx = inputs
    if idx.dtype.kind not in "iu":
        raise Mismatch(f"indices must be integers, got {idx.dtype.name}")
    ax = _axis(x.shape, attrs["axis"])
    if x.shape[ax] is None:
        raise Mismatch(f"cannot take along the batch (None) axis {ax} of {fmt(x.shape)}")
    if None in idx.shape and None in x.shape:
        raise Mismatch(f"indices {fmt(idx.shape)} and data {fmt(x.shape)} both have a batch axis")
    return x.shape[:ax] + idx.shape + x.shape[ax + 1:], x.dtype


register(OpDef(
    "take", _take_infer,
    lambda a, at, n: f"np.take({a[0]}, {a[1]}, axis={_axis(n.inputs[0].shape, at['axis'])})",
    vjp=lambda n, ct, needs: [_api().apply("take_adjoint", [ct, n.inputs[1], n.inputs[0]],
                                           **n.attrs) if needs[0] else None, None],
    jvp=lambda n, t: None if t[0] is None else _api().apply("take", [t[0], n.inputs[1]], **n.attrs),
    attrs={"axis": attr_int}, defaults={"axis": 0}, arity=2,
    sym=lambda a, at, n: np.take(np.asarray(a[0], dtype=object), np.asarray(a[1]).astype(np.int64),
                                 axis=_axis(np.shape(a[0]), at["axis"])),
    doc="x[..., idx, ...] along `axis` (numpy.take; negative indices count from the end)"))


def _adjoint_infer(inputs, attrs):
    g, idx, like = inputs
    expect, _ = _take_infer([like, idx], attrs)
    if len(g.shape) != len(expect) or any(a != b for a, b in zip(g.shape, expect)):
        raise Mismatch(f"{fmt(g.shape)} is not the shape {fmt(expect)} of take(like, idx)")
    return like.shape, dtypes.result_float(g.dtype, like.dtype)


def _take_adjoint_code(a, at, n):
    ax = _axis(n.inputs[2].shape, at["axis"])
    return f"_take_adjoint({a[0]}, {a[1]}, {a[2]}, {ax})"


def _take_adjoint_sym(a, at, n):
    return runtime._take_adjoint(np.asarray(a[0], dtype=object), np.asarray(a[1]).astype(np.int64),
                                 np.asarray(a[2], dtype=object),
                                 _axis(np.shape(a[2]), at["axis"]))


register(OpDef(
    "take_adjoint", _adjoint_infer, _take_adjoint_code,
    vjp=lambda n, ct, needs: [_api().apply("take", [ct, n.inputs[1]], **n.attrs)
                              if needs[0] else None, None, None],
    jvp=lambda n, t: None if t[0] is None else _api().apply(
        "take_adjoint", [t[0], n.inputs[1], n.inputs[2]], **n.attrs),
    attrs={"axis": attr_int}, defaults={"axis": 0}, arity=3, helpers=("_take_adjoint",),
    sym=_take_adjoint_sym,
    doc="zeros shaped like the 3rd input with the 1st added at the indices (VJP of take)"))
