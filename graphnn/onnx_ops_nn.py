"""The ONNX op table, continued: convolution, pooling and normalization (see
onnx_ops.py for how handlers work). Imported by onnx_ops, which it extends."""
from __future__ import annotations

import math

import numpy as np

from .graph import Node
from .onnx_ops import _axis, _ints, _nodes, _take, op
from .ops import api, pooling


# -- convolution and pooling -----------------------------------------------------------------

def _auto_pads(ctx, at, sizes, kernel, strides, dilations):
    k = len(kernel)
    mode = at.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        pads = list(at.get("pads") or [0] * (2 * k))
        if len(pads) != 2 * k:
            raise ctx.error(f"pads {pads} must have {2 * k} entries")
        return pads
    if mode == "VALID":
        return [0] * (2 * k)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.unsupported(f"auto_pad={mode!r}")
    begins, ends = [], []
    for d, n, s, dil in zip(sizes, kernel, strides, dilations):
        out = -(-d // s)
        total = max(0, (out - 1) * s + (n - 1) * dil + 1 - d)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _spatial(ctx, x, at, kernel):
    k = len(kernel)
    sizes = x.shape[-k:]
    if None in sizes:
        raise ctx.unsupported("a batch axis among the spatial axes")
    strides = list(at.get("strides") or [1] * k)
    dilations = list(at.get("dilations") or [1] * k)
    return strides, dilations, _auto_pads(ctx, at, sizes, kernel, strides, dilations)


@op("Conv")
def _conv(ctx, ins, attrs):
    at = _take(ctx, attrs, {"auto_pad": "NOTSET", "dilations": None, "group": 1,
                            "kernel_shape": None, "pads": None, "strides": None})
    x, w = _nodes(ctx, ins[:2])
    kernel = list(w.shape[2:])
    if at["kernel_shape"] is not None and list(at["kernel_shape"]) != kernel:
        raise ctx.error(f"kernel_shape {at['kernel_shape']} differs from the weights {w.shape}")
    strides, dilations, pads = _spatial(ctx, x, at, kernel)
    y = pooling.conv(x, w, stride=strides, dilation=dilations, pads=pads, groups=at["group"])
    if len(ins) > 2 and ins[2] is not None:
        b = ctx.node_of(ins[2], y)
        y = y + api.reshape(b, b.shape + (1,) * len(kernel))
    return [y]


@op("MaxPool")
def _max_pool(ctx, ins, attrs):
    at = _take(ctx, attrs, {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                            "kernel_shape": None, "pads": None, "storage_order": 0,
                            "strides": None}, {"storage_order": (1,)})
    x = ctx.node_of(ins[0])
    kernel = list(at["kernel_shape"])
    strides, dilations, pads = _spatial(ctx, x, at, kernel)
    return [pooling.max_pool(x, kernel, strides, dilations, pads, ceil_mode=bool(at["ceil_mode"]))]


@op("AveragePool")
def _avg_pool(ctx, ins, attrs):
    at = _take(ctx, attrs, {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0,
                            "dilations": None, "kernel_shape": None, "pads": None,
                            "strides": None})
    x = ctx.node_of(ins[0])
    kernel = list(at["kernel_shape"])
    strides, dilations, pads = _spatial(ctx, x, at, kernel)
    if at["auto_pad"] in ("SAME_UPPER", "SAME_LOWER") and at["count_include_pad"]:
        raise ctx.unsupported("auto_pad SAME with count_include_pad=1")
    return [pooling.avg_pool(x, kernel, strides, dilations, pads, ceil_mode=bool(at["ceil_mode"]),
                             count_include_pad=bool(at["count_include_pad"]))]


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, ins, attrs):
    _take(ctx, attrs, {})
    x = ctx.node_of(ins[0])
    axes = tuple(range(2, x.ndim))
    fn = api.mean if ctx.node.op_type == "GlobalAveragePool" else api.max
    return [fn(x, axis=axes, keepdims=True)]


@op("Pad")
def _pad(ctx, ins, attrs):
    x = ctx.node_of(ins[0])
    if ctx.opset < 11:
        at = _take(ctx, attrs, {"mode": "constant", "pads": None, "value": 0.0})
        pads, value, axes = list(at["pads"]), at["value"], None
    else:
        at = _take(ctx, attrs, {"mode": "constant"})
        pads = _ints(ctx, ins[1], "pads")
        value = float(np.asarray(ins[2]).reshape(-1)[0]) if len(ins) > 2 and ins[2] is not None \
            and not isinstance(ins[2], Node) else 0.0
        axes = _ints(ctx, ins[3], "axes") if len(ins) > 3 and ins[3] is not None else None
    if at["mode"] != "constant":
        raise ctx.unsupported(f"mode={at['mode']!r}")
    nd = x.ndim
    if axes is not None:
        full = [0] * (2 * nd)
        for k, a in enumerate(axes):
            a = _axis(ctx, a, nd)
            full[a], full[a + nd] = pads[k], pads[k + len(axes)]
        pads = full
    if len(pads) != 2 * nd:
        raise ctx.error(f"pads {pads} for a {nd}-d input")
    crop = [slice(-b if b < 0 else None, e if e < 0 else None) for b, e in zip(pads[:nd], pads[nd:])]
    y = pooling.pad(x, [max(0, p) for p in pads], value=value)
    if len(ins) > 2 and isinstance(ins[2], Node):  # a computed value: added where padded
        v = api.reshape(ins[2], ())
        if None in x.shape:
            raise ctx.unsupported("a computed pad value on a batched input")
        mask = np.pad(np.zeros(x.shape), [(max(0, b), max(0, e)) for b, e in
                                          zip(pads[:nd], pads[nd:])], constant_values=1.0)
        y = y + v * ctx.g.const(None, mask.astype(x.dtype))
    if any(p < 0 for p in pads):
        y = api.index(y, tuple(crop))
    return [api.identity(y)]


# -- normalization ------------------------------------------------------------------------------

def _per_channel(v: Node, nd: int) -> Node:
    return api.reshape(v, v.shape + (1,) * (nd - 2))


@op("BatchNormalization")
def _batch_norm(ctx, ins, attrs):
    at = _take(ctx, attrs, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0, "spatial": 1,
                            "is_test": 1, "consumed_inputs": None},
               {"training_mode": (1,), "spatial": (0,), "is_test": (0,)})
    x, scale, b, mean, var = _nodes(ctx, ins[:5])
    nd = x.ndim
    inv = api.sqrt(_per_channel(var, nd) + float(at["epsilon"]))
    y = (x - _per_channel(mean, nd)) / inv * _per_channel(scale, nd) + _per_channel(b, nd)
    return [y]


@op("LayerNormalization")
def _layer_norm(ctx, ins, attrs):
    at = _take(ctx, attrs, {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
    x = ctx.node_of(ins[0])
    ax = _axis(ctx, at["axis"], x.ndim)
    axes = tuple(range(ax, x.ndim))
    mu = api.mean(x, axis=axes, keepdims=True)
    d = x - mu
    var = api.mean(d * d, axis=axes, keepdims=True)
    inv = 1.0 / api.sqrt(var + float(at["epsilon"]))
    y = d * inv * ctx.node_of(ins[1], x)
    if len(ins) > 2 and ins[2] is not None:
        y = y + ctx.node_of(ins[2], x)
    return [y, mu, inv]


@op("LRN")
def _lrn(ctx, ins, attrs):
    at = _take(ctx, attrs, {"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": None})
    x = ctx.node_of(ins[0])
    n = int(at["size"])
    nd = x.ndim
    to_last = (0,) + tuple(range(2, nd)) + (1,)
    sq = api.transpose(x * x, to_last)
    sq = pooling.pad(sq, (0,) * (nd - 1) + ((n - 1) // 2,) + (0,) * (nd - 1) + (n - 1 - (n - 1) // 2,))
    s = api.sum(api.apply("windows", [sq], kernel=(n,), stride=(1,), dilation=(1,)), axis=-1)
    s = api.transpose(s, tuple(int(i) for i in np.argsort(to_last)))
    return [x / (float(at["bias"]) + float(at["alpha"]) / n * s) ** float(at["beta"])]


def _zeros(ctx, shape, dtype) -> Node:
    """A zero-valued node of `shape` (None: the batch axis), for ops that take a shape."""
    if None not in shape:
        return ctx.g.const(None, np.zeros(shape, dtype=dtype))
    ref = ctx.batch_ref()
    lead = api.index(ref, (slice(None),) + (0,) * (ref.ndim - 1))
    b_ax = shape.index(None)
    z = api.reshape(api.cast(api.zeros_like(lead), dtype),
                    tuple(None if k == b_ax else 1 for k in range(len(shape))))
    if any(d not in (None, 1) for d in shape):
        z = z + ctx.g.const(None, np.zeros(tuple(1 if d is None else d for d in shape), dtype))
    return z


@op("ConvTranspose")
def _conv_transpose(ctx, ins, attrs):
    """The adjoint of Conv: every input position scatters x * w into the output
    (a matmul, then windows_adjoint), cropped by the pads."""
    at = _take(ctx, attrs, {"auto_pad": "NOTSET", "dilations": None, "group": 1,
                            "kernel_shape": None, "output_padding": None, "output_shape": None,
                            "pads": None, "strides": None})
    x, w = _nodes(ctx, ins[:2])
    k = w.ndim - 2
    kernel = list(w.shape[2:])
    groups = at["group"]
    n, cin = x.shape[0], x.shape[1]
    if cin != w.shape[0] or cin % groups or x.ndim != k + 2:
        raise ctx.error(f"x {x.shape} and w {w.shape} do not fit group={groups}")
    strides = list(at["strides"] or [1] * k)
    dil = list(at["dilations"] or [1] * k)
    opad = list(at["output_padding"] or [0] * k)
    ins_sp = x.shape[2:]
    if None in ins_sp:
        raise ctx.unsupported("a batch axis among the spatial axes")
    full = [(o - 1) * s + (kk - 1) * d + 1 + p for o, s, kk, d, p in zip(ins_sp, strides, kernel, dil, opad)]
    if at["output_shape"] is not None:
        want = list(at["output_shape"])[-k:]
        total = [f - o for f, o in zip(full, want)]  # < 0: zeros added (pads < 0)
        upper = at["auto_pad"] == "SAME_UPPER"
        pads = [t // 2 if upper else t - t // 2 for t in total] + \
               [t - t // 2 if upper else t // 2 for t in total]
    elif at["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        total = [f - o * s for f, o, s in zip(full, ins_sp, strides)]
        upper = at["auto_pad"] == "SAME_UPPER"
        pads = [t // 2 if upper else t - t // 2 for t in total] + \
               [t - t // 2 if upper else t // 2 for t in total]
    elif at["auto_pad"] in ("NOTSET", "VALID", ""):
        pads = list(at["pads"] or [0] * (2 * k)) if at["auto_pad"] != "VALID" else [0] * (2 * k)
    else:
        raise ctx.unsupported(f"auto_pad={at['auto_pad']!r}")
    if any(p >= s for p, s in zip(opad, strides)) or (at["output_shape"] is None and any(
            p < 0 for p in pads)):
        raise ctx.error(f"output_padding {opad} must be < strides {strides}; pads {pads} >= 0")
    cig, cog, kp = cin // groups, w.shape[1], math.prod(kernel)
    # (N, Cin, O...) -> (N, O..., G, 1, cig) @ (G, cig, cog * kp) -> (N, O..., G, cog, K...)
    xt = api.transpose(x, (0,) + tuple(range(2, 2 + k)) + (1,))
    xt = api.reshape(xt, (n,) + tuple(ins_sp) + (groups, 1, cig))
    wg = api.reshape(w, (groups, cig, cog * kp))
    cols = api.reshape(api.matmul(xt, wg), (n,) + tuple(ins_sp) + (groups * cog,) + tuple(kernel))
    perm = (0, k + 1) + tuple(range(1, k + 1)) + tuple(range(k + 2, 2 * k + 2))
    cols = api.transpose(cols, perm)                                  # (N, Cout, O..., K...)
    like = _zeros(ctx, (n, groups * cog) + tuple(full), x.dtype)
    y = api.apply("windows_adjoint", [cols, like], kernel=tuple(kernel), stride=tuple(strides),
                  dilation=tuple(dil))
    if any(p < 0 for p in pads):  # an output_shape beyond the full output: zeros after
        y = pooling.pad(y, [0, 0] + [max(0, -p) for p in pads[:k]] + [0, 0] +
                        [max(0, -p) for p in pads[k:]])
        full = [f + max(0, -b) + max(0, -e) for f, b, e in zip(full, pads[:k], pads[k:])]
        pads = [max(0, p) for p in pads]
    if any(pads):
        y = api.index(y, (slice(None), slice(None)) + tuple(
            slice(b, f - e) for b, e, f in zip(pads[:k], pads[k:], full)))
    if len(ins) > 2 and ins[2] is not None:
        b = ctx.node_of(ins[2], y)
        y = y + api.reshape(b, b.shape + (1,) * k)
    return [y]


@op("InstanceNormalization")
def _instance_norm(ctx, ins, attrs):
    at = _take(ctx, attrs, {"epsilon": 1e-5, "consumed_inputs": None})
    x = ctx.node_of(ins[0])
    scale, b = ctx.node_of(ins[1], x), ctx.node_of(ins[2], x)
    axes = tuple(range(2, x.ndim))
    mu = api.mean(x, axis=axes, keepdims=True)
    d = x - mu
    var = api.mean(d * d, axis=axes, keepdims=True)
    y = d / api.sqrt(var + float(at["epsilon"]))
    return [y * _per_channel(scale, x.ndim) + _per_channel(b, x.ndim)]
