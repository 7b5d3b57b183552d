"""Lecture 001's XOR and a small MLP, trained by generated CUDA programs (backend 'cuda').

For each network graphnn writes a program directory (model.cu, params.bin, Makefile)
and builds it: with nvcc on a machine with a GPU, else the CPU build of the same
file (-DGN_CPU). The executable trains (`./model train`; the MLP on shuffled
mini-batches, `--batch 32 --shuffle 0`), writes the trained parameters, and they
are loaded back into the Graph; a forward-only export then infers, and its outputs
equal the NumPy program's with the loaded weights.

Run: python examples/cuda_programs.py [OUTDIR]   (default: a temporary directory)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import graphnn as gn
from graphnn.compile import cuda_build

out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="graphnn-cuda-")
build = "gpu" if cuda_build.has_gpu() and shutil.which("nvcc") else "cpu"
if build == "cpu" and cuda_build.cxx() is None:
    print("no C++ compiler (g++) and no GPU: nothing to build; the generated source is:")
    g = gn.Graph("xor")
    x = g.input("x", (None, 2))
    print(gn.compile(gn.relu(x @ g.param("W", (2, 2))), backend="cuda").source[:2000])
    sys.exit(0)
print(f"building the {'GPU' if build == 'gpu' else 'CPU (-DGN_CPU)'} programs in {out_dir}")


def train_and_infer(tag, g, out, loss, feeds, optimizer, steps, batch=()):
    params = [p for p in g.params]
    step = gn.compile([loss], updates=optimizer.build(params, gn.grad(loss, params)),
                      backend="cuda")
    d = os.path.join(out_dir, tag)
    paths = step.save(d, build=build)
    exe = paths["executable"]
    step.write_data(os.path.join(d, "data.bin"), feeds)
    print(f"\n{tag}: {len(step.kernels)} kernels, {step.launches} launches per step; "
          f"{os.path.relpath(exe, out_dir)} train --data data.bin --steps {steps} "
          f"{' '.join(batch) + ' ' if batch else ''}--out trained.bin")
    r = subprocess.run([exe, "train", "--data", "data.bin", "--steps", str(steps), *batch,
                        "--out", "trained.bin"], cwd=d, capture_output=True, text=True, check=True)
    lines = r.stdout.strip().splitlines()
    print("\n".join("  " + ln for ln in lines[:3] + ["  ..."] + lines[-2:]))
    step.load_params(os.path.join(d, "trained.bin"))  # the trained model, back in the Graph
    # a forward-only export for deployment: params.bin holds the trained weights
    fwd = gn.compile(out, backend="cuda")
    fd = os.path.join(out_dir, tag + "_infer")
    fexe = fwd.save(fd, build=build)["executable"]
    x_only = {n.name: feeds[n.name] for n in fwd.inputs}
    fwd.write_data(os.path.join(fd, "x.bin"), x_only)
    subprocess.run([fexe, "infer", "--data", "x.bin", "--out", "y.bin"], cwd=fd, check=True)
    got, = fwd.read_outputs(os.path.join(fd, "y.bin"))
    want = gn.compile(out)(**x_only)  # the NumPy program with the loaded weights
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    print(f"  inferred by {os.path.relpath(fexe, out_dir)} = the NumPy program's outputs "
          f"(max difference {np.max(np.abs(got - want)):.1e})")
    return got


# lecture 001's XOR network, from a random start
X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])
g = gn.Graph("xor", seed=1)
x, y = g.input("x", (None, 2)), g.input("y", (None, 1))
W, b, w = g.param("W", (2, 2)), g.param("b", (2,), init="zeros"), g.param("w", (2, 1))
out = (gn.relu(x @ W + b) @ w).named("out")
pred = train_and_infer("xor", g, out, gn.mse(out, y).named("loss"), {"x": X, "y": Y},
                       gn.optim.Adam(lr=0.05), 300)
print("  XOR outputs after training:", np.round(pred.ravel(), 3))

# a small MLP on two interleaved half-moons
rng = np.random.default_rng(0)
t = rng.uniform(0, np.pi, 128)
labels = (np.arange(128) % 2).astype(float)
P = np.stack([np.cos(t) + labels, np.sin(t) * (1 - 2 * labels) + 0.5 * labels], 1)
P += rng.normal(scale=0.1, size=P.shape)
g = gn.Graph("moons", seed=0)
x, y = g.input("x", (None, 2)), g.input("y", (None, 1))
logits = gn.nn.MLP([16, 16, 1], activation="tanh")(x).named("logits")
pred = train_and_infer("mlp", g, logits, gn.bce_with_logits(logits, y).named("loss"),
                       {"x": P, "y": labels[:, None]}, gn.optim.Adam(lr=0.02), 400,
                       batch=("--batch", "32", "--shuffle", "0"))  # 4 steps per epoch, 100 epochs
print(f"  MLP accuracy after training: {np.mean((pred.ravel() > 0) == (labels > 0.5)):.3f}")
