"""The fast program (compile/schedule.py printed by compile/targets/numpy.py) computes what the plain one does.

Each check runs the same training step compiled twice (fast=True / fast=False)
from the same initial parameters for several steps, and against hand-written
NumPy, in float64 and float32.
"""
import re
import os
import sys

import numpy as np
import pytest

import graphnn as gn
from graphnn.compile import fusion, memory

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from workloads import SPECS, data, deep_spec, graphnn_step, init_params  # noqa: E402
from numpy_ref import NumpyStep  # noqa: E402

SMALL = {
    "xor": SPECS["xor"],
    "mlp": dict(SPECS["mlp"], sizes=[6, 5, 4, 3], batch=7),
    "deep": dict(deep_spec(4), sizes=[5] * 5, batch=6),
}


def _run(spec, fast, dtype="float64", steps=4, params=None):
    g, loss, ups, ps = graphnn_step(spec, params, dtype=dtype)
    X, Y = data(spec)
    prog = gn.compile([loss], updates=ups, fast=fast)
    losses = [float(prog(x=X.astype(dtype), y=Y.astype(dtype))[0]) for _ in range(steps)]
    return losses, [np.array(g.values[p.name]) for p in ps], prog, g


@pytest.mark.parametrize("name", sorted(SMALL))
def test_fast_equals_plain_float64(name):
    spec = SMALL[name]
    lf, pf, prog, _ = _run(spec, True)
    lp, pp, plain, _ = _run(spec, False)
    assert "_alloc" in prog.source and "_alloc" not in plain.source
    np.testing.assert_allclose(lf, lp, rtol=1e-12, atol=1e-15)
    for a, b in zip(pf, pp):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_fast_equals_plain_float32(name):
    spec = SMALL[name]
    lf, pf, prog, g = _run(spec, True, "float32")
    lp, pp, _, _ = _run(spec, False, "float32")
    assert all(g.values[p].dtype == np.float32 for p in g.values)
    np.testing.assert_allclose(lf, lp, rtol=2e-6, atol=1e-7)
    for a, b in zip(pf, pp):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_fast_equals_hand_written_numpy(name):
    spec = SMALL[name]
    P0 = init_params(spec)
    X, Y = data(spec)
    ref = NumpyStep(spec, P0, X, Y)
    want = [ref() for _ in range(5)]
    got, params, _, _ = _run(spec, True, steps=5, params=P0)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    for a, b in zip(params, ref.params):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_flat_parameters_are_adopted_and_foreign_arrays_still_work():
    spec = SMALL["deep"]
    g, loss, ups, ps = graphnn_step(spec)
    X, Y = data(spec)
    prog = gn.compile([loss], updates=ups)
    views = {p.name: g.values[p.name] for p in ps}
    assert all(v.base is not None for v in views.values())  # views of one flat buffer
    assert len({id(v.base) for v in views.values()}) == 1
    before = {k: v.copy() for k, v in views.items()}
    prog(x=X, y=Y)
    assert all(g.values[k] is views[k] for k in views)  # updated in place
    assert any(not np.array_equal(before[k], views[k]) for k in views)
    # replacing a parameter array: the program copies it in and the update back out
    g2, loss2, ups2, ps2 = graphnn_step(spec)
    plain = gn.compile([loss2], updates=ups2, fast=False)
    own = {p.name: np.array(g.values[p.name]) for p in ps}
    for k, v in own.items():
        g.values[k] = v
        np.copyto(g2.values[k], v)
    l1 = prog(x=X, y=Y)[0]
    l2 = plain(x=X, y=Y)[0]
    assert l1 == pytest.approx(l2, rel=1e-12)
    for k in own:
        assert g.values[k] is own[k]
        np.testing.assert_allclose(own[k], g2.values[k], rtol=1e-12)


def test_batch_size_change_reallocates():
    spec = SMALL["mlp"]
    g, loss, ups, _ = graphnn_step(spec)
    g2, loss2, ups2, _ = graphnn_step(spec)
    fast = gn.compile([loss], updates=ups)
    plain = gn.compile([loss2], updates=ups2, fast=False)
    rng = np.random.default_rng(3)
    for n in (7, 3, 11, 3):
        X = rng.normal(size=(n, 6))
        Y = np.eye(3)[rng.integers(0, 3, n)]
        assert fast(x=X, y=Y)[0] == pytest.approx(plain(x=X, y=Y)[0], rel=1e-12)


def test_outputs_are_fresh_arrays_not_reused_buffers():
    g = gn.Graph("outs")
    x = g.input("x", (None, 3))
    W = g.param("W", value=np.eye(3))
    h = gn.tanh(x @ W)
    loss = (h * h).mean()
    (dW,) = gn.grad(loss, [W])
    prog = gn.compile([loss, h], updates={W: W - 0.5 * dW})
    X = np.arange(6.0).reshape(2, 3) / 6
    _, h1 = prog(x=X)
    h1_copy = h1.copy()
    prog(x=X + 1)
    np.testing.assert_array_equal(h1, h1_copy)


def test_source_is_readable_one_comment_per_node():
    spec = SMALL["deep"]
    g, loss, ups, _ = graphnn_step(spec)
    prog = gn.compile([loss], updates=ups)
    src = prog.source
    assert "out=" in src and "np.dot(" in src  # tiny layers: np.dot (less call overhead)
    assert "fused: tanh_dx" in src  # the tanh derivative fused into its product
    assert "np.tanh" in src and src.count("np.tanh(") == spec["sizes"].__len__() - 2
    assert "# group 0:" in src  # one flat update for every parameter
    assert ".T, " in src or ".T)" in src  # transposes are views, not calls
    assert "np.transpose" not in src and "np.broadcast_to" not in src


def test_training_reaches_zero_xor_error_with_fast_program():
    g, loss, ups, ps = graphnn_step(SPECS["xor"])
    X, Y = data(SPECS["xor"])
    prog = gn.compile([loss], updates=ups)
    for _ in range(300):
        last = prog(x=X, y=Y)[0]
    assert last < 1e-4


def test_emitter_prints_in_place_ufunc_calls():
    import sympy as sp
    L0, L1, L2 = (fusion.leaf_symbol(k) for k in range(3))
    shapes = {L0: "full", L1: "full", L2: "scalar"}
    lines, n_t, _, _ = fusion.emit(L1 * (1 - L0 ** 2), shapes, "float64", None)
    assert lines == ["np.square({L0}, out={OUT})", "np.subtract(1.0, {OUT}, out={OUT})",
                     "np.multiply({OUT}, {L1}, out={OUT})"] and n_t == 0
    # writing into an input: only the last call may write {OUT} before the input is read
    lines, n_t, _, _ = fusion.emit(L0 - L2 * L1, shapes, "float64", L0)
    assert lines[-1] == "np.subtract({L0}, {T0}, out={OUT})" and n_t == 1
    # a quotient of a leaf starts from its computed divisor and divides into it
    lines, n_t, _, _ = fusion.emit(L2 * L1 / (sp.sqrt(L0) / L2 + 1e-8), shapes, "float64", None)
    assert lines == ["np.sqrt({L0}, out={OUT})", "np.add({OUT}, (1.0e-8*{L2}), out={OUT})",
                     "np.divide({L1}, {OUT}, out={OUT})",
                     "np.multiply({OUT}, ({L2}**2), out={OUT})"] and n_t == 0
    # a plain scalar factor stays inside: pulled out, s = 0 would turn 0 into nan
    lines, _, _, _ = fusion.emit(L2 * L1 / (L0 * L2 + 1e-8), shapes, "float64", None)
    assert lines[0] == "np.multiply({L0}, {L2}, out={OUT})"
    relu = fusion.substitute("relu", (), [L0])
    # max/min compare with a filled array (no fast NumPy loop for a scalar operand)
    assert fusion.emit(relu, shapes, "float64", None)[::3] == (["np.maximum({L0}, {F0}, out={OUT})"],
                                                               ["0.0"])
    lines, _, _, fills = fusion.emit(sp.Min(L0, 2) * sp.exp(L1), shapes, "float64", None)
    assert fills == ["2.0", "300.0"] and lines[:2] == ["np.minimum({L0}, {F0}, out={OUT})",
                                                       "np.minimum({L1}, {F1}, out={T0})"]


def test_emitted_code_matches_sympy_meaning():
    import sympy as sp
    L0, L1, L2 = (fusion.leaf_symbol(k) for k in range(3))
    shapes = {L0: "full", L1: "full", L2: "scalar"}
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2, (3, 4)), rng.normal(size=(3, 4))
    c = 0.7
    exprs = [L0 - L2 * L1 / (sp.sqrt(L0) / L2 + 1e-8), L1 * fusion.substitute("relu_dx", (), [L1]),
             sp.exp(L1) * L0 + L1 ** 3, fusion.substitute("sigmoid", (), [L1]) * L2 - L0,
             -L0 / L1 ** 2, L1 / (L0 + L2), L2 * L1 / (L0 / L2 + 3),
             L2 * L1 / (L0 / L2 + L1 / L2) - L0, L1 - L0 / (L1 * L1 + 1),
             fusion.substitute("relu", (), [L1]) * L0, sp.Max(L1, 0.5, L0) - sp.Min(L1, -0.25)]
    for e in exprs:
        for alias in (None, L0):
            lines, n_t, n_b, fills = fusion.emit(e, shapes, "float64", alias)
            env = {"np": np, "L0": a.copy(), "L1": b.copy(), "L2": c}
            out = env["L0"] if alias is L0 else np.empty_like(a)
            names = {"L0": "L0", "L1": "L1", "L2": "L2", "OUT": "OUT"}
            names.update({f"T{k}": f"T{k}" for k in range(n_t)})
            names.update({f"B{k}": f"B{k}" for k in range(n_b)})
            env.update({f"T{k}": np.empty_like(a) for k in range(n_t)})
            env.update({f"B{k}": np.empty(a.shape, bool) for k in range(n_b)})
            names.update({f"F{k}": f"F{k}" for k in range(len(fills))})
            env.update({f"F{k}": np.full(a.shape, float(v)) for k, v in enumerate(fills)})
            env["OUT"] = out
            for ln in lines:
                exec(ln.format(**names), env)
            want = sp.lambdify((L0, L1, L2), e, "numpy")(a, b, c)
            np.testing.assert_allclose(out, want, rtol=1e-12, err_msg=str(e))


def test_buffer_plan_reuses_dead_buffers_and_aliases_only_on_last_use():
    S, R = memory.Statement, memory.Request
    sts = [S([R(1, (None, 4), "float64")], []),
           S([R(2, (None, 4), "float64", may_alias=(1,))], [1]),   # last use of 1: in place
           S([R(3, (None, 4), "float64", may_alias=(2,))], [2]),
           S([R(4, (None, 4), "float64", may_alias=(2,))], [3, 2])]  # last read of 2: may alias it
    plan = memory.plan(sts, keep={4})
    assert plan.buffer[2] == plan.buffer[1]
    assert plan.buffer[3] != plan.buffer[2]
    assert plan.buffer[4] == plan.buffer[2] and plan.aliased[4] == 2
    assert len(plan.buffers) == 2


def _plain_and_fast(build, feeds, steps=3):
    """Losses (or, when `build` gives a list of outputs, every output at every step)
    and parameters after `steps` steps, plain and fast, from the same start."""
    out = []
    for fast in (False, True):
        g, loss, ups = build()
        outs = loss if isinstance(loss, list) else [loss]
        prog = gn.compile(outs, updates=ups, fast=fast)
        got = [[np.array(v) for v in prog(**feeds)] for _ in range(steps)]
        losses = got if isinstance(loss, list) else [float(o[0]) for o in got]
        out.append((losses, {p.name: np.array(g.values[p.name]) for p in g.params}, prog))
    return out


def test_bias_fold_and_dot_loss_in_xor_source():
    spec = SMALL["xor"]
    g, loss, ups, ps = graphnn_step(spec)
    src = gn.compile([loss], updates=ups).source
    # [x, 1] @ [W1; b1] in one matmul, its gradient in one matmul, the MSE sum as one vdot
    assert "bias folded: [x, 1] @ [W1; b1]" in src
    assert "the bias gradient, as the row of ones" in src
    assert "np.vdot(" in src and "fused: mul_1=mul" in src
    assert "np.add.reduce(" not in src  # no bias-gradient reductions left


def _affine_net(rule_b_differs: bool, share_input: bool):
    rng = np.random.default_rng(3)
    g = gn.Graph("fold")
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 2))
    W1 = g.param("W1", value=rng.normal(size=(3, 4)))
    b1 = g.param("b1", value=rng.normal(size=(4,)))
    W2 = g.param("W2", value=rng.normal(size=(4, 2)))
    b2 = g.param("b2", value=rng.normal(size=(2,)))
    h = gn.tanh(x @ W1 + b1)
    out = h @ W2 + b2
    if share_input:  # x feeds a second affine layer (one [x, 1] buffer for both)
        W3 = g.param("W3", value=rng.normal(size=(3, 2)))
        b3 = g.param("b3", value=rng.normal(size=(2,)))
        out = out + gn.sigmoid(x @ W3 + b3)
    loss = gn.mse(out, y)
    ps = g.params
    grads = gn.grad(loss, ps)
    with g.provenance(role="update"):
        ups = {}
        for p, gr in zip(ps, grads):
            step = gr + 0.5 * p if (rule_b_differs and p.name.startswith("W")) else gr
            ups[p] = p - 0.05 * step
    return g, loss, ups


@pytest.mark.parametrize("rule_b_differs,share_input", [(False, False), (True, False),
                                                         (False, True)])
def test_bias_fold_only_where_it_is_exact(rule_b_differs, share_input):
    rng = np.random.default_rng(4)
    feeds = {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 2))}
    (lp, pp, plain), (lf, pf, prog) = _plain_and_fast(
        lambda: _affine_net(rule_b_differs, share_input), feeds)
    np.testing.assert_allclose(lf, lp, rtol=1e-12)
    for k in pp:
        np.testing.assert_allclose(pf[k], pp[k], rtol=1e-12, atol=1e-15)
    folded = "bias folded" in prog.source
    # W and b updated by different rules live in different flat groups: no [W; b] view
    assert folded == (not rule_b_differs)
    if share_input:
        assert prog.source.count("np.copyto(_augv_x, x)") == 1
    # the same programs on a batch of another size: the [h, 1] buffers are reallocated
    # (ones column included) and the steps still agree
    feeds7 = {"x": rng.normal(size=(7, 3)), "y": rng.normal(size=(7, 2))}
    lp7 = [float(plain(**feeds7)[0]) for _ in range(2)]
    lf7 = [float(prog(**feeds7)[0]) for _ in range(2)]
    np.testing.assert_allclose(lf7, lp7, rtol=1e-12)


_CALL = re.compile(r"np\.(\w+)\((.*), out=(\w+)\)")


def test_adam_update_runs_in_place_with_folded_biases():
    spec = SMALL["mlp"]
    g, loss, ups, ps = graphnn_step(spec)
    src = gn.compile([loss], updates=ups).source
    assert "bias folded: [x, 1] @ [W1; b1]" in src  # Adam's members update W, m and v
    step = src[src.index("def step("):src.index("    return (")]
    update = step[step.index("group 0):"):].splitlines()
    calls = [_CALL.search(ln).groups() for ln in update if _CALL.search(ln)]
    assert len(calls) == 12  # m, v and the parameter: 12 whole-buffer calls
    # every call writes one of its operands, except a square or a root into a
    # dead gradient buffer: no call streams three arrays
    for fn, args, out in calls:
        names = [a.strip() for a in args.split(",")]
        assert out in names or fn in ("square", "sqrt"), (fn, args, out)
    assert any("out=_flat0_leaf" in ln for ln in update)  # the dead gradient as scratch


def _shared_gradient_net(kind: str):
    """W1's gradient feeds SGD and also an AdaGrad-like accumulator (two update
    groups), or is stored as it is (`acc := g1`, copied in after the flat update),
    or is a program output: its buffer must not serve as scratch."""
    rng = np.random.default_rng(5)
    g = gn.Graph("shared")
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 2))
    W1 = g.param("W1", value=rng.normal(size=(3, 4)))
    W2 = g.param("W2", value=rng.normal(size=(4, 2)))
    acc = g.param("acc", value=np.ones((3, 4)))
    loss = gn.mse(gn.tanh(x @ W1) @ W2, y)
    g1, g2 = gn.grad(loss, [W1, W2])
    with g.provenance(role="update"):
        ups = {W1: W1 - 0.1 * g1, W2: W2 - 0.1 * g2}
        if kind != "output":
            ups[acc] = g1 if kind == "stored" else acc + g1 * g1
    return g, [loss, g1] if kind == "output" else [loss], ups


@pytest.mark.parametrize("kind", ["two_groups", "stored", "output"])
def test_gradient_read_after_the_update_is_not_scratch(kind):
    rng = np.random.default_rng(6)
    feeds = {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 2))}
    (op, pp, _), (of, pf, _) = _plain_and_fast(lambda: _shared_gradient_net(kind), feeds)
    for a, b in zip(op, of):
        for u, v in zip(a, b):
            np.testing.assert_allclose(v, u, rtol=1e-12, atol=1e-15)
    for k in pp:
        np.testing.assert_allclose(pf[k], pp[k], rtol=1e-12, atol=1e-15)


def test_tiny_products_use_dot_and_never_write_a_strided_view():
    """np.dot (cheaper to call) for tiny layers, np.matmul for large ones; a layer
    without activation writes its result straight into the next layer's [h, 1]
    buffer, a strided view np.dot refuses: that product stays np.matmul."""
    xor = graphnn_step(SMALL["xor"])
    assert "np.matmul(" not in gn.compile([xor[1]], updates=xor[2]).source
    big = graphnn_step(SPECS["mlp"])
    dots = [ln for ln in gn.compile([big[1]], updates=big[2]).source.splitlines() if "np.dot(" in ln]
    assert dots and all("_ones_" in ln for ln in dots)  # only the row sums (row_sum)

    def linear_stack():
        rng = np.random.default_rng(7)
        g = gn.Graph("linear")
        x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
        W1, b1 = g.param("W1", value=rng.normal(size=(3, 4))), g.param("b1", value=rng.normal(size=4))
        W2, b2 = g.param("W2", value=rng.normal(size=(4, 2))), g.param("b2", value=rng.normal(size=2))
        loss = gn.mse((x @ W1 + b1) @ W2 + b2, y)
        ps = g.params
        with g.provenance(role="update"):
            ups = {p: p - 0.1 * gr for p, gr in zip(ps, gn.grad(loss, ps))}
        return g, loss, ups

    rng = np.random.default_rng(8)
    feeds = {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 2))}
    (lp, pp, _), (lf, pf, prog) = _plain_and_fast(linear_stack, feeds)
    src = prog.source
    assert "np.dot(" in src and re.search(r"np\.matmul\(_aug_x, \w+, out=_augv_", src)
    np.testing.assert_allclose(lf, lp, rtol=1e-12)
    for k in pp:
        np.testing.assert_allclose(pf[k], pp[k], rtol=1e-12, atol=1e-15)


def _assert_same_step(loss_fast, loss_plain, w_fast, w_plain, dtype):
    """Fast and plain programs agree on the loss and the updated parameter."""
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(loss_fast, loss_plain, rtol=tol)
    np.testing.assert_allclose(w_fast, w_plain, rtol=tol, atol=tol)


@pytest.mark.parametrize("op,axis,dtype", [("softmax", -1, "float64"), ("log_softmax", -1, "float64"),
                                           ("softmax", 0, "float64"), ("log_softmax", 0, "float32")])
def test_softmax_runs_in_preallocated_buffers(op, axis, dtype):
    """softmax / log_softmax in a training step: no allocating helper, same values."""
    def build():
        rng = np.random.default_rng(9)
        g = gn.Graph("sm", dtype=dtype)
        x, y = g.input("x", (None, 3)), g.input("y", (None, 4))
        W = g.param("W", value=rng.normal(size=(3, 4)).astype(dtype))
        loss = gn.mse(getattr(gn, op)(x @ W, axis=axis), y)
        with g.provenance(role="update"):
            ups = {W: W - 0.5 * gn.grad(loss, [W])[0]}
        return g, loss, ups

    rng = np.random.default_rng(10)
    feeds = {"x": rng.normal(size=(6, 3)).astype(dtype), "y": rng.normal(size=(6, 4)).astype(dtype)}
    (lp, pp, _), (lf, pf, prog) = _plain_and_fast(build, feeds)
    assert f"_{op}(" not in prog.source and "np.maximum.reduce(" in prog.source
    _assert_same_step(lf, lp, pf["W"], pp["W"], dtype)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_row_sums_are_products_with_ones(keepdims, dtype):
    """A sum over the last axis of a fixed-width 2-D float array is np.dot with a
    read-only column of ones; a sum over the batch axis stays a reduction. The
    values, and the trained parameters, match the plain program."""
    def build():
        rng = np.random.default_rng(4)
        g = gn.Graph("rows", dtype=dtype)
        x, y = g.input("x", (None, 3)), g.input("y", (None, 5))
        W = g.param("W", value=rng.normal(size=(3, 5)).astype(dtype))
        h = gn.tanh(x @ W)
        rows = gn.sum(h * y, axis=1, keepdims=keepdims)
        cols = gn.sum(h, axis=0)
        loss = gn.mean(rows * rows) + gn.mean(cols * cols)
        with g.provenance(role="update"):
            ups = {W: W - 0.1 * gn.grad(loss, [W])[0]}
        return g, loss, ups

    rng = np.random.default_rng(5)
    feeds = {"x": rng.normal(size=(7, 3)).astype(dtype), "y": rng.normal(size=(7, 5)).astype(dtype)}
    (lp, pp, _), (lf, pf, prog) = _plain_and_fast(build, feeds)
    ones = f"_ones_{dtype}_5x1" if keepdims else f"_ones_{dtype}_5"
    assert "np.dot(" in prog.source and f", {ones}, out=" in prog.source
    assert f"{ones}.flags.writeable = False" in prog.source
    assert "np.add.reduce(" in prog.source  # the sum over the batch axis
    _assert_same_step(lf, lp, pf["W"], pp["W"], dtype)
