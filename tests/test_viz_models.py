"""Graphs from the lectures, shared by the viz tests."""
import numpy as np

import graphnn as gn


def lecture001():
    """E = (sigmoid(w.x + b) - y)^2 with lecture 001's names (u1, u2, yhat)."""
    g = gn.Graph("lecture001")
    x = g.input("x", (2,))
    y = g.input("y", ())
    w = g.param("w", value=np.array([0.5, -0.3]))
    b = g.param("b", value=np.array(0.1))
    u1 = (w @ x).named("u1")
    u2 = (u1 + b).named("u2")
    yhat = gn.sigmoid(u2).named("yhat")
    E = gn.square(yhat - y).named("E")
    feeds = {"x": np.array([1.0, 2.0]), "y": np.array(1.0)}
    return g, E, feeds


def lecture004_scalar(f=gn.tanh):
    """Lecture 004's 2-2-1 network written as in the slides: z_j = w_1j x_1 + w_2j x_2 + b_j,
    h_j = f(z_j), z = w_1 h_1 + w_2 h_2 + b_3, yhat = sigma(z), J = (yhat - y)^2."""
    g = gn.Graph("lecture004")
    x1, x2, y = g.input("x1", ()), g.input("x2", ()), g.input("y", ())
    p = {n: g.param(n, value=np.array(v)) for n, v in
         dict(w11=0.3, w21=-0.4, b1=0.1, w12=0.5, w22=0.2, b2=-0.2, w1=0.7, w2=-0.6, b3=0.05).items()}
    z1 = (p["w11"] * x1 + p["w21"] * x2 + p["b1"]).named("z1")
    z2 = (p["w12"] * x1 + p["w22"] * x2 + p["b2"]).named("z2")
    h1, h2 = f(z1).named("h1"), f(z2).named("h2")
    z = (p["w1"] * h1 + p["w2"] * h2 + p["b3"]).named("z")
    yhat = gn.sigmoid(z).named("yhat")
    J = gn.square(yhat - y).named("J")
    feeds = {"x1": np.array(1.0), "x2": np.array(-2.0), "y": np.array(1.0)}
    return g, J, feeds, p


def lecture004_matrix():
    """The same 2-2-1 network in matrix form with layer scopes."""
    g = gn.Graph("net221")
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    with g.scope("hidden"):
        W = g.param("W", value=np.array([[0.3, 0.5], [-0.4, 0.2]]))
        b = g.param("b", value=np.array([0.1, -0.2]))
        h = gn.tanh(x @ W + b).named("h")
    with g.scope("output"):
        w = g.param("w", value=np.array([[0.7], [-0.6]]))
        b3 = g.param("b3", value=np.array([0.05]))
        yhat = gn.sigmoid(h @ w + b3).named("yhat")
    J = gn.mse(yhat, y).named("J")
    feeds = {"x": np.array([[1.0, -2.0], [0.5, 0.5], [0.0, 1.0]]), "y": np.array([[1.0], [0.0], [1.0]])}
    return g, J, feeds


def central_difference(prog, feeds, name, value, eps=1e-6):
    value = np.asarray(value, dtype=float)
    out = np.zeros_like(value)
    for i in np.ndindex(value.shape or ()):
        plus, minus = value.copy(), value.copy()
        plus[i] += eps
        minus[i] -= eps
        out[i] = (float(prog(**feeds, **{name: plus})) - float(prog(**feeds, **{name: minus}))) / (2 * eps)
    return out
