"""The ONNX op table of `gn.from_onnx`: one handler per ONNX op, each mapping the
op onto graphnn's registry ops (graphnn/ops/) and folding what is constant.

A handler takes (importer, inputs, attributes) and returns the output values, each a
Node or a folded NumPy array. `_take(attrs, defaults)` refuses any attribute the
handler does not implement, so nothing is silently approximated.
"""
from __future__ import annotations

import math

import numpy as np

from .graph import Node
from .onnx_import import BATCH, BatchTimes
from .ops import api

HANDLERS: dict = {}
# inputs an op cannot do without (the default is 1); a callable takes the opset
MIN_INPUTS = {
    **{n: 2 for n in ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Greater", "Less",
                      "GreaterOrEqual", "LessOrEqual", "MatMul", "Gemm", "Conv", "ConvTranspose",
                      "Gather", "Expand", "Tile", "PRelu", "CastLike", "LayerNormalization")},
    "Where": 3, "BatchNormalization": 5, "InstanceNormalization": 3, "Range": 3,
    "Reshape": lambda opset: 1 if opset < 5 else 2, "Slice": lambda opset: 1 if opset < 10 else 3,
    "Pad": lambda opset: 1 if opset < 11 else 2, "Constant": 0,
}


def op(*names):
    def deco(fn):
        for n in names:
            HANDLERS[n] = fn
        return fn
    return deco


def _take(ctx, attrs: dict, defaults: dict, refuse: dict | None = None) -> dict:
    """Attributes with defaults; unknown ones, and values in `refuse`, are unsupported."""
    out = dict(defaults)
    for k, v in attrs.items():
        if k not in defaults:
            raise ctx.unsupported(f"attribute {k!r}")
        out[k] = v.decode() if isinstance(v, bytes) else v
    for k, bad in (refuse or {}).items():
        if out.get(k) in bad:
            raise ctx.unsupported(f"attribute {k}={out[k]!r}")
    return out


def _folded(*vs) -> bool:
    return all(v is None or not isinstance(v, Node) for v in vs)


def _any_node(vs) -> Node | None:
    return next((v for v in vs if isinstance(v, Node)), None)


def _ints(ctx, v, what: str, allow_batch: bool = False) -> list:
    if v is None:
        return None
    if isinstance(v, Node):
        raise ctx.unsupported(f"a computed (non-constant) {what}")
    arr = np.asarray(v).reshape(-1)
    out = []
    for a in arr.tolist():
        if a is BATCH and allow_batch:
            out.append(a)
        elif isinstance(a, (int, np.integer)) or (isinstance(a, bool)):
            out.append(int(a))
        else:
            raise ctx.error(f"{what} must be integers, got {a!r}")
    return out


def _axis(ctx, axis, nd: int) -> int:
    """An ONNX axis (negative counts from the end) checked against the rank."""
    if not isinstance(axis, (int, np.integer)) or not -nd <= axis < max(nd, 1) or nd == 0:
        raise ctx.error(f"axis {axis!r} is out of range for a rank-{nd} value")
    return int(axis) % nd


def _nodes(ctx, vs):
    like = _any_node(vs)
    return [None if v is None else ctx.node_of(v, like) for v in vs]


# -- element-wise ------------------------------------------------------------------------------

_NP_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": None, "Pow": np.power,
              "Equal": np.equal, "Greater": np.greater, "Less": np.less,
              "GreaterOrEqual": np.greater_equal, "LessOrEqual": np.less_equal}
_GN_BINARY = {"Add": api.add, "Sub": api.sub, "Mul": api.mul, "Div": api.div, "Pow": api.pow,
              "Equal": api.eq, "Greater": api.gt, "Less": api.lt, "GreaterOrEqual": api.ge,
              "LessOrEqual": api.le}


def _binary(name):
    def handler(ctx, ins, attrs):
        a, b = ins
        if ctx.opset < 7 and attrs:  # opsets 1-6: broadcasting is asked for, B aligned at axis
            at = _take(ctx, attrs, {"broadcast": 0, "axis": None, "consumed_inputs": None})
            b = _legacy_broadcast(ctx, a, b, at)
        else:
            _take(ctx, attrs, {})
        if name == "Pow" and isinstance(a, Node) and not isinstance(b, Node) \
                and np.asarray(b).dtype.kind in "iu":
            b = np.asarray(b).astype(a.dtype)  # a float base to an integer power
        if _folded(a, b):
            a, b = np.asarray(a), np.asarray(b)
            if name == "Div":
                if a.dtype.kind in "iu" and b.dtype.kind in "iu":
                    return [np.trunc(a / b).astype(np.result_type(a, b))]
                return [np.divide(a, b)]
            out = _NP_BINARY[name](a, b)
            return [out if out.dtype == object or name not in ("Add", "Sub", "Mul", "Pow")
                    else out.astype(np.result_type(a, b))]
        a, b = _nodes(ctx, [a, b])
        if name in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"):
            return [api.cast(_GN_BINARY[name](a, b), "bool")]
        if a.dtype.kind != "f" or b.dtype.kind != "f":
            raise ctx.unsupported(f"{name} on {a.dtype.name} and {b.dtype.name} values (graphnn "
                                  f"computes arithmetic on floats)")
        return [_GN_BINARY[name](a, b)]
    return handler


def _legacy_broadcast(ctx, a, b, at):
    """B reshaped so NumPy broadcasting lines it up with A from `axis` (opsets < 7)."""
    if not at["broadcast"]:
        return b
    na, nb = len(_shape_of(a)), len(_shape_of(b))
    axis = na - nb if at["axis"] is None else at["axis"] % na
    tail = na - axis - nb
    if tail < 0:
        raise ctx.error(f"axis {at['axis']} does not fit shapes {_shape_of(a)}, {_shape_of(b)}")
    if tail == 0:
        return b
    target = [None if d is BATCH else d for d in _shape_of(b)] + [1] * tail
    return _reshape_to(ctx, b, target)


for _n in _GN_BINARY:
    HANDLERS[_n] = _binary(_n)


def _unary(fn, np_fn=None, **defaults):
    def handler(ctx, ins, attrs):
        at = _take(ctx, attrs, defaults)
        x = ins[0]
        if not isinstance(x, Node):
            if np_fn is None:
                x = ctx.node_of(x)
            else:
                return [np_fn(np.asarray(x))]
        if x.dtype.kind != "f":
            raise ctx.unsupported(f"{x.dtype.name} input (graphnn computes this on floats)")
        return [fn(x, **at)]
    return handler


HANDLERS.update({
    "Neg": _unary(api.neg, np.negative), "Sqrt": _unary(api.sqrt), "Exp": _unary(api.exp),
    "Log": _unary(api.log), "Abs": _unary(api.abs, np.abs), "Relu": _unary(api.relu),
    "Sigmoid": _unary(api.sigmoid), "Tanh": _unary(api.tanh), "Softplus": _unary(api.softplus),
    "Erf": _unary(api.erf), "Sign": _unary(api.sign, np.sign),
    "Reciprocal": _unary(lambda x: 1.0 / x),
    "LeakyRelu": _unary(lambda x, alpha: api.leaky_relu(x, alpha=float(alpha)), alpha=0.01),
    "Elu": _unary(lambda x, alpha: api.elu(x, alpha=float(alpha)), alpha=1.0),
    "Selu": _unary(lambda x, alpha, gamma: float(gamma) * api.elu(x, alpha=float(alpha)),
                   alpha=1.67326319217681884765625, gamma=1.05070102214813232421875),
})


@op("Gelu")
def _gelu(ctx, ins, attrs):
    at = _take(ctx, attrs, {"approximate": "none"}, {"approximate": ()})
    x = ctx.node_of(ins[0])
    if at["approximate"] == "none":
        return [api.gelu(x)]
    if at["approximate"] == "tanh":
        return [0.5 * x * (1.0 + api.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))]
    raise ctx.unsupported(f"approximate={at['approximate']!r}")


@op("Clip")
def _clip(ctx, ins, attrs):
    if ctx.opset < 11:
        at = _take(ctx, attrs, {"min": -math.inf, "max": math.inf})
        lo, hi = at["min"], at["max"]
    else:
        _take(ctx, attrs, {})
        lo = ins[1] if len(ins) > 1 else None
        hi = ins[2] if len(ins) > 2 else None
    x = ctx.node_of(ins[0])
    if lo is not None and not (not isinstance(lo, Node) and np.isneginf(lo)):
        x = api.maximum(x, ctx.node_of(lo, x))
    if hi is not None and not (not isinstance(hi, Node) and np.isposinf(hi)):
        x = api.minimum(x, ctx.node_of(hi, x))
    return [x]


def _variadic(fn, np_fn):
    def handler(ctx, ins, attrs):
        _take(ctx, attrs, {})
        if not ins:
            raise ctx.error("needs at least one input")
        if _folded(*ins):
            out = np.asarray(ins[0])
            for v in ins[1:]:
                out = np_fn(out, np.asarray(v))
            return [out]
        xs = _nodes(ctx, ins)
        out = xs[0]
        for v in xs[1:]:
            out = fn(out, v)
        if len(xs) == 1:  # Sum of one: a value of its own (the output is named)
            out = api.identity(out)
        return [out]
    return handler


HANDLERS["Sum"] = _variadic(api.add, np.add)
HANDLERS["Max"] = _variadic(api.maximum, np.maximum)
HANDLERS["Min"] = _variadic(api.minimum, np.minimum)


@op("Where")
def _where(ctx, ins, attrs):
    _take(ctx, attrs, {})
    c, a, b = ins
    if _folded(c, a, b):
        return [np.where(np.asarray(c, dtype=bool), a, b)]
    like = _any_node([a, b])
    return [api.where(ctx.node_of(c), ctx.node_of(a, like), ctx.node_of(b, like))]


@op("Identity", "Dropout")
def _identity(ctx, ins, attrs):
    if ctx.node.op_type == "Identity":
        _take(ctx, attrs, {})
        return [ins[0]]
    legacy = ctx.opset < 7  # opsets 1-6: training unless is_test=1
    at = _take(ctx, attrs, {"seed": 0, "ratio": 0.5, "is_test": 0 if legacy else 1,
                            "consumed_inputs": None}, {"is_test": (0,)})
    del at
    if len(ins) > 2 and ins[2] is not None:
        if isinstance(ins[2], Node) or bool(np.asarray(ins[2])):
            raise ctx.unsupported("training_mode=True (graphnn imports inference graphs)")
    return [ins[0]]


@op("Cast")
def _cast(ctx, ins, attrs):
    from .onnx_import import _ONNX_DTYPES
    at = _take(ctx, attrs, {"to": 1, "saturate": 1, "round_mode": "up"})
    if at["to"] not in _ONNX_DTYPES:
        from .onnx_import import _type_name
        raise ctx.unsupported(f"cast to ONNX element type {_type_name(at['to'])}")
    dt = _ONNX_DTYPES[at["to"]]
    x = ins[0]
    if not isinstance(x, Node):
        arr = np.asarray(x)
        if arr.dtype == object and arr.size == 1 and isinstance(arr.item(), BatchTimes):
            if np.dtype(dt).kind != "f":
                return [arr]
            # an element count of the batch axis, as a float: a count node
            n = api.cast(api.count(ctx.batch_ref(), axis=0), dt)
            return [api.reshape(api.scale(n, arr.item().k), arr.shape)]
        if arr.dtype == object:
            if np.dtype(dt).kind in "iu":
                return [arr]
            raise ctx.error("a shape holding the batch dimension cast to floats")
        return [arr.astype(dt)]
    if x.dtype.kind == "f" and np.dtype(dt).kind in "iub":
        raise ctx.unsupported(f"casting float values to {dt}")
    return [api.cast(x, dt)]


@op("Constant")
def _constant(ctx, ins, attrs):
    if len(attrs) != 1:
        raise ctx.error(f"Constant needs exactly one value attribute, got {sorted(attrs)}")
    (k, v), = attrs.items()
    if k == "value":
        return [ctx.array(v)]
    if k == "value_float":
        return [np.array(v, dtype=np.float32)]
    if k == "value_floats":
        return [np.array(v, dtype=np.float32)]
    if k == "value_int":
        return [np.array(v, dtype=np.int64)]
    if k == "value_ints":
        return [np.array(v, dtype=np.int64)]
    raise ctx.unsupported(f"attribute {k!r}")


@op("ConstantOfShape")
def _constant_of_shape(ctx, ins, attrs):
    at = _take(ctx, attrs, {"value": None})
    shape = _ints(ctx, ins[0], "shape")
    if any(d < 0 for d in shape) or math.prod(shape) > (1 << 28):
        raise ctx.error(f"absurd shape {shape}")
    val = ctx.array(at["value"]) if at["value"] is not None else np.zeros(1, np.float32)
    return [np.full(shape, val.reshape(-1)[0], dtype=val.dtype)]


# -- shapes ------------------------------------------------------------------------------------

def _shape_of(v):
    if isinstance(v, Node):
        return tuple(BATCH if d is None else d for d in v.shape)
    return np.shape(v)


@op("Shape")
def _shape(ctx, ins, attrs):
    at = _take(ctx, attrs, {"start": 0, "end": None})
    s = list(_shape_of(ins[0]))
    s = s[at["start"]:at["end"]]
    return [np.array(s, dtype=object if BATCH in s else np.int64)]


@op("Size")
def _size(ctx, ins, attrs):
    _take(ctx, attrs, {})
    s = _shape_of(ins[0])
    if BATCH in s:
        raise ctx.unsupported("the size of a value with a batch axis")
    return [np.array(math.prod(s), dtype=np.int64)]


@op("Range")
def _range(ctx, ins, attrs):
    _take(ctx, attrs, {})
    if not _folded(*ins):
        raise ctx.unsupported("a computed range")
    start, limit, delta = (np.asarray(v).item() for v in ins)
    if delta == 0 or abs((limit - start) / delta) > (1 << 28):
        raise ctx.error(f"absurd range({start}, {limit}, {delta})")
    return [np.arange(start, limit, delta, dtype=np.asarray(ins[0]).dtype)]


def _fix_shape(ctx, x_shape, target, allowzero):
    out = []
    for k, d in enumerate(target):
        if d is BATCH:
            out.append(None)
        elif d == 0 and not allowzero:
            if k >= len(x_shape):
                raise ctx.error(f"0 at axis {k} copies a dimension {x_shape} does not have")
            out.append(x_shape[k])
        else:
            out.append(d)
    return out


def _reshape_to(ctx, x, target):
    """graphnn reshape; -1 resolved here (with the batch axis kept as None)."""
    if target.count(-1) > 1 or any(d is not None and d < -1 for d in target):
        raise ctx.error(f"bad reshape target {target}")
    if isinstance(x, Node):
        fixed = [d for d in x.shape if d is not None]
        known = math.prod(d for d in target if d is not None and d != -1)
        if -1 in target:
            if None in x.shape and None not in target:
                if known != math.prod(fixed):
                    raise ctx.unsupported(f"reshaping {x.shape} into {target}, which merges the "
                                          f"batch axis with others (export with a fixed batch "
                                          f"size)")
                target = [None if d == -1 else d for d in target]
            else:
                if known == 0 or math.prod(fixed) % known:
                    raise ctx.error(f"cannot reshape {x.shape} into {target}")
                target = [math.prod(fixed) // known if d == -1 else d for d in target]
        return api.reshape(x, tuple(target))
    arr = np.asarray(x)
    return np.reshape(arr, tuple(-1 if d is None else d for d in target))


@op("Reshape")
def _reshape(ctx, ins, attrs):
    at = _take(ctx, attrs, {"allowzero": 0, "shape": None})
    target = at["shape"] if ctx.opset < 5 else _ints(ctx, ins[1], "shape", allow_batch=True)
    target = _fix_shape(ctx, _shape_of(ins[0]), list(target), at["allowzero"])
    target = [None if d is BATCH else d for d in target]
    return [_reshape_to(ctx, ins[0], target)]


@op("Flatten")
def _flatten(ctx, ins, attrs):
    at = _take(ctx, attrs, {"axis": 1})
    s = [None if d is BATCH else d for d in _shape_of(ins[0])]
    ax = at["axis"] + len(s) if at["axis"] < 0 else at["axis"]
    if not 0 <= ax <= len(s):
        raise ctx.error(f"axis {at['axis']} out of range for {tuple(s)}")
    def prod(ds):
        return None if None in ds else math.prod(ds)
    lead, rest = prod(s[:ax]), prod(s[ax:])
    if (lead is None and len(s[:ax]) > 1) or rest is None:
        raise ctx.unsupported(f"flattening the batch axis of {tuple(s)} into others")
    return [_reshape_to(ctx, ins[0], [lead, rest])]


@op("Transpose")
def _transpose(ctx, ins, attrs):
    x = ins[0]
    nd = len(_shape_of(x))
    at = _take(ctx, attrs, {"perm": list(range(nd))[::-1]})
    perm = tuple(int(p) for p in at["perm"])
    if not isinstance(x, Node):
        return [np.transpose(np.asarray(x), perm)]
    return [api.transpose(x, perm)]


def _axes_in(ctx, ins, attrs, since, name="axes"):
    """Axes from the attribute (opset < since) or the second input."""
    if ctx.opset < since:
        return attrs.pop(name, None)
    return _ints(ctx, ins[1] if len(ins) > 1 else None, name)


@op("Squeeze")
def _squeeze(ctx, ins, attrs):
    attrs = dict(attrs)
    axes = _axes_in(ctx, ins, attrs, 13)
    _take(ctx, attrs, {})
    x = ins[0]
    s = _shape_of(x)
    if axes is None:
        axes = [k for k, d in enumerate(s) if d == 1]
    axes = [_axis(ctx, a, len(s)) for a in axes]
    if any(s[a] != 1 for a in axes):
        raise ctx.error(f"cannot squeeze axes {axes} of {s}")
    target = [None if d is BATCH else d for k, d in enumerate(s) if k not in axes]
    return [_reshape_to(ctx, x, target)]


@op("Unsqueeze")
def _unsqueeze(ctx, ins, attrs):
    attrs = dict(attrs)
    axes = _axes_in(ctx, ins, attrs, 13)
    _take(ctx, attrs, {})
    x = ins[0]
    s = [None if d is BATCH else d for d in _shape_of(x)]
    nd = len(s) + len(axes)
    axes = sorted(_axis(ctx, a, nd) for a in axes)
    for a in axes:
        s.insert(a, 1)
    if not isinstance(x, Node):
        return [np.asarray(x).reshape([1 if d is None else d for d in s]) if np.asarray(x).dtype != object
                else np.expand_dims(np.asarray(x), tuple(axes))]
    return [_reshape_to(ctx, x, s)]


@op("Concat")
def _concat(ctx, ins, attrs):
    at = _take(ctx, attrs, {"axis": None})
    if at["axis"] is None:
        raise ctx.error("Concat needs an axis")
    if _folded(*ins):
        arrs = [np.asarray(v) for v in ins]
        dt = object if any(a.dtype == object for a in arrs) else None
        return [np.concatenate([a.astype(object) if dt else a for a in arrs], axis=at["axis"])]
    return [api.concat(_nodes(ctx, ins), axis=at["axis"])]


@op("Split")
def _split(ctx, ins, attrs):
    attrs = dict(attrs)
    at = _take(ctx, attrs, {"axis": 0, "split": None, "num_outputs": None})
    x = ins[0]
    s = _shape_of(x)
    ax = _axis(ctx, at["axis"], len(s))
    size = s[ax]
    if size is BATCH:
        raise ctx.unsupported("splitting the batch axis")
    sizes = at["split"] if ctx.opset < 13 else _ints(ctx, ins[1] if len(ins) > 1 else None, "split")
    n_out = len(ctx.node.output)
    if sizes is None:
        n = at["num_outputs"] or n_out
        chunk = -(-size // n)
        sizes = [min(chunk, size - k * chunk) for k in range(n)]
    if sum(sizes) != size or any(z < 0 for z in sizes):
        raise ctx.error(f"split sizes {list(sizes)} do not add up to axis {ax} of {s}")
    outs, start = [], 0
    for z in sizes:
        key = (slice(None),) * ax + (slice(start, start + z),)
        outs.append(np.asarray(x)[key] if not isinstance(x, Node) else api.identity(api.index(x, key)))
        start += z
    return outs


@op("Slice")
def _slice(ctx, ins, attrs):
    x = ins[0]
    s = _shape_of(x)
    if ctx.opset < 10:
        at = _take(ctx, attrs, {"starts": None, "ends": None, "axes": None})
        starts, ends, axes, steps = at["starts"], at["ends"], at["axes"], None
    else:
        _take(ctx, attrs, {})
        starts, ends = _ints(ctx, ins[1], "starts"), _ints(ctx, ins[2], "ends")
        axes = _ints(ctx, ins[3], "axes") if len(ins) > 3 else None
        steps = _ints(ctx, ins[4], "steps") if len(ins) > 4 else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    key = [slice(None)] * len(s)
    for a, b, e, st in zip(axes, starts, ends, steps):
        a %= len(s)
        if st == 0:
            raise ctx.error("slice step 0")
        d = s[a]
        if d is BATCH:
            if (b, st) == (0, 1) and e >= (1 << 62) or (st == -1 and b >= (1 << 62) and e <= -(1 << 62)):
                continue
            raise ctx.unsupported(f"slicing the batch axis [{b}:{e}:{st}]")
        # clamp as ONNX does (Python's slice clamps the same way once ends are bounded)
        b = max(-d - 1, min(d, b))
        e = max(-d - 1, min(d, e))
        key[a] = slice(b, e if not (st < 0 and e < -d) else None, st)
    if not isinstance(x, Node):
        return [np.asarray(x)[tuple(key)]]
    out = api.index(x, tuple(key))
    return [api.identity(out)]


@op("Gather")
def _gather(ctx, ins, attrs):
    at = _take(ctx, attrs, {"axis": 0})
    x, idx = ins
    s = _shape_of(x)
    ax = _axis(ctx, at["axis"], len(s))
    if _folded(x, idx):
        return [np.take(np.asarray(x), np.asarray(idx).astype(np.int64), axis=ax)]
    if not isinstance(idx, Node):
        ii = np.asarray(idx).astype(np.int64)
        d = s[ax]
        if d is not BATCH and np.any((ii < -d) | (ii >= d)):
            raise ctx.error(f"indices out of range for axis {ax} of size {d}")
        if ii.ndim == 0:
            return [api.index(x, (slice(None),) * ax + (int(ii),))]
    x, idx = ctx.node_of(x), ctx.node_of(idx)
    return [api.apply("take", [x, idx], axis=ax)]


@op("Expand")
def _expand(ctx, ins, attrs):
    _take(ctx, attrs, {})
    x = ins[0]
    target = _ints(ctx, ins[1], "shape", allow_batch=True)
    if not isinstance(x, Node):
        if BATCH not in target:
            arr = np.asarray(x)
            return [np.broadcast_to(arr, np.broadcast_shapes(arr.shape, tuple(target))).copy()]
        x = ctx.node_of(x)
    xs = x.shape
    nd = max(len(xs), len(target))
    xs2 = (1,) * (nd - len(xs)) + tuple(xs)
    t2 = (1,) * (nd - len(target)) + tuple(target)
    out = []
    for a, b in zip(xs2, t2):
        if a is None or b is BATCH:
            if a not in (None, 1) or b not in (1, BATCH):
                raise ctx.unsupported(f"expanding {xs} to {target}")
            out.append(None)
        elif a == 1 or b == 1 or a == b:
            out.append(max(a, b))
        else:
            raise ctx.error(f"cannot expand {xs} to {target}")
    if out.count(None) > 1:
        raise ctx.unsupported(f"expanding {xs} to {target} (two batch axes)")
    if tuple(out) == tuple(xs):
        return [api.identity(x)]
    y = api.reshape(x, xs2)
    if None not in out:
        return [api.broadcast_to(y, tuple(out))]
    # to the batch size: broadcast like a zero-valued node of the target shape, made
    # from any batched node (every batch axis of a program has the one size B)
    ref = ctx.batch_ref()
    lead = api.index(ref, (slice(None),) + (0,) * (ref.ndim - 1))  # (B,)
    b_ax = out.index(None)
    zeros = api.reshape(api.zeros_like(lead), tuple(None if k == b_ax else 1 for k in range(nd)))
    fixed = tuple(1 if d is None else d for d in out)
    if any(d != 1 for d in fixed):
        zeros = zeros + ctx.g.const(None, np.zeros(fixed, dtype=x.dtype))
    y = api.broadcast_like(y, zeros)
    return [y]


# -- reductions ------------------------------------------------------------------------------

def _reduce(fn, np_fn, since):
    def handler(ctx, ins, attrs):
        attrs = dict(attrs)
        axes = _axes_in(ctx, ins, attrs, since)
        at = _take(ctx, attrs, {"keepdims": 1, "noop_with_empty_axes": 0})
        x = ins[0]
        if not axes:
            if at["noop_with_empty_axes"]:
                return [api.identity(ctx.node_of(x))]
            axes = None
        axes = None if axes is None else tuple(axes)
        shape = _shape_of(x)
        if fn is not api.sum and 0 in [shape[a] for a in (range(len(shape)) if axes is None else axes)]:
            raise ctx.unsupported("a reduction over an empty axis")
        if not isinstance(x, Node):
            return [np_fn(np.asarray(x), axis=axes, keepdims=bool(at["keepdims"]))]
        return [fn(x, axis=axes, keepdims=bool(at["keepdims"]))]
    return handler


HANDLERS["ReduceMean"] = _reduce(api.mean, np.mean, 18)
HANDLERS["ReduceSum"] = _reduce(api.sum, np.sum, 13)
HANDLERS["ReduceMax"] = _reduce(api.max, np.max, 18)


# -- softmax ----------------------------------------------------------------------------------

def _softmax(fn):
    def handler(ctx, ins, attrs):
        x = ctx.node_of(ins[0])
        at = _take(ctx, attrs, {"axis": -1 if ctx.opset >= 13 else 1})
        ax = _axis(ctx, at["axis"], x.ndim)
        if ctx.opset >= 13 or ax == x.ndim - 1:
            return [fn(x, axis=ax)]
        # opsets < 13: softmax over all axes from `axis` on, as one row
        rest = x.shape[ax:]
        if None in rest or (None in x.shape[:ax] and ax > 1):
            raise ctx.unsupported(f"axis={at['axis']} on {x.shape} with a batch axis")
        lead = None if None in x.shape[:ax] else math.prod(x.shape[:ax])
        y = fn(api.reshape(x, (lead, math.prod(rest))), axis=1)
        return [api.reshape(y, x.shape)]
    return handler


HANDLERS["Softmax"] = _softmax(api.softmax)
HANDLERS["LogSoftmax"] = _softmax(api.log_softmax)


# -- linear algebra ----------------------------------------------------------------------------

@op("MatMul")
def _matmul(ctx, ins, attrs):
    _take(ctx, attrs, {})
    a, b = _nodes(ctx, ins)
    return [api.matmul(a, b)]


@op("Gemm")
def _gemm(ctx, ins, attrs):
    at = _take(ctx, attrs, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, "broadcast": 1})
    a, b = _nodes(ctx, ins[:2])
    if at["transA"]:
        a = api.transpose(a)
    if at["transB"]:
        b = api.transpose(b)
    y = api.scale(api.matmul(a, b), float(at["alpha"]))
    if len(ins) > 2 and ins[2] is not None:
        c = ctx.node_of(ins[2], y)
        y = y + api.scale(c, float(at["beta"]))
    return [y]




@op("CastLike")
def _cast_like(ctx, ins, attrs):
    from .onnx_import import _ONNX_DTYPES
    like = ins[1]
    dt = like.dtype if isinstance(like, Node) else np.asarray(like).dtype
    codes = {v: k for k, v in _ONNX_DTYPES.items()}
    if dt.name not in codes:
        raise ctx.unsupported(f"casting like a {dt.name} value")
    attrs = dict(attrs)
    attrs["to"] = codes[dt.name]
    return _cast(ctx, ins[:1], attrs)


@op("ReduceProd")
def _reduce_prod(ctx, ins, attrs):
    """Folded only: element counts (of shapes), the batch size among them."""
    attrs = dict(attrs)
    axes = _axes_in(ctx, ins, attrs, 18)
    at = _take(ctx, attrs, {"keepdims": 1, "noop_with_empty_axes": 0})
    x = ins[0]
    if isinstance(x, Node):
        raise ctx.unsupported("ReduceProd of a computed value (graphnn folds it for shapes only)")
    arr = np.asarray(x)
    if arr.dtype != object:
        if not axes and at["noop_with_empty_axes"]:
            return [arr]
        return [np.prod(arr, axis=None if not axes else tuple(axes), keepdims=bool(at["keepdims"]))]
    if arr.ndim != 1 or (axes and list(axes) not in ([0], [-1])):
        raise ctx.unsupported("ReduceProd of a batched shape other than a whole 1-d shape")
    batches = [v for v in arr.tolist() if v is BATCH]
    k = math.prod(int(v) for v in arr.tolist() if v is not BATCH)
    if len(batches) != 1:
        raise ctx.unsupported("ReduceProd over two batch dimensions")
    out = np.empty((1,) if at["keepdims"] else (), dtype=object)
    out[...] = BatchTimes(k)
    return [out]




@op("PRelu")
def _prelu(ctx, ins, attrs):
    _take(ctx, attrs, {"consumed_inputs": None})
    x, slope = ctx.node_of(ins[0]), ctx.node_of(ins[1], ctx.node_of(ins[0]))
    if ctx.opset < 7 and slope.size not in (1, None) and x.ndim >= 2 and slope.ndim == 1:
        slope = api.reshape(slope, slope.shape + (1,) * (x.ndim - 2))  # one slope per channel
    return [api.prelu(x, slope)]


@op("Softsign")
def _softsign(ctx, ins, attrs):
    _take(ctx, attrs, {})
    x = ctx.node_of(ins[0])
    return [x / (1.0 + api.abs(x))]


@op("Tile")
def _tile(ctx, ins, attrs):
    _take(ctx, attrs, {})
    reps = _ints(ctx, ins[1], "repeats")
    x = ins[0]
    if not isinstance(x, Node):
        return [np.tile(np.asarray(x), reps)]
    if len(reps) != x.ndim or any(r < 0 for r in reps) or math.prod(reps) > 4096:
        raise ctx.error(f"repeats {reps} for {x.shape}")
    for ax, r in enumerate(reps):
        if r != 1:
            if x.shape[ax] is None:
                raise ctx.unsupported("tiling the batch axis")
            x = api.concat([x] * r, axis=ax)
    return [api.identity(x)]


from . import onnx_ops_nn  # noqa: E402,F401  (registers the handlers there)
