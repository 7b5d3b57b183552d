"""Jacobians and Hessians, assembled from VJPs (rows) or JVPs (columns)."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Node
from ..ops import api
from . import forward, reverse


def _basis(node: Node, i: int, shape=None) -> Node:
    """The i-th unit array of `shape` (default: node's), broadcast along a batch axis if any."""
    shape = node.shape if shape is None else shape
    e = np.zeros(int(np.prod(shape)), dtype=node.dtype)
    e[i] = 1
    c = node.graph.const(None, e.reshape(shape))
    return c if shape == node.shape else api.broadcast_like(api.reshape(c, (1,) + shape), node)


def _batched(y: Node, x: Node) -> bool:
    """Both nodes carry the batch as their first axis (and nowhere else)."""
    yb, xb = None in y.shape, None in x.shape
    if not yb and not xb:
        return False
    if yb and xb and y.shape[0] is None and x.shape[0] is None:
        return True
    raise ShapeError(f"jacobian: {y.name!r} {y.shape} and {x.name!r} {x.shape} need fixed shapes, "
                     "or both the batch (None) as their first axis")


def jacobian(y: Node, x: Node, mode: str = "auto") -> Node:
    """dy/dx as a node of shape y.shape + x.shape.

    mode="reverse" builds one VJP per output element, "forward" one JVP per input
    element; "auto" picks the cheaper (fewer passes).

    When y and x both have the batch (None) as first axis, the result is the
    per-sample Jacobian d y[b] / d x[b], of shape (None,) + y.shape[1:] + x.shape[1:]
    (what `vmap(jacfwd(f))` gives). It assumes samples do not interact; a graph
    that mixes samples (batch norm, a mean over the batch) gives sums over the batch."""
    if mode not in ("auto", "forward", "reverse"):
        raise GraphError(f"jacobian: unknown mode {mode!r}; use 'forward', 'reverse' or 'auto'")
    api.require_node(y, "jacobian")
    api.require_node(x, "jacobian")
    batched = _batched(y, x)
    ys = y.shape[1:] if batched else y.shape
    xs = x.shape[1:] if batched else x.shape
    ny, nx = int(np.prod(ys)), int(np.prod(xs))
    if mode == "auto":
        mode = "forward" if nx <= ny else "reverse"
    g = y.graph
    lead = (None,) if batched else ()
    if mode == "reverse":
        rows = []
        for i in range(ny):
            with g.provenance(scope=y.scope, role="backward"):
                ct = _basis(y, i, ys)
            rows.append(api.reshape(reverse.vjp(y, [x], ct)[0], lead + (nx,)))
        with g.provenance(scope=y.scope, role="backward"):
            m = api.stack(rows, axis=len(lead))                      # lead + (ny, nx)
            return api.reshape(m, lead + ys + xs)
    cols = []
    for j in range(nx):
        with g.provenance(scope=x.scope, role="tangent"):
            e = _basis(x, j, xs)
        cols.append(api.reshape(forward.jvp(y, {x: e}), lead + (ny,)))
    with g.provenance(scope=x.scope, role="tangent"):
        m = api.stack(cols, axis=len(lead) + 1)                      # lead + (ny, nx)
        return api.reshape(m, lead + ys + xs)


def hessian(y: Node, x: Node) -> Node:
    """d2y/dx2 (shape x.shape + x.shape) of a scalar y: forward over reverse."""
    api.require_node(y, "hessian")
    api.require_node(x, "hessian")
    if y.shape != ():
        raise ShapeError(f"hessian: {y.name!r} must be a scalar, has shape {y.shape}")
    if None in x.shape:
        raise ShapeError(f"hessian: {x.name!r} needs a fixed shape, got {x.shape}")
    (gx,) = reverse.grad(y, [x])
    return jacobian(gx, x, mode="forward")
