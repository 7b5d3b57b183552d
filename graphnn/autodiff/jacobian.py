"""Jacobians and Hessians, assembled from VJPs (rows) or JVPs (columns)."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Node
from ..ops import api
from . import forward, reverse


def _basis(node: Node, i: int) -> Node:
    e = np.zeros(node.size, dtype=node.dtype)
    e[i] = 1
    return node.graph.const(None, e.reshape(node.shape))


def jacobian(y: Node, x: Node, mode: str = "auto") -> Node:
    """dy/dx as a node of shape y.shape + x.shape.

    mode="reverse" builds one VJP per output element, "forward" one JVP per input
    element; "auto" picks the cheaper (fewer passes)."""
    for n, what in ((y, "output"), (x, "input")):
        if n.size is None:
            raise ShapeError(f"jacobian: {what} {n.name!r} needs a fixed shape, got {n.shape}")
    if mode == "auto":
        mode = "forward" if x.size <= y.size else "reverse"
    g = y.graph
    if mode == "reverse":
        rows = []
        for i in range(y.size):
            with g.provenance(scope=y.scope, role="backward"):
                ct = _basis(y, i)
            rows.append(reverse.vjp(y, [x], ct)[0])
        with g.provenance(scope=y.scope, role="backward"):
            return api.reshape(api.stack(rows), y.shape + x.shape)
    if mode == "forward":
        cols = []
        for j in range(x.size):
            with g.provenance(scope=x.scope, role="tangent"):
                e = _basis(x, j)
            cols.append(forward.jvp(y, {x: e}))
        with g.provenance(scope=x.scope, role="tangent"):
            m = api.reshape(api.stack(cols), (x.size, y.size))
            return api.reshape(api.transpose(m), y.shape + x.shape)
    raise GraphError(f"jacobian: unknown mode {mode!r}; use 'forward', 'reverse' or 'auto'")


def hessian(y: Node, x: Node) -> Node:
    """d2y/dx2 (shape x.shape + x.shape) of a scalar y: forward over reverse."""
    if y.shape != ():
        raise ShapeError(f"hessian: {y.name!r} must be a scalar, has shape {y.shape}")
    (gx,) = reverse.grad(y, [x])
    return jacobian(gx, x, mode="forward")
