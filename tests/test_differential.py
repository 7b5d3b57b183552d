"""Every compiled target against the plain program and torch (see differential.py).

* A-E: the fast-program miscompilations of issue 13, each reproduced;
* random programs over every op of the catalog, with their gradients;
* every layer of gn.nn (and residuals, shared weights, the losses) in a small
  network: loss, output and gradients, then training steps with SGD, momentum
  and Adam against torch.optim.

`make fuzz` (GRAPHNN_FUZZ=large) runs 20x the random programs.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import graphnn as gn
from graphnn import io
from graphnn.compile import memory
from graphnn.ops import REGISTRY, api

from differential import (SIMULTANEOUS_CASES, TARGETS, check_program, check_simultaneous_updates,
                          check_training, reference, target_context)
from fuzzing import LARGE, examples  # make fuzz: random seeds; make test: the same every run
from test_random_graphs import BINARY, BUILDERS, HOSTILE, SHAPES

TARGET_NAMES = sorted(TARGETS)
# shrinking a failing random program can take minutes (each try compiles programs): the
# suite reports the first failing example as drawn; GRAPHNN_SHRINK=1 shrinks it
PHASES = tuple(p for p in Phase if p != Phase.shrink or os.environ.get("GRAPHNN_SHRINK"))


@pytest.fixture(params=TARGET_NAMES)
def target(request):
    with target_context(request.param):
        yield TARGETS[request.param]


# -- issue 13, A-E ------------------------------------------------------------------------------

def test_a_buffer_is_not_reused_while_a_view_of_it_is_read(target):
    g = gn.Graph("A")
    x = g.input("x", (None, 2))
    A = g.param("A", value=np.array([[1., 2.], [3., 4.]]))
    B = g.param("B", value=np.array([[.5, -1.], [2., 1.]]))
    y = gn.sum((x @ A)[:, ::-1] * (x @ B))
    X = np.array([[1., 2.], [3., -1.]])
    assert float(target([y])(x=X)[0]) == 51.0
    check_program(target, [y, *gn.grad(y, [A, B])], [{"x": X}, {"x": X[:1]}])


def test_a_views_keep_their_buffer_across_reshape_and_transpose(target):
    """A transpose of a reshape of a computed value, read after the value's last
    direct use, while buffers of the same shape are being recycled."""
    g = gn.Graph("A2")
    x = g.input("x", (None, 4))
    W = g.param("W", value=np.arange(16.).reshape(4, 4) / 10)
    z = gn.tanh(x @ W)
    v = z.reshape(-1, 2, 2).transpose(0, 2, 1).reshape(-1, 4)
    w = gn.sigmoid(x @ W) * 3.0  # same shape as z: wants z's buffer
    y = gn.sum(w * v)
    X = np.random.default_rng(0).normal(size=(3, 4))
    check_program(target, [y, *gn.grad(y, [W])], [{"x": X}])


def test_b_fused_in_place_chain_reads_its_input_before_writing(target):
    g = gn.Graph("B")
    x = g.input("x", (None, 4))
    W = g.param("W", (4, 3), seed=1)
    L = gn.sum(gn.max(gn.elu(x @ W), axis=-1) ** 2)
    X = np.random.default_rng(0).normal(size=(5, 4))
    check_program(target, [L, *gn.grad(L, [W])], [{"x": X}, {"x": X[:2]}])


def test_b_emitter_counts_copyto_as_a_write():
    from graphnn.compile import fusion
    import sympy as sp
    z, m = fusion.leaf_symbol(0), fusion.leaf_symbol(1)
    expr = sp.Piecewise((1.0, z > 0), (sp.exp(z), True)) * m * m
    lines, *_ = fusion.emit(expr, {z: "full", m: "full"}, "float64", m)
    first_write = min(k for k, ln in enumerate(lines) if "{OUT}" in ln.split("(")[1][:6]
                      or "out={OUT}" in ln)
    last_read = max(k for k, ln in enumerate(lines) if "{L1}" in ln)
    assert first_write >= last_read, lines


def test_masks_feed_unary_functions_and_sums_as_numbers(target):
    """Found by the random programs: a fused comparison is a boolean temporary, which
    np.sign cannot take, np.exp computes in float16 and np.add adds as a logical or."""
    g = gn.Graph("masks")
    a, b = g.input("a", (None, 3)), g.input("b", (None, 3))
    outs = [gn.sign(a >= b), gn.exp(a > b), -(a > b) * 1.0, (a > b) + (a > 0),
            gn.tanh(a > b) + a, (a > b) * (b > 0) * a]
    rng = np.random.default_rng(0)
    check_program(target, outs, [{"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(4, 3))}])


def test_a_0d_output_that_views_a_buffer_is_the_callers_own(target):
    """Found by the random programs: a 0-d reshape of a buffer was returned as it was,
    and the next call overwrote it."""
    g = gn.Graph("zero_d")
    x = g.input("x", (1,))
    p = g.param("p", value=np.array([0.5]))
    outs = [gn.reshape(gn.tanh(x * p), ()), gn.sum(gn.sigmoid(x * 3.0), axis=0)]
    check_program(target, outs, [{"x": np.array([1.0])}, {"x": np.array([2.0])}])


def test_an_empty_constant_keeps_its_shape(target):
    """Found by the random programs: a (2, 0, 3) constant was printed as np.array([])."""
    g = gn.Graph("empty")
    x = g.input("x", (2, 1, 3))
    part = x[:, 1:]  # (2, 0, 3)
    outs = [part * g.const("w", np.ones((2, 0, 3))), gn.sum(part * g.const("v", np.ones((2, 0, 3))))]
    check_program(target, outs, [{"x": np.ones((2, 1, 3))}])


def test_the_mean_over_an_empty_axis_and_its_gradient(target):
    """Found by make fuzz: SymPy folded the gradient's 1/0 to zoo, which no printer
    prints; zero stays a leaf, and the values are NumPy's (nan), as in the plain program."""
    g = gn.Graph("empty_mean")
    x = g.input("x", (3, 1))
    p = g.param("p", (2, 3), seed=0)
    m = gn.mean(x[:, 1:], axis=-1, keepdims=True)
    loss = gn.sum(m * 2.0) + gn.sum(gn.tanh(p))
    with np.errstate(all="ignore"):
        check_program(target, [m, loss, *gn.grad(loss, [x, p])], [{"x": np.ones((3, 1))}])


def test_boolean_and_integer_inputs_of_a_fused_group(target):
    """Found by the hostile-input fuzz: a boolean input to an activation crashed the fast
    program (NumPy has no boolean negative); the plain program casts it."""
    g = gn.Graph("bools")
    a = g.input("a", (None, 3), dtype="bool")
    k = g.input("k", (None, 3), dtype="int64")
    W = g.param("W", (3,), value=np.ones(3))
    out = gn.sigmoid(a) * W + gn.tanh(k) * W
    outs = [out, *gn.grad(out.sum(), [W])]
    check_program(target, outs, [{"a": np.array([[True, False, True]]), "k": np.array([[1, -2, 3]])}])


def test_a_value_read_as_a_leaf_and_recomputed_by_its_unary_op_is_one_operand(target):
    """Found when fast programs became the default for gradients: the backward group of
    sum(tanh(xW)^2) reads t = tanh(xW) as a leaf and tanh(xW) (tanh's derivative) as the
    same value computed earlier; they were two symbols for one node, the group wrote in
    place into t's buffer with only one of them known to alias it, and the other read
    the overwritten buffer. In a gradient program and in a training step."""
    def build():
        g = gn.Graph("tanh_sq")
        x = g.input("x", (None, 2))
        W = g.param("W", value=np.array([[0.3], [-0.7]]))
        loss = gn.sum(gn.tanh(x @ W) ** 2)
        return g, loss, [W]
    g, loss, params = build()
    feeds = [{"x": np.array([[0.0, 1.0], [1.0, 1.0]])}, {"x": np.array([[0.5, -2.0]])}]
    check_program(target, [loss, *gn.grad(loss, params)], feeds)
    check_training(target, build, feeds, "sgd")


def test_a_0d_constant_output_keeps_its_dtype(target):
    """A float32 0-d constant output (the folded gradient of -x) was returned as a Python
    float (float64); the plain program returns np.float32."""
    g = gn.Graph("f32", dtype="float32")
    x = g.param("x", value=np.array(0.5, dtype=np.float32))
    check_program(target, gn.grad(-x, [x]) + [gn.grad(x * 3.0, [x])[0]], [{}])


def test_c_transpose_is_printed_by_its_axes(target):
    g = gn.Graph("C")
    p = g.param("p", value=np.arange(6.).reshape(2, 3))
    check_program(target, [gn.transpose(p, (0, 1)) * 2.0, gn.transpose(p, (1, 0)) * 2.0], [{}])


def test_d_constant_outputs_are_defined(target):
    g = gn.Graph("D")
    p = g.param("p", value=np.arange(6.).reshape(2, 3))
    u = g.param("u", value=np.ones(3))
    outs = gn.grad(gn.sum(gn.tanh(p)), [p, u])
    check_program(target, outs, [{}])
    check_program(target, [g.const("c", np.arange(3.)) * 1.0, g.const("s", 2.0) * 1.0], [{}])


def test_e_mean_of_a_0d_value(target):
    g = gn.Graph("E")
    p = g.param("p", value=np.array(3.0))
    check_program(target, [gn.mean(p) * 2.0, gn.sum(p, axis=()) + 1.0], [{}])


def test_plan_keeps_views_and_refuses_shared_in_place_writes():
    """The planner itself: a view keeps its base's buffer; an input seen through
    another read of the same statement is not written in place."""
    st = memory.Statement
    rq = memory.Request
    prog = [st(defines=[rq(1, (4,), "f8")]),               # 1 = ...
            st(uses=[1], views={2: (1,)}),                 # 2 = view of 1
            st(uses=[1], defines=[rq(3, (4,), "f8")]),     # last direct read of 1
            st(defines=[rq(4, (4,), "f8")]),               # wants a free buffer
            st(uses=[2, 4], defines=[rq(5, (4,), "f8", may_alias=(4,))])]
    p = memory.plan(prog)
    assert p.buffer[4] != p.buffer[1]  # 1 is still read through 2
    assert p.aliased == {5: 4}
    prog2 = [st(defines=[rq(1, (4,), "f8")]),
             st(uses=[1], views={2: (1,)}),
             st(uses=[1, 2], defines=[rq(3, (4,), "f8", may_alias=(1,))])]
    p2 = memory.plan(prog2)
    assert 3 not in p2.aliased and p2.buffer[3] != p2.buffer[1]
    p3 = memory.plan(prog2[:2] + [st(uses=[2])], keep={2})
    assert p3.shares_buffer(2) and 1 in p3.owners[2]


# -- random programs over the catalog -------------------------------------------------------------

def clone(g: gn.Graph, nodes):
    """A copy of `g` (through its JSON form) and the nodes of the same names in it."""
    g2 = io.from_dict(io.to_dict(g), io.to_arrays(g))
    return g2, [g2[n.name] for n in nodes]


def _random_graph(data):
    g = gn.Graph(data.draw(HOSTILE, label="graph name"))
    nodes = []
    for k in range(data.draw(st.integers(1, 3), label="n inputs")):
        shape = data.draw(st.sampled_from(SHAPES), label="shape")
        try:
            nodes.append(g.input(data.draw(HOSTILE, label="input name"), shape))
        except (gn.GraphError, gn.ShapeError):
            nodes.append(g.input(f"in{k}", shape))
    for k in range(data.draw(st.integers(0, 2), label="n params")):
        shape = data.draw(st.sampled_from([(3,), (2, 3), (3, 3), (3, 1)]), label="param shape")
        nodes.append(g.param(f"p{k}", shape, seed=k))
    for _ in range(data.draw(st.integers(1, 9), label="n ops")):
        op = data.draw(st.sampled_from(sorted(BUILDERS)), label="op")
        arity, build = BUILDERS[op]
        args = [data.draw(st.sampled_from(nodes), label="arg") for _ in range(arity)]
        if arity == 2 and op in BINARY and data.draw(st.booleans(), label="scalar operand"):
            args[1] = data.draw(st.floats(-2, 2, allow_nan=False), label="scalar")
        try:
            out = build(data, *args)
            if data.draw(st.booleans(), label="rename"):
                out.named(data.draw(HOSTILE, label="node name"))
        except (gn.GraphError, gn.ShapeError):
            continue
        nodes.append(out)
    return g, nodes


def _scalar_of(g, outputs, rng):
    loss = None
    for o in outputs:
        if o.dtype.kind != "f":
            continue
        w = g.const(None, rng.normal(size=tuple(1 if d is None else d for d in o.shape)))
        term = api.sum(o * w)
        loss = term if loss is None else loss + term
    return loss


def _feeds(g, rng, batch):
    out = {}
    for n in g.inputs:
        shape = tuple(batch if d is None else d for d in n.shape)
        out[n.name] = rng.integers(0, 3, size=shape) if n.dtype.kind in "iu" else \
            rng.normal(size=shape).astype(n.dtype)
    return out


@pytest.mark.fuzz
@settings(max_examples=examples(120, 2400), deadline=None, derandomize=not LARGE,  # (fuzzing.py)
          phases=PHASES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@pytest.mark.parametrize("target_name", TARGET_NAMES)
def test_random_programs_and_their_gradients(target_name, data):
    with target_context(target_name):
        _random_program(TARGETS[target_name], data)


def _random_program(target, data):
    g, nodes = _random_graph(data)
    outputs = list(dict.fromkeys(nodes[-3:]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    loss = _scalar_of(g, outputs, rng)
    wrt = [n for n in g.inputs + g.params if n.size is not None and n.dtype.kind == "f"]
    if loss is not None and wrt:
        outputs = outputs + [loss] + gn.grad(loss, wrt)
    guarded = any(n.op == "batch_guard" for n in g.nodes)
    batches = [4] if guarded else [4, 2]  # a second batch size reallocates every buffer
    check_program(target, outputs, [_feeds(g, rng, b) for b in batches])

    params = [p for p in g.params if p.dtype.kind == "f"]
    if loss is None or not params or not any(p in g.ancestors([loss]) for p in params):
        return
    opt = data.draw(st.sampled_from(["sgd", "adam"]), label="optimizer")
    steps = [_feeds(g, rng, 4) for _ in range(2)]
    check_training(target, lambda: _clone_step(g, loss, params), steps, opt)


def _clone_step(g, loss, params):
    g2, (loss2, *params2) = clone(g, [loss, *params])
    return g2, loss2, params2


def test_random_programs_cover_the_catalog():
    base = {n for n, op in REGISTRY.items() if op.elementwise is None or op.elementwise.base is None}
    assert base <= set(BUILDERS), sorted(base - set(BUILDERS))


# -- every layer of gn.nn ------------------------------------------------------------------------

def _mlp(x):
    return gn.nn.MLP([5, 4, 3], activation="tanh", final_activation="sigmoid")(x)


def _shared(x):
    lin = gn.nn.Linear(4, activation="tanh", name="shared")
    return lin(lin(x))  # one weight matrix used twice


LAYERS = {  # name -> (input shape without batch, network)
    "linear": ((4,), lambda x: gn.nn.Linear(3)(x)),
    "linear_3d": ((2, 4), lambda x: gn.nn.Linear(3, activation="relu")(x)),
    "activation": ((4,), lambda x: gn.nn.Linear(3)(gn.nn.Activation("softplus")(x))),
    "mlp": ((4,), _mlp),
    "mlp_relu": ((4,), lambda x: gn.nn.MLP([6, 6, 2], activation="relu")(x)),
    "mlp_prelu": ((4,), lambda x: gn.nn.MLP([5, 2], activation="prelu")(x)),
    "glu": ((4,), lambda x: gn.nn.GLU(3)(x)),
    "kan": ((3,), lambda x: gn.nn.KAN(2, grid_size=5)(x)),
    "conv1d": ((2, 7), lambda x: gn.nn.Conv1d(3, 3, stride=2, padding=1, activation="relu")(x)),
    "conv2d": ((2, 5, 5), lambda x: gn.nn.Conv2d(3, 3, padding=1, activation="tanh")(x)),
    "self_attention": ((4, 6), lambda x: gn.nn.SelfAttention(6, d_k=4)(x)),
    "causal_attention": ((4, 6), lambda x: gn.nn.SelfAttention(6, causal=True)(x)),
    "multi_head_attention": ((4, 8), lambda x: gn.nn.MultiHeadAttention(8, heads=2)(x)),
    "layer_norm": ((5,), lambda x: gn.nn.LayerNorm()(gn.nn.Linear(5)(x))),
    "batch_norm": ((5,), lambda x: gn.nn.BatchNorm()(gn.nn.Linear(5, bias=False)(x))),
    "batch_norm_2d": ((2, 4, 4), lambda x: gn.nn.BatchNorm()(gn.nn.Conv2d(2, 3, padding=1, bias=False)(x))),
    "residual": ((5,), lambda x: gn.nn.Residual(gn.nn.Sequential(
        gn.nn.Linear(5, activation="gelu"), gn.nn.LayerNorm()))(x)),
    "block": ((4, 8), lambda x: gn.nn.Sequential(
        gn.nn.Residual(gn.nn.MultiHeadAttention(8, heads=2)), gn.nn.LayerNorm(),
        gn.nn.Residual(gn.nn.MLP([16, 8], activation="relu")), gn.nn.LayerNorm())(x)),
    "shared_weights": ((4,), _shared),
}
LOSSES = ("mse", "cross_entropy", "bce")


def _network(name, loss_kind="mse", dtype="float64"):
    shape, net = LAYERS[name]

    def build():
        g = gn.Graph(f"net_{name}", dtype=dtype, seed=3)
        x = g.input("x", (None,) + shape)
        out = net(x)
        if out.ndim > 2:
            out = out.reshape(-1, int(np.prod(out.shape[1:])))
        if loss_kind == "cross_entropy":
            y = g.input("y", (None,), dtype="int64")
            loss = gn.softmax_cross_entropy(out, y)
        elif loss_kind == "bce":
            y = g.input("y", (None, out.shape[1]))
            loss = gn.bce_with_logits(out, y)
        else:
            y = g.input("y", (None, out.shape[1]))
            loss = gn.mse(out, y)
        return g, loss, list(g.params), out
    return build


def _layer_feeds(g, out, loss_kind, rng, batch):
    x = g["x"]
    feeds = {"x": rng.normal(size=(batch,) + x.shape[1:]).astype(x.dtype)}
    if loss_kind == "cross_entropy":
        feeds["y"] = rng.integers(0, out.shape[1], size=batch)
    elif loss_kind == "bce":
        feeds["y"] = (rng.random(size=(batch, out.shape[1])) > 0.5).astype(x.dtype)
    else:
        feeds["y"] = rng.normal(size=(batch, out.shape[1])).astype(x.dtype)
    return feeds


def _layer_cases():
    for name in LAYERS:
        yield name, "mse", "float64"
    for name in ("mlp", "conv2d", "multi_head_attention"):
        yield name, "cross_entropy", "float64"
    for name in ("mlp_relu", "glu"):
        yield name, "bce", "float64"
    for name in ("mlp", "self_attention", "layer_norm"):
        yield name, "mse", "float32"


@pytest.mark.parametrize("name,loss_kind,dtype", list(_layer_cases()))
def test_layer_values_and_gradients(target, name, loss_kind, dtype):
    g, loss, params, out = _network(name, loss_kind, dtype)()
    rng = np.random.default_rng(5)
    outs = [loss, out, *gn.grad(loss, params)]
    check_program(target, outs, [_layer_feeds(g, out, loss_kind, rng, b) for b in (3, 2)])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("name,loss_kind,dtype", list(_layer_cases()))
def test_layer_training_steps_equal_torch_optim(target, name, loss_kind, dtype, optimizer):
    if dtype == "float32" and optimizer != "adam":
        pytest.skip("float32: Adam only (the float64 cases check the update rules)")
    build = _network(name, loss_kind, dtype)
    g, loss, params, out = build()
    rng = np.random.default_rng(11)
    steps = [_layer_feeds(g, out, loss_kind, rng, 3) for _ in range(3)]
    check_training(target, lambda: build()[:3], steps, optimizer)


def test_layers_cover_gn_nn():
    """Every public layer class of gn.nn is built by one of the networks above."""
    import inspect
    classes = {n for n, c in vars(gn.nn).items() if inspect.isclass(c) and
               issubclass(c, gn.nn.layers.Layer) and not n.startswith("_") and n != "Layer"}
    src = inspect.getsource(_network) + "".join(
        inspect.getsource(f) for f in (_mlp, _shared)) + open(__file__).read()
    missing = {c for c in classes if f"gn.nn.{c}(" not in src}
    assert not missing, missing


def test_reference_program_is_plain():
    g = gn.Graph("r")
    x = g.input("x", (None, 2))
    prog = reference([gn.sum(gn.tanh(x))])
    assert "_alloc" not in prog.source


# -- updates are simultaneous, outputs are pre-update values ---------------------------------------

@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("case", SIMULTANEOUS_CASES)
def test_updates_are_simultaneous_and_outputs_precede_them(fast, case):
    """Values that are (views of) parameters the step writes: the plain and the fast
    program both read them as they were before the step."""
    check_simultaneous_updates(lambda outs, **kw: gn.compile(outs, fast=fast, **kw), case)
