"""The three training-step workloads of issue 4, as data + graphnn graphs.

Every implementation (graphnn, hand-written NumPy, torch, JAX, PyTensor) starts
from the same initial parameters (`init_params`) and the same batch (`data`),
so their steps compute the same numbers and can be checked against each other.
"""
from __future__ import annotations

import numpy as np

XOR_X = np.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]])
XOR_Y = np.array([[0.], [1.], [1.], [0.]])

SPECS = {
    # name: layer sizes, activation, loss, optimizer, batch
    "xor": dict(sizes=[2, 2, 1], act="relu", loss="mse", opt="sgd", lr=0.1, batch=4),
    "mlp": dict(sizes=[64, 256, 256, 10], act="relu", loss="softmax_ce", opt="adam", lr=1e-3,
                batch=128),
    "deep": dict(sizes=[64] * 33, act="tanh", loss="mse", opt="sgd", lr=0.01, batch=32),
}
ADAM = dict(b1=0.9, b2=0.999, eps=1e-8)


def deep_spec(depth: int) -> dict:
    return dict(SPECS["deep"], sizes=[64] * (depth + 1))


def init_params(spec: dict, seed: int = 0) -> list[np.ndarray]:
    """[W1, b1, W2, b2, ...] (float64). XOR starts near lecture 001's exact solution."""
    sizes = spec["sizes"]
    if sizes == [2, 2, 1]:
        return [np.array([[1.0, 0.9], [0.8, 1.1]]), np.array([0.1, -0.95]),
                np.array([[0.9], [-1.8]]), np.array([0.05])]
    rng = np.random.default_rng(seed)
    out = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        out.append(rng.normal(0.0, np.sqrt(1.0 / a), (a, b)))
        out.append(rng.normal(0.0, 0.01, (b,)))
    return out


def data(spec: dict, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y): Y is one-hot for softmax cross-entropy."""
    if spec["sizes"] == [2, 2, 1]:
        return XOR_X.copy(), XOR_Y.copy()
    rng = np.random.default_rng(seed)
    n, d_in, d_out = spec["batch"], spec["sizes"][0], spec["sizes"][-1]
    X = rng.normal(size=(n, d_in))
    if spec["loss"] == "softmax_ce":
        Y = np.eye(d_out)[rng.integers(0, d_out, n)]
    else:
        Y = np.tanh(rng.normal(size=(n, d_out)))
    return X, Y


def graphnn_step(spec: dict, params: list[np.ndarray] | None = None, dtype="float64",
                 use_optim: bool = True):
    """Build the whole training step as one graph.

    Returns (graph, loss, updates, param_nodes). The optimizer comes from
    `gn.optim` when it exists, else from the plain-graph rules below."""
    import graphnn as gn
    params = init_params(spec) if params is None else params
    g = gn.Graph("step", dtype=dtype)
    sizes = spec["sizes"]
    x = g.input("x", (None, sizes[0]))
    y = g.input("y", (None, sizes[-1]))
    h, ps = x, []
    n_layers = len(sizes) - 1
    for i in range(n_layers):
        W = g.param(f"W{i + 1}", value=params[2 * i].astype(dtype))
        b = g.param(f"b{i + 1}", value=params[2 * i + 1].astype(dtype))
        ps += [W, b]
        h = h @ W + b
        if i < n_layers - 1:
            h = getattr(gn, spec["act"])(h)
    loss = gn.mse(h, y) if spec["loss"] == "mse" else gn.softmax_cross_entropy(h, y)
    grads = gn.grad(loss, ps)
    updates = optimizer_updates(spec, ps, grads, use_optim)
    return g, loss, updates, ps


def optimizer_updates(spec, ps, grads, use_optim=True) -> dict:
    import graphnn as gn
    optim = _gn_optim() if use_optim else None
    if optim is not None:
        opt = (optim.SGD(lr=spec["lr"]) if spec["opt"] == "sgd" else
               optim.Adam(lr=spec["lr"], betas=(ADAM["b1"], ADAM["b2"]), eps=ADAM["eps"]))
        return opt.build(ps, grads)
    g = ps[0].graph
    with g.provenance(role="update"):
        if spec["opt"] == "sgd":
            return {p: p - spec["lr"] * gr for p, gr in zip(ps, grads)}
        # Adam, as torch.optim.Adam computes it
        b1, b2, eps, lr = ADAM["b1"], ADAM["b2"], ADAM["eps"], spec["lr"]
        t = g.param("adam_t", value=np.array(0.0, dtype=g.dtype))
        t1 = t + 1.0
        bc1 = 1.0 - gn.pow(g.const(None, b1), t1)
        bc2 = 1.0 - gn.pow(g.const(None, b2), t1)
        step = lr / bc1
        rbc2 = gn.sqrt(bc2)
        ups = {t: t1}
        for p, gr in zip(ps, grads):
            m = g.param(f"adam_m_{p.name}", value=np.zeros(p.shape, dtype=p.dtype))
            v = g.param(f"adam_v_{p.name}", value=np.zeros(p.shape, dtype=p.dtype))
            m1 = b1 * m + (1 - b1) * gr
            v1 = b2 * v + (1 - b2) * (gr * gr)
            ups[m], ups[v] = m1, v1
            ups[p] = p - step * m1 / (gn.sqrt(v1) / rbc2 + eps)
        return ups


def _gn_optim():
    try:
        from graphnn.nn import optim
    except ImportError:
        return None
    needed = ("SGD", "Adam")
    if not all(hasattr(optim, n) for n in needed) or not hasattr(optim.SGD, "build"):
        return None
    return optim
