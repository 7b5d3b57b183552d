"""Hand-written NumPy training steps: forward, manual backward, in-place update;
and the same forward and backward alone (`NumpyGrads`: the loss and the gradients,
no update), the reference of the programs without updates (`gn.compile([loss, *grads])`).

Written as an experienced NumPy user would: no recomputation (the backward
reuses forward values: tanh' = 1 - h^2, the ReLU mask from h), the softmax
cross-entropy gradient in closed form (p - Y)/N, in-place parameter and state
updates (`W -= lr * gW`, `m *= b1; m += (1 - b1) * g`), one loop over layers.
"""
from __future__ import annotations

import math

import numpy as np

from workloads import ADAM


class NumpyStep:
    def __init__(self, spec, params, X, Y):
        self.spec = spec
        self.params = [p.copy() for p in params]
        self.X, self.Y = X, Y
        self.act = spec["act"]
        self.lr = spec["lr"]
        if spec["opt"] == "adam":
            self.m = [np.zeros_like(p) for p in self.params]
            self.v = [np.zeros_like(p) for p in self.params]
            self.t = 0

    def __call__(self) -> float:
        loss, grads = loss_and_grads(self.params, self.X, self.Y, self.act, self.spec["loss"])
        self.update(grads)
        return loss

    def update(self, grads) -> None:
        P = self.params
        if self.spec["opt"] == "sgd":
            for p, gr in zip(P, grads):
                p -= self.lr * gr
        else:
            b1, b2, eps = ADAM["b1"], ADAM["b2"], ADAM["eps"]
            self.t += 1
            step = self.lr / (1.0 - b1 ** self.t)
            rbc2 = math.sqrt(1.0 - b2 ** self.t)
            for p, gr, m, v in zip(P, grads, self.m, self.v):
                m *= b1
                m += (1.0 - b1) * gr
                v *= b2
                v += (1.0 - b2) * (gr * gr)
                denom = np.sqrt(v)
                denom /= rbc2
                denom += eps
                p -= step * (m / denom)


class NumpyGrads:
    """The loss and the gradients of every parameter, no update: what a custom training
    loop computes with `gn.compile([loss, *grads])`. Calling it returns the loss; `all()`
    returns (loss, [gW1, gb1, ...]), fresh arrays the caller owns."""

    def __init__(self, spec, params, X, Y):
        self.spec = spec
        self.params = [p.copy() for p in params]
        self.X, self.Y = X, Y
        self.act = spec["act"]
        self.loss = spec["loss"]

    def all(self):
        return loss_and_grads(self.params, self.X, self.Y, self.act, self.loss)

    def __call__(self) -> float:
        return loss_and_grads(self.params, self.X, self.Y, self.act, self.loss)[0]


def loss_and_grads(P, X, Y, act: str, loss_kind: str):
    """Forward, then the manual backward: (loss, [gW1, gb1, gW2, ...])."""
    n_layers = len(P) // 2
    hs = [X]
    h = X
    for i in range(n_layers):
        z = h @ P[2 * i]
        z += P[2 * i + 1]
        if i < n_layers - 1:
            if act == "tanh":
                np.tanh(z, out=z)
            else:
                np.maximum(z, 0.0, out=z)
            hs.append(z)
        h = z
    n = X.shape[0]
    if loss_kind == "mse":
        d = h - Y
        loss = float(np.mean(d * d))
        dz = d * (2.0 / d.size)
    else:
        z = h - h.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s)[:, 0] - (z * Y).sum(axis=1)))
        dz = e / s
        dz -= Y
        dz /= n
    grads = [None] * len(P)
    for i in range(n_layers - 1, -1, -1):
        a = hs[i]
        grads[2 * i] = a.T @ dz
        grads[2 * i + 1] = dz.sum(axis=0)
        if i > 0:
            dh = dz @ P[2 * i].T
            if act == "tanh":
                dh *= 1.0 - a * a
            else:
                dh *= a > 0
            dz = dh
    return loss, grads
