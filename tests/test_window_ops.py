"""pad, windows, take (and their adjoints), and the pooling / general convolution
built on them: values against torch, and every derivative mode (reverse, forward,
symbolic) against central finite differences, through gn.check_gradients."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import api

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _rng(seed=0):
    return np.random.default_rng(seed)


def _check(loss, feeds, wrt, symbolic=True):
    modes = ("reverse", "forward", "symbolic") if symbolic else ("reverse", "forward")
    rep = gn.check_gradients(loss, feeds, wrt=wrt, modes=modes, rtol=1e-5, atol=1e-7)
    assert rep.ok, str(rep)


def test_pad_values_and_gradients():
    g = gn.Graph("pad")
    x = g.input("x", (None, 2, 3))
    y = gn.pad(x, (0, 1, 0, 0, 2, 1), value=-1.5)
    X = _rng().normal(size=(2, 2, 3))
    got, = gn.compile([y])(x=X)
    np.testing.assert_array_equal(got, np.pad(X, ((0, 0), (1, 2), (0, 1)), constant_values=-1.5))
    w = g.const(None, _rng(1).normal(size=(1, 5, 4)))
    _check(api.sum(y * y * w), {"x": X}, [x], symbolic=False)
    g2 = gn.Graph("pad2")
    x2 = g2.param("x", value=_rng(2).normal(size=(2, 3)))
    _check(api.sum(gn.tanh(gn.pad(x2, (1, 0, 0, 2), value=0.3))), {}, [x2])
    with pytest.raises(gn.ShapeError, match="batch"):
        gn.pad(x, (1, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("kernel,stride,dilation", [((2,), (1,), (1,)), ((2, 3), (2, 1), (1, 2))])
def test_windows_and_adjoint_gradients(kernel, stride, dilation):
    g = gn.Graph("win")
    k = len(kernel)
    shape = (2, 2) + (7, 6)[:k]
    x = g.param("x", value=_rng().normal(size=shape))
    w = api.apply("windows", [x], kernel=kernel, stride=stride, dilation=dilation)
    c = g.const(None, _rng(1).normal(size=w.shape))
    back = api.apply("windows_adjoint", [gn.tanh(w) * c, x], kernel=kernel, stride=stride,
                     dilation=dilation)
    loss = api.sum(gn.tanh(back) * back)
    # windows_adjoint is the adjoint: <windows(x), v> == <x, windows_adjoint(v)>
    X, V = gn.compile([x, c])()
    W, A = gn.compile([w, api.apply("windows_adjoint", [c, x], kernel=kernel, stride=stride,
                                    dilation=dilation)])()
    assert np.isclose(np.sum(W * V), np.sum(X * A))
    (dx,) = gn.grad(loss, [x])  # the default (lowered) program and the plain one agree
    np.testing.assert_allclose(gn.compile([dx])()[0], gn.compile([dx], fast=False)()[0],
                               rtol=1e-12, atol=1e-12)
    _check(loss, {}, [x], symbolic=(k == 1))


def test_take_and_adjoint():
    g = gn.Graph("take")
    x = g.param("x", value=_rng().normal(size=(4, 3)))
    idx = g.const(None, np.array([[0, 3], [-1, 0]]))
    y = api.apply("take", [x, idx], axis=0)
    assert y.shape == (2, 2, 3)
    got, = gn.compile([y])()
    np.testing.assert_array_equal(got, np.take(g.values["x"], [[0, 3], [-1, 0]], axis=0))
    c = g.const(None, _rng(1).normal(size=(2, 2, 3)))
    _check(api.sum(gn.tanh(y) * c), {}, [x])
    y1 = api.apply("take", [x, g.const(None, np.array([2, 2, 0]))], axis=1)
    _check(api.sum(y1 * y1 * y1), {}, [x])
    labels = g.input("labels", (None,), dtype="int64")
    emb = api.apply("take", [x, labels], axis=0)
    assert emb.shape == (None, 3)
    out, = gn.compile([emb])(labels=np.array([1, 1, 2]))
    np.testing.assert_array_equal(out, g.values["x"][[1, 1, 2]])


def _torch_pools(X):
    t = torch.tensor(X)
    return [F.max_pool2d(t, 2), F.max_pool2d(t, (3, 2), (2, 1), padding=(1, 1), ceil_mode=True),
            F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            F.avg_pool2d(t, 3, 2, 1, count_include_pad=True), F.max_pool1d(t[:, :, 0], 3, 2, dilation=2)]


def test_pooling_against_torch_and_gradients():
    g = gn.Graph("pool")
    X = _rng().normal(size=(2, 3, 7, 6))
    x = g.input("x", (None, 3, 7, 6))
    outs = [gn.max_pool(x, (2, 2)), gn.max_pool(x, (3, 2), (2, 1), pads=(1, 1, 1, 1), ceil_mode=True),
            gn.avg_pool(x, (3, 3), 2, pads=(1, 1, 1, 1), ceil_mode=True),
            gn.avg_pool(x, (3, 3), 2, pads=(1, 1, 1, 1), count_include_pad=True),
            gn.max_pool(x[:, :, 0], (3,), (2,), dilation=(2,))]
    for got, want in zip(gn.compile(outs)(x=X), _torch_pools(X)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
    # gradients: reverse mode equals torch's autograd
    tX = torch.tensor(X, requires_grad=True)
    sum(p.square().sum() for p in _torch_pools_t(tX)).backward()
    loss = api.sum(sum(api.sum(o * o) for o in outs))
    gx, = gn.grad(loss, [x])
    np.testing.assert_allclose(gn.compile([gx])(x=X)[0], tX.grad.numpy(), rtol=1e-12, atol=1e-12)
    # and reverse / forward / symbolic agree with finite differences (small input)
    g2 = gn.Graph("pool2")
    p = g2.param("p", value=_rng(3).normal(size=(1, 1, 4, 3)))
    y = gn.max_pool(p, (2, 2), (1, 1), pads=(0, 1, 1, 0)) + gn.avg_pool(p, (2, 2), (1, 1), pads=(0, 1, 1, 0))
    _check(api.sum(y * y), {}, [p])


def _torch_pools_t(t):
    return [F.max_pool2d(t, 2), F.max_pool2d(t, (3, 2), (2, 1), padding=(1, 1), ceil_mode=True),
            F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            F.avg_pool2d(t, 3, 2, 1, count_include_pad=True), F.max_pool1d(t[:, :, 0], 3, 2, dilation=2)]


@pytest.mark.parametrize("k,groups,stride,dilation,pads", [
    (2, 3, (2, 1), (1, 2), (1, 2, 1, 2)), (1, 1, (1,), (2,), (2, 0)), (2, 1, (1, 1), (1, 1), (1, 0, 0, 1)),
    (1, 3, (2,), (1,), (1, 1))])
def test_general_conv_against_torch(k, groups, stride, dilation, pads):
    rng = _rng(k + groups)
    X = rng.normal(size=(2, 3, 7, 6)[:2 + k])
    W = rng.normal(size=(6, 3 // groups, 3, 2)[:2 + k])
    g = gn.Graph("conv")
    x = g.input("x", (None,) + X.shape[1:])
    w = g.param("w", value=W)
    y = gn.conv(x, w, stride=stride, dilation=dilation, pads=pads, groups=groups)
    tx, tw = torch.tensor(X, requires_grad=True), torch.tensor(W, requires_grad=True)
    fn = F.conv2d if k == 2 else F.conv1d
    txp = F.pad(tx, sum(((pads[i], pads[i + k]) for i in reversed(range(k))), ()))
    ref = fn(txp, tw, stride=stride, dilation=dilation, groups=groups)
    got, = gn.compile([y])(x=X)
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    ref.square().sum().backward()
    gx, gw = gn.grad(api.sum(y * y), [x, w])
    Gx, Gw = gn.compile([gx, gw])(x=X)
    np.testing.assert_allclose(Gx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(Gw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_general_conv_all_modes_small():
    g = gn.Graph("conv_small")
    x = g.param("x", value=_rng(5).normal(size=(1, 2, 5)))
    w = g.param("w", value=_rng(6).normal(size=(2, 1, 2)))
    y = gn.conv(x, w, stride=1, dilation=2, pads=(1, 0), groups=2)
    _check(api.sum(gn.tanh(y)), {}, [x, w])


def test_new_ops_compile_fast():
    g = gn.Graph("fast")
    x = g.input("x", (None, 2, 6, 6))
    w = g.param("w", value=_rng(7).normal(size=(4, 1, 3, 3)))
    h = gn.relu(gn.conv(x, w, dilation=1, pads=(1, 1, 1, 1), groups=2))
    y = gn.avg_pool(gn.max_pool(h, (2, 2)), (3, 3), 1, pads=(1, 1, 1, 1))
    loss = api.sum(y * y)
    gw, = gn.grad(loss, [w])
    X = _rng(8).normal(size=(3, 2, 6, 6))
    plain = gn.compile([loss, gw], fast=False)(x=X)
    fast = gn.compile([loss, gw], fast=True)(x=X)
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
