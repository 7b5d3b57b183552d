"""Lecture 000, figure 6: data-parallel SGD. Each worker computes the gradient of the mean
loss on its own mini-batch; averaging those gradients gives the gradient of the mean loss
on the union of the batches (the gradient is linear), so one step on the averaged gradient
equals one step on the whole batch."""
import numpy as np

import graphnn as gn


def test_averaged_shard_gradients_equal_full_batch_gradient():
    rng = np.random.default_rng(0)
    g = gn.Graph("dp", seed=0)
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 1))
    out = gn.nn.MLP([8, 1], activation="tanh")(x)
    loss = gn.mse(out, y)
    params = g.params
    step = gn.compile(gn.grad(loss, params))
    X, Y = rng.normal(size=(12, 3)), rng.normal(size=(12, 1))
    full = step(x=X, y=Y)
    shards = [step(x=X[i:i + 4], y=Y[i:i + 4]) for i in range(0, 12, 4)]  # 3 "GPUs"
    for k, p in enumerate(params):
        averaged = np.mean([s[k] for s in shards], axis=0)
        np.testing.assert_allclose(averaged, full[k], rtol=1e-12, atol=1e-14,
                                   err_msg=f"parameter {p.name}")


def test_unequal_shards_need_weighting():
    """With unequal shard sizes the plain average is wrong; weighting by size fixes it."""
    rng = np.random.default_rng(1)
    g = gn.Graph("dp2")
    x = g.input("x", (None, 2))
    w = g.param("w", (2, 1))
    loss = gn.mean((x @ w) ** 2)
    step = gn.compile(gn.grad(loss, [w])[0])
    X = rng.normal(size=(10, 2))
    full = step(x=X)
    a, b = step(x=X[:7]), step(x=X[7:])
    assert not np.allclose((a + b) / 2, full)
    np.testing.assert_allclose((7 * a + 3 * b) / 10, full, rtol=1e-12)
