"""Lecture 004's 2-2-1 network, one training step by hand: forward pass, J, backprop, update.

Run: python examples/step_by_step_221.py [out_dir]
Writes out_dir/net221_backprop.html (the step page, ending with the update), out_dir/net221_neurons.svg
(the network unit by unit with gradients and updated weights) and out_dir/net221_slides/ (one SVG
and one .tex per step, for slides).
"""
import os
import sys

import numpy as np

import graphnn as gn
import viz

out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
os.makedirs(out_dir, exist_ok=True)

X = np.array([[0.5, -1.0], [1.5, 2.0], [-0.3, 0.8]])
Y = np.array([[1.0], [0.0], [1.0]])
alpha = 0.5

# yhat = sigma(w_1 h_1 + w_2 h_2 + b_3),  h_j' = tanh(w_1j' x_1 + w_2j' x_2 + b_j')
g = gn.Graph("net221")
x = g.input("x", (None, 2))
y = g.input("y", (None, 1))
with g.scope("hidden"):
    W = g.param("W", value=np.array([[0.4, -0.7], [0.2, 0.6]]))   # W[j, j'] = w_jj'
    b = g.param("b", value=np.array([0.1, -0.3]))
    h = gn.tanh(x @ W + b).named("h")
with g.scope("output"):
    w = g.param("w", value=np.array([[0.8], [-1.2]]))
    b3 = g.param("b3", value=np.array([0.05]))
    yhat = gn.sigmoid(h @ w + b3).named("yhat")
J = gn.mse(yhat, y).named("J")
feeds = {"x": X, "y": Y}

steps = viz.backprop_steps(J, feeds=feeds)
print("backprop order:", " -> ".join(s.node.name for s in steps))
page = os.path.join(out_dir, "net221_backprop.html")
viz.steps_html(steps, page, lr=alpha)                     # the last step is the update
slides = viz.export_steps(steps, os.path.join(out_dir, "net221_slides"), lr=alpha)
neurons = os.path.join(out_dir, "net221_neurons.svg")
with open(neurons, "w", encoding="utf-8") as f:
    f.write(viz.svg(viz.neurons(J, feeds=feeds, lr=alpha)))

params = [W, b, w, b3]
step = gn.compile([J, *gn.grad(J, params)])
J0, *grads = step(**feeds)
for p, gr in zip(params, grads):
    new = g.values[p.name] - alpha * gr                      # w <- w - alpha dJ/dw
    print(f"{p.name:3s} {np.round(g.values[p.name].ravel(), 4)} - {alpha} x "
          f"{np.round(gr.ravel(), 4)} = {np.round(new.ravel(), 4)}")
    g.values[p.name] = new
J1 = step(**feeds)[0]
print(f"J = {J0:.6f} -> {J1:.6f} after one update")
print(f"wrote {page}, {neurons} and {len(slides)} slide files in {os.path.dirname(slides[0])}")
assert J1 < J0
