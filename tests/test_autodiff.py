"""Reverse and forward mode against central finite differences (float64) and torch.

Every differentiable op of the registry has a case (a coverage test iterates the
registry), including broadcasting and fan-out (a node used twice); second
order (grad of grad, Hessians, Jacobians) and the losses are checked the same
way. Finite differences: central, h = 1e-6, rtol 1e-6.
"""
from __future__ import annotations


import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn.functional as F

import graphnn as gn
from graphnn.ops import REGISTRY, api
from graphnn.ops.elementwise import ELEMENTWISE
from test_ops import _erf, concrete, sample


pytestmark = pytest.mark.usefixtures("torch_float64")  # (conftest.py)

H = 1e-6
RTOL, ATOL = 1e-6, 1e-7          # vs finite differences
T_RTOL, T_ATOL = 1e-9, 1e-11     # vs torch (both exact float64 math)


def _weight(rng, shape):
    """A random cotangent: None (batch) axes become 1 and broadcast."""
    return rng.normal(size=tuple(1 if d is None else d for d in shape))


def numeric_grad(f, vals, key):
    """Central differences of scalar f(vals) with respect to vals[key]."""
    base = np.asarray(vals[key], dtype=np.float64)
    out = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        up, dn = dict(vals), dict(vals)
        u, d = base.copy(), base.copy()
        u[idx] += H
        d[idx] -= H
        up[key], dn[key] = u, d
        out[idx] = (f(up) - f(dn)) / (2 * H)
    return out


def _torch_grads(torch_fn, vals, wrt, weight, create_graph=False):
    ts = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in vals.items()}
    y = torch_fn(*ts.values())
    loss = (y * torch.tensor(weight)).sum()
    if not loss.requires_grad:  # comparisons: piecewise constant
        return ts, loss, [torch.zeros_like(ts[k]) for k in wrt]
    gs = torch.autograd.grad(loss, [ts[k] for k in wrt], allow_unused=True, create_graph=create_graph)
    return ts, loss, [torch.zeros_like(ts[k]) if gk is None else gk for k, gk in zip(wrt, gs)]


def check_grads(build, specs, torch_fn=None, wrt=None, rng=None, t_rtol=T_RTOL):
    """Reverse == forward == central differences (== torch) for sum(build(...) * R)."""
    rng = rng or np.random.default_rng(0)
    g = gn.Graph("ad")
    nodes = {k: g.input(k, shape) for k, (shape, _) in specs.items()}
    vals = {k: np.asarray(sample(rng, shape, dom)) for k, (shape, dom) in specs.items()}
    y = build(*nodes.values())
    weight = _weight(rng, y.shape)
    loss = api.sum(y * g.const("R", weight)) if y.shape else y * float(weight)
    wrt = list(wrt or specs)
    ws = [nodes[k] for k in wrt]
    rev = gn.grad(loss, ws)
    fixed = [w for w in ws if w.size is not None]
    fwd = gn.grad(loss, fixed, mode="forward")
    prog = gn.compile([loss] + rev + fwd)
    out = prog(**vals)
    f = gn.compile(loss)
    got_rev = dict(zip(wrt, out[1:1 + len(ws)]))
    got_fwd = dict(zip([w.name for w in fixed], out[1 + len(ws):]))
    for k in wrt:
        fd = numeric_grad(lambda v: float(f(**v)), vals, k)
        np.testing.assert_allclose(got_rev[k], fd, rtol=RTOL, atol=ATOL, err_msg=f"reverse d/d{k}")
        if k in got_fwd:
            np.testing.assert_allclose(got_fwd[k], fd, rtol=RTOL, atol=ATOL, err_msg=f"forward d/d{k}")
            np.testing.assert_allclose(got_fwd[k], got_rev[k], rtol=1e-10, atol=1e-12)
    if torch_fn is not None:
        _, tloss, tg = _torch_grads(torch_fn, vals, wrt, weight)
        np.testing.assert_allclose(out[0], tloss.item(), rtol=t_rtol, atol=T_ATOL, err_msg="loss vs torch")
        for k, tk in zip(wrt, tg):
            np.testing.assert_allclose(got_rev[k], tk.numpy(), rtol=t_rtol, atol=T_ATOL,
                                       err_msg=f"reverse d/d{k} vs torch")
    return g, rev


# -- element-wise ops ----------------------------------------------------------------------------

def _prelu_torch(x, a):
    if x.ndim == 2 and a.ndim == 1 and a.shape[0] == x.shape[1]:
        return F.prelu(x, a)
    return torch.where(x > 0, x, a * x)


EW = {  # name -> (domains, torch function, attrs)
    "add": (("any", "any"), torch.add, {}),
    "sub": (("any", "any"), torch.sub, {}),
    "mul": (("any", "any"), torch.mul, {}),
    "div": (("any", "nonzero"), torch.div, {}),
    "pow": (("pos", "any"), torch.pow, {}),
    "neg": (("any",), torch.neg, {}),
    "exp": (("any",), torch.exp, {}),
    "log": (("pos",), torch.log, {}),
    "sqrt": (("pos",), torch.sqrt, {}),
    "abs": (("nonzero",), torch.abs, {}),
    "square": (("any",), torch.square, {}),
    "maximum": (("any", "any"), torch.maximum, {}),
    "minimum": (("any", "any"), torch.minimum, {}),
    "where": (("mask", "any", "any"), lambda c, y, z: torch.where(c != 0, y, z), {}),
    "gt": (("any", "any"), lambda x, y: (x > y).double(), {}),
    "lt": (("any", "any"), lambda x, y: (x < y).double(), {}),
    "ge": (("any", "any"), lambda x, y: (x >= y).double(), {}),
    "le": (("any", "any"), lambda x, y: (x <= y).double(), {}),
    "eq": (("any", "any"), lambda x, y: (x == y).double(), {}),
    "sigmoid": (("any",), torch.sigmoid, {}),
    "tanh": (("any",), torch.tanh, {}),
    "relu": (("nonzero",), F.relu, {}),
    "sign": (("nonzero",), torch.sign, {}),
    "leaky_relu": (("nonzero",), lambda x: F.leaky_relu(x, 0.2), {"alpha": 0.2}),
    "elu": (("nonzero",), lambda x: F.elu(x, 0.7), {"alpha": 0.7}),
    "gelu": (("any",), lambda x: F.gelu(x, approximate="none"), {}),
    "silu": (("any",), F.silu, {}),
    "softplus": (("any",), F.softplus, {}),
    "prelu": (("nonzero", "any"), _prelu_torch, {}),
    "trainable_swish": (("any",) * 5, lambda x, a, b, c, d: (c * x + d) * torch.sigmoid(a * x + b), {}),
    "erf": (("any",), torch.erf, {}),
}

EW_SHAPES = {
    1: [[(3, 4)], [()]],
    2: [[(3, 4), (3, 4)], [(3, 1), (4,)], [(None, 3), (3,)], [(2, 3), ()]],
    3: [[(3, 4), (4,), (3, 1)]],
    5: [[(3, 4), (4,), (3, 1), (), (1, 4)]],
}


def _ew_cases():
    for name, (doms, _, _) in EW.items():
        for shapes in EW_SHAPES[len(doms)]:
            sid = "+".join("x".join(map(str, s)).replace("None", "B") or "()" for s in shapes)
            yield pytest.param(name, shapes, id=f"{name}-{sid}")


@pytest.mark.parametrize("name,shapes", list(_ew_cases()))
def test_elementwise_gradients(name, shapes, rng):
    doms, tfn, attrs = EW[name]
    argn = ELEMENTWISE[name].args
    specs = {a: (s, d) for a, s, d in zip(argn, shapes, doms)}
    wrt = [a for a, d in zip(argn, doms) if d != "mask"]  # the where-condition is not differentiable
    check_grads(lambda *xs: api.apply(name, list(xs), **attrs), specs, tfn, wrt=wrt, rng=rng)


FANOUT = [
    ("a+a", lambda a: a + a, lambda a: a + a),
    ("x*x", lambda a: a * a, lambda a: a * a),
    ("pow(x,x)", lambda a: gn.pow(a, a), lambda a: torch.pow(a, a)),
    ("two-consumers", lambda a: (lambda s: s * s + gn.tanh(s))(gn.sigmoid(a)),
     lambda a: (lambda s: s * s + torch.tanh(s))(torch.sigmoid(a))),
    ("x@x", lambda a: a @ a, lambda a: a @ a),
    ("concat-self", lambda a: gn.concat([a, a * 2.0], axis=0), lambda a: torch.cat([a, a * 2.0], 0)),
    ("index-twice", lambda a: a[0] * a[1] + a[:, 1:].sum(), lambda a: a[0] * a[1] + a[:, 1:].sum()),
]


@pytest.mark.parametrize("build,tfn", [pytest.param(b, t, id=i) for i, b, t in FANOUT])
def test_fan_out_gradients_are_summed(build, tfn, rng):
    check_grads(lambda a: build(a), {"a": ((3, 3), "pos")}, lambda a: tfn(a), rng=rng)


def test_a_plus_a_gradient_is_two():
    g = gn.Graph("aa")
    a = g.input("a", (2,))
    (da,) = gn.grad(api.sum(a + a), [a])
    np.testing.assert_array_equal(gn.compile(da)(a=np.array([3.0, -1.0])), [2.0, 2.0])


# -- the other ops ---------------------------------------------------------------------------------

def _torch_windows(x):
    """graphnn's windows op (kernel (2, 2), stride (2, 1), dilation (1, 2)) in torch."""
    w = x.unfold(2, 2, 2).unfold(3, 3, 1)   # spans (k - 1) * d + 1: 2 and 3
    return w[..., ::1, ::2]


def _torch_vjp(fn, like, g):
    x = torch.zeros_like(like, requires_grad=True)
    return torch.autograd.grad(fn(x), x, g, create_graph=True)[0]


GRAD_CASES = [  # (op, id, specs, build, torch_fn, wrt)
    ("matmul", "2d", {"a": ((3, 4), "any"), "b": ((4, 2), "any")}, lambda a, b: a @ b, torch.matmul, None),
    ("matmul", "batched", {"a": ((2, 3, 4), "any"), "b": ((2, 4, 2), "any")}, lambda a, b: a @ b, torch.matmul, None),
    ("matmul", "bcast-batch", {"a": ((2, 1, 2, 3), "any"), "b": ((3, 3, 2), "any")}, lambda a, b: a @ b,
     torch.matmul, None),
    ("matmul", "3d@2d", {"a": ((2, 3, 4), "any"), "b": ((4, 2), "any")}, lambda a, b: a @ b, torch.matmul, None),
    ("matmul", "1d@2d", {"a": ((4,), "any"), "b": ((4, 2), "any")}, lambda a, b: a @ b, torch.matmul, None),
    ("matmul", "2d@1d", {"a": ((3, 4), "any"), "b": ((4,), "any")}, lambda a, b: a @ b, torch.matmul, None),
    ("matmul", "1d@1d", {"a": ((4,), "any"), "b": ((4,), "any")}, lambda a, b: a @ b, torch.matmul, None),
    ("matmul", "3d@1d", {"a": ((2, 3, 4), "any"), "b": ((4,), "any")}, lambda a, b: a @ b, torch.matmul, None),
    ("matmul", "batchdim", {"x": ((None, 3), "any"), "w": ((3, 2), "any")}, lambda x, w: x @ w,
     torch.matmul, None),
    ("batch_guard", "id", {"x": ((None, 3), "any")},
     lambda x: gn.ops.api.apply("batch_guard", [x], axis=0, size=concrete((None,))[0]), lambda x: x, None),
    ("transpose", "T", {"x": ((2, 3), "any")}, lambda x: x.T, lambda x: x.T, None),
    ("transpose", "axes", {"x": ((2, 3, 4), "any")}, lambda x: x.transpose(2, 0, 1),
     lambda x: x.permute(2, 0, 1), None),
    ("reshape", "r", {"x": ((2, 6), "any")}, lambda x: x.reshape(3, 2, 2), lambda x: x.reshape(3, 2, 2), None),
    ("broadcast_to", "b", {"x": ((3, 1), "any")}, lambda x: gn.broadcast_to(x, (2, 3, 4)),
     lambda x: torch.broadcast_to(x, (2, 3, 4)), None),
    ("broadcast_like", "b", {"x": ((1, 3), "any"), "r": ((4, 3), "any")}, gn.broadcast_like,
     lambda x, r: torch.broadcast_to(x, r.shape), None),
    ("sum", "all", {"x": ((2, 3, 4), "any")}, lambda x: x.sum(), lambda x: x.sum(), None),
    ("sum", "axes", {"x": ((2, 3, 4), "any")}, lambda x: x.sum(axis=(0, 2)), lambda x: x.sum(dim=(0, 2)), None),
    ("sum", "keep", {"x": ((2, 3, 4), "any")}, lambda x: x.sum(axis=-1, keepdims=True),
     lambda x: x.sum(dim=-1, keepdim=True), None),
    ("mean", "all", {"x": ((2, 3, 4), "any")}, lambda x: x.mean(), lambda x: x.mean(), None),
    ("mean", "axis", {"x": ((2, 3, 4), "any")}, lambda x: x.mean(axis=1), lambda x: x.mean(dim=1), None),
    ("mean", "batch", {"x": ((None, 3), "any"), "b": ((3,), "any")}, lambda x, b: (x * b).mean(axis=0),
     lambda x, b: (x * b).mean(dim=0), None),
    ("max", "all", {"x": ((2, 3, 4), "any")}, lambda x: x.max(), lambda x: x.amax(), None),
    ("max", "axis", {"x": ((2, 3, 4), "any")}, lambda x: x.max(axis=1), lambda x: x.amax(dim=1), None),
    ("max", "keep", {"x": ((2, 3, 4), "any")}, lambda x: x.max(axis=(0, 2), keepdims=True),
     lambda x: x.amax(dim=(0, 2), keepdim=True), None),
    ("concat", "axis1", {"a": ((2, 3), "any"), "b": ((2, 2), "any")}, lambda a, b: gn.concat([a, b], axis=1),
     lambda a, b: torch.cat([a, b], 1), None),
    ("concat", "axis0", {"a": ((2, 3), "any"), "b": ((1, 3), "any"), "c": ((2, 3), "any")},
     lambda a, b, c: gn.concat([a, b, c]), lambda a, b, c: torch.cat([a, b, c]), None),
    ("index", "int", {"x": ((4, 3), "any")}, lambda x: x[1], lambda x: x[1], None),
    ("index", "slices", {"x": ((5, 4), "any")}, lambda x: x[1:4:2, -2:], lambda x: x[1:4:2, -2:], None),
    ("index", "newaxis", {"x": ((4, 3), "any")}, lambda x: x[None, :, 0], lambda x: x[None, :, 0], None),
    ("index", "rev", {"x": ((4, 3), "any")}, lambda x: x[::-1, 1:], None, None),
    ("scatter", "s", {"gy": ((4, 2), "any"), "like": ((4, 5), "any")},
     lambda gy, like: api.apply("scatter", [gy, like], index=api._index_entries(like, (slice(None), slice(1, 3)))),
     lambda gy, like: torch.zeros(4, 5).index_put((torch.arange(4)[:, None], torch.arange(1, 3)[None, :]), gy),
     None),
    ("softmax", "last", {"x": ((3, 4), "any")}, lambda x: gn.softmax(x), lambda x: torch.softmax(x, -1), None),
    ("softmax", "axis0", {"x": ((3, 4), "any")}, lambda x: gn.softmax(x, 0), lambda x: torch.softmax(x, 0), None),
    ("log_softmax", "last", {"x": ((3, 4), "any")}, lambda x: gn.log_softmax(x),
     lambda x: torch.log_softmax(x, -1), None),
    ("log_softmax", "axis0", {"x": ((3, 4), "any")}, lambda x: gn.log_softmax(x, 0),
     lambda x: torch.log_softmax(x, 0), None),
    ("conv2d", "plain", {"x": ((2, 2, 5, 4), "any"), "w": ((3, 2, 3, 2), "any")}, gn.conv2d, F.conv2d, None),
    ("conv2d", "stride-pad", {"x": ((1, 2, 5, 5), "any"), "w": ((2, 2, 3, 3), "any")},
     lambda x, w: gn.conv2d(x, w, stride=2, padding=1), lambda x, w: F.conv2d(x, w, stride=2, padding=1), None),
    ("conv2d", "mixed", {"x": ((1, 2, 4, 5), "any"), "w": ((2, 2, 2, 3), "any")},
     lambda x, w: gn.conv2d(x, w, stride=(1, 2), padding=(1, 0)),
     lambda x, w: F.conv2d(x, w, stride=(1, 2), padding=(1, 0)), None),
    ("conv2d", "conv1d", {"x": ((2, 2, 7), "any"), "w": ((3, 2, 3), "any")},
     lambda x, w: gn.conv1d(x, w, stride=2, padding=1), lambda x, w: F.conv1d(x, w, stride=2, padding=1), None),
    ("conv2d_grad_input", "gi", {"gy": ((1, 2, 3, 3), "any"), "w": ((2, 2, 3, 3), "any"),
                                 "x": ((1, 2, 5, 5), "any")},
     lambda gy, w, x: api.apply("conv2d_grad_input", [gy, w, x], stride=2, padding=1),
     lambda gy, w, x: torch.nn.grad.conv2d_input(x.shape, w, gy, stride=2, padding=1), ["gy", "w"]),
    ("conv2d_grad_weight", "gw", {"x": ((1, 2, 5, 5), "any"), "gy": ((1, 2, 3, 3), "any")},
     lambda x, gy: api.apply("conv2d_grad_weight", [x, gy], kernel=(3, 3), stride=2, padding=1),
     lambda x, gy: torch.nn.grad.conv2d_weight(x, (2, 2, 3, 3), gy, stride=2, padding=1), None),
    ("pad", "p", {"x": ((2, 3), "any")}, lambda x: gn.pad(x, (1, 0, 2, 1), value=0.5),
     lambda x: F.pad(x, (0, 1, 1, 2), value=0.5), None),
    ("windows", "2d", {"x": ((1, 2, 5, 6), "any")},
     lambda x: api.apply("windows", [x], kernel=(2, 2), stride=(2, 1), dilation=(1, 2)),
     lambda x: _torch_windows(x), None),
    ("windows_adjoint", "2d", {"gy": ((1, 2, 2, 4, 2, 2), "any"), "like": ((1, 2, 5, 6), "any")},
     lambda gy, like: api.apply("windows_adjoint", [gy, like], kernel=(2, 2), stride=(2, 1),
                                dilation=(1, 2)),
     lambda gy, like: _torch_vjp(_torch_windows, like, gy), ["gy"]),
    ("take", "2d-idx", {"x": ((4, 3), "any")},
     lambda x: api.apply("take", [x, x.graph.const(None, np.array([[0, 3], [-1, 0]]))], axis=0),
     lambda x: x[torch.tensor([[0, 3], [3, 0]])], None),
    ("take_adjoint", "rows", {"gy": ((2, 2, 3), "any"), "like": ((4, 3), "any")},
     lambda gy, like: api.apply("take_adjoint", [gy, gy.graph.const(None, np.array([[0, 3], [-1, 0]])),
                                                 like], axis=0),
     lambda gy, like: torch.zeros(4, 3, dtype=gy.dtype).index_put(
         (torch.tensor([[0, 3], [3, 0]]),), gy, accumulate=True), ["gy"]),
    ("cast", "f64", {"x": ((2, 3), "any")}, lambda x: gn.cast(gn.cast(x, "float32"), "float64") * 0 + x,
     lambda x: x.float().double() * 0 + x, None),
]


@pytest.mark.parametrize("op,specs,build,tfn,wrt",
                         [pytest.param(o, s, b, t, w, id=f"{o}-{i}") for o, i, s, b, t, w in GRAD_CASES])
def test_op_gradients(op, specs, build, tfn, wrt, rng):
    g, _ = check_grads(build, specs, tfn, wrt=wrt, rng=rng)
    assert any(n.op == op for n in g.nodes)


# ops whose derivative is zero or that have no float input; each has its own test below
NON_DIFFERENTIABLE = {"count", "zeros_like", "stop_gradient", "one_hot"}


def test_every_differentiable_op_has_a_gradient_case():
    covered = {o for o, *_ in GRAD_CASES} | set(EW) | NON_DIFFERENTIABLE
    base = {n for n, op in REGISTRY.items() if op.elementwise is None or op.elementwise.base is None}
    missing = base - covered
    assert not missing, f"ops without a gradient test in test_autodiff.py: {sorted(missing)}"
    for name in base:
        assert REGISTRY[name].vjp is not None and REGISTRY[name].jvp is not None, name


def test_stop_gradient_zeros_like_count_one_hot_block_gradients(rng):
    g = gn.Graph("nd")
    x = g.input("x", (None, 3))
    lab = g.input("lab", (None,), dtype="int64")
    y = api.sum(gn.stop_gradient(x) * x) + api.sum(gn.zeros_like(x) + x * x) \
        + api.sum(gn.one_hot(lab, 3) * x) / gn.count(x, axis=0)
    rev = gn.grad(y, [x])
    xv = rng.normal(size=(4, 3))
    lv = np.array([0, 2, 1, 2])
    got = gn.compile(rev)(x=xv, lab=lv)[0]
    xt = torch.tensor(xv, requires_grad=True)
    yt = (xt.detach() * xt).sum() + (xt * xt).sum() + (F.one_hot(torch.tensor(lv), 3).double() * xt).sum() / 4
    np.testing.assert_allclose(got, torch.autograd.grad(yt, xt)[0].numpy(), rtol=1e-12)
    # forward mode: stop_gradient blocks tangents too
    z = g.input("z", (3,))
    jt = gn.jvp(api.sum(gn.stop_gradient(z) * z), {z: np.ones(3)})
    zv = rng.normal(size=3)
    np.testing.assert_allclose(gn.compile(jt)(z=zv), zv.sum(), rtol=1e-12)


def test_disconnected_gradient_zeros_or_raise():
    g = gn.Graph("dc")
    x = g.input("x", (2,))
    w = g.input("w", (3,))
    y = api.sum(x * x)
    (gw,) = gn.grad(y, [w])
    np.testing.assert_array_equal(gn.compile(gw)(w=np.ones(3)), np.zeros(3))
    for mode in ("reverse", "forward"):
        with pytest.raises(gn.GraphError, match="disconnected"):
            gn.grad(y, [w], mode=mode, disconnected="raise")


def test_vjp_and_jvp_with_explicit_vectors(rng):
    g = gn.Graph("vj")
    x = g.input("x", (3,))
    W = g.input("W", (2, 3))
    y = gn.tanh(W @ x)
    ct = g.input("ct", (2,))
    v = g.input("v", (3,))
    (vj,) = gn.vjp(y, [x], ct)
    jv = gn.jvp(y, {x: v})
    vals = dict(x=rng.normal(size=3), W=rng.normal(size=(2, 3)), ct=rng.normal(size=2), v=rng.normal(size=3))
    a, b = gn.compile([vj, jv])(**vals)
    J = (1 - np.tanh(vals["W"] @ vals["x"]) ** 2)[:, None] * vals["W"]
    np.testing.assert_allclose(a, vals["ct"] @ J, rtol=1e-12)
    np.testing.assert_allclose(b, J @ vals["v"], rtol=1e-12)


# -- second order --------------------------------------------------------------------------------

def check_second_order(build, specs, torch_fn, rng, wrt=None):
    """grad of s = sum_k <Q_k, dL/dw_k> (reverse over reverse, and forward over reverse)
    against torch double backward and central differences of the compiled s."""
    g = gn.Graph("ad2")
    nodes = {k: g.input(k, shape) for k, (shape, _) in specs.items()}
    vals = {k: np.asarray(sample(rng, shape, dom)) for k, (shape, dom) in specs.items()}
    wrt = list(wrt or specs)
    y = build(*nodes.values())
    weight = _weight(rng, y.shape)
    loss = api.sum(y * g.const("R", weight))
    firsts = gn.grad(loss, [nodes[k] for k in wrt])
    qs = {k: rng.normal(size=nodes[k].shape) for k in wrt}
    s = None
    for k, gk in zip(wrt, firsts):
        term = api.sum(gk * g.const(f"Q_{k}", qs[k]))
        s = term if s is None else s + term
    second = gn.grad(s, [nodes[k] for k in wrt])
    second_f = gn.grad(s, [nodes[k] for k in wrt], mode="forward")
    out = gn.compile([s] + second + second_f)(**vals)
    f = gn.compile(s)
    ts, _, tg = _torch_grads(torch_fn, vals, wrt, weight, create_graph=True)
    ts_ = sum((gk * torch.tensor(qs[k])).sum() for k, gk in zip(wrt, tg))
    t2 = torch.autograd.grad(ts_, [ts[k] for k in wrt], allow_unused=True) if ts_.requires_grad \
        else [None] * len(wrt)
    for i, k in enumerate(wrt):
        want = np.zeros(vals[k].shape) if t2[i] is None else t2[i].detach().numpy(force=True)
        np.testing.assert_allclose(out[1 + i], want, rtol=1e-9, atol=1e-10, err_msg=f"d2/d{k} vs torch")
        np.testing.assert_allclose(out[1 + len(wrt) + i], want, rtol=1e-9, atol=1e-10,
                                   err_msg=f"forward-over-reverse d2/d{k} vs torch")
        fd = numeric_grad(lambda v: float(f(**v)), vals, k)
        np.testing.assert_allclose(out[1 + i], fd, rtol=RTOL, atol=1e-6, err_msg=f"d2/d{k} vs FD")
    return g


SMOOTH_EW = [n for n, (doms, _, _) in EW.items()
             if n not in ("gt", "lt", "ge", "le", "eq", "sign", "where")]


@pytest.mark.parametrize("name", SMOOTH_EW)
def test_elementwise_second_order_vs_torch(name, rng):
    doms, tfn, attrs = EW[name]
    argn = ELEMENTWISE[name].args
    shapes = EW_SHAPES[len(doms)][0]
    specs = {a: (s, d) for a, s, d in zip(argn, shapes, doms)}
    check_second_order(lambda *xs: api.apply(name, list(xs), **attrs), specs, tfn, rng)


_SYM_MODULES = [{"erf": _erf}, "numpy"]


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "silu", "softplus", "elu", "erf", "log"])
def test_grad_of_grad_builds_derived_ops_and_matches_sympy(name, rng):
    spec = ELEMENTWISE[name]
    g = gn.Graph("gg")
    x = g.input("x", (6,))
    y = api.apply(name, [x])
    (d1,) = gn.grad(api.sum(y), [x])
    (d2,) = gn.grad(api.sum(d1), [x])
    ops = {n.op for n in g.nodes}
    assert f"{name}_dx" in ops and f"{name}_dx_dx" in ops, sorted(ops)
    xs = sp.Symbol("x", real=True)
    expr = spec.concrete(REGISTRY[name].defaults).xreplace({spec.arg_symbols[0]: xs})
    f1 = sp.lambdify(xs, sp.diff(expr, xs), modules=_SYM_MODULES)
    f2 = sp.lambdify(xs, sp.diff(expr, xs, 2), modules=_SYM_MODULES)
    xv = sample(rng, (6,), "pos" if name == "log" else "nonzero")
    a, b = gn.compile([d1, d2])(x=xv)
    np.testing.assert_allclose(a, f1(xv), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b, f2(xv), rtol=1e-11, atol=1e-13)


SECOND_ORDER_TENSOR = [
    ("matmul", {"a": ((2, 3), "any"), "b": ((3, 2), "any")}, lambda a, b: gn.tanh(a @ b),
     lambda a, b: torch.tanh(a @ b)),
    ("matmul-batched-1d", {"a": ((2, 2, 3), "any"), "b": ((3,), "any")}, lambda a, b: gn.sigmoid(a @ b),
     lambda a, b: torch.sigmoid(a @ b)),
    ("conv2d", {"x": ((1, 2, 4, 4), "any"), "w": ((2, 2, 3, 3), "any")},
     lambda x, w: gn.tanh(gn.conv2d(x, w, stride=2, padding=1)),
     lambda x, w: torch.tanh(F.conv2d(x, w, stride=2, padding=1))),
    ("softmax-max", {"x": ((2, 3), "any")}, lambda x: gn.softmax(x) * x.max(axis=1, keepdims=True),
     lambda x: torch.softmax(x, -1) * x.amax(dim=1, keepdim=True)),
    ("log_softmax-mean", {"x": ((2, 3), "any")}, lambda x: gn.log_softmax(x) ** 2 + x.mean(),
     lambda x: torch.log_softmax(x, -1) ** 2 + x.mean()),
    ("index-concat", {"x": ((3, 3), "any")}, lambda x: gn.tanh(gn.concat([x[1:], x[:1] * x[2:]])),
     lambda x: torch.tanh(torch.cat([x[1:], x[:1] * x[2:]]))),
]


@pytest.mark.parametrize("build,specs,tfn", [pytest.param(b, s, t, id=i) for i, s, b, t in SECOND_ORDER_TENSOR])
def test_tensor_second_order_vs_torch(build, specs, tfn, rng):
    check_second_order(build, specs, tfn, rng)


def _mlp(g, x, W1, b1, W2):
    return gn.mse(gn.tanh(x @ W1 + b1) @ W2, g.const("target", np.array([[0.5], [-0.2], [0.1]])))


def test_hessian_of_mlp_loss_matches_finite_differences_and_torch(rng):
    g = gn.Graph("hess")
    xv, W1v, b1v, W2v = rng.normal(size=(3, 2)), rng.normal(size=(2, 3)), rng.normal(size=3), rng.normal(size=(3, 1))
    x = g.const("x", xv)
    W1 = g.input("W1", (2, 3))
    b1 = g.const("b1", b1v)
    W2 = g.const("W2", W2v)
    loss = _mlp(g, x, W1, b1, W2)
    Hn = gn.hessian(loss, W1)
    assert Hn.shape == (2, 3, 2, 3)
    (gW,) = gn.grad(loss, [W1])
    Hv, = gn.compile([Hn])(W1=W1v)
    fg = gn.compile(gW)
    fd = np.zeros((2, 3, 2, 3))
    for idx in np.ndindex(2, 3):
        u, d = W1v.copy(), W1v.copy()
        u[idx] += H
        d[idx] -= H
        fd[:, :, idx[0], idx[1]] = (fg(W1=u) - fg(W1=d)) / (2 * H)
    np.testing.assert_allclose(Hv, fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(Hv, Hv.reshape(6, 6).T.reshape(2, 3, 2, 3), atol=1e-12)

    def tloss(w):
        h = torch.tanh(torch.tensor(xv) @ w + torch.tensor(b1v)) @ torch.tensor(W2v)
        return ((h - torch.tensor([[0.5], [-0.2], [0.1]])) ** 2).mean()
    Ht = torch.autograd.functional.hessian(tloss, torch.tensor(W1v))
    np.testing.assert_allclose(Hv, Ht.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
def test_jacobian_modes_agree_with_finite_differences(mode, rng):
    g = gn.Graph("jac")
    x = g.input("x", (2, 3))
    W = g.const("W", rng.normal(size=(3, 4)))
    y = gn.softplus(x @ W)[:, 1:]
    J = gn.jacobian(y, x, mode=mode)
    assert J.shape == (2, 3, 2, 3)
    xv = rng.normal(size=(2, 3))
    Jv = gn.compile(J)(x=xv)
    f = gn.compile(y)
    fd = np.zeros((2, 3, 2, 3))
    for idx in np.ndindex(2, 3):
        u, d = xv.copy(), xv.copy()
        u[idx] += H
        d[idx] -= H
        fd[..., idx[0], idx[1]] = (f(x=u) - f(x=d)) / (2 * H)
    np.testing.assert_allclose(Jv, fd, rtol=1e-6, atol=1e-8)
    Jt = torch.autograd.functional.jacobian(lambda t: F.softplus(t @ torch.tensor(W.value))[:, 1:],
                                            torch.tensor(xv))
    np.testing.assert_allclose(Jv, Jt.numpy(), rtol=1e-10, atol=1e-12)


def test_jacobian_forward_equals_reverse_exactly_shaped(rng):
    g = gn.Graph("jac2")
    x = g.input("x", (4,))
    y = gn.sigmoid(x) * x.sum()
    Jf, Jr = gn.jacobian(y, x, mode="forward"), gn.jacobian(y, x, mode="reverse")
    a, b = gn.compile([Jf, Jr])(x=rng.normal(size=4))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# -- losses ----------------------------------------------------------------------------------------

def _loss_grads(loss, wrt, feeds):
    rev = gn.grad(loss, wrt)
    fwd = gn.grad(loss, wrt, mode="forward")
    out = gn.compile([loss] + rev + fwd)(**feeds)
    n = len(wrt)
    for r, f_ in zip(out[1:1 + n], out[1 + n:]):
        np.testing.assert_allclose(r, f_, rtol=1e-10, atol=1e-12)
    return out[0], out[1:1 + n]


def test_mse_vs_torch(rng):
    g = gn.Graph("mse")
    p, t = g.input("p", (4, 2)), g.input("t", (4, 2))
    pv, tv = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    val, (gp, gt) = _loss_grads(gn.mse(p, t), [p, t], dict(p=pv, t=tv))
    P, T = torch.tensor(pv, requires_grad=True), torch.tensor(tv, requires_grad=True)
    L = F.mse_loss(P, T)
    tp, tt = torch.autograd.grad(L, [P, T])
    np.testing.assert_allclose(val, L.item(), rtol=1e-12)
    np.testing.assert_allclose(gp, tp.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gt, tt.numpy(), rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_bce_with_logits_vs_torch_and_stable(scale, rng):
    g = gn.Graph("bce")
    z, y = g.input("z", (6,)), g.input("y", (6,))
    zv = rng.normal(size=6) * scale
    if scale > 1:
        zv = np.array([1000.0, -1000.0, 1000.0, -1000.0, 3.0, -2.0])
    yv = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    val, (gz, gy) = _loss_grads(gn.bce_with_logits(z, y), [z, y], dict(z=zv, y=yv))
    assert np.isfinite(val) and np.all(np.isfinite(gz)) and np.all(np.isfinite(gy))
    Z, Y = torch.tensor(zv, requires_grad=True), torch.tensor(yv, requires_grad=True)
    L = F.binary_cross_entropy_with_logits(Z, Y)
    tz, ty = torch.autograd.grad(L, [Z, Y])
    np.testing.assert_allclose(val, L.item(), rtol=1e-12)
    np.testing.assert_allclose(gz, tz.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gy, ty.numpy(), rtol=1e-12)


@pytest.mark.parametrize("target", ["int", "onehot"])
def test_softmax_cross_entropy_vs_torch(target, rng):
    g = gn.Graph("sce")
    z = g.input("z", (None, 4))
    zv = rng.normal(size=(5, 4)) * 3
    zv[0, 0] = 800.0  # stable for large logits
    lab = np.array([0, 3, 1, 1, 2])
    if target == "int":
        t = g.input("t", (None,), dtype="int64")
        tv = lab
    else:
        t = g.input("t", (None, 4))
        tv = np.eye(4)[lab]
    loss = gn.softmax_cross_entropy(z, t)
    (gz,) = gn.grad(loss, [z])
    val, gzv = gn.compile([loss, gz])(z=zv, t=tv)
    Z = torch.tensor(zv, requires_grad=True)
    L = F.cross_entropy(Z, torch.tensor(lab)) if target == "int" else F.cross_entropy(Z, torch.tensor(tv))
    (tz,) = torch.autograd.grad(L, [Z])
    assert np.isfinite(val)
    np.testing.assert_allclose(val, L.item(), rtol=1e-12)
    np.testing.assert_allclose(gzv, tz.numpy(), rtol=1e-10, atol=1e-15)


# -- provenance of derivative nodes -----------------------------------------------------------------

def test_backward_and_tangent_nodes_carry_role_and_scope():
    g = gn.Graph("prov")
    x = g.input("x", (None, 3))
    with g.scope("mlp"):
        with g.scope("fc1"):
            W = g.param("W", (3, 2), seed=0)
            h = gn.tanh(x @ W)
        loss = h.mean()
    before = set(g.nodes)
    (dW,) = gn.grad(loss, [W])
    new = [n for n in g.nodes if n not in before]
    assert new and all(n.role == "backward" for n in new)
    assert {n.scope for n in new if n.op in ("tanh_dx", "matmul", "transpose")} == {"mlp/fc1"}
    before = set(g.nodes)
    (dWf,) = gn.grad(loss, [W], mode="forward")
    new = [n for n in g.nodes if n not in before]
    assert new and all(n.role == "tangent" for n in new)
    assert any(n.scope == "mlp/fc1" and n.op == "matmul" for n in new)
    assert "backward" in str(g) and "tangent" in str(g)


# -- deep graphs -----------------------------------------------------------------------------------
# (the reverse gradient of a 10,000-layer chain is checked against torch in
# tests/test_lectures_autodiff.py)
