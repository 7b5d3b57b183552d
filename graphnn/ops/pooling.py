"""Pooling, padding and general convolution, built from the `pad` and `windows` ops
(graphnn/ops/window.py) and the reductions: no new derivative rules here.

Spatial axes are the trailing `len(kernel)` axes of x (N, C, *S); pads are ONNX's
(all begins, then all ends, over the spatial axes).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import ShapeError
from ..graph import Node
from . import window  # noqa: F401  (declares pad, windows, windows_adjoint)
from . import gather  # noqa: F401  (declares take, take_adjoint)
from .runtime import _windows


def _tup(v, k: int, what: str) -> tuple:
    if v is None:
        return None
    if isinstance(v, int):
        return (v,) * k
    v = tuple(int(a) for a in v)
    if len(v) != k:
        raise ShapeError(f"{what} {v} must have {k} entries (one per spatial axis)")
    return v


def pad(x: Node, pads: Sequence[int], value: float = 0.0, name=None) -> Node:
    """x surrounded by `value`; pads has all begins then all ends, one pair per axis of x."""
    from .api import apply
    pads = tuple(int(p) for p in pads)
    if not any(pads):
        return x
    return apply("pad", [x], name=name, pads=pads, value=float(value))


def _spatial_pads(x: Node, pads, k: int) -> tuple:
    """Spatial (begins + ends) pads as pads over every axis of x."""
    lead = (0,) * (x.ndim - k)
    return lead + tuple(pads[:k]) + lead + tuple(pads[k:])


def _ceil_extra(sizes, kernel, stride, dilation, pads, ceil_mode):
    """Extra end padding that ceil_mode adds (windows that start inside the input or
    its begin padding, as ONNX and torch count them)."""
    k = len(kernel)
    extra = []
    for i in range(k):
        span = (kernel[i] - 1) * dilation[i] + 1
        total = sizes[i] + pads[i] + pads[i + k]
        if not ceil_mode or total < span:
            extra.append(0)
            continue
        out = -(-(total - span) // stride[i]) + 1
        if (out - 1) * stride[i] >= sizes[i] + pads[i]:
            out -= 1
        extra.append(max(0, (out - 1) * stride[i] + span - total))
    return tuple(extra)


def _pool_args(x, kernel, stride, dilation, pads):
    kernel = tuple(int(a) for a in kernel)
    k = len(kernel)
    if x.ndim < k + 1:
        raise ShapeError(f"pooling {x.name!r}: {k}-d kernel {kernel} on {x.shape}")
    stride = _tup(stride, k, "stride") or kernel
    dilation = _tup(dilation, k, "dilation") or (1,) * k
    pads = tuple(int(p) for p in pads) if pads is not None else (0,) * (2 * k)
    if len(pads) != 2 * k:
        raise ShapeError(f"pooling {x.name!r}: pads {pads} must have {2 * k} entries")
    return kernel, stride, dilation, pads


def max_pool(x: Node, kernel: Sequence[int], stride=None, dilation=None, pads=None,
             ceil_mode: bool = False, name=None) -> Node:
    """Max over sliding windows of the trailing len(kernel) axes (padding never wins)."""
    from .api import apply, max as amax
    kernel, stride, dilation, pads = _pool_args(x, kernel, stride, dilation, pads)
    k = len(kernel)
    extra = _ceil_extra(x.shape[-k:], kernel, stride, dilation, pads, ceil_mode)
    ends = tuple(p + e for p, e in zip(pads[k:], extra))
    xp = pad(x, _spatial_pads(x, pads[:k] + ends, k), value=-math.inf)
    w = apply("windows", [xp], kernel=kernel, stride=stride, dilation=dilation)
    return amax(w, axis=tuple(range(w.ndim - k, w.ndim)), name=name)


def avg_pool(x: Node, kernel: Sequence[int], stride=None, dilation=None, pads=None,
             ceil_mode: bool = False, count_include_pad: bool = False, name=None) -> Node:
    """Mean over sliding windows; padded elements count only with count_include_pad
    (positions ceil_mode adds never count, as in torch)."""
    from .api import apply, mean, sum as asum
    kernel, stride, dilation, pads = _pool_args(x, kernel, stride, dilation, pads)
    k = len(kernel)
    sizes = x.shape[-k:]
    extra = _ceil_extra(sizes, kernel, stride, dilation, pads, ceil_mode)
    ends = tuple(p + e for p, e in zip(pads[k:], extra))
    xp = pad(x, _spatial_pads(x, pads[:k] + ends, k), value=0.0)
    w = apply("windows", [xp], kernel=kernel, stride=stride, dilation=dilation)
    axes = tuple(range(w.ndim - k, w.ndim))
    # how many real (or counted padded) elements each window holds: a constant
    real = np.ones(sizes)
    if count_include_pad:
        real = np.pad(real, tuple(zip(pads[:k], pads[k:])), constant_values=1.0)
        real = np.pad(real, tuple((0, e) for e in extra))
    else:
        real = np.pad(real, tuple(zip(pads[:k], ends)))
    counts = _windows(real, kernel, stride, dilation).sum(axis=tuple(range(k, 2 * k)))
    if np.all(counts == np.prod(kernel)):
        return mean(w, axis=axes, name=name)
    s = asum(w, axis=axes)
    return apply("div", [s, x.graph.const(None, counts.astype(x.dtype))], name=name)


def conv(x: Node, w: Node, stride=1, dilation=1, pads=None, groups: int = 1,
         name=None) -> Node:
    """Cross-correlation of x (N, C, *S) with w (O, C/groups, *K), as ONNX Conv and
    torch's convNd: strides, dilations, (asymmetric) pads and groups.

    The plain 2-D case is the conv2d op; the others are pad + windows + one matmul
    (per group, as a batched matmul)."""
    from .api import apply, conv1d, conv2d, matmul, reshape, transpose
    k = w.ndim - 2
    if k < 1 or x.ndim != k + 2:
        raise ShapeError(f"conv {x.name!r}: want x (N, C, *S) and w (O, C/groups, *K) of the "
                         f"same rank, got {x.shape} and {w.shape}")
    stride = _tup(stride, k, "stride")
    dilation = _tup(dilation, k, "dilation")
    pads = tuple(int(p) for p in pads) if pads is not None else (0,) * (2 * k)
    o, cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    c = x.shape[1]
    if groups < 1 or c is None or c != cg * groups or o % groups:
        raise ShapeError(f"conv {x.name!r}: x {x.shape} has {c} channels, w {w.shape} wants "
                         f"{cg} per group x {groups} groups (and O divisible by groups)")
    symmetric = pads[:k] == pads[k:]
    if groups == 1 and dilation == (1,) * k and symmetric and k in (1, 2):
        if k == 2:
            return conv2d(x, w, stride=stride, padding=pads[:2], name=name)
        return conv1d(x, w, stride=stride[0], padding=pads[0], name=name)
    xp = pad(x, _spatial_pads(x, pads, k))
    win = apply("windows", [xp], kernel=kernel, stride=stride, dilation=dilation)
    outs = win.shape[2:2 + k]
    # (N, C, *O, *K) -> (N, *O, C, *K) -> (N, *O, G, 1, C/G * prod K)
    perm = (0,) + tuple(range(2, 2 + k)) + (1,) + tuple(range(2 + k, 2 + 2 * k))
    cols = reshape(transpose(win, perm), (x.shape[0],) + outs + (groups, 1, cg * math.prod(kernel)))
    wg = transpose(reshape(w, (groups, o // groups, cg * math.prod(kernel))), (0, 2, 1))
    y = reshape(matmul(cols, wg), (x.shape[0],) + outs + (o,))  # (N, *O, O)
    return transpose(y, (0, k + 1) + tuple(range(1, k + 1)), name=name)
