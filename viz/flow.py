"""Gradients on the graph: adjoint of every node, gradient along every edge, flags.

The adjoints are the reverse-mode graph graphnn itself builds
(`autodiff.reverse.adjoints`, role `backward`). The gradient flowing along an
edge `u -> v` (input position k) is v's VJP contribution to u's adjoint; it is
found by asking v's VJP rule again, which returns the very nodes reverse mode
built (nodes are interned), so nothing new is computed or added.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from graphnn.autodiff import reverse
from graphnn.errors import GraphError, ShapeError
from graphnn.graph import Node

from . import evaluate as ev

VANISHING = 1e-7
EXPLODING = 1e3


@dataclass
class Gradients:
    """Adjoint nodes (keyed by id of the forward node) and per-edge contribution nodes."""
    loss: Node
    forward: list[Node]
    adjoint: dict[int, Node]
    edge: dict[tuple[int, int, int], Node]      # (id(src), id(dst), input position) -> node
    values: dict[int, np.ndarray] = field(default_factory=dict)

    def adjoint_value(self, node: Node):
        a = self.adjoint.get(id(node))
        return None if a is None or id(a) not in self.values else self.values[id(a)]

    def edge_value(self, src: Node, dst: Node, k: int):
        e = self.edge.get((id(src), id(dst), k))
        return None if e is None or id(e) not in self.values else self.values[id(e)]

    def backward_nodes(self) -> list[Node]:
        """Every node of the reverse-mode graph (ancestors of the adjoints not in the forward part)."""
        fwd = {id(n) for n in self.forward}
        roots = list(self.adjoint.values()) + list(self.edge.values())
        return [n for n in self.loss.graph.ancestors(roots) if id(n) not in fwd]


def build(loss: Node, wrt=None) -> Gradients:
    """Reverse-mode adjoints of `loss` w.r.t. every input and param (or `wrt`)."""
    if not isinstance(loss, Node):
        raise GraphError(f"gradients need a scalar loss Node, got {type(loss).__name__}")
    if loss.shape != ():
        raise ShapeError(f"gradients: {loss.name!r} ({loss.op}) has shape {loss.shape}; "
                         "drawing gradients needs a scalar loss (reduce it with .sum() or .mean())")
    g = loss.graph
    order = g.ancestors([loss])
    if wrt is None:
        wrt = [n for n in order if n.op in ("input", "param")]
    with g.provenance(scope=loss.scope, role="backward"):
        seed = g.const(None, np.ones((), dtype=loss.dtype))
    edges: dict[tuple[int, int, int], Node] = {}
    adj = reverse.adjoints(loss, wrt, seed, edges=edges)
    return Gradients(loss, order, adj, edges)


def compute(loss: Node, feeds: Mapping | None, wrt=None, values=None) -> Gradients:
    """`build` and evaluate: forward values, adjoints and edge gradients."""
    gr = build(loss, wrt)
    targets = list(gr.forward) + list(gr.adjoint.values()) + list(gr.edge.values())
    gr.values = ev.evaluate(targets, feeds, cache=values)
    return gr


# -- styling --------------------------------------------------------------------------------

_RAMP = [(0.0, (0x3b, 0x4c, 0xc0)), (0.5, (0x2c, 0xa0, 0x2c)), (0.8, (0xe6, 0x9f, 0x00)),
         (1.0, (0xb4, 0x04, 0x26))]


def magnitude_position(n: float, vanishing: float = VANISHING, exploding: float = EXPLODING) -> float:
    """Where |g| = n falls on the log10 scale from `vanishing` (0) to `exploding` (1)."""
    if not math.isfinite(n):
        return 1.0
    if n <= 0:
        return 0.0
    lo, hi = math.log10(vanishing), math.log10(exploding)
    return min(1.0, max(0.0, (math.log10(n) - lo) / (hi - lo)))


def width(n: float, vanishing: float = VANISHING, exploding: float = EXPLODING) -> float:
    """Edge pen width: 0.5 at the vanishing threshold to 7 at the exploding one (log10 scale)."""
    return round(0.5 + 6.5 * magnitude_position(n, vanishing, exploding), 2)


def colour(n: float, vanishing: float = VANISHING, exploding: float = EXPLODING) -> str:
    """Blue (small) -> green -> orange -> red (large), on the same log scale as `width`."""
    t = magnitude_position(n, vanishing, exploding)
    for (t0, c0), (t1, c1) in zip(_RAMP, _RAMP[1:]):
        if t <= t1:
            f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1))
    return "#b40426"


def classify(n: float, vanishing: float = VANISHING, exploding: float = EXPLODING) -> str | None:
    if not math.isfinite(n):
        return "non-finite"
    if n == 0:
        return "zero"          # exactly zero (a minimum, a dead ReLU): not a vanishing gradient
    if n < vanishing:
        return "vanishing"
    if n > exploding:
        return "exploding"
    return None


@dataclass
class Flag:
    """An edge whose gradient norm is below the vanishing or above the exploding threshold."""
    kind: str       # "vanishing", "exploding" or "non-finite" ("zero" edges are labelled, not flagged)
    src: str
    dst: str
    position: int
    norm: float

    def __str__(self):
        return f"{self.kind}: {self.src} -> {self.dst} (input {self.position}) |g| = {self.norm:.3g}"


@dataclass
class LayerGradient:
    scope: str
    params: list[str]
    mean_abs: float
    norm: float


class LayerGradients(list):
    """Per-layer (per scope) gradient statistics, in the order the layers were built."""

    def _repr_html_(self) -> str:
        from .escape import html_text as h
        rows = "".join(f"<tr><td>{h(r.scope)}</td><td>{h(', '.join(r.params))}</td>"
                       f"<td>{r.mean_abs:.3e}</td><td>{r.norm:.3e}</td></tr>" for r in self)
        return ("<table><tr><th>layer</th><th>params</th><th>mean |g|</th><th>||g||</th></tr>"
                f"{rows}</table>")


def layer_gradients(loss: Node, feeds: Mapping | None = None, params=None) -> LayerGradients:
    """Mean |dloss/dparam| over the parameters of each scope (a param without scope is its own layer)."""
    order = loss.graph.ancestors([loss])
    params = list(params) if params is not None else [n for n in order if n.op == "param"]
    if not params:
        raise GraphError(f"{loss.name!r} depends on no parameters: nothing to show")
    from graphnn.autodiff.api import grad
    from graphnn.transient import transient
    with transient(loss.graph):        # looking at gradients does not add them to the graph
        grads = grad(loss, params)
        vals = ev.evaluate(grads, feeds)
    layers: dict[str, list] = {}
    for p, gnode in zip(params, grads):
        layers.setdefault(p.scope or p.name, []).append((p.name, vals[id(gnode)]))
    out = LayerGradients()
    for scope, items in layers.items():
        flat = np.concatenate([np.abs(np.asarray(v, dtype=np.float64)).ravel() for _, v in items])
        out.append(LayerGradient(scope, [n for n, _ in items], float(flat.mean()) if flat.size else 0.0,
                                 float(np.sqrt(np.sum(flat ** 2)))))
    return out
