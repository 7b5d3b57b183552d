"""The functions users call to build nodes (`gn.relu(x)`, `gn.concat(...)`, ...).

They only normalize arguments and call `Graph.apply`; what an op *is* lives in
the registry (catalog.py for element-wise ops, tensor.py for the rest).
"""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from .. import dtypes, limits
from ..errors import GraphError, ShapeError
from ..graph import Node
from . import catalog  # noqa: F401  (declares the element-wise ops)
from . import tensor  # noqa: F401  (declares the other ops)
from . import window, gather  # noqa: F401  (pad, windows, take and their adjoints)
from . import shapes
from .elementwise import ELEMENTWISE


def _graph_of(args) -> "Graph":
    g = None
    for a in args:
        if isinstance(a, Node):
            if g is None:
                g = a.graph
            elif a.graph is not g:
                raise GraphError(f"nodes from two graphs cannot be mixed: {a.name!r} is in "
                                 f"{a.graph.name!r}, another input in {g.name!r}")
    if g is None:
        raise GraphError("at least one argument must be a Node")
    return g


def lift(value, like: Node) -> Node:
    """A Python number or array as a constant node next to `like` (takes its float dtype)."""
    if isinstance(value, Node):
        return value
    if isinstance(value, (numbers.Number, np.number, np.ndarray, list, tuple)):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf" and dtypes.is_float(like.dtype):
            arr = arr.astype(like.dtype)
        elif arr.dtype.kind in "bi":
            arr = arr.astype(np.float64)
        return like.graph.const(None, arr)
    raise GraphError(f"cannot use {type(value).__name__} {value!r} as a graph value")


def require_node(x, op: str) -> Node:
    """`x` itself when it is a Node; a GraphError naming the op otherwise."""
    if not isinstance(x, Node):
        raise GraphError(f"{op}: expected a Node, got {type(x).__name__} {str(x)[:40]!r}")
    return x


def _shape_arg(shape, op: str, x: Node) -> tuple:
    """A target shape: ints (None for the batch dimension, -1 where reshape infers one)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise GraphError(f"{op} {x.name!r}: shape must be a tuple of ints, got {shape!r}") from None
    for d in shape:
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer))):
            raise GraphError(f"{op} {x.name!r}: bad dimension {str(d)[:40]!r} in the shape")
    return tuple(None if d is None else int(d) for d in shape)


def _nodes(xs, op: str, what: str = "Nodes") -> list:
    """`xs` as a list (of Nodes, or of axes); a GraphError for a Node or a non-iterable."""
    if isinstance(xs, Node):
        raise GraphError(f"{op}: expected a list of {what}, got the node {xs.name!r}")
    try:
        return list(xs)
    except TypeError:
        raise GraphError(f"{op}: expected a list of {what}, got {type(xs).__name__}") from None


def apply(op: str, inputs: Sequence, name: str | None = None, **attrs) -> Node:
    """Build `op(*inputs, **attrs)`; numbers among the inputs become constants."""
    g = _graph_of(inputs)
    ref = next(i for i in inputs if isinstance(i, Node))
    nodes = [lift(i, ref) for i in inputs]
    return g.apply(op, nodes, attrs, name=name)


def _ew(op):
    def fn(*args, name: str | None = None, **attrs):
        return apply(op, args, name=name, **attrs)
    fn.__name__ = op
    fn.__doc__ = f"Element-wise `{ELEMENTWISE[op].expr}` (declared in graphnn/ops/catalog.py)."
    return fn


add, sub, mul, div, pow = (_ew(o) for o in ("add", "sub", "mul", "div", "pow"))
neg, exp, log, sqrt, abs, square = (_ew(o) for o in ("neg", "exp", "log", "sqrt", "abs", "square"))
maximum, minimum, where, erf = (_ew(o) for o in ("maximum", "minimum", "where", "erf"))
gt, lt, ge, le, eq = (_ew(o) for o in ("gt", "lt", "ge", "le", "eq"))

ACTIVATIONS = ("sigmoid", "tanh", "relu", "sign", "leaky_relu", "elu", "gelu", "silu",
               "softplus", "prelu", "trainable_swish")
sigmoid, tanh, relu, sign, leaky_relu, elu, gelu, silu, softplus, prelu, trainable_swish = (
    _ew(o) for o in ACTIVATIONS)
swish = silu


def identity(x: Node) -> Node:
    return x


def scale(x: Node, factor: float) -> Node:
    """x * factor, skipping the multiplication for 1 and -1."""
    if factor == 1:
        return x
    if factor == -1:
        return neg(x)
    return mul(x, factor)


def matmul(a, b, name=None) -> Node:
    return apply("matmul", [a, b], name=name)


def transpose(x: Node, axes=None, name=None) -> Node:
    return apply("transpose", [x], name=name,
                 axes=None if axes is None else tuple(_nodes(axes, "transpose", "axes")))


def reshape(x: Node, shape, name=None) -> Node:
    shape = _shape_arg(shape, "reshape", require_node(x, "reshape"))
    if shape == x.shape:
        return x
    if -1 in shape:
        if None in x.shape:
            shape = tuple(None if d == -1 else d for d in shape)
        else:
            known = limits.elements(d for d in shape if d != -1)
            if known == 0 or x.size % known:
                raise ShapeError(f"reshape {x.name!r}: cannot reshape {x.shape} into {shape}")
            shape = tuple(x.size // known if d == -1 else d for d in shape)
    if x.op == "const" and name is None and None not in shape and x.size == limits.elements(shape):
        # a constant reshaped is a constant (the backward seed 1.0 is reshaped so): folding
        # it here saves the compiler a whole-graph rebuild for one tiny fold
        return x.graph.const(None, x.value.reshape(shape))
    return apply("reshape", [x], name=name, shape=shape)


def broadcast_to(x: Node, shape, name=None) -> Node:
    shape = _shape_arg(shape, "broadcast_to", require_node(x, "broadcast_to"))
    if x.shape == shape:
        return x
    return apply("broadcast_to", [x], name=name, shape=shape)


def broadcast_like(x: Node, ref: Node) -> Node:
    if x.shape == ref.shape:
        return x
    return apply("broadcast_like", [x, ref])


def unbroadcast(g: Node, shape) -> Node:
    """Sum `g` over the axes broadcasting added, back to `shape` (VJP of broadcasting)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    drop, keep = shapes.unbroadcast_axes(shape, g.shape)
    if keep:
        g = sum(g, axis=keep, keepdims=True)
    if drop:
        g = sum(g, axis=drop)
    if g.shape != shape:  # e.g. (1,) kept vs () wanted
        g = reshape(g, shape)
    return g


def cast(x: Node, dtype) -> Node:
    require_node(x, "cast")
    try:
        dt = dtypes.as_dtype(dtype)
    except TypeError as e:  # same error as a bad attribute given to g.apply("cast", ...)
        raise GraphError(f"op 'cast' on {x.name!r}: attribute dtype={dtype!r}: {e}") from None
    if x.dtype == dt:
        return x
    return apply("cast", [x], dtype=dt.name)


def sum(x: Node, axis=None, keepdims: bool = False, name=None) -> Node:
    return apply("sum", [x], name=name, axis=axis, keepdims=keepdims)


def mean(x: Node, axis=None, keepdims: bool = False, name=None) -> Node:
    return apply("mean", [x], name=name, axis=axis, keepdims=keepdims)


def max(x: Node, axis=None, keepdims: bool = False, name=None) -> Node:
    return apply("max", [x], name=name, axis=axis, keepdims=keepdims)


def count(x: Node, axis=None) -> Node:
    """Number of elements of x along `axis` (a constant unless the batch axis is involved)."""
    try:
        axes = shapes.norm_axes(axis if axis is None or isinstance(axis, tuple) else (axis,),
                                x.ndim, x.shape)
    except shapes.Mismatch as e:  # the registry's internal signal, not for users
        raise ShapeError(f"count {x.name!r}: {e}") from None
    dims = [x.shape[a] for a in axes]
    if None not in dims:
        return x.graph.const(None, np.asarray(float(np.prod(dims)), dtype=dtypes.result_float(x.dtype)))
    return apply("count", [x], axis=axes)


def zeros_like(x: Node) -> Node:
    if None not in x.shape:
        return x.graph.const(None, np.zeros(x.shape, dtype=x.dtype))
    return apply("zeros_like", [x])


def stop_gradient(x: Node) -> Node:
    return apply("stop_gradient", [x])


def concat(xs: Sequence[Node], axis: int = 0, name=None) -> Node:
    xs = _nodes(xs, "concat")
    if len(xs) == 1:
        return xs[0]
    return apply("concat", xs, name=name, axis=axis)


def stack(xs: Sequence[Node], axis: int = 0, name=None) -> Node:
    xs = _nodes(xs, "stack")
    parts = [expand_dims(x, axis) for x in xs]
    return concat(parts, axis=axis, name=name)


def expand_dims(x: Node, axis: int) -> Node:
    nd = require_node(x, "expand_dims").ndim + 1
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -nd <= axis < nd:
        raise ShapeError(f"expand_dims {x.name!r}: axis {axis!r} is not an int in [{-nd}, {nd})")
    ax = axis % nd
    return reshape(x, x.shape[:ax] + (1,) + x.shape[ax:])


def squeeze(x: Node, axis=None) -> Node:
    require_node(x, "squeeze")
    if axis is not None:
        for a in (axis,) if isinstance(axis, (int, np.integer)) else _nodes(axis, "squeeze", "axes"):
            if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or \
                    not -x.ndim <= a < x.ndim or x.shape[a] != 1:
                raise ShapeError(f"squeeze {x.name!r}: axis {a!r} is not an axis of size 1 "
                                 f"of shape {x.shape}")
    axes = [i for i, d in enumerate(x.shape) if d == 1] if axis is None else \
        [a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)]
    return reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def _index_entries(x: Node, idx) -> tuple:
    if not isinstance(idx, tuple):
        idx = (idx,)
    n_real = builtins_sum(1 for i in idx if i is not None and i is not Ellipsis)
    out = []
    for i in idx:
        if i is Ellipsis:
            out.extend([("s", None, None, None)] * (x.ndim - n_real))
        elif i is None:
            out.append(("n",))
        elif isinstance(i, slice):
            for p in (i.start, i.stop, i.step):
                if p is not None and not isinstance(p, (int, np.integer)):
                    raise ShapeError(f"index {x.name!r}: slice bounds must be ints, got {i}")
            out.append(("s", i.start, i.stop, i.step))
        elif isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            out.append(("i", int(i)))
        else:
            raise ShapeError(f"index {x.name!r}: only ints, slices, None and ... are supported "
                             f"(got {type(i).__name__}); use gather-free formulations")
    return tuple(out)


import builtins  # noqa: E402
builtins_sum = builtins.sum


def index(x: Node, idx, name=None) -> Node:
    require_node(x, "index")
    entries = _index_entries(x, idx)
    if all(e == ("s", None, None, None) for e in entries):
        return x
    return apply("index", [x], name=name, index=entries)


def one_hot(labels: Node, depth: int, dtype=None) -> Node:
    """One-hot rows of integer class labels in [0, depth). Labels fed at call time are
    checked then (graphnn.feeds); constant labels are checked here."""
    node = apply("one_hot", [require_node(labels, "one_hot")], depth=depth,
                 dtype=dtypes.as_dtype(dtype or labels.graph.dtype).name)
    v = labels.value if labels.op == "const" else None
    if v is not None and v.size and (v.min() < 0 or v.max() >= depth or
                                     (v.dtype.kind == "f" and not np.all(v == np.trunc(v)))):
        raise ShapeError(f"one_hot {node.name!r}: constant labels {labels.name!r} hold "
                         f"{v.min()!r}..{v.max()!r}, outside the classes [0, {depth})")
    return node


def softmax(x: Node, axis: int = -1, name=None) -> Node:
    return apply("softmax", [x], name=name, axis=axis)


def log_softmax(x: Node, axis: int = -1, name=None) -> Node:
    return apply("log_softmax", [x], name=name, axis=axis)


def conv2d(x: Node, w: Node, stride=1, padding=0, name=None) -> Node:
    """Cross-correlation of x (N, C, H, W) with w (O, C, KH, KW), as torch's conv2d."""
    return apply("conv2d", [x, w], name=name, stride=stride, padding=padding)


def conv1d(x: Node, w: Node, stride: int = 1, padding: int = 0, name=None) -> Node:
    """x (N, C, L), w (O, C, K): conv2d on a height-1 image (one definition of convolution)."""
    if x.ndim != 3 or w.ndim != 3:
        raise ShapeError(f"conv1d: want x (N, C, L) and w (O, C, K), got {x.shape} and {w.shape}")
    x4 = reshape(x, (x.shape[0], x.shape[1], 1, x.shape[2]))
    w4 = reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
    y = conv2d(x4, w4, stride=(1, stride), padding=(0, padding))
    return reshape(y, (y.shape[0], y.shape[1], y.shape[3]), name=name)


def glu(x: Node, axis: int = -1) -> Node:
    """Gated linear unit on one array: split `axis` in halves a, b -> a * sigmoid(b)."""
    n = x.shape[axis]
    if n is None or n % 2:
        raise ShapeError(f"glu {x.name!r}: axis {axis} of {x.shape} must have an even, fixed size")
    ax = axis % x.ndim
    pre = (slice(None),) * ax
    a = index(x, pre + (slice(0, n // 2),))
    b = index(x, pre + (slice(n // 2, n),))
    return a * sigmoid(b)
