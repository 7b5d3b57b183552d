"""`gn.ntk`: the empirical neural tangent kernel (lecture 000, eq. 9).

K[i, j] = sum over parameters p of < d f(x1_i) / d p , d f(x2_j) / d p >,
the Gram matrix of per-sample Jacobians of the network output f with respect to
all its parameters. It is the matrix K = [df(x)]^T df(x) that drives the
linearized gradient-descent dynamics (y_t - y) = (I - eta K)(y_{t-1} - y).

Per-sample Jacobians come from reverse mode: one VJP graph with a cotangent
input is built and compiled once (in a float64 copy of the graph, so the
caller's graph is untouched), then run once per sample and output component.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph import Node


def _find_input(output: Node) -> Node:
    ins = [n for n in output.graph.ancestors([output]) if n.op == "input"]
    if len(ins) != 1:
        raise GraphError(f"ntk: {output.name!r} depends on inputs {[n.name for n in ins]}; "
                         "pass input= to say which one x1 and x2 feed")
    return ins[0]


def ntk(output: Node, params: Sequence[Node] | None, x1, x2=None, input: Node | None = None
        ) -> np.ndarray:
    """The empirical NTK of `output` between the samples x1 (n1, ...) and x2 (n2, ...).

    `output` has a leading batch dimension (one row per sample of `input`); for a
    scalar output per sample (shape (B,) or (B, 1)) the result has shape
    (n1, n2); for an output of shape (B, k) it is (n1, n2, k, k) with
    K[i, j, a, b] = < d f_a(x1_i)/d theta, d f_b(x2_j)/d theta >. `params`
    defaults to every parameter `output` depends on; x2 defaults to x1.
    Samples are assumed independent (no batch statistics across rows)."""
    from ..compile import compile as gn_compile
    from . import reverse
    from .check import bound_float64_copy

    if not isinstance(output, Node):
        raise GraphError(f"ntk: output must be a Node, got {type(output).__name__}")
    g = output.graph
    inp = input if input is not None else _find_input(output)
    if not isinstance(inp, Node) or inp.graph is not g or inp.op != "input":
        raise GraphError(f"ntk: input must be an input node of graph {g.name!r}, got {inp!r}")
    if params is None:
        params = [n for n in g.ancestors([output]) if n.op == "param"]
    params = list(params)
    if not params:
        raise GraphError(f"ntk: {output.name!r} has no parameters")
    for p in params:
        if not isinstance(p, Node) or p.graph is not g or p.op != "param":
            raise GraphError(f"ntk: {p!r} is not a param of graph {g.name!r}")
    if not output.shape or not inp.shape:
        raise ShapeError(f"ntk: output {output.name!r} {output.shape} and input {inp.name!r} "
                         f"{inp.shape} need a leading batch dimension")
    if output.shape[0] != inp.shape[0]:
        raise ShapeError(f"ntk: output {output.name!r} {output.shape} and input {inp.name!r} "
                         f"{inp.shape} must share the leading (batch) dimension")
    rest = output.shape[1:]
    if None in rest:
        raise ShapeError(f"ntk: output {output.name!r} {output.shape} has a batch dimension "
                         "outside axis 0")
    scalar = rest in ((), (1,))
    k = int(np.prod(rest, dtype=np.int64))
    rows = output.shape[0] if output.shape[0] is not None else 1

    def samples(x, what):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != inp.ndim or tuple(x.shape[1:]) != tuple(inp.shape[1:]):
            raise ShapeError(f"ntk: {what} has shape {x.shape}; want (n,) + {inp.shape[1:]} "
                             f"for input {inp.name!r} {inp.shape}")
        return x

    x1 = samples(x1, "x1")
    x2 = x1 if x2 is None else samples(x2, "x2")

    gc, m = bound_float64_copy([output], rows if output.shape[0] is None else None, "ntk")
    out = m[id(output)]
    with gc.provenance(role="backward"):
        ct = gc.input("ntk_cotangent", out.shape, dtype="float64")
    grads = reverse.vjp(out, [m[id(p)] for p in params], ct)
    prog = gn_compile(grads)
    missing = [n.name for n in gc.inputs if n.name not in (m[id(inp)].name, ct.name)]
    if missing:
        raise GraphError(f"ntk: {output.name!r} also needs input(s) {missing}")

    def jacobians(x):
        J = np.zeros((len(x), k, sum(int(np.prod(p.shape, dtype=np.int64)) for p in params)))
        for i in range(len(x)):
            batch = np.repeat(x[i:i + 1], rows, axis=0)  # sample i in row 0 (and copies)
            for a in range(k):
                c = np.zeros(out.shape)
                c.reshape(rows, k)[0, a] = 1.0
                gs = prog(**{m[id(inp)].name: batch, ct.name: c})
                J[i, a] = np.concatenate([np.asarray(gv).ravel() for gv in gs])
        return J

    J1 = jacobians(x1)
    J2 = J1 if x2 is x1 else jacobians(x2)
    K = np.einsum("iap,jbp->ijab", J1, J2)
    if scalar:
        return K[:, :, 0, 0]
    return K.reshape((len(x1), len(x2)) + rest + rest)
