"""Forward mode: push tangents from inputs to outputs, one directional derivative per pass.

Reverse mode gives the gradient of one scalar with respect to *all* parameters
for about the cost of one extra pass; forward mode gives the derivative of
*all* outputs along *one* input direction per pass. For a scalar loss of n
parameters forward mode needs n passes (lecture 002: the cost of forward mode
grows with the number of inputs, of reverse mode with the number of outputs).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Node
from ..ops import api
from ..ops.registry import get_op


def tangents(y_nodes: Sequence[Node], seeds: Mapping[Node, Node]) -> dict[int, Node]:
    g = y_nodes[0].graph
    order = g.ancestors(y_nodes)
    tan: dict[int, Node] = {id(k): v for k, v in seeds.items()}
    for node in order:
        if not node.inputs or id(node) in tan:
            continue
        ts = [tan.get(id(i)) for i in node.inputs]
        if all(t is None for t in ts):
            continue
        with g.provenance(scope=node.scope, role="tangent"):
            t = get_op(node.op).jvp(node, ts)
        if t is not None:
            if t.shape != node.shape:
                raise ShapeError(f"internal: JVP of {node.op} {node.name!r} gave {t.shape}, "
                                 f"node has {node.shape}")
            tan[id(node)] = t
    return tan


def jvp(y: Node, seeds: Mapping[Node, Node | np.ndarray]) -> Node:
    """Jacobian-vector product: the tangent of `y` when each key moves along its value."""
    api.require_node(y, "jvp")
    if not isinstance(seeds, Mapping) or not seeds:
        raise GraphError("jvp needs a dict with at least one {node: direction}")
    fixed = {}
    for x, v in seeds.items():
        if not isinstance(x, Node) or x.graph is not y.graph:
            raise GraphError(f"jvp: {x!r} is not a node of graph {y.graph.name!r}")
        if not isinstance(v, Node):
            v = api.lift(np.asarray(v, dtype=x.dtype), x)
        if v.graph is not y.graph:
            raise GraphError("jvp: direction must be a node of the same graph")
        if v.shape != x.shape:
            raise ShapeError(f"jvp: direction for {x.name!r} has shape {v.shape}, node has {x.shape}")
        fixed[x] = v
    t = tangents([y], fixed).get(id(y))
    if t is None:
        with y.graph.provenance(scope=y.scope, role="tangent"):
            t = api.zeros_like(y)
    return t


def _basis(x: Node, i: int) -> np.ndarray:
    e = np.zeros(x.size, dtype=x.dtype)
    e[i] = 1
    return e.reshape(x.shape)


def grad(y: Node, wrt: Sequence[Node], disconnected: str = "zeros") -> list[Node]:
    """Gradient of scalar `y` by forward mode: one JVP per element of each w.

    Fine for small parameters; reverse mode does the same in one backward pass
    whatever the number of parameters, which is why training uses reverse mode."""
    if y.shape != ():
        raise ShapeError(f"grad: {y.name!r} has shape {y.shape}; grad needs a scalar")
    out = []
    g = y.graph
    for w in wrt:
        if w.size is None:
            raise ShapeError(f"forward-mode grad w.r.t. {w.name!r} needs a fixed shape, got {w.shape}")
        cols = []
        for i in range(w.size):
            with g.provenance(scope=w.scope, role="tangent"):
                e = g.const(None, _basis(w, i))
            cols.append(jvp(y, {w: e}))
        with g.provenance(scope=w.scope, role="tangent"):
            out.append(api.reshape(api.stack(cols), w.shape) if cols else api.zeros_like(w))
    if disconnected == "raise":
        anc = {id(n) for n in g.ancestors([y])}
        for w in wrt:
            if id(w) not in anc:
                raise GraphError(f"{y.name!r} does not depend on {w.name!r} (disconnected)")
    return out
