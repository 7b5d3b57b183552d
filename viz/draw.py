"""`viz.draw`: a graph (or the part a node depends on) as a `graphviz.Digraph`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import graphviz
import numpy as np

from graphnn.autodiff import forward as fwd
from graphnn.errors import GraphError
from graphnn.graph import Graph, Node, fmt_shape, fmt_type
from graphnn.ops.registry import get_op
from graphnn.transient import transient

from . import collapse, flow, styles
from . import evaluate as ev
from .escape import dot_text

STYLES = ("backward", "overlay")
MAX_NODES = 300


@dataclass
class DrawInfo:
    """What `draw` did, attached to the Digraph as `d.graphnn`."""
    nodes: int = 0                     # graph nodes shown (before collapsing)
    boxes: int = 0                     # boxes drawn (after collapsing)
    depth: int | None = None
    collapsed: bool = False
    hidden_const_edges: int = 0   # constant -> collapsed-box edges left out of the picture
    note: str | None = None
    flags: list = field(default_factory=list)
    check_failed: list = field(default_factory=list)
    check_unmatched: list = field(default_factory=list)
    gradients: object = None

    def _repr_html_(self) -> str:
        from .escape import html_text as h
        items = "".join(f"<li>{h(f)}</li>" for f in self.flags) or "<li>none</li>"
        return (f"<p>{self.nodes} nodes in {self.boxes} boxes"
                f"{' (' + h(self.note) + ')' if self.note else ''}</p><p>flagged edges:</p><ul>{items}</ul>")


_AUTO_NAME = re.compile(r"^[a-z0-9_]+_\d+$")


def _op_text(node: Node) -> str:
    if node.op == "const":
        v = node.value
        return f"const {ev.summary(v)}" if v.size <= 1 else "const"
    if node.is_leaf:
        return node.op
    od = get_op(node.op)
    text = od.infix if od.infix else node.op
    if node.attrs:
        short = ", ".join(f"{k}={_short(v)}" for k, v in node.attrs.items())
        text += f" [{short}]"
    return text


def _last(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def grad_name(loss: Node, node: Node) -> str:
    """The name a gradient node is shown by: d<loss>/d<node> (dJ/dW2)."""
    return f"d{loss.name}/d{node.name}"


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 24 else s[:21] + "..."


def _resolve(target, grads, tangents, loss):
    if isinstance(target, (list, tuple)):
        nodes_in = list(target)
        if not nodes_in or not all(isinstance(n, Node) for n in nodes_in):
            raise GraphError("draw: a list to draw must be a non-empty list of Nodes "
                             "(e.g. trainer.step_outputs)")
        g = nodes_in[0].graph
        if any(n.graph is not g for n in nodes_in):
            raise GraphError("draw: the nodes of the list belong to different graphs")
        out = loss
        if (grads or tangents) and out is None:
            scalars = [n for n in nodes_in if n.shape == () and n.role == "forward"]
            if not scalars:
                raise GraphError("draw(grads=True) of a list: pass loss= (no scalar forward "
                                 "node in the list)")
            out = scalars[0]
        return g, g.ancestors(nodes_in), out
    if isinstance(target, Graph):
        g = target
        nodes = g.nodes
        out = loss
        if (grads or tangents) and out is None:
            scalars = [n for n in nodes if n.role == "forward" and n.shape == () and not n.is_leaf]
            if not scalars:
                raise GraphError(f"draw(grads=True): graph {g.name!r} has no scalar forward node to "
                                 "differentiate; pass loss= or draw the loss node")
            out = scalars[-1]
        return g, nodes, out
    if isinstance(target, Node):
        return target.graph, target.graph.ancestors([target]), (loss or target)
    raise GraphError(f"draw: expected a Graph, a Node or a list of Nodes, got "
                     f"{type(target).__name__}")


def _tangent_seeds(g: Graph, forward: list[Node], tangents) -> dict:
    seeds = {}
    if tangents is True:
        for n in forward:
            if n.op == "param":
                with g.provenance(scope=n.scope, role="tangent"):
                    seeds[n] = g.const(None, np.ones(n.shape, dtype=n.dtype))
        if not seeds:
            raise GraphError("draw(tangents=True): no parameters to push tangents from; pass "
                             "tangents={node: direction}")
        return seeds
    if isinstance(tangents, Mapping):
        for k, v in tangents.items():
            n = g[k] if isinstance(k, str) else k
            if not isinstance(n, Node) or n.graph is not g:
                raise GraphError(f"draw(tangents=...): {k!r} is not a node of graph {g.name!r}")
            if not isinstance(v, Node):
                arr = np.asarray(v, dtype=n.dtype)
                if arr.shape != n.shape:
                    raise GraphError(f"draw(tangents=...): direction for {n.name!r} has shape "
                                     f"{arr.shape}, node has {n.shape}")
                with g.provenance(scope=n.scope, role="tangent"):
                    v = g.const(None, arr)
            seeds[n] = v
        return seeds
    raise GraphError(f"draw: tangents must be False, True or {{node: direction}}, got {tangents!r}")



class Drawing(graphviz.Digraph):
    """A `graphviz.Digraph` that displays itself in Jupyter through `viz.svg`, so a
    notebook shows it even where no system `dot` is installed."""

    def _repr_mimebundle_(self, include=None, exclude=None, **_):
        from .render import svg
        return {"image/svg+xml": svg(self)}

    def _repr_svg_(self):
        from .render import svg
        return svg(self)


def draw(g_or_node, grads: bool = False, feeds: Mapping | None = None, style: str = "backward",
         depth: int | None = None, max_nodes: int = MAX_NODES, legend: bool = True,
         tangents=False, check=None, fold: bool = True, loss: Node | None = None,
         vanishing: float = flow.VANISHING, exploding: float = flow.EXPLODING,
         rankdir: str = "TB") -> graphviz.Digraph:
    """Draw a graph, everything a node depends on, or everything a list of nodes depends on
    (e.g. `trainer.step_outputs`).

    Drawing never changes the graph: the gradient and tangent nodes it needs are built for
    the drawing and removed from the graph afterwards (`graphnn.transient`).

    grads: add the gradient of the (scalar) output: `style="backward"` draws the
    reverse-mode graph next to the forward one, `style="overlay"` only puts
    gradients on the forward nodes and edges. Either way edge widths scale with
    log10 of the gradient flowing along them once values are known (`feeds`).
    tangents: True (every param moves by ones) or {node: direction}: forward mode.
    depth: keep this many levels of scope clusters, collapse the rest.
    check: a `gn.check_gradients` report; nodes whose modes disagree are red.
    The returned Digraph has `.graphnn` (a DrawInfo) and `.graphnn_flags`."""
    g = g_or_node[0].graph if isinstance(g_or_node, (list, tuple)) and g_or_node and \
        isinstance(g_or_node[0], Node) else getattr(g_or_node, "graph", g_or_node)
    if not isinstance(g, Graph):
        return _draw(g_or_node, grads, feeds, style, depth, max_nodes, legend, tangents, check,
                     fold, loss, vanishing, exploding, rankdir)
    with transient(g):
        return _draw(g_or_node, grads, feeds, style, depth, max_nodes, legend, tangents, check,
                     fold, loss, vanishing, exploding, rankdir)


def _draw(g_or_node, grads, feeds, style, depth, max_nodes, legend, tangents, check, fold,
          loss, vanishing, exploding, rankdir) -> graphviz.Digraph:
    if style not in STYLES:
        raise ValueError(f"draw: style must be one of {STYLES}, got {style!r}")
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"draw: depth must be a non-negative int or None, got {depth!r}")
    if not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"draw: max_nodes must be a positive int, got {max_nodes!r}")
    g, nodes, out = _resolve(g_or_node, grads, tangents, loss)
    forward = [n for n in nodes]
    info = DrawInfo()
    with_values = feeds is not None or (grads and not ev.needs_feeds(forward))
    values: dict[int, np.ndarray] = {}
    if with_values:
        ev.evaluate(forward, feeds, cache=values)

    gr = None
    extra: list[Node] = []
    if grads:
        gr = flow.build(out)
        if with_values:
            ev.evaluate(list(gr.adjoint.values()) + list(gr.edge.values()), feeds, cache=values)
        gr.values = values
        info.gradients = gr
        if style == "backward":
            extra += gr.backward_nodes()
    tan = {}
    if tangents is not False and tangents is not None:
        seeds = _tangent_seeds(g, forward, tangents)
        sinks = [out] if out is not None else forward[-1:]
        tan = fwd.tangents(sinks, seeds)
        if with_values:
            ev.evaluate(list(tan.values()), feeds, cache=values)
        if style == "backward":
            extra += g.ancestors(list(tan.values()))

    shown_ids = {id(n) for n in forward}
    drawn = list(forward)
    for n in extra:
        if id(n) not in shown_ids:
            shown_ids.add(id(n))
            drawn.append(n)
    # a constant nothing drawn uses (the gradient seed 1, a graph's stray constants) would
    # float unconnected in the picture
    used = {id(i) for n in drawn for i in n.inputs}
    roots = {id(out)} if out is not None else set()
    if isinstance(g_or_node, Node):
        roots.add(id(g_or_node))
    drawn = [n for n in drawn if n.op != "const" or id(n) in used or id(n) in roots]
    shown_ids = {id(n) for n in drawn}
    drawn.sort(key=lambda n: n.index)
    adjoint_of: dict[int, Node] = {}
    if gr is not None:
        for n in forward:
            a = gr.adjoint.get(id(n))
            if a is not None and a.role == "backward" and id(a) not in adjoint_of:
                adjoint_of[id(a)] = n
    info.nodes = len(drawn)

    # collapsing
    if depth is not None:
        p = collapse.plan(drawn, depth, fold)
    elif len(drawn) > max_nodes:
        p, info.note = collapse.auto(drawn, max_nodes, fold)
        info.collapsed = True
    else:
        p = collapse.plan(drawn, None, fold)
    info.depth, info.boxes = p.depth, p.count
    info.collapsed = info.collapsed or bool(p.units)

    # check report
    failed, passed = set(), set()
    if check is not None:
        names = {n.name for n in drawn}
        for row in getattr(check, "rows", check):
            name = getattr(row, "name", None)
            target = getattr(row, "node", None)
            if isinstance(target, Node):
                name = target.name
            if name not in names:
                info.check_unmatched.append(name)
                continue
            if getattr(row, "passed", True):
                passed.add(name)
            else:
                failed.add(name)
        info.check_failed = sorted(failed)

    d = Drawing(name=re.sub(r"\W", "_", g.name, flags=re.ASCII) or "graph", graph_attr=dict(rankdir=rankdir, fontname="Helvetica",
                                                      fontsize="11", newrank="true"),
                         node_attr=dict(fontname="Helvetica", fontsize="10"),
                         edge_attr=dict(fontname="Helvetica", fontsize="9", arrowsize="0.7"))
    clusters: dict[tuple, graphviz.Digraph] = {(): d}
    cluster_ids = {}

    def container(path: tuple):
        for i in range(1, len(path) + 1):
            sub = path[:i]
            if sub not in clusters:
                cluster_ids[sub] = len(cluster_ids)
                c = graphviz.Digraph(name=f"cluster_{cluster_ids[sub]}")
                c.attr(label=dot_text(sub[-1]), style="rounded", color="#9aa5b1",
                       fontcolor="#445566", fontsize="10")
                clusters[sub] = c
        return clusters[path]

    kinds = set()

    def grad_of(n: Node):
        if gr is None:
            return None
        return gr.adjoint_value(n)

    # single nodes
    for n in drawn:
        if id(n) in p.unit_of:
            continue
        kind = styles.node_kind(n)
        kinds.add(kind)
        title = n.name
        if id(n) in adjoint_of and out is not None:
            title = grad_name(out, adjoint_of[id(n)])   # what the node is, not matmul_4
        lines = [title, _op_text(n), fmt_type(n)]
        tip = [g.format_node(n)]
        if id(n) in values:
            lines.append("= " + ev.summary(values[id(n)]))
            tip.append("value:\n" + ev.full(values[id(n)]))
        gv = grad_of(n)
        if gv is not None and n.role == "forward":
            lines.append(f"d{out.name}/d{_last(n.name)}= " + ev.summary(gv))
            tip.append(f"d{out.name}/d{n.name}:\n" + ev.full(gv))
        t = tan.get(id(n))
        if t is not None and id(t) in values and n.role == "forward":
            lines.append("tangent= " + ev.summary(values[id(t)]))
            tip.append("tangent:\n" + ev.full(values[id(t)]))
        attrs = dict(styles.NODE[kind])
        if n.name in failed:
            attrs.update(styles.CHECK_FAILED)
            tip.append("check_gradients: modes DISAGREE")
        elif n.name in passed:
            attrs.update(styles.CHECK_PASSED)
            tip.append("check_gradients: modes agree")
        path = tuple(n.scope.split("/")) if n.scope else ()
        if n.role in ("backward", "tangent") and style == "backward":
            path = (n.role,) + path    # the reverse graph beside the forward one, not inside it
        cont = container(path)
        cont.node(f"n{n.index}", label=dot_text("\n".join(lines), 400),
                  tooltip=dot_text("\n\n".join(tip), 4000), id=f"n{n.index}", **attrs)

    # collapsed units
    unit_name = {}
    for i, u in enumerate(p.units):
        unit_name[id(u)] = f"u{i}"
        kind = "folded" if u.folded > 1 else "group"
        kinds.add(kind)
        ops = sum(1 for m in u.members if not m.is_leaf)
        nparams = sum(int(np.prod(m.shape)) for m in u.members if m.op == "param")
        title = u.label_scope.split("/")[-1] if not u.chunk else u.label_scope
        if u.folded > 1:
            title = f"{title} .. {u.last_scope.split('/')[-1]}\nx {u.folded}"
        if u.role != "forward":
            title = f"{u.role}: {title}"
        lines = [title, f"{ops} ops, {nparams} params" if u.folded == 1 else
                 f"{ops // u.folded} ops, {nparams // u.folded} params each"]
        if gr is not None:
            gs = [grad_of(m) for m in u.members if m.op == "param"]
            gs = [np.abs(np.asarray(x, dtype=np.float64)).ravel() for x in gs if x is not None]
            if gs:
                flat = np.concatenate(gs)
                lines.append(f"mean|d{out.name}/dparam|= {float(flat.mean()):.3g}")
                if u.folded > 1:   # never hide a spread of orders of magnitude (#6)
                    blocks: dict[str, list] = {}
                    for m in u.members:
                        if m.op == "param" and grad_of(m) is not None:
                            blocks.setdefault(m.scope, []).append(
                                np.abs(np.asarray(grad_of(m), dtype=np.float64)).ravel())
                    per = [float(np.concatenate(v).mean()) for v in blocks.values()]
                    lines.append(f"per block: {min(per):.2g} .. {max(per):.2g}")
        tip = f"{u.label_scope}: {len(u.members)} nodes" + (
            f" in {u.folded} identical blocks ending at {u.last_scope}" if u.folded > 1 else "")
        upath = tuple(u.cluster)
        if u.role in ("backward", "tangent") and style == "backward" and upath[:1] != (u.role,):
            upath = (u.role,) + upath
        container(upath).node(unit_name[id(u)], label=dot_text("\n".join(lines), 400),
                                  tooltip=dot_text(tip, 2000), id=unit_name[id(u)],
                                  **styles.NODE[kind])

    # nest clusters, deepest first, before any edge mentions a node
    for path in sorted((k for k in clusters if k), key=len, reverse=True):
        clusters[path[:-1]].subgraph(clusters[path])

    def end(n: Node) -> str:
        u = p.unit_of.get(id(n))
        return f"n{n.index}" if u is None else unit_name[id(u)]

    grouped_edges: dict[tuple, dict] = {}
    for v in drawn:
        for k, u in enumerate(v.inputs):
            if id(u) not in shown_ids:
                continue
            a, b = end(u), end(v)
            if a == b:
                continue
            if u.op == "const" and (id(u) in p.unit_of or id(v) in p.unit_of):
                # in a collapsed view a shared constant (0.5, the loss seed...) would send an
                # edge into every box it feeds: thousands of edges, no information
                info.hidden_const_edges += 1
                continue
            norm = None
            if gr is not None and v.role == "forward":
                ge = gr.edge_value(u, v, k)
                if ge is not None:
                    norm = ev.norm(ge)
            if v.role == "forward" or v.role == "update":
                base = styles.EDGE["forward"]
            elif u.role == "forward":
                base = styles.EDGE["feeds_backward"] if v.role == "backward" else styles.EDGE["tangent"]
            else:
                base = styles.EDGE["backward" if v.role == "backward" else "tangent"]
            if id(u) in p.unit_of or id(v) in p.unit_of:
                key = (id(u), b)
                e = grouped_edges.get(key)
                if e is None:
                    grouped_edges[key] = dict(a=a, b=b, base=base, norm=norm, src=u, dst=v, k=k)
                elif norm is not None and (e["norm"] is None or norm > e["norm"]):
                    e["norm"], e["dst"], e["k"] = norm, v, k
                continue
            _edge(d, a, b, base, norm, u, v, k, style, info, vanishing, exploding, None)
    for e in grouped_edges.values():
        _edge(d, e["a"], e["b"], e["base"], e["norm"], e["src"], e["dst"], e["k"], style, info,
              vanishing, exploding, "[" + fmt_shape(e["src"].shape) + "]")

    if info.note:
        d.attr(label=dot_text(info.note), labelloc="t", fontcolor="#8a4b00")
    if legend:
        styles.add_legend(d, kinds, gr is not None and with_values, vanishing, exploding,
                          check is not None, info.note)
    d.graphnn = info
    d.graphnn_flags = info.flags
    return d


def _edge(d, a, b, base, norm, u, v, k, style, info, vanishing, exploding, label):
    attrs = dict(base)
    tip = f"{u.name} -> {v.name} (input {k}), {fmt_type(u)}"
    labels = [label] if label else []
    if norm is not None:
        attrs["penwidth"] = str(flow.width(norm, vanishing, exploding))
        attrs["color"] = flow.colour(norm, vanishing, exploding)
        tip += f"\ngradient flowing back along this edge: |g| = {norm:.4g}"
        kind = flow.classify(norm, vanishing, exploding)
        if kind == "zero":
            attrs["style"] = "dotted"
            attrs["color"] = "#9e9e9e"
            labels.append("zero")
        elif kind is not None:
            info.flags.append(flow.Flag(kind, u.name, v.name, k, norm))
            attrs["style"] = "dotted" if kind == "vanishing" else "bold"
            if kind != "vanishing":
                attrs["color"] = "#d50000"
            labels.append(kind)
        if style == "overlay":
            labels.append(f"|g| {norm:.2g}")
    if labels:
        attrs["label"] = dot_text(" ".join(labels))
    d.edge(a, b, tooltip=dot_text(tip, 1000), **attrs)
