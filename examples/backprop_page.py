"""Lecture 001's E = (sigmoid(w.x + b) - y)^2: a drawing and a step-by-step backprop page.

Run: python examples/backprop_page.py [out_dir]  (writes lecture001.svg, lecture001.html)
"""
import os
import sys

import numpy as np

import graphnn as gn
import viz

out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
os.makedirs(out_dir, exist_ok=True)

g = gn.Graph("lecture001")
x = g.input("x", (2,))
y = g.input("y", ())
w = g.param("w", value=[0.5, -0.3])
b = g.param("b", value=0.1)
u1 = (w @ x).named("u1")
u2 = (u1 + b).named("u2")
yhat = gn.sigmoid(u2).named("yhat")
E = ((yhat - y) ** 2).named("E")
feeds = {"x": np.array([1.0, 2.0]), "y": np.array(1.0)}

with open(os.path.join(out_dir, "lecture001.svg"), "w", encoding="utf-8") as f:
    f.write(viz.svg(viz.draw(E, grads=True, feeds=feeds)))
steps = viz.backprop_steps(E, feeds=feeds)
viz.steps_html(steps, os.path.join(out_dir, "lecture001.html"))
print(f"{len(steps)} steps; wrote lecture001.svg and lecture001.html in {out_dir}")
