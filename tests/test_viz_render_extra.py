"""A drawing displays itself in Jupyter without a system `dot`."""
import shutil

import numpy as np

import graphnn as gn
import viz


def test_drawing_displays_without_dot(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    g = gn.Graph("jup")
    x = g.input("x", (None, 2))
    d = viz.draw(gn.relu(x).sum())
    bundle = d._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"]
    assert "<svg" in d._repr_svg_()


def test_big_unscoped_graph_renders_collapsed():
    """10k nodes, no scopes: chunked into boxes; shared constants must not send an edge into
    every box (that made the embedded Graphviz exhaust its stack)."""
    import time
    g = gn.Graph("flat")
    x = g.input("x", (None, 8))
    h = x
    for _ in range(3300):
        h = gn.tanh(h * 0.5 + 0.1)
    t0 = time.perf_counter()
    d = viz.draw(h)
    text = viz.svg(d, renderer="wasm")
    print(f"\n{len(g)} nodes drawn collapsed and rendered in {time.perf_counter() - t0:.2f} s")
    assert d.graphnn.collapsed and d.graphnn.hidden_const_edges > 0
    assert d.source.count("->") < 4 * 301
    assert text.count("<g id=\"u") >= 100
