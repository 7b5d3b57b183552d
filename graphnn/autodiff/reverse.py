"""Reverse mode: walk the graph backwards once, building adjoint nodes.

Each node is differentiated locally by its op's VJP rule (a graph-building
function), and adjoints are chained along the DAG; a node used by several
consumers (or twice by one, as in `a + a`) gets the sum of the contributions.
The walk is a loop over the cached topological order: no recursion.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Node
from ..ops import api
from ..ops.registry import get_op


def _check_wrt(y: Node, wrt: Sequence[Node]):
    for w in wrt:
        if not isinstance(w, Node):
            raise GraphError(f"can only differentiate with respect to Nodes, got {w!r}")
        if w.graph is not y.graph:
            raise GraphError(f"{w.name!r} is in graph {w.graph.name!r}, {y.name!r} in "
                             f"{y.graph.name!r}: nodes from two graphs cannot be mixed")


def adjoints(y: Node, wrt: Sequence[Node], cotangent: Node,
             edges: dict | None = None) -> dict[int, Node]:
    """Adjoint node of every node on a path from `wrt` to `y` (keyed by id).

    If `edges` is a dict, it also receives each edge's own contribution, keyed by
    (id(input), id(consumer), input position): what flows along that edge before
    the contributions of several consumers are summed (drawings show it)."""
    g = y.graph
    order = g.ancestors([y])
    relevant = g.descendants_of(wrt, order)
    adj: dict[int, Node] = {id(y): cotangent}
    # the nodes built for each node get its scope and the role "backward"; set directly
    # (what g.provenance(scope=node.scope, role="backward") does, without a context
    # manager per node) and restored however the walk ends
    saved_scope = g._scope
    g._role.append("backward")
    try:
        for node in reversed(order):
            ct = adj.get(id(node))
            if ct is None or not node.inputs:
                continue
            needs = [id(i) in relevant for i in node.inputs]
            if not any(needs):
                continue
            opdef = get_op(node.op)
            g._scope = [node.scope] if node.scope else []
            grads = opdef.vjp(node, ct, needs)
            for k, (inp, gi, need) in enumerate(zip(node.inputs, grads, needs)):
                if gi is None or not need:
                    continue
                if gi.shape != inp.shape:
                    raise ShapeError(f"internal: VJP of {node.op} {node.name!r} gave {gi.shape} "
                                     f"for input {inp.name!r} of shape {inp.shape}")
                if edges is not None:
                    edges[(id(inp), id(node), k)] = gi
                prev = adj.get(id(inp))
                adj[id(inp)] = gi if prev is None else prev + gi
    finally:
        g._scope = saved_scope
        g._role.pop()
    return adj


def _finish(adj, y, wrt, disconnected):
    out = []
    for w in wrt:
        a = adj.get(id(w))
        if a is None:
            if disconnected == "raise":
                raise GraphError(f"{y.name!r} does not depend on {w.name!r} (disconnected); "
                                 "pass disconnected='zeros' for a zero gradient")
            with y.graph.provenance(scope=w.scope, role="backward"):
                a = api.zeros_like(w)
        elif a.dtype != w.dtype and w.dtype.kind == "f":
            with y.graph.provenance(scope=w.scope, role="backward"):
                a = api.cast(a, w.dtype)
        out.append(a)
    return out


def vjp(y: Node, wrt: Sequence[Node], cotangent: Node, disconnected: str = "zeros") -> list[Node]:
    """Vector-Jacobian products: for each w in `wrt`, the node `cotangent . dy/dw`."""
    wrt = list(wrt)
    _check_wrt(y, wrt)
    if not isinstance(cotangent, Node):
        cotangent = api.lift(np.asarray(cotangent), y)
    if cotangent.graph is not y.graph:
        raise GraphError("cotangent must be a node of the same graph as y")
    if cotangent.shape != y.shape:
        raise ShapeError(f"vjp of {y.name!r}: cotangent shape {cotangent.shape} != output shape {y.shape}")
    return _finish(adjoints(y, wrt, cotangent), y, wrt, disconnected)


def grad(y: Node, wrt: Sequence[Node], disconnected: str = "zeros") -> list[Node]:
    """Gradient nodes of the scalar `y`, one per node of `wrt`, by reverse mode."""
    if y.shape != ():
        raise ShapeError(f"grad: {y.name!r} ({y.op}) has shape {y.shape}; grad needs a scalar "
                         "(reduce it with .sum() or .mean(), or use vjp/jacobian)")
    with y.graph.provenance(scope=y.scope, role="backward"):
        seed = y.graph.const(None, np.ones((), dtype=y.dtype))
    return name_gradients(y, wrt, vjp(y, wrt, seed, disconnected))


_AUTO = re.compile(r"^[a-z_0-9]+_\d+$")


def name_gradients(y: Node, wrt: Sequence[Node], grads: Sequence[Node]) -> list[Node]:
    """Name each gradient node after what it is, `d<y>/d<w>` (dJ/dW1), when it still has an
    automatic name (`matmul_4`): drawings, pages and generated code then say what it is.
    A node the user named, a constant, or a name already taken is left alone."""
    g = y.graph
    for w, d in zip(wrt, grads):
        name = f"d{y.name}/d{w.name}"
        if d.role == "backward" and d.op != "const" and _AUTO.match(d.name) and name not in g:
            g.rename(d, name)
    return list(grads)
