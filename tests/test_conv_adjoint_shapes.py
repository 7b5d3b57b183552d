"""The adjoint ops of conv2d check their shapes when built (a crafted model file cannot
make them fail later, inside NumPy)."""
import numpy as np
import pytest

import graphnn as gn


def _graph():
    g = gn.Graph("c")
    x = g.input("x", (None, 2, 6, 6))
    w = g.param("w", (3, 2, 3, 3))
    return g, x, w


def test_gradients_still_build_and_match_finite_differences():
    g, x, w = _graph()
    y = gn.conv2d(x, w, stride=2, padding=1)
    loss = (y * y).sum()
    dx, dw = gn.grad(loss, [x, w])
    X = np.random.default_rng(0).normal(size=(2, 2, 6, 6))
    gx, gw = gn.compile([dx, dw])(x=X)
    f = gn.compile(loss)
    eps, W = 1e-6, g.values["w"].copy()
    for idx in [(0, 0, 0, 0), (2, 1, 2, 1)]:
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += eps; Wm[idx] -= eps
        fd = (f(x=X, w=Wp) - f(x=X, w=Wm)) / (2 * eps)
        assert abs(fd - gw[idx]) < 1e-6 * max(1, abs(fd))


@pytest.mark.parametrize("ct_shape", [(None, 3, 4, 4), (None, 2, 3, 3), (None, 3, 3), (4, 3, 3, 3)])
def test_grad_input_rejects_a_mismatched_cotangent(ct_shape):
    g, x, w = _graph()
    ct = g.input("ct", ct_shape)
    with pytest.raises(gn.ShapeError, match="conv2d_grad_input"):
        gn.ops.api.apply("conv2d_grad_input", [ct, w, x], stride=2, padding=1)


@pytest.mark.parametrize("ct_shape", [(None, 3, 4, 4), (None, 3, 3)])
def test_grad_weight_rejects_a_mismatched_cotangent(ct_shape):
    g, x, w = _graph()
    ct = g.input("ct", ct_shape)
    with pytest.raises(gn.ShapeError, match="conv2d_grad_weight"):
        gn.ops.api.apply("conv2d_grad_weight", [x, ct], kernel=(3, 3), stride=2, padding=1)
