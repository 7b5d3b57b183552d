"""Differential checking of compiled programs: one program, several targets, the
same numbers.

A *target* is a way to turn outputs (and optional parameter updates) into a
callable Program. The reference is the plain NumPy program (one statement per
node, no buffers, no fusion), itself checked elsewhere against a node-by-node
interpreter, finite differences and torch. Every other target — the fast NumPy
program today, the CuPy and CUDA targets as they land — is a parameter of the
same checks:

* `check_program`: the target's outputs equal the reference's, on two batch
  sizes (the second call reallocates buffers), called twice (buffers reused
  across calls), and the returned arrays are the caller's own (a later call
  does not change them);
* `check_training`: several optimizer steps of a network through the target's
  training step equal the same steps applied by `torch.optim` to the reference
  program's gradients, parameter by parameter.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

import graphnn as gn

Compile = Callable[..., gn.Program]

TARGETS: dict[str, Compile] = {
    "fast": lambda outputs, **kw: gn.compile(outputs, fast=True, **kw),
    "cupy": lambda outputs, **kw: gn.compile(outputs, backend="cupy", **kw),
}


@contextlib.contextmanager
def target_context(name: str):
    """What a target needs while it compiles and runs: the CuPy target runs on the
    CPU stand-in for `cupy` (tests/cupy_standin.py) unless a real GPU is there."""
    if name != "cupy" or _real_cupy():
        yield
        return
    from test_cuda_c import need
    need("cc")  # the stand-in compiles kernel bodies as C (a skip here, a failure in CI)
    import sys
    import types
    from cupy_standin import install
    cupyx = types.ModuleType("cupyx", "stand-in: cupyx.scatter_add is np.add.at")
    cupyx.scatter_add = np.add.at
    old = sys.modules.get("cupyx")
    sys.modules["cupyx"] = cupyx
    try:
        with install():
            yield
    finally:
        if old is None:
            sys.modules.pop("cupyx", None)
        else:
            sys.modules["cupyx"] = old


def _real_cupy() -> bool:
    try:
        import cupy
        return not getattr(cupy, "__standin__", False) and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def reference(outputs, **kw) -> gn.Program:
    return gn.compile(outputs, fast=False, **kw)


def tolerance(nodes) -> dict:
    if any(getattr(n, "dtype", None) == np.float32 for n in nodes):
        return dict(rtol=2e-4, atol=1e-5)
    return dict(rtol=1e-9, atol=1e-11)


def assert_same(got, want, what: str, **tol) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    np.testing.assert_allclose(got, want, equal_nan=True, err_msg=what, **tol)


def check_program(target: Compile, outputs, feeds_list: list[dict]) -> None:
    """The target's program equals the reference on each feed dict (in order: give
    two batch sizes to exercise reallocation); results survive later calls."""
    ref = reference(outputs)
    prog = target(outputs)
    tol = tolerance(outputs[0].graph.nodes)
    names = [o.name for o in outputs]
    kept = []
    for feeds in feeds_list:
        want = ref(**feeds)
        got = prog(**feeds)
        for k, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"output {k} ({names[k]!r})", **tol)
        kept.append((got, [np.array(w, copy=True) for w in want]))
    again = prog(**feeds_list[0])  # buffers reused: earlier results must not change
    for got, want in kept:
        for k, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"output {k} ({names[k]!r}) after a later call", **tol)
    for k, (a, b) in enumerate(zip(again, kept[0][1])):
        assert_same(a, b, f"output {k} ({names[k]!r}) on a second call", **tol)


# -- training steps against torch.optim -------------------------------------------------------

OPTIMIZERS = {
    "sgd": (lambda: gn.optim.SGD(lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    "momentum": (lambda: gn.optim.SGD(lr=0.05, momentum=0.9),
                 lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "adam": (lambda: gn.optim.Adam(lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
}


def check_training(target: Compile, build: Callable, feeds_list: list[dict], optimizer: str,
                   ) -> None:
    """`build()` returns (graph, loss, params) and must build the same network each
    time. One copy trains through the target's training step; the other gives the
    reference gradients, which torch.optim applies to torch copies of the params."""
    make_gn, make_torch = OPTIMIZERS[optimizer]
    g, loss, params = build()
    grads = gn.grad(loss, params)
    step = target([loss], updates=make_gn().build(params, grads))

    g_ref, loss_ref, params_ref = build()
    ref = reference([loss_ref, *gn.grad(loss_ref, params_ref)])
    tp = [torch.tensor(np.array(g_ref.values[p.name], dtype=np.float64), requires_grad=True)
          for p in params_ref]
    opt = make_torch(tp)
    tol = tolerance(g.nodes)
    if tol["rtol"] < 1e-6:
        tol = dict(rtol=1e-8, atol=1e-10)  # several steps: rounding of torch's own order
    for k, feeds in enumerate(feeds_list):
        over = {p.name: t.detach().numpy().astype(p.dtype) for p, t in zip(params_ref, tp)}
        want_loss, *want_grads = ref(**feeds, **over)
        got_loss, = step(**feeds)
        assert_same(got_loss, want_loss, f"loss at step {k}", **tol)
        for t, gr in zip(tp, want_grads):
            t.grad = torch.tensor(np.asarray(gr, dtype=np.float64))
        opt.step()
        for p, t in zip(params, tp):
            np.testing.assert_allclose(np.asarray(g.values[p.name], dtype=np.float64),
                                       t.detach().numpy(), err_msg=f"{p.name!r} after step {k}",
                                       **tol)


# -- updates are simultaneous, outputs are pre-update values -----------------------------------

SIMULTANEOUS_CASES = ("swap", "transposed", "view_output", "view_in_rule")


def check_simultaneous_updates(compile_fn: Compile, case: str) -> None:
    """Values that are (views of) parameters the step writes are read as they were
    before the step: `{A: B, B: A}` swaps, an output `A.T` is the old A's transpose, an
    update rule reading another updated parameter through a view reads its old value."""
    g = gn.Graph("swap")
    x = g.input("x", (None, 2))
    A = g.param("A", value=np.array([[1., 2.], [3., 4.]]))
    B = g.param("B", value=np.array([[5., 6.], [7., 8.]]))
    a0, b0 = g.values["A"].copy(), g.values["B"].copy()
    loss = gn.sum(x @ A @ B)
    X = np.ones((1, 2))
    if case == "swap":
        outs, ups, want = [loss], {A: B * 1.0, B: A * 1.0}, {"A": b0, "B": a0}
    elif case == "transposed":
        outs, ups, want = [loss], {A: B.T + 0.0, B: A.T}, {"A": b0.T, "B": a0.T}
    elif case == "view_output":
        gA, gB = gn.grad(loss, [A, B])
        outs, ups, want = [loss, A.T * 1.0, B.reshape(4)], {A: A - 0.5 * gA, B: B - 0.5 * gB}, None
    else:
        outs, ups = [loss], {A: A - 0.1 * B.T, B: B * 0.5}
        want = {"A": a0 - 0.1 * b0.T, "B": b0 * 0.5}
    got = compile_fn(outs, updates=ups)(x=X)
    assert float(got[0]) == float(np.sum(X @ a0 @ b0))
    if want is None:
        np.testing.assert_array_equal(got[1], a0.T)
        np.testing.assert_array_equal(got[2], b0.reshape(4))
        assert not np.array_equal(g.values["A"], a0)
    else:
        for name, w in want.items():
            np.testing.assert_allclose(g.values[name], w, rtol=1e-15, err_msg=name)
