"""The lectures' differentiation examples, in all three modes (issue 3's "Done when").

* lecture 001: E = (sigmoid(w.x + b) - y)^2 and its closed-form gradient;
* lecture 004: the 2-2-1 network's chain-rule partial derivatives, by hand;
* lecture 000: the neural tangent kernel (eq. 9) against torch;
* second order: gn.hessian against torch; grad-of-grad against SymPy (test_symbolic);
* a 10,000-layer chain differentiated and compiled without recursion.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import sympy as sp
import torch

import graphnn as gn


pytestmark = pytest.mark.usefixtures("torch_float64")  # (conftest.py)


# -- lecture 001 -------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3])
def test_lecture001_symbolic_gradient_is_the_closed_form(n, rng):
    g = gn.Graph("lecture001")
    w = g.param("w", value=rng.standard_normal(n))
    b = g.param("b", value=np.array(0.3))
    x = g.input("x", (n,))
    y = g.input("y", ())
    E = (gn.sigmoid(w @ x + b) - y) ** 2
    dw, db = gn.grad(E, [w, b], mode="symbolic")
    assert dw.shape == (n,) and db.shape == ()
    assert dw.role == "backward" and db.role == "backward"

    ws, xs = gn.symbolic.symbols(w), gn.symbolic.symbols(x)
    bs, ys = gn.symbolic.symbols(b), gn.symbolic.symbols(y)
    assert str(bs) == "b" and [str(s) for s in ws] == [f"w_{i}" for i in range(n)]
    u = sum(ws[i] * xs[i] for i in range(n)) + bs
    sigma = 1 / (1 + sp.exp(-u))
    sigma_prime = sigma * (1 - sigma)
    # lecture 001: dE/dw = 2(sigma(w.x+b) - y) sigma'(w.x+b) x,  dE/db = 2(sigma(w.x+b) - y) sigma'(w.x+b)
    want_w = [2 * (sigma - ys) * sigma_prime * xs[i] for i in range(n)]
    want_b = 2 * (sigma - ys) * sigma_prime

    got_w = gn.symbolic.expression(dw)
    got_b = gn.symbolic.expression(db)
    for i in range(n):
        assert sp.simplify(got_w[i] - want_w[i]) == 0
    assert sp.simplify(got_b - want_b) == 0
    # and a wrong formula is not "proved equal" (the check can fail)
    assert sp.simplify(got_b - 2 * (sigma - ys) * sigma) != 0

    X, Y = rng.standard_normal(n), 0.25
    got = gn.compile([dw, db])(x=X, y=Y)
    s = 1 / (1 + np.exp(-(g.values["w"] @ X + 0.3)))
    np.testing.assert_allclose(got[0], 2 * (s - Y) * s * (1 - s) * X, rtol=1e-12)
    np.testing.assert_allclose(got[1], 2 * (s - Y) * s * (1 - s), rtol=1e-12)


# -- lecture 004 -------------------------------------------------------------------------------

ACT = {
    "tanh": (gn.tanh, np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (gn.relu, lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "sigmoid": (gn.sigmoid, lambda z: 1 / (1 + np.exp(-z)),
                lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
}

# the given numbers: three samples, hidden weights w_jj' (j: input, j': hidden unit)
X = np.array([[0.5, -1.0], [1.5, 2.0], [-0.3, 0.8]])
Y = np.array([1.0, 0.0, 1.0])
W_HID = np.array([[0.4, -0.7], [0.2, 0.6]])   # W_HID[j, j'] = w_jj'
B_HID = np.array([0.1, -0.3])                 # b_1, b_2
W_OUT = np.array([0.8, -1.2])                 # w_1, w_2
B_OUT = 0.05                                  # b_3


def _network(act, loss):
    g = gn.Graph("lecture004")
    x = g.input("x", (3, 2))
    y = g.input("y", (3,))
    Wh = g.param("W_hid", value=W_HID)
    bh = g.param("b_hid", value=B_HID)
    wo = g.param("w_out", value=W_OUT)
    bo = g.param("b_out", value=np.array(B_OUT))
    z_hid = x @ Wh + bh              # z_j' = w_1j' x_1 + w_2j' x_2 + b_j'
    h = ACT[act][0](z_hid)           # h_j = f(z_j)
    z = h @ wo + bo                  # z = w_1 h_1 + w_2 h_2 + b_3
    yhat = gn.sigmoid(z)
    if loss == "mse":
        J = gn.mean((yhat - y) ** 2)
    else:
        J = -gn.mean(y * gn.log(yhat) + (1 - y) * gn.log(1 - yhat))
    return g, J, [Wh, bh, wo, bo]


def _by_hand(act, loss):
    """The lecture's chain rule, with NumPy, one factor at a time."""
    f, fprime = ACT[act][1], ACT[act][2]
    n = len(X)
    z_hid = X @ W_HID + B_HID
    h = f(z_hid)
    z = h @ W_OUT + B_OUT
    yhat = 1 / (1 + np.exp(-z))
    if loss == "mse":
        dJ_dyhat = 2 * (yhat - Y) / n
    else:
        dJ_dyhat = -(Y / yhat - (1 - Y) / (1 - yhat)) / n
    dyhat_dz = yhat * (1 - yhat)
    delta = dJ_dyhat * dyhat_dz                            # dJ/dz per sample
    dJ_dw = np.array([np.sum(delta * h[:, j]) for j in range(2)])       # dz/dw_j = h_j
    dJ_db3 = np.sum(delta)                                               # dz/db_3 = 1
    dJ_dwjj = np.zeros((2, 2))
    dJ_dbj = np.zeros(2)
    for jp in range(2):                       # hidden unit j'
        dz_dh = W_OUT[jp]                     # dz/dh_j' = w_j'
        dh_dz = fprime(z_hid[:, jp])          # dh_j'/dz_j' = f'(z_j')
        for j in range(2):                    # input j: dz_j'/dw_jj' = x_j
            dJ_dwjj[j, jp] = np.sum(delta * dz_dh * dh_dz * X[:, j])
        dJ_dbj[jp] = np.sum(delta * dz_dh * dh_dz)   # dz_j'/db_j' = 1
    return [dJ_dwjj, dJ_dbj, dJ_dw, dJ_db3]


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_lecture004_partial_derivatives_three_modes(act, loss):
    g, J, params = _network(act, loss)
    want = _by_hand(act, loss)
    for mode in ("reverse", "forward", "symbolic"):
        grads = gn.grad(J, params, mode=mode)
        got = gn.compile(grads)(x=X, y=Y)
        for p, a, b in zip(params, got, want):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14,
                                       err_msg=f"{mode} mode, d J / d {p.name}")


def test_lecture004_by_hand_formula_is_not_vacuous():
    # the hand computation distinguishes the activations (a wrong f' would be caught)
    a, b = _by_hand("tanh", "mse"), _by_hand("sigmoid", "mse")
    assert not np.allclose(a[0], b[0])


# -- lecture 000: the neural tangent kernel ------------------------------------------------------------

def _torch_mlp(ws, x, act):
    W1, b1, W2, b2 = ws
    return act(x @ W1 + b1) @ W2 + b2


def _torch_ntk(ws, x1, x2, act):
    params = [torch.tensor(w, requires_grad=True) for w in ws]

    def jac(x):
        out = _torch_mlp(params, torch.tensor(x), act)
        rows = []
        for i in range(out.shape[0]):
            per = []
            for a in range(out.shape[1]):
                gs = torch.autograd.grad(out[i, a], params, retain_graph=True)
                per.append(torch.cat([t.reshape(-1) for t in gs]))
            rows.append(torch.stack(per))
        return torch.stack(rows)  # (n, k, P)
    J1, J2 = jac(x1), jac(x2)
    return torch.einsum("iap,jbp->ijab", J1, J2).detach().numpy()


@pytest.mark.parametrize("k", [1, 3])
def test_ntk_matches_torch(k, rng):
    g = gn.Graph("ntk")
    x = g.input("x", (None, 2))
    ws = [rng.standard_normal((2, 4)), rng.standard_normal(4), rng.standard_normal((4, k)),
          rng.standard_normal(k)]
    W1, b1, W2, b2 = (g.param(n, value=v) for n, v in zip(("W1", "b1", "W2", "b2"), ws))
    out = gn.tanh(x @ W1 + b1) @ W2 + b2
    x1, x2 = rng.standard_normal((5, 2)), rng.standard_normal((3, 2))
    K = gn.ntk(out, [W1, b1, W2, b2], x1, x2)
    want = _torch_ntk(ws, x1, x2, torch.tanh)
    if k == 1:
        assert K.shape == (5, 3)
        np.testing.assert_allclose(K, want[:, :, 0, 0], rtol=1e-10)
    else:
        assert K.shape == (5, 3, k, k)
        np.testing.assert_allclose(K, want, rtol=1e-10)
    # symmetric and positive semi-definite on one set of points
    K11 = gn.ntk(out, None, x1)
    if k == 1:
        np.testing.assert_allclose(K11, K11.T, rtol=1e-12)
        assert np.linalg.eigvalsh(K11).min() > -1e-9
    # the subset of parameters matters (only the last layer: K = [h 1][h 1]^T for k = 1)
    K_last = gn.ntk(out, [W2, b2], x1, x2)
    h1 = np.tanh(x1 @ ws[0] + ws[1])
    h2 = np.tanh(x2 @ ws[0] + ws[1])
    want_last = h1 @ h2.T + 1
    np.testing.assert_allclose(K_last if k == 1 else K_last[:, :, 0, 0], want_last, rtol=1e-10)


def test_ntk_errors(rng):
    g = gn.Graph("ntk_err")
    x = g.input("x", (None, 2))
    z = g.input("z", (None, 2))
    W = g.param("W", value=rng.standard_normal((2, 1)))
    out = (x + z) @ W
    with pytest.raises(gn.GraphError, match="pass input="):
        gn.ntk(out, [W], np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(gn.GraphError, match="also needs input"):
        gn.ntk(out, [W], np.zeros((2, 2)), input=x)
    with pytest.raises(gn.ShapeError, match="x1 has shape"):
        gn.ntk(x @ W, [W], np.zeros((2, 3)))
    with pytest.raises(gn.GraphError, match="not a param"):
        gn.ntk(x @ W, [x], np.zeros((2, 2)))
    with pytest.raises(gn.ShapeError, match="leading"):
        gn.ntk((x @ W).sum(), [W], np.zeros((2, 2)))


# -- second order ----------------------------------------------------------------------------------

def test_hessian_of_small_mlp_loss_matches_torch(rng):
    g = gn.Graph("hess")
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    W1v, b1v, W2v = rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal((3, 1))
    W1 = g.param("W1", value=W1v)
    b1 = g.param("b1", value=b1v)
    W2 = g.param("W2", value=W2v)
    loss = gn.mse(gn.tanh(x @ W1 + b1) @ W2, y)
    Xv, Yv = rng.standard_normal((4, 2)), rng.standard_normal((4, 1))
    HW1, Hb1 = gn.compile([gn.hessian(loss, W1), gn.hessian(loss, b1)])(x=Xv, y=Yv)
    assert HW1.shape == (2, 3, 2, 3) and Hb1.shape == (3, 3)

    tX, tY = torch.tensor(Xv), torch.tensor(Yv)

    def f_W1(w):
        return torch.mean((torch.tanh(tX @ w + torch.tensor(b1v)) @ torch.tensor(W2v) - tY) ** 2)

    def f_b1(b):
        return torch.mean((torch.tanh(tX @ torch.tensor(W1v) + b) @ torch.tensor(W2v) - tY) ** 2)
    want_W1 = torch.autograd.functional.hessian(f_W1, torch.tensor(W1v)).numpy()
    want_b1 = torch.autograd.functional.hessian(f_b1, torch.tensor(b1v)).numpy()
    np.testing.assert_allclose(HW1, want_W1, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(Hb1, want_b1, rtol=1e-10, atol=1e-13)


# -- lecture 002: reverse mode on a very deep chain -------------------------------------------------

def test_10000_layer_chain_reverse_gradient_builds_and_compiles():
    depth = 10_000
    g = gn.Graph("chain")
    x = g.input("x", (3,))
    p = g.param("p", value=np.array([0.1, -0.2, 0.05]))
    t0 = time.perf_counter()
    h = x
    for _ in range(depth):
        h = gn.tanh(h + p)
    loss = h.sum()
    t1 = time.perf_counter()
    dp, dx = gn.grad(loss, [p, x])
    t2 = time.perf_counter()
    prog = gn.compile([loss, dp, dx])
    t3 = time.perf_counter()
    xv = np.array([0.3, -0.1, 0.2])
    L, gp, gx = prog(x=xv)
    t4 = time.perf_counter()
    print(f"\n10,000-layer chain: {len(g.nodes)} nodes; build {t1 - t0:.2f}s, reverse grad "
          f"{t2 - t1:.2f}s, compile {t3 - t2:.2f}s, run {t4 - t3:.3f}s")

    tx = torch.tensor(xv, requires_grad=True)
    tp = torch.tensor(g.values["p"], requires_grad=True)
    th = tx
    for _ in range(depth):
        th = torch.tanh(th + tp)
    th.sum().backward()
    np.testing.assert_allclose(L, th.sum().item(), rtol=1e-12)
    np.testing.assert_allclose(gp, tp.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-9, atol=1e-300)
