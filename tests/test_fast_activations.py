"""Every activation through the fast training-step printer equals the plain program.

The fast printer fuses element-wise chains into new expressions; anything a fused
expression calls (such as the erf helper of gelu) must come along into the program."""
import numpy as np
import pytest

import graphnn as gn
from graphnn.ops.api import ACTIVATIONS

PLAIN = [a for a in ACTIVATIONS if a not in ("prelu", "trainable_swish")]


def _step(activation, fast):
    g = gn.Graph(f"act_{activation}", seed=3)
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 2))
    out = gn.nn.MLP([5, 2], activation=activation)(x)
    loss = gn.mse(out, y)
    params = g.params
    opt = gn.optim.SGD(lr=0.05, momentum=0.9)
    updates = opt.build(params, gn.grad(loss, params))
    prog = gn.compile(loss, updates=updates, fast=fast)
    return g, prog


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fast_step_equals_plain_step(activation):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    (g1, fast), (g2, plain) = _step(activation, True), _step(activation, False)
    for _ in range(3):
        l1, l2 = fast(x=X, y=Y), plain(x=X, y=Y)
        np.testing.assert_allclose(l1, l2, rtol=1e-12, atol=1e-14)
    for p in g1.params:
        np.testing.assert_allclose(g1.values[p.name], g2.values[p.name], rtol=1e-11, atol=1e-13,
                                   err_msg=f"{activation}: {p.name}")
