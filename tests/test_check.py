"""gn.check_gradients: every mode against central differences, per node; broken rules are flagged."""
from __future__ import annotations

import json

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops.registry import get_op


def _mlp(rng, dtype="float64"):
    g = gn.Graph("mlp", dtype=dtype)
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    with g.scope("fc1"):
        W1 = g.param("W1", value=rng.standard_normal((2, 3)).astype(dtype))
        b1 = g.param("b1", value=rng.standard_normal(3).astype(dtype))
        h = gn.tanh(x @ W1 + b1).named("h")
    with g.scope("fc2"):
        W2 = g.param("W2", value=rng.standard_normal((3, 1)).astype(dtype))
        out = (h @ W2).named("out")
    loss = gn.mse(out, y).named("loss")
    feeds = {"x": rng.standard_normal((4, 2)), "y": rng.standard_normal((4, 1))}
    return g, loss, feeds


def test_passes_on_a_correct_graph_and_reports_every_node(rng):
    g, loss, feeds = _mlp(rng)
    n_before = len(g.nodes)
    rep = gn.check_gradients(loss, feeds)
    assert rep.ok and rep.failed() == []
    assert len(g.nodes) == n_before  # the caller's graph is untouched
    names = [r.name for r in rep.rows]
    for name in ("x", "y", "W1", "b1", "W2", "h", "out", "loss"):
        assert name in names
    assert rep["W1"].kind == "param" and rep["x"].kind == "input" and rep["h"].kind == "intermediate"
    assert rep["h"].shape == (4, 3) and rep["h"].scope == "fc1" and rep["h"].op == "tanh"
    for r in rep.rows:
        assert set(r.mode_passed) == {"reverse", "forward", "symbolic"}
        assert all(r.mode_passed.values()) and r.passed
        assert all(r.abs_err[m] < 1e-8 for m in r.abs_err)
        assert r.checked == min(int(np.prod(r.shape)), 64)
    assert rep["loss"].grad_max == pytest.approx(1.0)
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["ok"] is True and d["rows"][0]["name"] == rep.rows[0].name
    assert set(d["rows"][0]) >= {"name", "op", "kind", "abs_err", "rel_err", "passed"}
    text = str(rep)
    assert "W1" in text and "0 failed" in text


def test_float32_graph_is_checked_in_float64(rng):
    g, loss, feeds = _mlp(rng, dtype="float32")
    rep = gn.check_gradients(loss, feeds, modes=("reverse", "forward"))
    assert rep.ok, str(rep)


def test_flags_a_broken_vjp_rule(rng, monkeypatch):
    g, loss, feeds = _mlp(rng)
    tanh = get_op("tanh")
    good = tanh.vjp
    monkeypatch.setattr(tanh, "vjp", lambda node, ct, needs: [ct])  # forgets f'(x)
    rep = gn.check_gradients(loss, feeds)
    assert not rep.ok
    bad = {r.name for r in rep.failed()}
    # everything upstream of the tanh is wrong in reverse mode only
    assert {"W1", "b1", "x"} <= bad
    assert {"h", "out", "loss", "W2", "y"}.isdisjoint(bad)
    for name in ("W1", "b1"):
        row = rep[name]
        assert row.mode_passed == {"reverse": False, "forward": True, "symbolic": True}
        assert row.abs_err["reverse"] > 1e-3
    assert "NO" in str(rep) and "failed" in str(rep)
    monkeypatch.setattr(tanh, "vjp", good)
    assert gn.check_gradients(loss, feeds, modes=("reverse",)).ok


def test_flags_a_broken_jvp_rule(rng, monkeypatch):
    g, loss, feeds = _mlp(rng)
    matmul = get_op("matmul")
    good = matmul.jvp

    def wrong(node, tangents):  # drops the tangent of the second operand
        ta, tb = tangents
        return good(node, [ta, None]) if ta is not None else good(node, [ta, tb]) * 2.0
    monkeypatch.setattr(matmul, "jvp", wrong)
    rep = gn.check_gradients(loss, feeds, modes=("reverse", "forward"))
    assert not rep.ok
    assert rep["W2"].mode_passed == {"reverse": True, "forward": False}
    assert rep["loss"].passed


def test_raised_errors_in_a_rule_become_failures(rng, monkeypatch):
    g, loss, feeds = _mlp(rng)

    def boom(node, ct, needs):
        raise RuntimeError("rule exploded")
    monkeypatch.setattr(get_op("tanh"), "vjp", boom)
    rep = gn.check_gradients(loss, feeds, modes=("reverse",))
    assert not rep.ok and "rule exploded" in rep["W1"].notes["reverse"]


def test_symbolic_skipped_when_too_large_and_wrt_subset(rng):
    g, loss, feeds = _mlp(rng)
    W1 = g["W1"]
    rep = gn.check_gradients(loss, feeds, wrt=[W1, g["h"]], symbolic_max_size=10,
                             max_elements=2)
    assert [r.name for r in rep.rows] == ["W1", "h"]
    assert rep.ok
    for r in rep.rows:
        assert r.mode_passed["symbolic"] is None and r.abs_err["symbolic"] is None
        assert "skipped" in r.notes["symbolic"] and "max_size" in r.notes["symbolic"]
        assert r.checked == 2
    assert "skipped" in str(rep)


def test_relu_reshape_and_integer_labels_with_a_batch(rng):
    g = gn.Graph("relu_reshape")
    x = g.input("x", (None, 4))
    W = g.param("W", value=rng.standard_normal((2, 3)))
    h = gn.relu(x.reshape((-1, 2, 2)) @ W).reshape((-1, 6))
    loss = gn.softmax_cross_entropy(h, g.input("t", (None,), dtype="int64"))
    feeds = {"x": rng.standard_normal((3, 4)), "t": np.array([0, 5, 2])}
    rep = gn.check_gradients(loss, feeds)
    assert rep.ok, str(rep)
    assert "t" not in rep  # integer labels have no gradient


def test_errors(rng):
    g, loss, feeds = _mlp(rng)
    with pytest.raises(gn.ShapeError, match="scalar"):
        gn.check_gradients(g["out"], feeds)
    with pytest.raises(gn.GraphError, match="missing feed"):
        gn.check_gradients(loss, {"x": feeds["x"]})
    with pytest.raises(gn.GraphError, match="not inputs"):
        gn.check_gradients(loss, {**feeds, "nope": 1.0})
    with pytest.raises(gn.GraphError, match="unknown mode"):
        gn.check_gradients(loss, feeds, modes=("reverse", "backwards"))
    with pytest.raises(gn.GraphError, match="eps"):
        gn.check_gradients(loss, feeds, eps=0.0)
    with pytest.raises(gn.ShapeError, match="batch size"):
        gn.check_gradients(loss, {"x": feeds["x"], "y": np.zeros((5, 1))})
    with pytest.raises(gn.GraphError, match="no gradient"):
        gn.check_gradients(loss, feeds, wrt=[g.const("c", 1.0)])
    other = gn.Graph("other").param("p", value=np.ones(2))
    with pytest.raises(gn.GraphError, match="not a node of graph"):
        gn.check_gradients(loss, feeds, wrt=[other])
