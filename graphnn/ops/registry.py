"""The op registry: every op is declared once, here or in a sibling module.

An `OpDef` carries everything every part of graphnn needs to know about an op:

* `infer(inputs, attrs)`   -> (shape, dtype); raises `Mismatch` with a detail
  that `Graph.apply` turns into a `ShapeError` naming node, op and shapes;
* `numpy(args, attrs, node)` -> a NumPy expression (a string) over the
  argument expressions; the NumPy backend prints it, constant folding and the
  symbolic meaning evaluate it;
* `vjp(node, ct)` -> one cotangent Node (or None) per input, *built as graph
  nodes*, so gradients are graphs and can be differentiated again;
* `jvp(node, tangents)` -> the output tangent Node (or None);
* `sym(args, attrs, node)` -> the SymPy meaning on object arrays of SymPy
  expressions (default: the NumPy expression evaluated on object arrays,
  which is right for every op that only moves or sums elements).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import limits
from ..errors import GraphError, ShapeError


class Mismatch(Exception):
    """Raised by a shape rule; `OpDef.infer` turns it into a ShapeError with context."""


AttrCheck = Callable[[Any], Any]


def attr_int(v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"expected an integer, got {v!r}")
    return int(v)


def attr_float(v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise TypeError(f"expected a finite number, got {v!r}")
    return float(v)


def attr_bool(v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"expected a bool, got {v!r}")
    return bool(v)


def attr_axes(v):
    """None (all axes) or a tuple of ints."""
    if v is None:
        return None
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return (int(v),)
    if isinstance(v, (list, tuple)):
        return tuple(attr_int(a) for a in v)
    raise TypeError(f"expected None, an int or a tuple of ints, got {v!r}")


def attr_ints(v):
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a tuple of ints, got {v!r}")
    return tuple(attr_int(a) for a in v)


def attr_shape(v):
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a shape tuple, got {v!r}")
    out = []
    for d in v:
        if d is None:
            out.append(None)
        else:
            d = attr_int(d)
            if d < 0:
                raise TypeError(f"negative dimension {d}")
            if d > limits.MAX_ELEMENTS:
                raise ValueError(f"dimension {d} exceeds {limits.MAX_ELEMENTS} (2**48)")
            out.append(d)
    return tuple(out)


def attr_dtype(v):
    from ..dtypes import as_dtype
    return as_dtype(v).name


@dataclass
class OpDef:
    name: str
    infer_fn: Callable
    numpy: Callable[[list[str], dict, Any], str]
    vjp: Callable | None = None
    jvp: Callable | None = None
    sym: Callable | None = None
    attrs: dict[str, AttrCheck] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    arity: int | None = None
    infix: str | None = None            # "@" for matmul: how errors and drawings show it
    elementwise: Any = None             # an ElementwiseSpec for SymPy-declared ops
    helpers: tuple[str, ...] = ()       # runtime helpers the NumPy code calls
    doc: str = ""

    def check_attrs(self, attrs: dict) -> dict:
        if not attrs and not self.attrs:
            return {}
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise GraphError(f"op {self.name!r} has no attribute(s) {sorted(unknown)}; "
                             f"it takes {sorted(self.attrs)}")
        out = {}
        for key, check in self.attrs.items():
            if key in attrs:
                try:
                    out[key] = check(attrs[key])
                except (TypeError, ValueError) as e:
                    raise GraphError(f"op {self.name!r}: attribute {key}={attrs[key]!r}: {e}") from None
            elif key in self.defaults:
                out[key] = self.defaults[key]
            else:
                raise GraphError(f"op {self.name!r}: missing attribute {key!r}")
        return out

    def describe(self, names: list[str], attrs: dict) -> str:
        if self.infix and len(names) == 2:
            return f"{names[0]} {self.infix} {names[1]}"
        return f"{self.name}({', '.join(names)})"

    def infer(self, inputs, attrs, node_name: str):
        def where():  # only built for an error message
            return f"{self.name} {node_name!r} ({self.describe([i.name for i in inputs], attrs)})"
        if self.arity is not None and len(inputs) != self.arity:
            raise ShapeError(f"{where()}: takes {self.arity} input(s), got {len(inputs)}")
        try:
            shape, dtype = self.infer_fn(inputs, attrs)
        except Mismatch as e:
            raise ShapeError(f"{where()}: {e}") from None
        shape = tuple(shape)
        if limits.too_big(shape):  # one place for every op (one_hot's depth, concat, ...)
            raise ShapeError(f"{where()}: {limits.limit_text(shape)}")
        return shape, np.dtype(dtype)


REGISTRY: dict[str, OpDef] = {}
_derivers: list[Callable[[str], OpDef | None]] = []


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise GraphError(f"op {opdef.name!r} is declared twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def add_deriver(fn: Callable[[str], OpDef | None]) -> None:
    """Ops made on demand (derivatives of element-wise ops) are found through these."""
    _derivers.append(fn)


def get_op(name: str) -> OpDef:
    op = REGISTRY.get(name)
    if op is not None:
        return op
    if isinstance(name, str):
        for fn in _derivers:
            op = fn(name)
            if op is not None:
                return op
    raise GraphError(f"unknown op {name!r}")
