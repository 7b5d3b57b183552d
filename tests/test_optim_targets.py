"""Every optimizer of gn.optim (with its options) through the GPU targets, step for step
equal to torch.optim: the CuPy module (on the CPU stand-in unless a GPU is there) and
the standalone CUDA program's CPU build (`./model train --batch`, one mini-batch per
step). The NumPy target runs the same cases in test_optim.py. And lecture 004's
2-2-1 network: its gradients worked by hand equal the GPU targets'."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
import differential
from test_cuda_c import need
from test_optim import CASES, build_mlp, problem, torch_steps  # noqa: F401 (fixture)

N = 6  # steps: every optimizer's state is used and bias corrections move


def _compare(g, params, ref, what):
    for p, want in zip(params, ref[N - 1]):
        np.testing.assert_allclose(np.asarray(g.values[p.name]), want, rtol=1e-10, atol=1e-12,
                                   err_msg=f"{what}: {p.name!r} after {N} steps")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cupy_target_equals_torch_optim(problem, case):  # noqa: F811
    _, ours, theirs, kw = case
    ref, _ = torch_steps(problem, lambda ps: theirs(ps, **kw))
    Ws, bs, X, Y = problem
    with differential.target_context("cupy"):
        g, params, loss = build_mlp(Ws, bs)
        step = gn.compile([loss], updates=ours(**kw).build(params, gn.grad(loss, params)),
                          backend="cupy")
        for k in range(N):
            step(x=X[k], y=Y[k])
        _compare(g, params, ref, "cupy")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cuda_program_equals_torch_optim(problem, case):  # noqa: F811
    need("g++")
    _, ours, theirs, kw = case
    ref, _ = torch_steps(problem, lambda ps: theirs(ps, **kw))
    Ws, bs, X, Y = problem
    g, params, loss = build_mlp(Ws, bs)
    step = gn.compile([loss], updates=ours(**kw).build(params, gn.grad(loss, params)),
                      backend="cuda")
    step.cpu_flags = ("-O0",)
    batch = X[0].shape[0]
    report = step.train({"x": np.concatenate(X[:N]), "y": np.concatenate(Y[:N])}, steps=N,
                        device="cpu", batch_size=batch)
    assert f"{N} steps" in report
    _compare(g, params, ref, "cuda")


@pytest.mark.parametrize("target", ["cupy", "cuda"])
@pytest.mark.parametrize("act,loss", [(a, l) for a in ("tanh", "relu", "sigmoid")
                                      for l in ("mse", "bce")])
def test_lecture004_gradients_by_hand_on_the_gpu_targets(target, act, loss):
    """Lecture 004's 2-2-1 network: the chain rule worked by hand, factor by factor,
    equals the gradients the GPU targets compute."""
    from test_lectures_autodiff import X as X4, Y as Y4, _by_hand, _network
    g, J, params = _network(act, loss)
    outs = [J, *gn.grad(J, params)]
    if target == "cuda":
        need("g++")
        prog = gn.compile(outs, backend="cuda")
        prog.cpu_flags = ("-O0",)
        got = prog(device="cpu", x=X4, y=Y4)
    else:
        with differential.target_context("cupy"):
            got = gn.compile(outs, backend="cupy")(x=X4, y=Y4)
    for a, b in zip(got[1:], _by_hand(act, loss)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-13)
