"""Optimizers, schedules and regularizers: equal to torch.optim step for step (float64)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import graphnn as gn
from graphnn.compile import loops
from graphnn.nn import optim, schedules
from graphnn.nn.regularization import L1, L2, ElasticNet

SIZES = [3, 5, 4, 2]
STEPS = 50


@pytest.fixture(scope="module")
def problem():
    """A small tanh MLP (float64) and 50 different mini-batches."""
    rng = np.random.default_rng(7)
    Ws = [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(SIZES, SIZES[1:])]
    bs = [rng.normal(size=(b,)) * 0.1 for b in SIZES[1:]]
    X = [rng.normal(size=(8, SIZES[0])) for _ in range(STEPS)]
    Y = [rng.normal(size=(8, SIZES[-1])) for _ in range(STEPS)]
    return Ws, bs, X, Y


def build_mlp(Ws, bs):
    g = gn.Graph("mlp")
    x = g.input("x", (None, SIZES[0]))
    y = g.input("y", (None, SIZES[-1]))
    h, params = x, []
    for i, (W, b) in enumerate(zip(Ws, bs)):
        Wn, bn = g.param(f"W{i}", value=W.copy()), g.param(f"b{i}", value=b.copy())
        params += [Wn, bn]
        h = h @ Wn + bn
        if i < len(Ws) - 1:
            h = gn.tanh(h)
    return g, params, gn.mse(h, y)


def torch_steps(problem, make_opt, make_sched=None, sched_per_step=True):
    """Parameters after each of STEPS torch steps (and the lr used at each step)."""
    Ws, bs, X, Y = problem
    tp = []
    for W, b in zip(Ws, bs):
        tp += [torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)]
    opt = make_opt(tp)
    sched = make_sched(opt) if make_sched else None
    out, lrs = [], []
    for k in range(STEPS):
        h = torch.tensor(X[k])
        for i in range(len(Ws)):
            h = h @ tp[2 * i] + tp[2 * i + 1]
            if i < len(Ws) - 1:
                h = torch.tanh(h)
        loss = ((h - torch.tensor(Y[k])) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None and sched_per_step:
            sched.step()
        out.append([p.detach().numpy().copy() for p in tp])
    return out, lrs


def graphnn_steps(problem, opt, lr_fn=None, kernels="auto"):
    Ws, bs, X, Y = problem
    g, params, loss = build_mlp(Ws, bs)
    updates = opt.build(params, gn.grad(loss, params))
    prog = gn.compile([loss], updates=updates, kernels=kernels)
    out = []
    for k in range(STEPS):
        if lr_fn is not None:
            opt.set_lr(lr_fn(k))
        prog(x=X[k], y=Y[k])
        out.append([g.values[p.name].copy() for p in params])
    return out, prog, g


CASES = [
    ("sgd", optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    ("sgd_wd", optim.SGD, torch.optim.SGD, dict(lr=0.1, weight_decay=0.05)),
    ("momentum", optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("momentum_dampening_wd", optim.SGD, torch.optim.SGD,
     dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("nesterov", optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("nesterov_wd", optim.SGD, torch.optim.SGD,
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adagrad", optim.AdaGrad, torch.optim.Adagrad, dict(lr=0.1)),
    ("adagrad_full", optim.AdaGrad, torch.optim.Adagrad,
     dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-8)),
    ("rmsprop", optim.RMSProp, torch.optim.RMSprop, dict(lr=0.01)),
    ("rmsprop_momentum_wd", optim.RMSProp, torch.optim.RMSprop,
     dict(lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.01)),
    ("rmsprop_centered", optim.RMSProp, torch.optim.RMSprop,
     dict(lr=0.005, centered=True, momentum=0.3)),
    ("adam", optim.Adam, torch.optim.Adam, dict(lr=0.01)),
    ("adam_wd_betas", optim.Adam, torch.optim.Adam,
     dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)),
    ("adam_amsgrad", optim.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    ("adamw", optim.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    ("adamw_wd_amsgrad", optim.AdamW, torch.optim.AdamW,
     dict(lr=0.02, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("kernels", ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not loops.available(), reason="Numba is not installed"))])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_optimizer_equals_torch_step_for_step(problem, case, kernels):
    """Both ways a fast program runs the update: NumPy calls, or one fused loop."""
    _, ours, theirs, kw = case
    ref, _ = torch_steps(problem, lambda ps: theirs(ps, **kw))
    got, prog, _ = graphnn_steps(problem, ours(**kw), kernels=kernels)
    assert ("def _loop0(" in prog.source) == (kernels == "numba")
    moved = False
    for k in range(STEPS):
        for a, b in zip(got[k], ref[k]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=f"step {k + 1}")
    for a, w in zip(got[-1], problem[0] + problem[1]):
        moved |= not np.allclose(a, w) if a.shape == w.shape else False
    assert moved  # the parameters did train


def test_momentum_alias_is_sgd_with_momentum(problem):
    ref, _ = torch_steps(problem, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9))
    got, _, _ = graphnn_steps(problem, optim.Momentum(lr=0.05, momentum=0.9))
    np.testing.assert_allclose(got[-1][0], ref[-1][0], rtol=1e-10)


def test_update_nodes_are_tagged_and_state_is_registered(problem):
    Ws, bs, _, _ = problem
    g, params, loss = build_mlp(Ws, bs)
    opt = optim.Adam(lr=0.01)
    updates = opt.build(params, gn.grad(loss, params))
    # every param and every state node is updated; state lives under optim/
    assert set(n.name for n in updates) == {p.name for p in params} | set(opt.state) - {"optim/lr"}
    assert set(opt.state) == {"optim/lr", "optim/step"} | {
        f"optim/{p.name}/{s}" for p in params for s in ("exp_avg", "exp_avg_sq")}
    for name in opt.state:
        assert optim.is_state(g[name]) and g[name].op == "param"
    assert not any(optim.is_state(p) for p in params)
    for p in params:
        new = updates[p]
        assert new.role == "update" and new.scope == f"optim/{p.name}"
    assert updates[g["optim/step"]].scope == "optim"
    # the step is an ordinary graph: nodes in g.nx, drawn and listed like any other
    assert all(n in g.nx for n in updates.values())
    assert "update" in g.format()
    prog = gn.compile([loss], updates=updates)
    assert "optim/W0/exp_avg" in prog.source


def test_training_step_is_drawable(problem):
    viz = pytest.importorskip("viz")
    Ws, bs, _, _ = problem
    g, params, loss = build_mlp(Ws, bs)
    optim.SGD(lr=0.1, momentum=0.9).build(params, gn.grad(loss, params))
    dot = viz.draw(g).source
    assert "momentum_buffer" in dot and "update" in dot
    assert viz.svg(viz.draw(g)).lstrip().startswith(("<?xml", "<svg"))


def test_lr_is_fed_so_changing_it_does_not_recompile(problem):
    """A schedule applied through set_lr equals torch's StepLR; one compiled program."""
    sched = schedules.StepLR(step_size=7, gamma=0.5)
    ref, lrs = torch_steps(problem, lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9),
                           lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5))
    opt = optim.SGD(lr=0.2, momentum=0.9, schedule=sched)
    got, prog, g = graphnn_steps(problem, opt, lr_fn=lambda k: opt.lr_at(k, k))
    np.testing.assert_allclose([opt.lr_at(k, k) for k in range(STEPS)], lrs, rtol=1e-13)
    for k in range(STEPS):
        for a, b in zip(got[k], ref[k]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert "optim/lr" in prog.arg_names and opt.get_lr() == pytest.approx(lrs[-1])
    assert g["optim/lr"].op == "param"


def test_optimizer_state_is_float32_for_float32_params():
    g = gn.Graph("f32", dtype="float32")
    x = g.input("x", (None, 2))
    W = g.param("W", (2, 1), init="xavier_normal")
    loss = gn.mean(gn.square(x @ W))
    opt = optim.Adam(lr=0.1)
    ups = opt.build([W], gn.grad(loss, [W]))
    assert all(v.dtype == np.float32 for v in ups.values() if v.shape != ())
    prog = gn.compile([loss], updates=ups)
    before = g.values["W"].copy()
    prog(x=np.ones((3, 2), np.float32))
    assert g.values["W"].dtype == np.float32 and not np.array_equal(before, g.values["W"])


def test_second_optimizer_on_same_graph_gets_its_own_prefix(problem):
    Ws, bs, _, _ = problem
    g, params, loss = build_mlp(Ws, bs)
    a, b = optim.SGD(lr=0.1, momentum=0.9), optim.RMSProp()
    a.build(params, gn.grad(loss, params))
    b.build(params[:2], gn.grad(loss, params[:2]))
    assert a.prefix == "optim" and b.prefix == "optim_2"
    assert "optim_2/W0/square_avg" in b.state and optim.is_state(g["optim_2/lr"])


@pytest.mark.parametrize("make, msg", [
    (lambda: optim.SGD(lr=-1.0), "lr"),
    (lambda: optim.SGD(lr=float("nan")), "lr"),
    (lambda: optim.SGD(lr="0.1"), "lr"),
    (lambda: optim.SGD(nesterov=True), "Nesterov"),
    (lambda: optim.SGD(momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda: optim.SGD(momentum=-0.1), "momentum"),
    (lambda: optim.Adam(betas=(0.9, 1.0)), "betas"),
    (lambda: optim.Adam(betas=(0.9,)), "betas"),
    (lambda: optim.Adam(eps=-1e-8), "eps"),
    (lambda: optim.AdamW(weight_decay=-0.1), "weight_decay"),
    (lambda: optim.AdaGrad(lr_decay=-1.0), "lr_decay"),
    (lambda: optim.RMSProp(alpha=-0.5), "alpha"),
])
def test_bad_hyperparameters_raise(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_build_errors(problem):
    Ws, bs, _, _ = problem
    g, params, loss = build_mlp(Ws, bs)
    grads = gn.grad(loss, params)
    with pytest.raises(gn.GraphError, match="no parameters"):
        optim.SGD().build([], [])
    with pytest.raises(gn.GraphError, match="2 params but 1"):
        optim.SGD().build(params[:2], grads[:1])
    with pytest.raises(gn.ShapeError, match="shape"):
        optim.SGD().build(params[:1], grads[1:2])
    with pytest.raises(gn.GraphError, match="not a param"):
        optim.SGD().build([loss], [loss])
    with pytest.raises(gn.GraphError, match="given twice"):
        optim.SGD().build(params[:1] * 2, grads[:1] * 2)
    opt = optim.SGD()
    opt.build(params, grads)
    with pytest.raises(gn.GraphError, match="already built"):
        opt.build(params, grads)
    with pytest.raises(gn.GraphError, match="optimizer state"):
        optim.SGD().build([g["optim/lr"]], [g["optim/lr"]])
    with pytest.raises(gn.GraphError, match="not built"):
        optim.Adam().set_lr(0.1)
    with pytest.raises(TypeError, match="Schedule"):
        optim.SGD(schedule=lambda t: 0.1)


# -- schedules ---------------------------------------------------------------------------------

def _torch_lrs(make_sched, n, lr=0.1, per_step=False):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    s = make_sched(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


@pytest.mark.parametrize("ours, theirs, n", [
    (schedules.StepLR(3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5), 20),
    (schedules.CosineAnnealingLR(10), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10), 35),
    (schedules.CosineAnnealingLR(7, eta_min=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, eta_min=0.01), 30),
    (schedules.CyclicLR(0.01, 0.1, step_size_up=4),
     lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=4,
                                                 cycle_momentum=False), 30),
    (schedules.CyclicLR(0.01, 0.1, step_size_up=3, step_size_down=5, mode="triangular2"),
     lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=3, step_size_down=5,
                                                 mode="triangular2", cycle_momentum=False), 40),
    (schedules.CyclicLR(0.01, 0.1, step_size_up=4, mode="exp_range", gamma=0.95),
     lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=4, mode="exp_range",
                                                 gamma=0.95, cycle_momentum=False), 30),
], ids=["step", "cosine", "cosine_eta_min", "cyclic_triangular", "cyclic_triangular2",
        "cyclic_exp_range"])
def test_schedule_equals_torch(ours, theirs, n):
    ref = _torch_lrs(theirs, n)
    got = [ours(t, 0.1) for t in range(n)]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)


def test_schedule_intervals_and_errors():
    assert schedules.StepLR(2).interval == "epoch"
    assert schedules.CosineAnnealingLR(5).interval == "epoch"
    assert schedules.CyclicLR(0.1, 1.0).interval == "step"
    for bad in (lambda: schedules.StepLR(0), lambda: schedules.StepLR(2.5),
                lambda: schedules.CosineAnnealingLR(-1), lambda: schedules.CyclicLR(0.1, 1, mode="x"),
                lambda: schedules.StepLR(2, gamma=float("inf"))):
        with pytest.raises(ValueError):
            bad()
    opt = optim.SGD(lr=0.1, schedule=schedules.CyclicLR(0.01, 0.1, step_size_up=2))
    assert opt.initial_lr == pytest.approx(0.01)
    assert opt.lr_at(epoch=5, step=2) == pytest.approx(0.1)


# -- regularization ------------------------------------------------------------------------------

def _reg_graph(rng):
    g = gn.Graph("reg")
    A = g.param("A", value=rng.normal(size=(3, 2)))
    c = g.param("c", value=rng.normal(size=(2,)))
    return g, [A, c]


@pytest.mark.parametrize("reg, formula", [
    (L2(0.3), lambda t: 0.3 / 2 * sum((x ** 2).sum() for x in t)),
    (L1(0.3), lambda t: 0.3 * sum(np.abs(x).sum() for x in t)),
    (ElasticNet(0.3, r=0.25), lambda t: 0.25 * 0.3 / 2 * sum(np.abs(x).sum() for x in t)
     + (1 - 0.25) / 2 * 0.3 * sum((x ** 2).sum() for x in t)),
])
def test_penalty_values_and_gradients(rng, reg, formula):
    g, ps = _reg_graph(rng)
    pen = reg(ps)
    assert pen.shape == () and pen.scope == "regularization"
    grads = gn.grad(pen, ps)
    prog = gn.compile([pen, *grads])
    val, *gr = prog()
    vals = [g.values[p.name] for p in ps]
    assert val == pytest.approx(formula(vals), rel=1e-13)
    # central finite differences (the penalty is smooth away from 0)
    h = 1e-6
    for p, gp in zip(ps, gr):
        base = g.values[p.name]
        fd = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            up, dn = [v.copy() for v in vals], [v.copy() for v in vals]
            k = [q.name for q in ps].index(p.name)
            up[k][i] += h
            dn[k][i] -= h
            fd[i] = (formula(up) - formula(dn)) / (2 * h)
        np.testing.assert_allclose(gp, fd, rtol=1e-6, atol=1e-9)


def test_l2_penalty_equals_torch_weight_decay(problem):
    """SGD on loss + L2(lam) is torch SGD with weight_decay=lam."""
    Ws, bs, X, Y = problem
    ref, _ = torch_steps(problem, lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05))
    g, params, loss = build_mlp(Ws, bs)
    obj = loss + L2(0.05)(params)
    opt = optim.SGD(lr=0.1)
    prog = gn.compile([obj], updates=opt.build(params, gn.grad(obj, params)))
    for k in range(STEPS):
        prog(x=X[k], y=Y[k])
    for p, r in zip(params, ref[-1]):
        np.testing.assert_allclose(g.values[p.name], r, rtol=1e-10, atol=1e-13)


def test_l1_drives_weights_to_zero():
    """Lasso on a loss that does not care about the weights: they go to 0 (lecture 004)."""
    g = gn.Graph("l1")
    w = g.param("w", value=np.array([0.5, -0.3, 0.2]))
    pen = L1(1.0)([w])
    prog = gn.compile([pen], updates=optim.SGD(lr=0.01).build([w], gn.grad(pen, [w])))
    for _ in range(100):
        prog()
    assert np.all(np.abs(g.values["w"]) <= 0.01 + 1e-12)


def test_regularizer_selection_and_errors(rng):
    g, ps = _reg_graph(rng)
    only_a = L2(1.0, params=["A"])(ps)
    assert only_a is not None
    val = gn.compile(only_a)()
    assert val == pytest.approx(0.5 * (g.values["A"] ** 2).sum())
    assert L2(1.0, exclude=[ps[0], ps[1]])(ps) is None
    with pytest.raises(gn.GraphError, match="not trainable"):
        L1(1.0, params=["nope"])(ps)
    for bad in (lambda: L2(-1.0), lambda: L1(float("nan")), lambda: ElasticNet(1.0, r=1.5),
                lambda: ElasticNet(1.0, r=-0.1), lambda: L2("1")):
        with pytest.raises(ValueError):
            bad()
    assert repr(ElasticNet(0.1, r=0.5)) == "ElasticNet(lam=0.1, r=0.5)"
    assert math.isclose(gn.nn.L2(2.0).lam, 2.0)
