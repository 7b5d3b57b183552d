"""Lecture 003: a shallow ReLU network as a piecewise-linear function, and depth against width.

Run: python examples/linear_regions.py [out_dir]   (writes out_dir/shallow_relu.png)
"""
import os
import sys

import numpy as np

import graphnn as gn
import viz

out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
os.makedirs(out_dir, exist_ok=True)

# y = phi_0 + sum_d phi_d relu(theta_d0 + theta_d1 x): 3 hidden units, 10 parameters
theta = np.array([[0.5, -1.0], [-0.2, 1.0], [0.3, 0.6]])
phi = np.array([0.1, 1.0, -1.5, 0.8])
fig = viz.plots.shallow_relu_network(theta, phi)
png = os.path.join(out_dir, "shallow_relu.png")
fig.savefig(png, dpi=80)
r = fig.graphnn_regions
print(f"shallow network, 3 units: joints at {np.round(r.joints, 3)}, {r.count} linear regions")


def pieces(K: int) -> int:
    """Linear pieces on [0, 1] of the tent map t(x) = 2 relu(x) - 4 relu(x - 1/2) composed K times."""
    g = gn.Graph(f"tent_{K}")
    x = g.input("x", (None, 1))
    h = x
    for k in range(K):
        W = g.param(f"W{k + 1}", value=[[1.0, 1.0]])
        b = g.param(f"b{k + 1}", value=[0.0, -0.5])
        h = gn.relu(h @ W + b) @ g.param(f"v{k + 1}", value=[[2.0], [-4.0]])
    dh, = gn.grad(h.sum(), [x])                    # the slope, from reverse mode
    u = ((np.arange(20000) + 0.3) / 20000)[:, None]
    s = gn.compile(dh)(x=u).ravel()
    return 1 + int(np.sum(~np.isclose(s[1:], s[:-1])))


for K in (1, 2, 3, 4):
    n = pieces(K)
    assert n == 2 ** K
    print(f"depth {K}, {2 * K} units: {n} linear pieces (a shallow net with {2 * K} units: at most {2 * K + 1})")
print("wrote", png)
