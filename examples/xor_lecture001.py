"""Lecture 001's XOR network: the exact solution, then training from a random start.

Run: python examples/xor_lecture001.py   (writes nothing; prints the IR, code and results)
"""
import numpy as np

import graphnn as gn

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def build(exact: bool, seed: int = 1):
    g = gn.Graph("xor", seed=seed)
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    if exact:  # W = [[1, 1], [1, 1]], b = [0, -1], w = [1, -2]
        W = g.param("W", value=[[1.0, 1.0], [1.0, 1.0]])
        b = g.param("b", value=[0.0, -1.0])
        w = g.param("w", value=[[1.0], [-2.0]])
    else:
        W, b, w = g.param("W", (2, 2)), g.param("b", (2,), init="zeros"), g.param("w", (2, 1))
    h = gn.relu(x @ W + b).named("h")
    out = (h @ w).named("out")
    return g, out, gn.mse(out, y).named("loss")


g, out, loss = build(exact=True)
print(g)
prog = gn.compile(out)
print(prog.plain_source)  # one line per node; prog.source is the lowered program that runs
print("exact weights ->", prog(x=X).ravel())          # [0. 1. 1. 0.]

g2, out2, loss2 = build(exact=False)
tr = gn.Trainer(loss2, optimizer=gn.optim.Adam(lr=0.05))
hist = tr.fit({"x": X, "y": Y}, epochs=300, batch_size=4, shuffle=False, seed=0, verbose=False)
pred = tr.predict(out2, {"x": X}).ravel()
print(f"trained from a random start: loss {hist.loss[-1]:.2e}, outputs {np.round(pred, 3)}")
