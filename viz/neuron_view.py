"""`viz.neurons`: a dense network drawn as the lectures draw it — units as circles.

Each unit j of a layer is a circle with its pre-activation z_j, its activation
h_j and the gradient of the loss with respect to z_j; each weight w_ij is an
arrow from unit i to unit j labelled with its value, its gradient dJ/dw_ij and
the value after one gradient step w <- w - alpha * dJ/dw (lecture 004). Biases
are shown inside their unit. Every label uses the names of the op graph
(`W1[0,1]`, `u1[0]`, `h[1]`), so the two pictures can be read side by side.

A "dense network" here is a chain of layers `act(h @ W + b)` (the bias and the
activation optional) as built by hand or by `gn.nn.MLP` / `gn.nn.Linear`.
The graph is left as it was (gradients are built transiently).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import graphviz
import numpy as np

from graphnn.errors import GraphError
from graphnn.graph import Node
from graphnn.ops.elementwise import ELEMENTWISE
from graphnn.transient import transient

from . import evaluate as ev
from . import flow
from .draw import Drawing
from .escape import dot_text

MAX_UNITS = 16


@dataclass
class DenseLayer:
    """One layer `out = act(inp @ W + b)` of the chain (bias / act None when absent)."""
    inp: Node
    W: Node
    matmul: Node
    b: Node | None
    z: Node                 # pre-activation (the add, or the matmul without bias)
    act: Node | None
    out: Node               # act, or z when there is no activation

    @property
    def units(self) -> int:
        return self.W.shape[1]


def _unary_elementwise(n: Node) -> bool:
    spec = ELEMENTWISE.get(n.op)
    return spec is not None and len(n.inputs) == 1


def dense_layers(root: Node) -> list[DenseLayer]:
    """The dense layers `root` depends on, input side first; GraphError if they are not a chain."""
    order = root.graph.ancestors([root])
    uses: dict[int, list[Node]] = {}
    for n in order:
        for i in n.inputs:
            uses.setdefault(id(i), []).append(n)
    layers: list[DenseLayer] = []
    for m in order:
        if m.op != "matmul" or len(m.inputs) != 2:
            continue
        h, W = m.inputs
        if W.op != "param" or W.ndim != 2 or h.ndim not in (1, 2):
            continue
        z, b = m, None
        for c in uses.get(id(m), []):
            if c.op == "add":
                other = c.inputs[1] if c.inputs[0] is m else c.inputs[0]
                if other.op == "param" and other.shape == (W.shape[1],):
                    z, b = c, other
                    break
        act = next((c for c in uses.get(id(z), []) if _unary_elementwise(c)), None)
        layers.append(DenseLayer(h, W, m, b, z, act, act if act is not None else z))
    if not layers:
        raise GraphError(f"viz.neurons: {root.name!r} depends on no dense layer "
                         "(h @ W [+ b] [then an activation]) with W a 2-d parameter")
    for prev, nxt in zip(layers, layers[1:]):
        if nxt.inp is not prev.out:
            raise GraphError(f"viz.neurons: layer {nxt.W.name!r} does not take the output of "
                             f"layer {prev.W.name!r} ({prev.out.name!r}) as its input: not a "
                             "plain chain of dense layers; draw it with viz.draw")
    for layer in layers:
        if layer.units > MAX_UNITS or layer.W.shape[0] > MAX_UNITS:
            raise GraphError(f"viz.neurons: layer {layer.W.name!r} is {layer.W.shape[0]} x "
                             f"{layer.units}; the neuron view draws at most {MAX_UNITS} units "
                             "per layer (use viz.draw for larger networks)")
    return layers


def _pick(v, sample: int, j: int | None = None):
    """Element j of sample `sample` of a (batch, units) or (units,) value, as a float."""
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 2:
        a = a[min(sample, a.shape[0] - 1)]
    return float(a[j]) if j is not None and a.ndim == 1 else float(a.reshape(-1)[0])


def _f(x) -> str:
    return "?" if x is None else f"{x:.4g}"


def neurons(loss: Node, feeds: Mapping | None = None, lr: float = 0.1, sample: int = 0,
            rankdir: str = "LR") -> graphviz.Digraph:
    """The dense network under `loss` drawn unit by unit, with values for one `sample` of
    `feeds`, the gradients of `loss` and one step of gradient descent with rate `lr`.

    `loss` may also be a non-scalar output: then no gradients or updates are shown.
    The returned Digraph has `.graphnn_neurons`: per layer a dict with `W`, `dW`, `W_new`,
    `b`, `db`, `b_new`, `z`, `h`, `dz` arrays (what the labels show)."""
    if not isinstance(loss, Node):
        raise GraphError(f"viz.neurons: expected a Node, got {type(loss).__name__}")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr)):
        raise GraphError(f"viz.neurons: lr must be a finite number, got {lr!r}")
    layers = dense_layers(loss)
    with transient(loss.graph):
        if loss.shape == ():
            gr = flow.compute(loss, feeds)
            values, grad = gr.values, gr.adjoint_value
        else:
            values = ev.evaluate([loss], feeds)
            gr, grad = None, (lambda n: None)
    has_grads = gr is not None
    J = loss.name
    d = Drawing(name="neurons", graph_attr=dict(rankdir=rankdir, fontname="Helvetica",
                                                fontsize="12", nodesep="0.4", ranksep="1.6",
                                                newrank="true"),
                node_attr=dict(fontname="Helvetica", fontsize="11"),
                edge_attr=dict(fontname="Helvetica", fontsize="10", arrowsize="0.7"))
    info = []
    first = layers[0].inp
    n_in = layers[0].W.shape[0]
    with d.subgraph(name="cluster_in") as c:
        c.attr(label=dot_text(f"input {first.name}"), style="rounded", color="#2e7d32")
        for i in range(n_in):
            xv = _pick(values.get(id(first)), sample, i)
            c.node(f"L0_{i}", label=dot_text(f"{first.name}[{i}]\n= {_f(xv)}"), shape="circle",
                   style="filled", fillcolor="#d5f5d5", color="#2e7d32",
                   tooltip=dot_text(f"unit {i} of {first.name} (op graph node {first.name!r})"))
    for k, layer in enumerate(layers, start=1):
        W = np.asarray(values[id(layer.W)], dtype=np.float64)
        dW = grad(layer.W)
        dW = None if dW is None else np.asarray(dW, dtype=np.float64)
        b = None if layer.b is None else np.asarray(values[id(layer.b)], dtype=np.float64)
        db = None if layer.b is None or grad(layer.b) is None else \
            np.asarray(grad(layer.b), dtype=np.float64)
        rec = {"W": W, "dW": dW, "W_new": None if dW is None else W - lr * dW, "b": b, "db": db,
               "b_new": None if db is None else b - lr * db,
               "z": values.get(id(layer.z)), "h": values.get(id(layer.out)),
               "dz": grad(layer.z)}
        info.append(rec)
        act = layer.act.op if layer.act is not None else "identity"
        with d.subgraph(name=f"cluster_{k}") as c:
            c.attr(label=dot_text(f"layer {k}: {layer.out.name} = {act}({layer.z.name}), "
                                  f"{layer.z.name} = {layer.inp.name} @ {layer.W.name}"
                                  + (f" + {layer.b.name}" if layer.b is not None else "")),
                   style="rounded", color="#2c5aa0")
            for j in range(layer.units):
                lines = [f"{layer.out.name}[{j}] = {_f(_pick(rec['h'], sample, j))}"]
                if layer.act is not None:
                    lines.append(f"{layer.z.name}[{j}] = {_f(_pick(rec['z'], sample, j))}")
                if b is not None:
                    line = f"{layer.b.name}[{j}] = {_f(b[j])}"
                    if db is not None:
                        line += f" -> {_f(rec['b_new'][j])}"
                    lines.append(line)
                if has_grads:
                    lines.append(f"d{J}/d{layer.z.name}[{j}] = {_f(_pick(rec['dz'], sample, j))}")
                out_layer = k == len(layers)
                c.node(f"L{k}_{j}", label=dot_text("\n".join(lines)), shape="circle",
                       style="filled", fillcolor="#fde2c8" if out_layer else "#dce8f8",
                       color="#b35900" if out_layer else "#2c5aa0",
                       tooltip=dot_text(f"unit {j}: op graph nodes {layer.z.name!r}"
                                        + (f", {layer.out.name!r}" if layer.act is not None else "")
                                        + (f"; bias {layer.b.name}[{j}]: d{J}/db = {_f(db[j])}"
                                           if db is not None else "")))
        for i in range(layer.W.shape[0]):
            for j in range(layer.units):
                lines = [f"{layer.W.name}[{i},{j}] = {_f(W[i, j])}"]
                if dW is not None:
                    lines.append(f"d{J}/dw = {_f(dW[i, j])}")
                    lines.append(f"-> {_f(rec['W_new'][i, j])}")
                width = 0.6 + min(3.0, 3.0 * abs(W[i, j]) / (np.abs(W).max() or 1.0))
                d.edge(f"L{k - 1}_{i}", f"L{k}_{j}", label=dot_text("\n".join(lines)),
                       penwidth=f"{width:.2f}", color="#c0392b" if W[i, j] < 0 else "#2c5aa0",
                       tooltip=dot_text(f"weight {layer.W.name}[{i},{j}] from unit {i} to unit {j}"))
    note = [f"Circle: a unit j, z_j = sum_i w_ij h_i + b_j, then its activation (values for "
            f"sample {sample})."]
    if has_grads:
        note += [f"Arrow: weight w_ij = {layers[0].W.name}[i,j] etc.: value, gradient d{J}/dw, "
                 f"and after one step w <- w - alpha d{J}/dw with alpha = {lr:g}.",
                 f"d{J}/dz_j: the gradient reaching unit j (the batch's gradients of w are summed "
                 f"as {J} defines)."]
    note.append("Blue arrows: positive weights, red: negative; width ~ |w|. Names are those of "
                "the op graph (viz.draw).")
    # the legend as the picture's caption (a legend box would widen the left-to-right layout)
    d.attr(label=dot_text("\n".join(note)), labelloc="b", labeljust="l", fontsize="11")
    d.graphnn_neurons = info
    d.graphnn_layers = layers
    return d
