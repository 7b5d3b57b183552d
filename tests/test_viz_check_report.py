"""A real `gn.check_gradients` report drawn on its graph: disagreeing nodes are red."""
import re

import numpy as np

import graphnn as gn
import viz
from graphnn.ops.registry import get_op


def _mlp():
    rng = np.random.default_rng(0)
    g = gn.Graph("chk", seed=0)
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 1))
    W1 = g.param("W1", (3, 4)); b1 = g.param("b1", (4,))
    h = gn.tanh(x @ W1 + b1).named("h")
    W2 = g.param("W2", (4, 1))
    loss = gn.mse(h @ W2, y).named("loss")
    return g, loss, {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 1))}


def _fill(svg_text: str, g, name: str) -> str:
    """The fill colour of node `name` in the rendered SVG (drawn with id/title n<index>)."""
    title = f"n{g[name].index}"
    m = re.search(r"<title>" + title + r"</title>.*?fill=\"(#[0-9a-fA-F]{6}|\w+)\"",
                  svg_text, flags=re.S)
    assert m, f"node {name} not found in the SVG"
    return m.group(1).lower()


def test_correct_graph_draws_all_green():
    g, loss, feeds = _mlp()
    rep = gn.check_gradients(loss, feeds, modes=("reverse", "forward"))
    assert rep.ok
    d = viz.draw_check(rep, g)
    assert d.graphnn.check_failed == []


def test_broken_vjp_turns_its_upstream_red(monkeypatch):
    g, loss, feeds = _mlp()
    tanh = get_op("tanh")
    monkeypatch.setattr(tanh, "vjp", lambda node, ct, needs: [ct])  # forgets tanh'(x)
    rep = gn.check_gradients(loss, feeds, modes=("reverse", "forward"))
    failed = {r.name for r in rep.failed()}
    assert {"W1", "b1"} <= failed and "W2" not in failed
    d = viz.draw_check(rep, g)
    assert set(d.graphnn.check_failed) == failed
    text = viz.svg(d)
    red = {_fill(text, g, n) for n in failed if n in ("W1", "b1")}
    green = _fill(text, g, "W2")
    assert len(red) == 1 and green not in red
    r, gr, b = (int(next(iter(red))[i:i + 2], 16) for i in (1, 3, 5))
    assert r > gr and r > b, f"failed nodes should be drawn red, got {red}"
