"""One training step of a wide MLP on the GPU: graphnn's CuPy program against torch
eager CUDA, and the matmuls alone as the floor (issue 15, section 4).

    python bench/gpu.py [--width 4096] [--batch 4096] [--layers 4] [--out FILE]

float32, ReLU hidden layers, MSE, Adam, both sides from the same initial weights
and batch (their losses are checked against each other first). Each timing is the
median over rounds of `--steps` steps between device synchronizations; TF32 is
off, then on, for both sides alike (torch.backends.cuda.matmul.allow_tf32 and
CuPy's CUPY_TF32, which CuPy reads when it loads, so each setting runs in a
process of its own). Targets: graphnn no slower than torch eager, and within
1.3x of the matmul-only time. `--standin` runs a tiny size on the CPU through
the tests' stand-in for cupy, to check this script without a GPU (no timings
worth reading).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def build(width: int, layers: int, seed: int = 0):
    """The network as graphnn nodes, and the initial weights as arrays."""
    import graphnn as gn
    rng = np.random.default_rng(seed)
    g = gn.Graph("wide_mlp", dtype="float32")
    x = g.input("x", (None, width))
    y = g.input("y", (None, width))
    h, params, init = x, [], []
    for i in range(layers):
        W = rng.normal(size=(width, width)).astype(np.float32) * np.float32(np.sqrt(2.0 / width))
        b = np.zeros(width, np.float32)
        Wn, bn = g.param(f"W{i}", value=W), g.param(f"b{i}", value=b)
        params += [Wn, bn]
        init += [W, b]
        h = h @ Wn + bn
        if i < layers - 1:
            h = gn.relu(h)
    return g, gn.mse(h, y), params, init


def data(width: int, batch: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, width)).astype(np.float32),
            rng.normal(size=(batch, width)).astype(np.float32))


def timed(step, sync, steps: int, rounds: int) -> float:
    """Median seconds per step."""
    step()
    sync()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        out.append((time.perf_counter() - t0) / steps)
    return statistics.median(out)


def graphnn_step(args, cp):
    import graphnn as gn
    g, loss, params, _ = build(args.width, args.layers)
    prog = gn.compile([loss], backend="cupy",
                      updates=gn.optim.Adam(lr=1e-4).build(params, gn.grad(loss, params)))
    X, Y = (cp.asarray(a) for a in data(args.width, args.batch))
    first = float(prog(x=X, y=Y)[0])
    return (lambda: prog(x=X, y=Y)), first, prog.launches  # the public call


def torch_step(args, device):
    import torch
    _, _, _, init = build(args.width, args.layers)
    ps = [torch.tensor(a, device=device, requires_grad=True) for a in init]
    opt = torch.optim.Adam(ps, lr=1e-4)
    X, Y = (torch.tensor(a, device=device) for a in data(args.width, args.batch))

    def step():
        h = X
        for i in range(args.layers):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < args.layers - 1:
                h = torch.relu(h)
        loss = ((h - Y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    first = float(step().detach().cpu())
    # restart from the same weights for the timing (the check above took one step)
    return step, first


def matmul_floor(args, cp):
    """The step's matmuls alone: per layer one forward, two backward products."""
    W = cp.asarray(np.ones((args.width, args.width), np.float32))
    A = cp.asarray(np.ones((args.batch, args.width), np.float32))
    out_a = cp.empty((args.batch, args.width), np.float32)
    out_w = cp.empty((args.width, args.width), np.float32)

    def step():
        for i in range(args.layers):
            cp.matmul(A, W, out=out_a)
            if i > 0:
                cp.matmul(A, W.T, out=out_a)
            cp.matmul(A.T, A, out=out_w)
    return step


def cuda_executable(args) -> dict:
    """The same step as a standalone CUDA program (backend 'cuda'): built with nvcc and
    cuBLAS (the CPU build under --standin), trained by `./model train`; its own timing
    (synchronized around every step), the first step left out."""
    import re
    import tempfile
    import graphnn as gn
    from graphnn.compile import cuda_build
    g, loss, params, _ = build(args.width, args.layers)
    prog = gn.compile([loss], backend="cuda",
                      updates=gn.optim.Adam(lr=1e-4).build(params, gn.grad(loss, params)))
    steps = 1 + args.steps * args.rounds
    try:
        with tempfile.TemporaryDirectory(prefix="graphnn-bench-") as d:
            paths = prog.save(d, build="cpu" if args.standin else "gpu")
            X, Y = data(args.width, args.batch)
            prog.write_data(os.path.join(d, "data.bin"), {"x": X, "y": Y})
            r = subprocess.run([paths["executable"], "train", "--data", "data.bin", "--steps",
                                str(steps), "--out", "trained.bin"], cwd=d, capture_output=True,
                               text=True, timeout=300)
    except Exception as e:  # no nvcc or cuBLAS on this machine: say so in the report
        return {"skipped": f"{type(e).__name__}: {str(e)[:400]}"}
    if r.returncode:
        return {"failed": r.returncode, "stderr": r.stderr[-1000:]}
    first = re.search(r"^step 1: \S+ (\S+)", r.stdout, re.M)
    per = re.search(r"\(([\d.e+-]+) ms per step after the first\)", r.stdout)
    return {"loss_first_step": float(first.group(1)) if first else None,
            "seconds_per_step": float(per.group(1)) / 1e3 if per else None,
            "launches_per_step": prog.launches, "kernels": len(prog.kernels), "steps": steps}


def run_one(args) -> dict:
    """One TF32 setting, in this process."""
    if args.standin:
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
        from cupy_standin import install
        ctx = install()
        cp = ctx.__enter__()
        cp.cuda = None
    else:
        import cupy as cp
    import torch
    device = "cpu" if args.standin else "cuda"
    if not args.standin:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    def sync():
        if not args.standin:
            cp.cuda.Device().synchronize()
            torch.cuda.synchronize()
    gstep, gloss, launches = graphnn_step(args, cp)
    tstep, tloss = torch_step(args, device)
    rel = abs(gloss - tloss) / max(abs(tloss), 1e-30)
    tol = 1e-2 if args.tf32 else 1e-4
    if rel > tol:
        raise SystemExit(f"first-step losses differ: graphnn {gloss} torch {tloss} (rel {rel:.2e})")
    res = {"tf32": args.tf32, "loss_graphnn": gloss, "loss_torch": tloss,
           "graphnn_s": timed(gstep, sync, args.steps, args.rounds),
           "torch_s": timed(tstep, sync, args.steps, args.rounds),
           "matmul_only_s": timed(matmul_floor(args, cp), sync, args.steps, args.rounds),
           "graphnn_launches_per_step": launches}
    res["graphnn_over_torch"] = res["graphnn_s"] / res["torch_s"]
    res["graphnn_over_matmuls"] = res["graphnn_s"] / res["matmul_only_s"]
    return res


def device_name(standin: bool) -> str:
    if standin:
        return "cpu-standin"
    import cupy as cp
    props = cp.cuda.runtime.getDeviceProperties(0)
    return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None)
    ap.add_argument("--standin", action="store_true", help="CPU stand-in, tiny size (a dry run)")
    ap.add_argument("--one", choices=["off", "on"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.standin:
        args.width, args.batch, args.steps, args.rounds = 32, 16, 2, 2
    if args.one:  # a child: one TF32 setting, JSON on stdout
        args.tf32 = args.one == "on"
        print(json.dumps(run_one(args)))
        return
    results = []
    for mode in ("off", "on"):
        env = dict(os.environ, CUPY_TF32="1" if mode == "on" else "0")
        cmd = [sys.executable, __file__, "--one", mode, "--width", str(args.width), "--batch",
               str(args.batch), "--layers", str(args.layers), "--steps", str(args.steps),
               "--rounds", str(args.rounds)] + (["--standin"] if args.standin else [])
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    dev = device_name(args.standin)
    exe = cuda_executable(args)
    report = {"device": dev, "width": args.width, "batch": args.batch, "layers": args.layers,
              "dtype": "float32", "optimizer": "Adam", "python": platform.python_version(),
              "results": results, "cuda_executable": exe}
    off = results[0]
    if exe.get("seconds_per_step"):  # TF32 off: cuBLAS's default math, as the program runs
        exe["over_torch_tf32_off"] = exe["seconds_per_step"] / off["torch_s"]
        exe["over_matmuls_tf32_off"] = exe["seconds_per_step"] / off["matmul_only_s"]
        exe["loss_rel_diff_vs_torch"] = abs(exe["loss_first_step"] - off["loss_torch"]) / \
            max(abs(off["loss_torch"]), 1e-30)
        print(f"CUDA executable (TF32 off): {exe['seconds_per_step'] * 1e3:.2f} ms per step -> "
              f"{exe['over_torch_tf32_off']:.2f}x torch eager (target <= 1), "
              f"{exe['over_matmuls_tf32_off']:.2f}x matmuls alone (target <= 1.3); "
              f"{exe['launches_per_step']} launches per step")
    else:
        print("CUDA executable:", exe)
    for r in results:
        print(f"TF32 {'on ' if r['tf32'] else 'off'}: graphnn {r['graphnn_s'] * 1e3:.2f} ms, "
              f"torch eager {r['torch_s'] * 1e3:.2f} ms, matmuls alone {r['matmul_only_s'] * 1e3:.2f} ms"
              f" -> graphnn/torch {r['graphnn_over_torch']:.2f}x (target <= 1), "
              f"graphnn/matmuls {r['graphnn_over_matmuls']:.2f}x (target <= 1.3); "
              f"{r['graphnn_launches_per_step']} device statements per step")
    out = args.out or os.path.join(HERE, "results", f"gpu-{dev.replace(' ', '_')}.json")
    if not args.standin or args.out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1)
        print("wrote", out)


if __name__ == "__main__":
    main()
