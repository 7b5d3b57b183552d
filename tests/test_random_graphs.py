"""Hypothesis builds random small graphs (random registry ops on random earlier nodes,
random and hostile names) and checks:

* building raises nothing but gn.ShapeError / gn.GraphError;
* the compiled program (optimized and not) matches a node-by-node NumPy
  interpreter (`graphnn.ops.interpret.evaluate`);
* reverse- and forward-mode gradients agree.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import graphnn as gn
from graphnn.ops.interpret import evaluate
from graphnn.ops import REGISTRY, api

B = 4
SHAPES = [(), (3,), (2, 3), (3, 2), (3, 1), (1, 3), (None, 3), (None, 1), (2, 1, 3)]
DECLARED = (gn.ShapeError, gn.GraphError)

HOSTILE = st.one_of(
    st.text(min_size=0, max_size=12),
    st.sampled_from(["x", "a b", "'", '"', "\\", "\n", "\x00", "ü", "λ", "def", "class", "np", "step",
                     "run", "ARGS", "__import__", "1x", "x;import os", "}{", "é\u202e", "_a0", "math",
                     "PARAMS", "return", "None", "sum_1", "const_1"]),
)


def _squash(x):
    return gn.tanh(x)


def _pos(x):
    return gn.exp(gn.tanh(x))  # in [1/e, e]: safe for log, sqrt, division, powers


UNARY = ["neg", "abs", "square", "sigmoid", "tanh", "relu", "sign", "leaky_relu", "elu", "gelu",
         "silu", "softplus", "erf"]
BINARY = ["add", "sub", "mul", "maximum", "minimum", "gt", "lt", "ge", "le", "eq", "prelu"]


def _builders():
    b = {}
    for name in UNARY:
        b[name] = (1, lambda d, a, name=name: api.apply(name, [a]))
    for name in BINARY:
        b[name] = (2, lambda d, a, c, name=name: api.apply(name, [a, c]))
    b["exp"] = (1, lambda d, a: gn.exp(_squash(a)))
    b["log"] = (1, lambda d, a: gn.log(_pos(a)))
    b["sqrt"] = (1, lambda d, a: gn.sqrt(_pos(a)))
    b["div"] = (2, lambda d, a, c: a / _pos(c))
    b["pow"] = (2, lambda d, a, c: _pos(a) ** _squash(c))
    b["where"] = (3, lambda d, a, c, e: gn.where(a > c, c, e))
    b["trainable_swish"] = (3, lambda d, a, c, e: gn.trainable_swish(a, c, e, 0.5, c))
    b["matmul"] = (2, lambda d, a, c: a @ c)
    b["transpose"] = (1, lambda d, a: a.T)
    b["reshape"] = (1, lambda d, a: a.reshape(-1) if None not in a.shape else a.reshape(-1, 1))
    b["broadcast_to"] = (1, lambda d, a: gn.broadcast_to(a, (2,) + tuple(1 if x is None else x
                                                                           for x in a.shape)))
    b["broadcast_like"] = (2, lambda d, a, c: gn.broadcast_like(a, c))
    b["cast"] = (1, lambda d, a: gn.cast(gn.cast(a, "float32"), "float64"))
    b["zeros_like"] = (1, lambda d, a: gn.zeros_like(a) + a)
    b["stop_gradient"] = (1, lambda d, a: gn.stop_gradient(a) * a)
    b["batch_guard"] = (1, lambda d, a: api.apply("batch_guard", [a], axis=a.shape.index(None), size=B)
                        if None in a.shape else a)
    b["count"] = (1, lambda d, a: a / gn.count(a, axis=d.draw(st.sampled_from([None, 0]))))
    b["one_hot"] = (1, lambda d, a: gn.one_hot(a.graph.input("labels", (None,), dtype="int64"), 3) * 1.0)
    for red in ("sum", "mean", "max"):
        b[red] = (1, lambda d, a, red=red: getattr(a, red)(
            axis=d.draw(st.sampled_from([None, 0, -1, (0, 1)])), keepdims=d.draw(st.booleans())))
    b["softmax"] = (1, lambda d, a: gn.softmax(a, axis=d.draw(st.sampled_from([0, -1]))))
    b["log_softmax"] = (1, lambda d, a: gn.log_softmax(a, axis=d.draw(st.sampled_from([0, -1]))))
    b["concat"] = (2, lambda d, a, c: gn.concat([a, c], axis=d.draw(st.sampled_from([0, -1]))))
    b["index"] = (1, lambda d, a: a[d.draw(st.sampled_from(
        [0, -1, (slice(None), 0), (slice(None), slice(1, None)), (Ellipsis, slice(None, None, -1)),
         (None, Ellipsis), (slice(None), slice(0, 2), 0)]))])
    b["scatter"] = (2, lambda d, a, c: api.apply("scatter", [a, c], index=api._index_entries(c, (0,))))
    b["conv2d"] = (2, lambda d, a, c: gn.conv2d(a.reshape(1, 1, -1, 1) if None not in a.shape else a,
                                              c.reshape(1, 1, -1, 1) if None not in c.shape else c,
                                              padding=d.draw(st.sampled_from([0, 1]))))
    b["conv2d_grad_input"] = (1, lambda d, a: gn.grad(
        gn.conv2d(a.reshape(1, 1, 1, -1), a.graph.const(None, np.ones((1, 1, 1, 1))), stride=1)
        .sum() if None not in a.shape else a.sum(), [a])[0])
    b["conv2d_grad_weight"] = b["conv2d_grad_input"]
    b["pad"] = (1, lambda d, a: gn.pad(a, tuple(0 if x is None else 1 for x in a.shape) +
                                       tuple(0 if x is None else 2 for x in a.shape),
                                       value=d.draw(st.sampled_from([0.0, -1.5]))))

    def win(a):
        return api.apply("windows", [a], kernel=(2,), stride=(1,), dilation=(1,))
    b["windows"] = (1, lambda d, a: win(a))
    b["windows_adjoint"] = (1, lambda d, a: api.apply(
        "windows_adjoint", [gn.tanh(win(a)), a], kernel=(2,), stride=(1,), dilation=(1,)))

    def take(a):
        return api.apply("take", [a, a.graph.const(None, np.array([0, -1, 0]))], axis=-1)
    b["take"] = (1, lambda d, a: take(a))
    b["take_adjoint"] = (1, lambda d, a: api.apply(
        "take_adjoint", [take(a), a.graph.const(None, np.array([0, -1, 0])), a], axis=-1))
    return b


BUILDERS = _builders()


def test_random_graph_builders_cover_the_registry():
    base = {n for n, op in REGISTRY.items() if op.elementwise is None or op.elementwise.base is None}
    assert base <= set(BUILDERS), sorted(base - set(BUILDERS))


def _feed_value(rng, node):
    shape = tuple(B if d is None else d for d in node.shape)
    if node.dtype.kind in "iu":
        return rng.integers(0, 3, size=shape)
    return rng.normal(size=shape).astype(node.dtype)


def _interpret(outputs, feeds):
    """Node-by-node NumPy reference, independent of the printer and the passes."""
    g = outputs[0].graph
    vals = {}
    for n in g.ancestors(outputs):
        if n.op == "input":
            vals[id(n)] = np.asarray(feeds[n.name])
        elif n.op == "param":
            vals[id(n)] = g.values[n.name]
        elif n.op == "const":
            vals[id(n)] = n.value
        else:
            vals[id(n)] = evaluate(n, [vals[id(i)] for i in n.inputs])
    return [vals[id(o)] for o in outputs]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_graphs(data):
    g = gn.Graph(data.draw(HOSTILE, label="graph name"))
    nodes = []
    for k in range(data.draw(st.integers(1, 3), label="n inputs")):
        name = data.draw(HOSTILE, label="input name")
        shape = data.draw(st.sampled_from(SHAPES), label="shape")
        try:
            nodes.append(g.input(name, shape))
        except DECLARED:
            nodes.append(g.input(f"in{k}", shape))
    if data.draw(st.booleans(), label="with param"):
        shape = data.draw(st.sampled_from([(3,), (2, 3), (3, 3)]), label="param shape")
        pname = "p"
        while pname in g:
            pname += "_"
        nodes.append(g.param(pname, shape, seed=0))
    for _ in range(data.draw(st.integers(1, 7), label="n ops")):
        op = data.draw(st.sampled_from(sorted(BUILDERS)), label="op")
        arity, build = BUILDERS[op]
        args = [data.draw(st.sampled_from(nodes), label="arg") for _ in range(arity)]
        if arity == 2 and data.draw(st.booleans(), label="scalar operand") and op in BINARY:
            args[1] = data.draw(st.floats(-2, 2, allow_nan=False), label="scalar")
        try:
            out = build(data, *args)
            if data.draw(st.booleans(), label="rename"):
                out.named(data.draw(HOSTILE, label="node name"))
        except DECLARED:
            continue
        assert isinstance(out, gn.Node) and out.graph is g
        nodes.append(out)

    event(f"ops built: {sum(1 for n in g.nodes if not n.is_leaf)}")
    outputs = list(dict.fromkeys(nodes[-2:]))  # the last one or two nodes (deduplicated)
    str(g)  # the listing never fails, whatever the names
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    feeds = {n.name: _feed_value(rng, n) for n in g.inputs}
    want = _interpret(outputs, feeds)
    for optimize in (True, False):
        prog = gn.compile(outputs, optimize=optimize)
        got = prog(**feeds)
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-12, equal_nan=True)
            assert np.asarray(a).dtype == np.asarray(b).dtype

    # reverse vs forward gradients of a random scalar of the outputs
    floats = [o for o in outputs if o.dtype.kind == "f"]
    wrt = [n for n in g.inputs + g.params if n.size is not None and n.dtype.kind == "f"]
    if not floats or not wrt:
        return
    loss = None
    for o in floats:
        w = g.const(None, rng.normal(size=tuple(1 if d is None else d for d in o.shape)))
        term = api.sum(o * w)
        loss = term if loss is None else loss + term
    rev = gn.grad(loss, wrt)
    fwd = gn.grad(loss, wrt, mode="forward")
    vals = gn.compile(rev + fwd)(**feeds)
    # a float32 round trip (cast) rounds differently along the two paths
    rtol = 1e-5 if any(n.dtype == np.float32 for n in g.nodes) else 1e-8
    for r, f in zip(vals[:len(wrt)], vals[len(wrt):]):
        np.testing.assert_allclose(r, f, rtol=rtol, atol=rtol * 1e-2, equal_nan=True)
