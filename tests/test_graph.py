"""The IR: listings, interning, provenance, networkx view, operators, XOR, deep chains."""
from __future__ import annotations

import sys
import time

import networkx as nx
import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import api


def _mlp_graph():
    g = gn.Graph("mlp")
    x = g.input("x", (None, 3))
    with g.scope("mlp"):
        with g.scope("fc1"):
            W1 = g.param("W1", (3, 2), seed=0)
            b1 = g.param("b1", value=np.array([0.0, -1.0]))
            z1 = (x @ W1 + b1).named("z1")
            h1 = gn.relu(z1).named("h1")
    return g, x, h1


def test_listing_is_one_typed_line_per_node():
    g, x, h1 = _mlp_graph()
    text = str(g)
    lines = text.splitlines()
    assert lines[0] == "graph mlp {" and lines[-1] == "}"
    assert len(lines) == len(g) + 2
    assert "  h1: f64[B,2] = relu(z1)  # mlp/fc1" in lines
    assert "  x: f64[B,3] = input" in lines
    assert "  W1: f64[3,2] = param  # mlp/fc1" in lines
    assert repr(h1) == "h1: f64[B,2] = relu(z1)  # mlp/fc1"
    s = (h1.sum(axis=1) * 2.0).named("s")
    assert repr(s).startswith("s: f64[B] = mul(")
    assert "sum[axis=(1,), keepdims=False](h1)" in str(g)
    assert "const 2.0" in str(g)
    g32 = gn.Graph("f32", dtype="float32")
    assert repr(g32.input("v", (4,))) == "v: f32[4] = input"


def test_nodes_are_interned():
    g = gn.Graph("intern")
    x = g.input("x", (3,))
    assert gn.tanh(x) is gn.tanh(x)
    assert x + 1.0 is x + 1.0  # the constant is interned too
    assert gn.leaky_relu(x, alpha=0.1) is gn.leaky_relu(x, alpha=0.1)
    assert gn.leaky_relu(x, alpha=0.1) is not gn.leaky_relu(x, alpha=0.2)
    assert x.sum(axis=0) is x.sum(axis=(0,))
    assert x * 2.0 is not 2.0 * x  # operand order is part of the node
    n = len(g)
    gn.tanh(x)
    assert len(g) == n
    # naming an interned node renames it; the node stays the same
    t = gn.tanh(x, name="t")
    assert t is gn.tanh(x) and t.name == "t"


def test_scopes_nest_and_roles_tag_nodes():
    g = gn.Graph("prov")
    x = g.input("x", (2,))
    with g.scope("a"):
        with g.scope("b"):
            y = gn.exp(x)
        z = gn.tanh(y)
    w = gn.sigmoid(z)
    assert (x.scope, y.scope, z.scope, w.scope) == ("", "a/b", "a", "")
    assert {n.role for n in g.nodes} == {"forward"}
    with g.provenance(scope="upd", role="update"):
        u = x * 0.5
    assert (u.scope, u.role) == ("upd", "update")
    assert g.current_role == "forward" and g.current_scope == ""
    (dx,) = gn.grad(api.sum(w), [x])
    back = {n.op: n for n in g.nodes if n.role == "backward"}
    assert back["sigmoid_dx"].scope == "" and back["tanh_dx"].scope == "a"
    # d exp(x) = exp(x) (the node itself) times the cotangent: a mul in exp's scope
    assert any(n.op == "mul" and y in n.inputs and n.scope == "a/b"
               for n in g.nodes if n.role == "backward")
    jv = gn.jvp(w, {x: np.ones(2)})
    assert jv.role == "tangent"
    assert any(n.role == "tangent" and n.scope == "a/b" for n in g.nodes)


def test_networkx_view_has_one_edge_per_use():
    g = gn.Graph("nx")
    a = g.input("a", (3,))
    b = a + a
    c = b * a
    assert isinstance(g.nx, nx.DiGraph)
    assert g.nx.number_of_edges(a, b) == 2
    assert g.nx.number_of_edges(a, c) == 1 and g.nx.number_of_edges(b, c) == 1
    assert sorted(k for _, _, k in g.nx.in_edges(b, keys=True)) == [0, 1]
    assert list(nx.topological_sort(g.nx))[0] is a
    assert g.consumers(a).count(b) == 2
    (da,) = gn.grad(api.sum(b), [a])
    np.testing.assert_array_equal(gn.compile(da)(a=np.array([1.0, -2.0, 5.0])), [2.0, 2.0, 2.0])


def test_operators_build_the_expected_ops_and_values():
    g = gn.Graph("ops")
    x = g.input("x", (2, 3))
    v = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    M = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cases = [
        (x + 1, v + 1, "add"), (1 - x, 1 - v, "sub"), (x * 2, v * 2, "mul"), (3 / x, 3 / v, "div"),
        (x ** 2, v ** 2, "pow"), (2 ** x, 2 ** v, "pow"), (-x, -v, "neg"), (x.T, v.T, "transpose"),
        (x @ g.const("M", M), v @ M, "matmul"), (x.sum(axis=1, keepdims=True), v.sum(1, keepdims=True), "sum"),
        (x.mean(axis=0), v.mean(0), "mean"), (x.reshape(3, 2), v.reshape(3, 2), "reshape"),
        (x[1, ::2], v[1, ::2], "index"), (abs(x), np.abs(v), "abs"), (x > 2.5, (v > 2.5) * 1.0, "gt"),
        (v * x, v * v, "mul"), (x.max(axis=1), v.max(1), "max"), (x.transpose(1, 0), v.T, "transpose"),
    ]
    prog = gn.compile([c[0] for c in cases])
    for (node, want, op), got in zip(cases, prog(x=v)):
        assert node.op == op, node
        np.testing.assert_allclose(got, want)
    assert +x is x
    with pytest.raises(TypeError, match="truth value"):
        bool(x)
    with pytest.raises(TypeError, match="cannot be iterated"):
        list(x)


def test_leaves_params_and_renaming():
    g = gn.Graph("leaves", seed=3)
    x = g.input("x", (None, 4))
    assert x.size is None and x.ndim == 2 and x.is_leaf
    W = g.param("W", (4, 2), init="he_normal", seed=1)
    assert g.values["W"].shape == (4, 2) and W.dtype == np.float64
    W.named("weights")
    assert "weights" in g.values and "W" not in g.values and g["weights"] is W
    assert g.inputs == [x] and g.params == [W]
    c = g.const("k", [1, 2])
    assert c.dtype == np.float64 and not c.value.flags.writeable
    lab = g.input("lab", (None,), dtype="int64")
    assert lab.dtype == np.int64
    anc = g.ancestors([gn.relu(x @ W)])
    assert [n.name for n in anc][:2] == ["x", "weights"]


def test_xor_network_from_lecture_001():
    """W = [[1,1],[1,1]], b = [0,-1], w = [1,-2]: w^T max(0, XW + b) is XOR."""
    g = gn.Graph("xor")
    X = g.input("X", (None, 2))
    W = g.param("W", value=np.array([[1.0, 1.0], [1.0, 1.0]]))
    b = g.param("b", value=np.array([0.0, -1.0]))
    w = g.param("w", value=np.array([1.0, -2.0]))
    h = gn.relu(X @ W + b).named("h")
    y = (h @ w).named("y")
    prog = gn.compile(y)
    out = prog(X=np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(out, [0.0, 1.0, 1.0, 0.0])
    assert "h: f64[B,2] = relu(" in str(g)


def test_10000_layer_chain_builds_prints_and_compiles(capsys):
    n = 10_000
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(600)  # nothing may recurse over the graph
    try:
        t0 = time.perf_counter()
        g = gn.Graph("chain")
        x = g.input("x", (2,))
        h = x
        for _ in range(n):
            h = gn.tanh(h * 0.5 + 0.1)
        t1 = time.perf_counter()
        text = str(g)
        t2 = time.perf_counter()
        prog = gn.compile(h)
        t3 = time.perf_counter()
        out = prog(x=np.array([0.2, -3.0]))
        t4 = time.perf_counter()
    finally:
        sys.setrecursionlimit(limit)
    assert text.count("\n") == len(g) + 1 == 3 * n + 4
    v = np.array([0.2, -3.0])
    for _ in range(n):
        v = np.tanh(v * 0.5 + 0.1)
    np.testing.assert_allclose(out, v, rtol=1e-12)
    with capsys.disabled():
        print(f"\n[10k chain] build {t1 - t0:.2f}s, print {t2 - t1:.2f}s, compile {t3 - t2:.2f}s, "
              f"run {t4 - t3:.3f}s ({len(g)} nodes)")
