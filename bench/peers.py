"""The peer frameworks' training steps (torch eager, JAX jit, PyTensor), same math.

Each `make_<peer>(spec, params, X, Y)` returns a zero-argument callable that
runs one training step in place and returns the loss (as the framework's own
scalar: converting it would add a sync to the timing that NumPy does not pay).
A peer that cannot be imported raises ImportError; the runner skips it.
"""
from __future__ import annotations

import math

import numpy as np

from workloads import ADAM


def make_torch(spec, params, X, Y):
    import torch
    import os
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    P = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    x = torch.tensor(X, dtype=torch.float64)
    y = torch.tensor(Y, dtype=torch.float64)
    labels = y.argmax(dim=1)
    act = torch.tanh if spec["act"] == "tanh" else torch.relu
    n_layers = len(P) // 2
    if spec["opt"] == "sgd":
        opt = torch.optim.SGD(P, lr=spec["lr"])
    else:
        opt = torch.optim.Adam(P, lr=spec["lr"], betas=(ADAM["b1"], ADAM["b2"]), eps=ADAM["eps"])
    F = torch.nn.functional

    def step():
        opt.zero_grad(set_to_none=True)
        h = x
        for i in range(n_layers):
            h = torch.addmm(P[2 * i + 1], h, P[2 * i])
            if i < n_layers - 1:
                h = act(h)
        loss = F.mse_loss(h, y) if spec["loss"] == "mse" else F.cross_entropy(h, labels)
        loss.backward()
        opt.step()
        return loss.detach()
    step.params = lambda: [p.detach().numpy() for p in P]
    return step


def _jax_forward(jnp, spec, P, x):
    n_layers = len(P) // 2
    h = x
    for i in range(n_layers):
        h = h @ P[2 * i] + P[2 * i + 1]
        if i < n_layers - 1:
            h = jnp.tanh(h) if spec["act"] == "tanh" else jnp.maximum(h, 0.0)
    return h


def _jax_loss_fn(jax, jnp, spec):
    def loss_fn(P, x, y):
        h = _jax_forward(jnp, spec, P, x)
        if spec["loss"] == "mse":
            return jnp.mean((h - y) ** 2)
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(h, axis=-1), axis=-1))
    return loss_fn


def jax_step_fn(spec):
    """The pure JAX step (params, state, x, y) -> (params, state, loss), not yet jitted."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    loss_fn = _jax_loss_fn(jax, jnp, spec)
    lr = spec["lr"]
    if spec["opt"] == "sgd":
        def step(P, S, x, y):
            loss, G = jax.value_and_grad(loss_fn)(P, x, y)
            return [p - lr * g for p, g in zip(P, G)], S, loss
    else:
        b1, b2, eps = ADAM["b1"], ADAM["b2"], ADAM["eps"]

        def step(P, S, x, y):
            loss, G = jax.value_and_grad(loss_fn)(P, x, y)
            t, M, V = S
            t = t + 1.0
            M = [b1 * m + (1 - b1) * g for m, g in zip(M, G)]
            V = [b2 * v + (1 - b2) * g * g for v, g in zip(V, G)]
            st = lr / (1 - b1 ** t)
            rbc2 = jnp.sqrt(1 - b2 ** t)
            P = [p - st * m / (jnp.sqrt(v) / rbc2 + eps) for p, m, v in zip(P, M, V)]
            return P, (t, M, V), loss
    return step


def jax_state(spec, params):
    import jax.numpy as jnp
    P = [jnp.asarray(p) for p in params]
    if spec["opt"] == "sgd":
        return P, ()
    return P, (jnp.asarray(0.0), [jnp.zeros_like(p) for p in P], [jnp.zeros_like(p) for p in P])


def make_jax(spec, params, X, Y):
    import jax
    import jax.numpy as jnp
    fn = jax.jit(jax_step_fn(spec))
    P, S = jax_state(spec, params)
    state = {"P": P, "S": S}
    x, y = jnp.asarray(X), jnp.asarray(Y)

    def step():
        state["P"], state["S"], loss = fn(state["P"], state["S"], x, y)
        return loss.block_until_ready()
    step.params = lambda: [np.asarray(p) for p in state["P"]]
    return step


def pytensor_step_fn(spec, params, mode="NUMBA"):
    """A compiled PyTensor function () -> loss with shared-variable updates."""
    import pytensor
    import pytensor.tensor as pt
    P = [pytensor.shared(np.array(p, dtype=np.float64), name=f"p{i}") for i, p in enumerate(params)]
    x = pt.dmatrix("x")
    y = pt.dmatrix("y")
    n_layers = len(P) // 2
    h = x
    for i in range(n_layers):
        h = pt.dot(h, P[2 * i]) + P[2 * i + 1]
        if i < n_layers - 1:
            h = pt.tanh(h) if spec["act"] == "tanh" else pt.maximum(h, 0.0)
    if spec["loss"] == "mse":
        loss = pt.mean((h - y) ** 2)
    else:
        z = h - pt.max(h, axis=1, keepdims=True)
        logp = z - pt.log(pt.sum(pt.exp(z), axis=1, keepdims=True))
        loss = -pt.mean(pt.sum(y * logp, axis=1))
    G = pytensor.grad(loss, P)
    lr = spec["lr"]
    if spec["opt"] == "sgd":
        updates = [(p, p - lr * g) for p, g in zip(P, G)]
    else:
        b1, b2, eps = ADAM["b1"], ADAM["b2"], ADAM["eps"]
        t = pytensor.shared(np.float64(0.0), name="t")
        t1 = t + 1.0
        st = lr / (1 - b1 ** t1)
        rbc2 = pt.sqrt(1 - b2 ** t1)
        updates = [(t, t1)]
        for p, g in zip(P, G):
            m = pytensor.shared(np.zeros_like(p.get_value()))
            v = pytensor.shared(np.zeros_like(p.get_value()))
            m1 = b1 * m + (1 - b1) * g
            v1 = b2 * v + (1 - b2) * g * g
            updates += [(m, m1), (v, v1), (p, p - st * m1 / (pt.sqrt(v1) / rbc2 + eps))]
    fn = pytensor.function([x, y], loss, updates=updates, mode=mode)
    return fn, P


def make_pytensor(spec, params, X, Y):
    fn, P = pytensor_step_fn(spec, params)
    f = fn.vm if hasattr(fn, "vm") else None  # noqa: F841 (kept simple: call fn)

    def step():
        return fn(X, Y)
    step.params = lambda: [p.get_value() for p in P]
    return step


PEERS = {"torch": make_torch, "jax": make_jax, "pytensor": make_pytensor}
