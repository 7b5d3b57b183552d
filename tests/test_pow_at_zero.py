"""Powers differentiate to y*x**(y-1): finite at x = 0 (SymPy's raw form y*x**y/x is 0/0)."""
import numpy as np
import pytest

import graphnn as gn


def _lecture001_at_perfect_fit():
    g = gn.Graph("e")
    x = g.input("x", (2,)); y = g.input("y", ())
    w = g.param("w", value=[0.0, 0.0]); b = g.param("b", value=0.0)
    yhat = gn.sigmoid(w @ x + b)
    E = (yhat - y) ** 2          # yhat = 0.5 = y: a perfect fit, the gradient is exactly 0
    return E, w, b, {"x": np.array([1.0, 2.0]), "y": np.array(0.5)}


@pytest.mark.parametrize("mode", ["reverse", "forward", "symbolic"])
def test_square_gradient_is_zero_not_nan_at_a_perfect_fit(mode):
    E, w, b, feeds = _lecture001_at_perfect_fit()
    dw, db = gn.compile(gn.grad(E, [w, b], mode=mode))(**feeds)
    assert np.all(dw == 0) and db == 0


@pytest.mark.parametrize("p", [2.0, 3.0, 0.5])
def test_power_derivative_matches_closed_form(p):
    g = gn.Graph("pw")
    x = g.input("x", (4,))
    d, = gn.grad((x ** p).sum(), [x])
    xs = np.array([0.0, 0.5, 1.0, 2.0])
    got = gn.compile(d)(x=xs)
    with np.errstate(divide="ignore"):
        want = p * xs ** (p - 1)
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_fast_training_step_at_zero_residual():
    g = gn.Graph("fz")
    x = g.input("x", (None, 1)); y = g.input("y", (None, 1))
    w = g.param("w", value=[[1.0]])
    loss = gn.mean((x @ w - y) ** 2)
    tr = gn.Trainer(loss, optimizer=gn.optim.SGD(lr=0.1))
    hist = tr.fit({"x": np.ones((4, 1)), "y": np.ones((4, 1))}, epochs=3, batch_size=4, verbose=False)
    assert hist.loss == [0.0, 0.0, 0.0] and g.values["w"][0, 0] == 1.0
