"""viz.backprop_steps / forward_steps / steps_html: the lectures' chain-rule lines, with numbers."""
import html
import re

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
import viz
from viz import symbols as S

from test_viz_models import central_difference, lecture001, lecture004_matrix, lecture004_scalar


def sym(name):
    return S.node_symbol(name)


def by_name(steps):
    return {s.node.name: s for s in steps}


def test_lecture001_chain_rule_terms():
    g, E, feeds = lecture001()
    steps = viz.backprop_steps(E, feeds)
    # one step per node with an adjoint, loss first, a reverse topological order (every
    # node after all the nodes that use it; issue 17 #10: the lecture's order)
    assert steps[0].node is E
    pos = {id(s.node): k for k, s in enumerate(steps)}
    for s in steps:
        for i in s.node.inputs:
            if id(i) in pos:
                assert pos[id(i)] > pos[id(s.node)]
    st = by_name(steps)
    yhat, y, u2, b, w, x = (sym(n) for n in ("yhat", "y", "u2", "b", "w", "x"))
    sig_p = S.named_fn("sigmoid", prime=True)
    sig = S.named_fn("sigmoid")
    # dE/dyhat = 2(yhat - y)
    assert sp.expand(st["yhat"].expr - 2 * (yhat - y)) == 0
    assert st["yhat"].expr_text() == "2*(yhat - y)"
    # dE/du2 = dE/dyhat dyhat/du2 = 2(yhat - y) sigma'(u2)
    assert st["u2"].terms[0].consumer.name == "yhat"
    assert st["u2"].terms[0].local.named == sig_p(u2)
    # the lecture's form sigma(1 - sigma) (issue 17 #2), equal to SymPy's derivative
    explicit = st["u2"].terms[0].local.explicit.replace(
        S.named_fn("sigmoid"), sp.Lambda(sym("z"), 1 / (1 + sp.exp(-sym("z")))))
    assert sp.simplify(explicit - sp.exp(-u2) / (1 + sp.exp(-u2)) ** 2) == 0
    assert sp.expand(st["u2"].expr - 2 * (yhat - y) * sig_p(u2)) == 0
    assert r"\sigma'\left(u_{2}\right)" in st["u2"].expr_latex()
    assert r"\frac{\partial E}{\partial u_{2}} = \frac{\partial E}{\partial \hat{y}}\frac{\partial \hat{y}}{\partial u_{2}}" \
        == st["u2"].chain_latex()
    # dE/du1 and dE/db equal dE/du2
    assert sp.expand(st["u1"].expr - st["u2"].expr) == 0
    assert sp.expand(st["b"].expr - st["u2"].expr) == 0
    # dE/dw = 2(sigma(w^T x + b) - y) sigma'(w^T x + b) x, in the leaves
    wx = S.VizDot(w, x)
    assert sp.expand(st["w"].expanded - 2 * (sig(wx + b) - y) * sig_p(wx + b) * x) == 0
    assert r"w^{T} x" in S.latex(st["w"].expanded)


def test_lecture001_numbers_match_finite_differences():
    g, E, feeds = lecture001()
    st = by_name(viz.backprop_steps(E, feeds))
    prog = gn.compile(E)
    for name in ("w", "b"):
        fd = central_difference(prog, feeds, name, g.values[name])
        np.testing.assert_allclose(st[name].derivative, fd, rtol=1e-6, atol=1e-9)
    # the local derivative's value is sigma'(u2) at the forward value
    u2 = st["u2"].value
    s = 1 / (1 + np.exp(-u2))
    np.testing.assert_allclose(st["u2"].terms[0].local.value, s * (1 - s))
    # contribution = incoming adjoint x local derivative, for element-wise steps
    t = st["u2"].terms[0]
    np.testing.assert_allclose(t.contribution, t.incoming * t.local.value)


def test_lecture004_chain_rule_terms_and_numbers():
    g, J, feeds, p = lecture004_scalar()
    steps = viz.backprop_steps(J, feeds)
    st = by_name(steps)
    yhat, y, z, z1, x1, w1 = (sym(n) for n in ("yhat", "y", "z", "z1", "x1", "w1"))
    sig_p, f_p = S.named_fn("sigmoid", True), S.named_fn("tanh", True)
    # dJ/dz = dJ/dyhat dyhat/dz
    assert sp.expand(st["z"].expr - 2 * (yhat - y) * sig_p(z)) == 0
    # dz/dh_j = w_j ; dh_j/dz_j = f'(z_j) ; dz_j/dw_ij = x_i
    assert [t.local.named for t in st["h1"].terms] == [w1]
    assert [t.local.named for t in st["z1"].terms] == [f_p(z1)]
    assert [t.local.named for t in st["w11"].terms] == [x1]
    # the whole product of lecture 004: dJ/dyhat dyhat/dz dz/dh1 dh1/dz1 dz1/dw11
    assert sp.expand(st["w11"].expr - 2 * (yhat - y) * sig_p(z) * w1 * f_p(z1) * x1) == 0
    prog = gn.compile(J)
    for name in p:
        fd = central_difference(prog, feeds, name, g.values[name])
        np.testing.assert_allclose(st[name].derivative, fd, rtol=1e-6, atol=1e-10)


def test_fan_out_is_an_explicit_sum():
    g = gn.Graph("fan")
    x = g.input("x", ())
    a = gn.sin(x) if hasattr(gn, "sin") else gn.tanh(x).named("a")
    L = (a * a + gn.exp(a)).named("L")
    st = by_name(viz.backprop_steps(L, {"x": np.array(0.3)}))
    terms = st["a"].terms
    assert len(terms) == 3  # a * a uses a twice, exp(a) once
    assert st["a"].chain_latex().count("+") == 2
    av = np.tanh(0.3)
    np.testing.assert_allclose(st["a"].derivative, 2 * av + np.exp(av))
    assert sp.expand(st["a"].expr - (2 * sym("a") + sp.exp(sym("a")))) == 0


def test_matrix_network_steps_have_rules_and_numbers():
    g, J, feeds = lecture004_matrix()
    steps = viz.backprop_steps(J, feeds)
    st = by_name(steps)
    W = g["W"]
    prog = gn.compile(J)
    np.testing.assert_allclose(st["W"].derivative, central_difference(prog, feeds, "W", g.values["W"]),
                               rtol=1e-6, atol=1e-10)
    # matmul has no per-element local derivative: its VJP rule is shown instead
    mm = next(s for s in steps if any(t.consumer.op == "matmul" for t in s.terms) and s.node is W)
    assert mm.terms[0].local.description and "^{T}" in mm.terms[0].local.description
    assert "T}" in mm.local_lines()[0]
    # every step renders to text without error
    assert all(s.text() for s in steps)


def test_forward_steps_match_reverse():
    g, E, feeds = lecture001()
    fs = viz.forward_steps(E, feeds, wrt=g["b"])
    assert fs[0].node.name == "b" and fs[-1].node is E
    rs = by_name(viz.backprop_steps(E, feeds))
    np.testing.assert_allclose(fs[-1].derivative, rs["b"].derivative)
    st = by_name(fs)
    assert st["yhat"].terms[0].local.named == S.named_fn("sigmoid", True)(sym("u2"))
    assert sp.expand(st["yhat"].expr - S.Deriv("tan", "", "b") * S.named_fn("sigmoid", True)(sym("u2"))) == 0
    with pytest.raises(gn.GraphError):
        viz.forward_steps(E, feeds, wrt={g["w"]: np.ones(3)})
    with pytest.raises(gn.GraphError):
        viz.forward_steps(E, feeds, wrt=42)


def test_steps_need_feeds():
    g, E, feeds = lecture001()
    with pytest.raises(gn.GraphError, match="missing feed"):
        viz.backprop_steps(E)


def test_deep_graph_steps_stay_small():
    g = gn.Graph("deep")
    h = g.input("x", ())
    for _ in range(120):
        h = gn.sigmoid(h)
    steps = viz.backprop_steps(h, {"x": np.array(0.1)})
    assert len(steps) == 121
    assert max(sp.count_ops(s.expr) for s in steps if s.expr is not None) <= 2 * 40 + 5


def test_steps_html_is_self_contained(tmp_path):
    g, E, feeds = lecture001()
    steps = viz.backprop_steps(E, feeds)
    path = viz.steps_html(steps, tmp_path / "bp.html")
    page = open(path, encoding="utf-8").read()
    assert page.count('<section class="step"') == len(steps)
    assert "<svg" in page and "<math" in page and 'id="prev"' in page and 'id="next"' in page
    # nothing is fetched from the network
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=', page)
    assert "http" not in re.sub(r'xmlns(:\w+)?="[^"]+"|"-//W3C[^"]*"|"http://www.w3.org[^"]*"', "", page)
    # every step names a node drawn in the svg
    for s in steps:
        assert f'id="n{s.node.index}"' in page
    # chain rule as LaTeX source, too
    assert html.escape(r"\sigma'\left(u_{2}\right)") in page
    assert "<section" in steps._repr_html_()
    with pytest.raises(TypeError):
        viz.steps_html([1, 2], tmp_path / "x.html")
