"""viz.draw, viz.svg, viz.render: styles, values, gradient flow, collapsing, escaping, no `dot`."""
import os
import re
import shutil
import time

import numpy as np
import pytest

import graphnn as gn
import viz
from viz import flow

from test_viz_models import lecture001, lecture004_matrix


@pytest.fixture
def no_dot(monkeypatch, tmp_path):
    """Hide the system `dot` (PATH and shutil.which) so rendering must use the embedded Graphviz."""
    monkeypatch.setenv("PATH", str(tmp_path))
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "dot" else real(cmd, *a, **k))
    assert not viz.has_dot()


def _node_line(src, name_id):
    return next(l for l in src.splitlines() if l.strip().startswith(name_id + " "))


def test_lecture001_values_and_gradients_drawn(no_dot):
    g, E, feeds = lecture001()
    d = viz.draw(E, grads=True, feeds=feeds)
    src = d.source
    # every forward node shows name, op, shape, value and gradient
    yhat = g["yhat"]
    line = _node_line(src, f"n{yhat.index}")
    assert "yhat\\nsigmoid\\nf64[]\\n= 0.5\\ndE/dyhat= -1" in line   # the loss's own name
    # the full value sits in the tooltip
    w = g["w"]
    assert "[ 0.5 -0.3]" in _node_line(src, f"n{w.index}")
    # the backward graph is there, in its own style
    back = [n for n in d.graphnn.gradients.backward_nodes()]
    assert back and all(n.role == "backward" or n.op == "const" for n in back)
    assert any('fillcolor="#fbe3e1"' in _node_line(src, f"n{n.index}") for n in back)
    # edge widths follow log10 |g|: u2 -> yhat carries |g| = 1 * sigma'(0) = 0.25... (adjoint of u2)
    u2 = g["u2"]
    edge = next(l for l in src.splitlines() if f"n{u2.index} -> n{yhat.index}" in l)
    assert f"penwidth={flow.width(0.25)}" in edge
    svg = viz.svg(d)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Legend" in svg


def test_styles_distinct_and_legend_always():
    g = gn.Graph("kinds")
    x = g.input("x", (3,))
    p = g.param("p", value=np.ones(3))
    c = g.const("c", 2.0)
    out = gn.relu(x * p + c)
    src = viz.draw(out).source
    fills = {k: re.search(r'fillcolor="([^"]+)"', _node_line(src, f"n{n.index}")).group(1)
             for k, n in dict(x=x, p=p, c=c, op=out).items()}
    assert len(set(fills.values())) == 4
    assert "cluster_legend" in src and "legend_input" in src and "legend_op" in src
    assert "cluster_legend" not in viz.draw(out, legend=False).source


def test_node_used_twice_gets_two_edges():
    g = gn.Graph("twice")
    a = g.input("a", (2,))
    s = a + a
    src = viz.draw(s).source
    assert src.count(f"n{a.index} -> n{s.index}") == 2
    assert g.nx.number_of_edges(a, s) == 2


def test_labels_escaped_through_the_renderer(no_dot):
    g = gn.Graph('we"ird <g> & \\')
    nasty = 'x"<b>&amp;\\n\u03c3\nnext'
    x = g.input(nasty, (1,))
    y = gn.exp(x).named("<lambda>")
    d = viz.draw(y, feeds={nasty: np.array([0.0])})
    svg = viz.svg(d)
    # graphviz shows exactly what we wrote (XML-escaped once), the newline as a line break
    assert "x&quot;&lt;b&gt;&amp;amp;\\n\u03c3" in svg
    assert "&lt;lambda&gt;" in svg
    assert "<b>" not in svg


def test_scopes_are_clusters_and_depth_collapses():
    g, J, feeds = lecture004_matrix()
    d = viz.draw(J, feeds=feeds)
    src = d.source
    assert "subgraph cluster_0" in src and 'label=hidden' in src and 'label=output' in src
    dc = viz.draw(J, feeds=feeds, depth=0)
    assert dc.graphnn.collapsed and dc.graphnn.boxes < d.graphnn.boxes
    # one box per scope, with shapes on the edges between them
    assert "hidden\\n" in dc.source and "[B,2]" in dc.source
    with pytest.raises(ValueError):
        viz.draw(J, depth=-1)


def test_grads_overlay_and_backward_styles():
    g, J, feeds = lecture004_matrix()
    over = viz.draw(J, grads=True, feeds=feeds, style="overlay")
    back = viz.draw(J, grads=True, feeds=feeds, style="backward")
    assert over.graphnn.nodes < back.graphnn.nodes
    assert "|g| " in over.source and "dJ/d" in over.source
    assert 'fillcolor="#fbe3e1"' not in over.source.split("cluster_legend")[0]
    with pytest.raises(ValueError, match="style"):
        viz.draw(J, grads=True, style="sideways")
    with pytest.raises(gn.ShapeError, match="scalar"):
        viz.draw(g["yhat"], grads=True, feeds=feeds)


def test_tangents_drawn():
    g, E, feeds = lecture001()
    d = viz.draw(E, tangents={"b": 1.0}, feeds=feeds)
    assert not any(n.role == "tangent" for n in g.nodes)   # drawing leaves the graph as it was
    assert "tangent= " in d.source and 'fillcolor="#ece2f7"' in d.source
    with pytest.raises(gn.GraphError):
        viz.draw(E, tangents={"b": np.ones(3)}, feeds=feeds)


def _deep(act, depth=20, seed=0):
    return viz.plots.deep_mlp(act, depth=depth, width=8, seed=seed,
                              init="he_normal" if act == "relu" else "xavier_normal")


def test_vanishing_edges_flagged_on_deep_sigmoid():
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(8, 4)), "y": rng.normal(size=(8, 1))}
    g, loss = _deep("sigmoid")
    d = viz.draw(loss, grads=True, feeds=feeds, style="overlay", vanishing=1e-9, max_nodes=2000)
    kinds = {f.kind for f in d.graphnn_flags}
    assert kinds == {"vanishing"}
    assert any(f.dst.startswith("matmul") or f.src in ("W1", "W2") for f in d.graphnn_flags)
    assert all(f.norm < 1e-9 for f in d.graphnn_flags)
    assert "vanishing" in d.source
    g2, loss2 = _deep("relu")
    d2 = viz.draw(loss2, grads=True, feeds=feeds, style="overlay", vanishing=1e-9, max_nodes=2000)
    assert len(d2.graphnn_flags) < len(d.graphnn_flags)


def test_exploding_flag():
    g = gn.Graph("boom")
    x = g.input("x", ())
    w = g.param("w", value=np.array(1e5))
    L = gn.square(w * x)
    d = viz.draw(L, grads=True, feeds={"x": np.array(1.0)})
    assert any(f.kind == "exploding" for f in d.graphnn_flags)
    assert "exploding" in d.source


def test_width_and_colour_scale():
    assert flow.width(1e-7) == 0.5 and flow.width(1e3) == 7.0
    assert flow.width(1e-12) == 0.5 and flow.width(float("inf")) == 7.0
    assert flow.width(1e-2) < flow.width(1.0) < flow.width(10.0)
    assert flow.colour(1e-9) == "#3b4cc0" and flow.colour(1e9) == "#b40426"
    assert flow.classify(0.0) == "zero" and flow.classify(1e-12) == "vanishing" and flow.classify(float("nan")) == "non-finite"


class _Row:
    def __init__(self, name, passed, errors):
        self.name, self.passed, self.errors = name, passed, errors


class _Report:
    def __init__(self, rows):
        self.rows = rows


def test_check_report_nodes_red():
    g, E, feeds = lecture001()
    rep = _Report([_Row("w", False, {"forward": 1e-3}), _Row("b", True, {}), _Row("ghost", False, {})])
    d = viz.draw_check(rep, E)
    assert d.graphnn.check_failed == ["w"] and d.graphnn.check_unmatched == ["ghost"]
    assert 'fillcolor="#ff8a80"' in _node_line(d.source, f"n{g['w'].index}")
    assert 'color="#00a040"' in _node_line(d.source, f"n{g['b'].index}")
    with pytest.raises(TypeError):
        viz.draw_check(object(), E)


def test_repeated_blocks_fold():
    g = gn.Graph("stack")
    h = g.input("x", (None, 3))
    for i in range(6):
        with g.scope(f"block{i}"):
            W = g.param(f"W{i}", (3, 3))
            h = gn.relu(h @ W)
    d = viz.draw(h, depth=0)
    assert d.graphnn.boxes == 2  # the input and one folded box
    assert "block0 .. block5\\nx 6" in d.source
    assert "peripheries=2" in d.source
    d_nofold = viz.draw(h, depth=0, fold=False)
    assert d_nofold.graphnn.boxes == 7


def test_ten_thousand_nodes_collapse_quickly(no_dot):
    g = gn.Graph("deep")
    h = g.input("x", ())
    t0 = time.perf_counter()
    for i in range(2000):
        with g.scope(f"layer{i}"):
            w = g.param(f"w{i}", value=np.array(0.5))
            b = g.param(f"b{i}", value=np.array(0.1))
            h = gn.tanh(h * w + b)
    assert len(g) == 10001
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = viz.draw(h)
    svg = viz.svg(d)
    took = time.perf_counter() - t0
    print(f"\n10,001-node graph: built in {build:.2f}s, drawn+rendered collapsed in {took:.2f}s, "
          f"{d.graphnn.boxes} boxes")
    assert d.graphnn.collapsed and d.graphnn.note and "max_nodes" in d.graphnn.note
    assert d.graphnn.boxes <= 300
    assert "x 2000" in d.source and "<svg" in svg and "max_nodes" in svg
    # without scopes: chunks of consecutive nodes
    g2 = gn.Graph("flat")
    h2 = g2.input("x", ())
    for i in range(3000):
        h2 = gn.tanh(h2 + 1.0)
    t0 = time.perf_counter()
    d2 = viz.draw(h2, max_nodes=100)
    print(f"{len(g2)}-node unscoped graph: drawn in {time.perf_counter() - t0:.2f}s, "
          f"{d2.graphnn.boxes} boxes")
    assert d2.graphnn.boxes <= 100 and "runs of consecutive nodes" in d2.graphnn.note


def test_deep_graph_no_recursion_with_values():
    g = gn.Graph("chain")
    h = g.input("x", ())
    for _ in range(3000):
        h = gn.sigmoid(h)
    d = viz.draw(h, feeds={"x": np.array(0.0)}, max_nodes=50)
    assert d.graphnn.nodes == 3001


def test_svg_and_render_without_dot(no_dot, tmp_path):
    g, E, feeds = lecture001()
    d = viz.draw(E)
    p = viz.render(d, tmp_path / "g.svg")
    assert open(p).read().count("<svg") == 1
    for ext in ("png", "pdf"):
        with pytest.raises(viz.RenderError, match="dot"):
            viz.render(d, tmp_path / f"g.{ext}")
    with pytest.raises(ValueError, match="unknown file type"):
        viz.render(d, tmp_path / "g.gif")
    with pytest.raises(viz.RenderError, match="not on PATH"):
        viz.svg(d, renderer="dot")
    with pytest.raises(viz.RenderError):
        viz.svg("digraph { a -> ", renderer="wasm")


@pytest.mark.skipif(shutil.which("dot") is None, reason="system graphviz not installed")
def test_render_png_with_dot(tmp_path):
    g, E, feeds = lecture001()
    p = viz.render(viz.draw(E), tmp_path / "g.png")
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_jupyter_reprs(no_dot):
    g, E, feeds = lecture001()
    assert "<svg" in g._repr_svg_() and "<svg" in E._repr_svg_()
    d = viz.draw(E, grads=True, feeds=feeds)
    assert "flagged edges" in d.graphnn._repr_html_()


def test_bad_arguments():
    g, E, feeds = lecture001()
    with pytest.raises(gn.GraphError):
        viz.draw("not a graph")
    with pytest.raises(ValueError):
        viz.draw(E, max_nodes=0)
    with pytest.raises(gn.GraphError, match="missing feed"):
        viz.draw(E, feeds={"x": np.ones(2)})
    with pytest.raises(gn.ShapeError, match="expected shape"):
        viz.draw(E, feeds={"x": np.ones(3), "y": np.array(1.0)})
    empty = gn.Graph("noscalar")
    empty.input("v", (2,))
    with pytest.raises(gn.GraphError, match="no scalar"):
        viz.draw(empty, grads=True)
