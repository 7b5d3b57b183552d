"""Lecture 001's XOR network compiled to a standalone NumPy module, then imported and run.

The generated file imports numpy only: one commented line per node, forward and backward.
Run: python examples/compile_standalone.py [out_dir]   (writes out_dir/xor_step.py)
"""
import importlib.util
import os
import sys

import numpy as np

import graphnn as gn

out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
os.makedirs(out_dir, exist_ok=True)

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])

g = gn.Graph("xor")
x = g.input("x", (None, 2))
y = g.input("y", (None, 1))
W = g.param("W", value=[[1.0, 1.1], [0.9, 1.0]])       # near lecture 001's exact weights,
b = g.param("b", value=[0.0, -1.0])                     # so that the gradients are not zero
w = g.param("w", value=[[1.0], [-1.8]])
h = gn.relu(x @ W + b).named("h")
out = (h @ w).named("out")
loss = gn.mse(out, y).named("loss")
grads = gn.grad(loss, [W, b, w])

prog = gn.compile([loss, *grads])
path = os.path.join(out_dir, "xor_step.py")
prog.save(path)

spec = importlib.util.spec_from_file_location("xor_step", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
saved = module.run(x=X, y=Y)                      # parameters default to the saved values
live = prog(x=X, y=Y)
assert all(np.allclose(a, b) for a, b in zip(saved, live))
with open(path, encoding="utf-8") as f:
    source = f.read()
assert "import numpy" in source and "graphnn" not in source.split("import numpy")[1]
body = source[source.index("def step"):]
print("\n".join(body.splitlines()[:14]), "\n    ...")
print(f"loss {saved[0]:.4f}; the saved module (numpy only) gives the live program's numbers; wrote {path}")
