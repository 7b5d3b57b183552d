"""Symbolic mode: SymPy meaning of nodes, closed-form gradients back in the graph, limits."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn.autodiff import symbolic

X = sp.Symbol("x", real=True)


# -- expression -----------------------------------------------------------------------------------

def test_expression_names_exact_constants_and_types():
    g = gn.Graph("names")
    W = g.param("W1", value=np.array([[1.0, 2.0], [3.0, 4.0]]))
    b = g.param("b", value=np.array(0.5))
    v = g.input("v", (2,))
    e = symbolic.expression((v @ W).sum() * 0.5 + b)
    W_ = symbolic.symbols(W)
    v_ = symbolic.symbols(v)
    assert str(symbolic.symbols(b)) == "b" and str(W_[0, 1]) == "W1_0_1"
    assert W_[0, 1].is_real
    want = sp.Rational(1, 2) * sum(v_[i] * W_[i, j] for i in range(2) for j in range(2)) + \
        sp.Symbol("b", real=True)
    assert sp.expand(e - want) == 0          # exact: 0.5 became 1/2
    assert sp.Rational(1, 2) in e.atoms(sp.Rational)
    assert isinstance(symbolic.expression(v @ W), sp.NDimArray)          # 1-d
    assert isinstance(symbolic.expression(v[None] * W), sp.MatrixBase)  # 2-d
    assert isinstance(symbolic.expression(v.sum()), sp.Expr)              # scalar
    # a long decimal stays a Float, a short one becomes exact
    c = g.const("third", 1 / 3)
    assert isinstance(symbolic.expression(v.sum() * c).coeff(v_[0]), sp.Float)


def test_expression_binds_the_batch():
    g = gn.Graph("batch")
    x = g.input("x", (None, 2))
    s = gn.relu(x).sum()
    assert len(symbolic.expression(s).free_symbols) == 2           # batch defaults to 1
    e = symbolic.expression(s, shapes={"x": (3, 2)})
    assert len(e.free_symbols) == 6
    assert symbolic.elements(x * 2.0, shapes={"x": (3, 2)}).shape == (3, 2)
    with pytest.raises(gn.ShapeError, match="does not fit"):
        symbolic.expression(s, shapes={"x": (3, 5)})


def test_expression_of_tensor_ops():
    g = gn.Graph("ops")
    a = g.input("a", (2, 3))
    labels = g.input("l", (2,), dtype="int64")
    parts = [gn.softmax(a).sum(), gn.log_softmax(a, axis=0).sum(), a.T.sum(), a.max(),
             gn.concat([a, a], axis=1).mean(), a[:, 1:].sum(), a.reshape((3, 2))[2, 1],
             gn.softmax_cross_entropy(a, labels)]
    vals = {"a": np.array([[0.1, -0.4, 0.7], [1.2, 0.3, -0.5]]), "l": np.array([2, 0])}
    got = gn.compile(parts)(**vals)
    for node, want in zip(parts, got):
        e = symbolic.expression(node)
        subs = {symbolic.symbols(a)[i, j]: vals["a"][i, j] for i in range(2) for j in range(3)}
        subs.update({symbolic.symbols(labels)[i]: int(vals["l"][i]) for i in range(2)})
        assert float(e.xreplace(subs)) == pytest.approx(float(want), rel=1e-12)


def test_latex_and_local_derivatives():
    g = gn.Graph("tex")
    z = g.input("z", ())
    s = gn.sigmoid(z)
    tex = symbolic.latex(s)
    assert "e^{- z}" in tex and "\\frac" in tex
    assert "cases" in symbolic.latex(gn.relu(z))
    d = symbolic.local_derivative(s, 0)
    assert sp.simplify(d - sp.diff(1 / (1 + sp.exp(-X)), X)) == 0
    leaky = gn.leaky_relu(z, alpha=0.2)
    dl = symbolic.local_derivative(leaky, 0)
    assert dl.subs(X, -1.0) == pytest.approx(0.2) and dl.subs(X, 1.0) == 1
    assert symbolic.local_expression(leaky).subs(X, -2.0) == pytest.approx(-0.4)
    y = g.input("y", ())
    assert symbolic.local_derivative(z * y, 1) == X  # d(x*y)/dy = x (arg symbols x, y)
    with pytest.raises(gn.GraphError, match="not an element-wise op"):
        symbolic.local_derivative(z.reshape((1,)), 0)
    with pytest.raises(gn.GraphError, match="no input 3"):
        symbolic.local_derivative(s, 3)


# -- grad(mode="symbolic") ------------------------------------------------------------------------

def _many_ops_graph(rng):
    g = gn.Graph("many")
    x = g.input("x", (3, 2))
    t = g.input("t", (3,), dtype="int64")
    with g.scope("fc1"):
        W = g.param("W", value=rng.standard_normal((2, 4)))
        b = g.param("b", value=rng.standard_normal(4))
    a = g.param("a", value=np.array(0.3))
    h = x @ W + b
    parts = [gn.gelu(h[:, 0]).sum(), gn.leaky_relu(h[:, 1], alpha=0.1).sum(),
             gn.where(h[:, 2] > 0, gn.exp(h[:, 2] * a), gn.abs(h[:, 3])).sum(),
             gn.maximum(h[:, 0], h[:, 1] * a).sum(), gn.sqrt(gn.square(h) + 1.0).mean(),
             gn.softmax_cross_entropy(h[:, :3], t), gn.log(gn.softplus(h[:, 3])).sum(),
             gn.tanh(h.T).max(axis=1).sum() / a, gn.elu(h).sum() ** 2 * 0.01]
    loss = parts[0]
    for p in parts[1:]:
        loss = loss + p
    return g, loss, [W, b, a], {"x": rng.standard_normal((3, 2)), "t": np.array([0, 2, 1])}


def test_symbolic_grad_matches_reverse_on_many_ops(rng):
    g, loss, params, feeds = _many_ops_graph(rng)
    sym = gn.grad(loss, params, mode="symbolic")
    rev = gn.grad(loss, params)
    got = gn.compile(sym + rev)(**feeds)
    for p, s, r in zip(params, got[:3], got[3:]):
        assert s.shape == p.shape
        np.testing.assert_allclose(s, r, rtol=1e-10, atol=1e-12, err_msg=p.name)
    # provenance: role backward, scope of the parameter
    assert sym[0].role == "backward" and sym[0].scope == "fc1"
    assert all(n.role in ("backward", "forward") for n in g.ancestors(sym))


def test_symbolic_grad_wrt_intermediate_and_stop_gradient(rng):
    g = gn.Graph("cut")
    x = g.input("x", (2,))
    w = g.param("w", value=rng.standard_normal(2))
    h = gn.tanh(x * w)
    loss = (h * gn.stop_gradient(w)).sum() + (h ** 3).sum()
    s_h, s_w = gn.grad(loss, [h, w], mode="symbolic")
    r_h, r_w = gn.grad(loss, [h, w])
    xv = np.array([0.4, -1.3])
    got = gn.compile([s_h, s_w, r_h, r_w])(x=xv)
    np.testing.assert_allclose(got[0], got[2], rtol=1e-12)
    np.testing.assert_allclose(got[1], got[3], rtol=1e-12)
    # stop_gradient: d/dw sum(stop(w) * w) = stop(w), not 2w
    (d,) = gn.grad((gn.stop_gradient(w) * w).sum(), [w], mode="symbolic")
    np.testing.assert_allclose(gn.compile(d)(), g.values["w"], rtol=1e-15)


def test_symbolic_grad_disconnected_and_errors():
    g = gn.Graph("err")
    x = g.input("x", (2,))
    w = g.param("w", value=np.ones(2))
    u = g.param("u", value=np.ones(3))
    loss = (x * w).sum()
    zu, = gn.grad(loss, [u], mode="symbolic")
    np.testing.assert_array_equal(gn.compile(zu)(), np.zeros(3))
    with pytest.raises(gn.GraphError, match="disconnected"):
        gn.grad(loss, [u], mode="symbolic", disconnected="raise")
    with pytest.raises(gn.ShapeError, match="needs a scalar"):
        gn.grad(x * w, [w], mode="symbolic")
    labels = g.input("l", (2,), dtype="int64")
    with pytest.raises(gn.GraphError, match="only float nodes"):
        gn.grad(gn.one_hot(labels, 3).sum() * w.sum(), [labels], mode="symbolic")
    xb = g.input("xb", (None, 2))
    lb = (xb * w).sum()
    with pytest.raises(gn.GraphError, match="fixed shapes.*'xb'"):
        gn.grad(lb, [w], mode="symbolic")
    # with the batch bound explicitly, valid for that batch size
    dw, = symbolic.grad(lb, [w], shapes={"xb": (3, 2)})
    xv = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(gn.compile(dw)(xb=xv), xv.sum(axis=0))


def test_unsupported_sympy_function_is_named():
    g = gn.Graph("unsup")
    w = g.param("w", value=np.ones(()))
    conv = symbolic._Converter(w, symbolic._Table())
    with pytest.raises(gn.GraphError, match="'cos'"):
        conv(sp.cos(sp.Symbol("q", real=True) + 1))
    with pytest.raises(gn.GraphError, match="no node"):
        conv(sp.Symbol("q", real=True))


def test_sympy_to_graph_table_covers_piecewise_heaviside_and_relations():
    g = gn.Graph("table")
    w = g.param("w", value=np.ones(()))
    table = symbolic._Table()
    s = table.leaf(w, ())[()]
    conv = symbolic._Converter(w, table)
    exprs = [sp.Heaviside(s), sp.Heaviside(s, 0), sp.Piecewise((s ** 2, s < 0), (s, s <= 2), (1 / s, True)),
             sp.Piecewise((s, sp.And(s > 0, s < 1)), (0, sp.Or(sp.Eq(s, 3), sp.Ne(s, 4))), (7, True)),
             sp.Max(s, 1, 2 * s), sp.Min(s, -s), sp.sign(s) * sp.Abs(s) + sp.erf(s) - sp.log(s) ** 3,
             s ** sp.Rational(3, 2) + s ** -sp.S.Half + s ** -3 + 2 ** s + sp.pi,
             sp.Piecewise((s, s > 5))]
    nodes = [conv(e) for e in exprs]
    prog = gn.compile(nodes)
    for v in (-1.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0):
        with np.errstate(all="ignore"):
            vals = prog(w=np.array(v))
        for e, got in zip(exprs, vals):
            want = e.subs(s, v).evalf()
            if want is sp.nan or not want.is_real or not want.is_finite:
                continue  # nan (no branch) or complex (sqrt/log of a negative)
            assert got == pytest.approx(float(want), rel=1e-12, abs=1e-15), (e, v)
        assert np.isnan(vals[-1]) == (v <= 5)  # Piecewise without a True branch: nan


# -- second order, against SymPy ---------------------------------------------------------------------

@pytest.mark.parametrize("act,expr", [
    (gn.tanh, sp.tanh(X)),
    (gn.sigmoid, 1 / (1 + sp.exp(-X))),
    (gn.gelu, X * (1 + sp.erf(X / sp.sqrt(2))) / 2),
])
def test_grad_of_grad_matches_sympy_second_derivative(act, expr):
    g = gn.Graph("second")
    x = g.input("x", (5,))
    y = act(x).sum()
    (g1,) = gn.grad(y, [x])
    (g2_rev,) = gn.grad(g1.sum(), [x])                     # reverse over reverse
    (g2_fwd,) = gn.grad(g1.sum(), [x], mode="forward")     # forward over reverse
    (s1,) = gn.grad(y, [x], mode="symbolic")
    (g2_sym,) = gn.grad(s1.sum(), [x], mode="symbolic")    # symbolic over symbolic
    xs = np.array([-2.5, -0.7, 0.0, 0.3, 1.9])
    got = gn.compile([g1, g2_rev, g2_fwd, g2_sym])(x=xs)
    d1, d2 = sp.diff(expr, X), sp.diff(expr, X, 2)
    want1 = np.array([float(d1.subs(X, v).evalf(30)) for v in xs])
    want2 = np.array([float(d2.subs(X, v).evalf(30)) for v in xs])
    np.testing.assert_allclose(got[0], want1, rtol=1e-12, atol=1e-15)
    for k in (1, 2, 3):
        np.testing.assert_allclose(got[k], want2, rtol=1e-10, atol=1e-14)


# -- limits: refuse quickly instead of hanging ---------------------------------------------------------

def _deep_mlp(depth, width, act=gn.tanh):
    g = gn.Graph("deep")
    x = g.input("x", (1, width))
    rng = np.random.default_rng(0)
    h = x
    params = []
    for i in range(depth):
        W = g.param(f"W{i}", value=rng.standard_normal((width, width)))
        params.append(W)
        h = act(h @ W)
    return h.sum(), params


def test_size_limit_raises_quickly_on_a_deep_net():
    loss, params = _deep_mlp(depth=30, width=4)
    with pytest.raises(gn.GraphError, match="max_size=10000"):
        gn.grad(loss, params, mode="symbolic")
    with pytest.raises(gn.GraphError, match="max_size"):
        symbolic.expression(loss)
    with pytest.raises(gn.GraphError, match="max_size=50"):
        symbolic.expression(loss, max_size=50)


def test_depth_and_piecewise_limits():
    g = gn.Graph("chain")
    x = g.input("x", ())
    h = x
    for _ in range(200):
        h = gn.tanh(h * 1.5 + 0.1)
    with pytest.raises(gn.GraphError, match="max_depth=100"):
        symbolic.expression(h)
    with pytest.raises(gn.GraphError, match="max_depth"):
        gn.grad(h, [x], mode="symbolic")
    loss, params = _deep_mlp(depth=8, width=1, act=gn.relu)
    with pytest.raises(gn.GraphError, match="max_piecewise=4"):
        gn.grad(loss, params, mode="symbolic")


def test_symbolic_within_limits_on_a_small_relu_net(rng):
    loss, params = _deep_mlp(depth=3, width=2, act=gn.relu)
    sym = gn.grad(loss, params, mode="symbolic")
    rev = gn.grad(loss, params)
    xv = np.array([[0.7, 0.4]])
    got = gn.compile(sym + rev)(x=xv)
    for s, r in zip(got[:3], got[3:]):
        np.testing.assert_allclose(s, r, rtol=1e-12)
