"""Every declared error path: raised when the node is built, naming node, op and shapes."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import api


@pytest.fixture
def g():
    return gn.Graph("err")


def test_error_classes():
    assert issubclass(gn.ShapeError, gn.GraphnnError) and issubclass(gn.ShapeError, ValueError)
    assert issubclass(gn.GraphError, gn.GraphnnError)
    assert issubclass(gn.FormatError, gn.GraphnnError)


def test_matmul_inner_dimension_message_names_node_op_and_shapes(g):
    x = g.input("x", (None, 3))
    W1 = g.param("W1", (2, 4))
    n = len(g)
    with pytest.raises(gn.ShapeError) as info:
        gn.matmul(x, W1, name="h")
    assert str(info.value) == "matmul 'h' (x @ W1): (None, 3) @ (2, 4): inner dimensions 3 != 2"
    assert len(g) == n and "h" not in g  # nothing half-built
    with pytest.raises(gn.ShapeError, match=r"^matmul 'matmul_\d+' \(x @ W1\): \(None, 3\) @ \(2, 4\)"):
        x @ W1


@pytest.mark.parametrize("build,pattern", [
    (lambda g: g.input("a", (3,)) + g.input("b", (4,)),
     r"add '\w+' \(a \+ b\): cannot broadcast \(3,\) with \(4,\)"),
    (lambda g: g.input("a", (None, 3)) * g.input("b", (4, 3)),
     r"mul '\w+' \(a \* b\): cannot broadcast \(None, 3\) with \(4, 3\)"),
    (lambda g: gn.prelu(g.input("a", (2, 3)), g.input("alpha", (2,))),
     r"prelu '\w+' \(prelu\(a, alpha\)\): cannot broadcast \(2, 3\) with \(2,\)"),
    (lambda g: g.input("a", (2, 3)).reshape(4, 2), r"reshape.*\(2, 3\).*\(4, 2\)"),
    (lambda g: g.input("a", (2, 3)).transpose(0, 0), r"transpose '\w+'.*not a permutation.*\(2, 3\)"),
    (lambda g: g.input("a", (2, 3)).sum(axis=2), r"sum '\w+'.*axis 2 is out of range.*\(2, 3\)"),
    (lambda g: g.input("a", (2, 3)).max(axis=(0, 0)), r"max '\w+'.*repeated axis"),
    (lambda g: gn.softmax(g.input("a", (2, 3)), axis=3), r"softmax '\w+'.*axis 3 is out of range"),
    (lambda g: gn.concat([g.input("a", (2, 3)), g.input("b", (2, 4))], axis=0),
     r"concat '\w+'.*\(2, 3\), \(2, 4\) differ outside axis 0"),
    (lambda g: gn.concat([g.input("a", (None, 3)), g.input("b", (2, 3))], axis=0),
     r"concat '\w+'.*along the batch \(None\) axis 0"),
    (lambda g: g.input("a", (4, 3))[5], r"index '\w+'.*index 5 is out of bounds for axis 0 of size 4"),
    (lambda g: g.input("a", (4, 3))[1, 2, 0], r"index '\w+'.*too many indices for \(4, 3\)"),
    (lambda g: g.input("a", (None, 3))[1:3], r"index '\w+'.*batch \(None\) axis 0 of \(None, 3\)"),
    (lambda g: g.input("a", (3,))[np.array([0, 1])], r"only ints, slices"),
    (lambda g: gn.broadcast_to(g.input("a", (3,)), (None, 3)), r"broadcast_to '\w+'.*fixed shape"),
    (lambda g: gn.broadcast_to(g.input("a", (3,)), (2, 4)), r"broadcast_to '\w+'.*cannot broadcast \(3,\) with \(2, 4\)"),
    (lambda g: gn.conv2d(g.input("a", (1, 3, 5, 5)), g.input("w", (2, 2, 3, 3))),
     r"conv2d '\w+' \(conv2d\(a, w\)\): channels differ: x \(1, 3, 5, 5\) has 3, w \(2, 2, 3, 3\) expects 2"),
    (lambda g: gn.conv2d(g.input("a", (1, 1, 2, 2)), g.input("w", (1, 1, 3, 3))), r"kernel .* larger"),
    (lambda g: gn.conv2d(g.input("a", (1, 5, 5)), g.input("w", (1, 1, 3, 3))), r"conv2d wants x \(N, C, H, W\)"),
    (lambda g: gn.conv2d(g.input("a", (1, 1, 5, 5)), g.input("w", (1, 1, 3, 3)), stride=0),
     r"stride must be >= 1"),
    (lambda g: gn.conv1d(g.input("a", (1, 5)), g.input("w", (1, 1, 3))), r"conv1d: want x \(N, C, L\)"),
    (lambda g: g.input("a", (0,)) @ g.input("b", ()), r"matmul needs at least 1-d operands"),
    (lambda g: g.input("a", (2, 3, 4)) @ g.input("b", (3, 4, 5)), r"cannot broadcast \(2,\) with \(3,\)"),
    (lambda g: gn.glu(g.input("a", (2, 3))), r"glu 'a'.*even"),
    (lambda g: g.input("a", (2, None, None)), r"at most one None"),
    (lambda g: g.input("a", (2, -1)), r"bad dimension -1"),
    (lambda g: g.input("a", (2, True)), r"bad dimension True"),
    (lambda g: g.input("a", "2x3"), r"bad dimension"),
    (lambda g: g.param("a", (2, None)), r"may not contain None"),
    (lambda g: g.param("a", (2, 3), value=np.zeros((3, 2))), r"param 'a': value has shape \(3, 2\), declared shape \(2, 3\)"),
    (lambda g: g.param("a"), r"give a shape or a value"),
    (lambda g: gn.mse(g.input("p", (3, 2)), g.input("t", (3, 4))), r"mse: prediction 'p' \(3, 2\) and target 't' \(3, 4\)"),
    (lambda g: gn.bce_with_logits(g.input("z", (3,)), g.input("y", (3, 1))), r"bce_with_logits: logits 'z' \(3,\)"),
    (lambda g: gn.softmax_cross_entropy(g.input("z", (3, 4)), g.input("y", (3, 3))),
     r"softmax_cross_entropy: target 'y' \(3, 3\) is neither"),
    (lambda g: gn.grad(g.input("a", (3,)) * 2.0, [g["a"]]), r"grad: .* has shape \(3,\); grad needs a scalar"),
    (lambda g: gn.grad((g.input("a", (3,)) * 2.0).sum(), [g["a"]], mode="forward") and
     gn.grad(g.input("b", (None,)).sum(), [g["b"]], mode="forward"), r"needs a fixed shape"),
    (lambda g: gn.vjp(g.input("a", (3,)) * 2.0, [g["a"]], g.input("c", (2,))), r"cotangent shape \(2,\) != output shape \(3,\)"),
    (lambda g: gn.jvp(g.input("a", (3,)) * 2.0, {g["a"]: np.ones(2)}), r"direction for 'a' has shape \(2,\)"),
    # a batched output against a fixed-shape input has no fixed-size Jacobian
    (lambda g: gn.jacobian(g.input("a", (None, 2)) * g.param("w", (2,)), g["w"]),
     r"jacobian: 'mul_1' \(None, 2\) and 'w' \(2,\) need fixed shapes, or both the batch"),
    (lambda g: gn.hessian(g.input("a", (2,)) * 1.0, g["a"]), r"hessian: .* must be a scalar"),
])
def test_shape_errors_at_build_time(g, build, pattern):
    with pytest.raises(gn.ShapeError, match=pattern):
        build(g)


def test_graph_errors_nodes_from_two_graphs():
    g1, g2 = gn.Graph("one"), gn.Graph("two")
    a, b = g1.input("a", (2,)), g2.input("b", (2,))
    with pytest.raises(gn.GraphError, match=r"two graphs"):
        a + b
    with pytest.raises(gn.GraphError, match=r"'b' belongs to graph 'two', not 'one'"):
        g1.apply("add", [a, b])
    with pytest.raises(gn.GraphError, match="two graphs"):
        gn.grad(a.sum(), [b])
    with pytest.raises(gn.GraphError, match="two graphs"):
        gn.compile([a * 2.0, b * 2.0])
    with pytest.raises(gn.GraphError):
        gn.jvp(a * 2.0, {b: np.ones(2)})


def test_graph_errors_duplicate_name_and_bad_names():
    g = gn.Graph("dup")
    x = g.input("x", (2,))
    with pytest.raises(gn.GraphError, match=r"duplicate name 'x' in graph 'dup'"):
        g.input("x", (3,))
    with pytest.raises(gn.GraphError, match="duplicate name 'x'"):
        g.param("x", (2,))
    y = gn.exp(x)
    with pytest.raises(gn.GraphError, match="duplicate name 'x'"):
        y.named("x")
    with pytest.raises(gn.GraphError, match="duplicate name 'x'"):
        gn.tanh(x, name="x")
    for bad in ("", None, 3):
        with pytest.raises(gn.GraphError, match="non-empty strings"):
            g.input(bad, (2,))


def test_graph_errors_unknown_op_non_node_inputs_and_cycles_cannot_be_built():
    g = gn.Graph("ops")
    x = g.input("x", (2,))
    with pytest.raises(gn.GraphError, match=r"unknown op 'nope'"):
        g.apply("nope", [x])
    with pytest.raises(gn.GraphError, match="unknown op"):
        g.apply("sigmoid_dq", [x])  # not a derivative of any argument
    with pytest.raises(gn.GraphError, match=r"is not a Node"):
        g.apply("exp", [np.ones(2)])
    with pytest.raises(gn.GraphError, match="is not a Node"):
        g.apply("add", [x, "x"])
    with pytest.raises(gn.GraphError, match="at least one argument must be a Node"):
        api.apply("add", [1.0, 2.0])
    with pytest.raises(gn.GraphError, match="cannot use"):
        x + "a"
    with pytest.raises(gn.ShapeError, match="takes 2 input"):
        g.apply("add", [x])
    # the only way to name an input is to have built it first: nodes are immutable and
    # created in dependency order, so the networkx view is always acyclic
    import networkx as nx
    y = gn.exp(x) * x
    assert nx.is_directed_acyclic_graph(g.nx)
    assert all(i.index < y.index for i in y.inputs)


def test_disconnected_gradient_raises_on_request():
    g = gn.Graph("dc")
    x, w = g.input("x", (2,)), g.input("w", (2,))
    with pytest.raises(gn.GraphError, match=r"'\w+' does not depend on 'w' \(disconnected\)"):
        gn.grad((x * x).sum(), [x, w], disconnected="raise")
    with pytest.raises(gn.GraphError, match="disconnected must be"):
        gn.grad((x * x).sum(), [x], disconnected="ignore")
    with pytest.raises(gn.GraphError, match="unknown mode"):
        gn.grad((x * x).sum(), [x], mode="sideways")
    with pytest.raises(gn.GraphError, match="unknown mode"):
        gn.jacobian(x * 2.0, x, mode="sideways")
    with pytest.raises(gn.GraphError, match="only differentiate with respect to Nodes|Nodes"):
        gn.grad((x * x).sum(), [np.ones(2)])


@pytest.mark.parametrize("build,pattern", [
    (lambda x: gn.leaky_relu(x, beta=0.1), r"op 'leaky_relu' has no attribute\(s\) \['beta'\]"),
    (lambda x: gn.leaky_relu(x, alpha="big"), r"op 'leaky_relu': attribute alpha='big': expected a finite number"),
    (lambda x: gn.elu(x, alpha=float("nan")), r"expected a finite number"),
    (lambda x: gn.leaky_relu(x, alpha=True), r"expected a finite number"),
    (lambda x: x.sum(axis=1.5), r"op 'sum': attribute axis=1.5"),
    (lambda x: x.sum(keepdims="yes"), r"attribute keepdims='yes': expected a bool"),
    (lambda x: gn.softmax(x, axis="last"), r"attribute axis='last'"),
    (lambda x: gn.one_hot(x, 2.5), r"attribute depth=2.5"),
    (lambda x: gn.cast(x, "complex128"), r"unsupported dtype 'complex128'"),
    (lambda x: x.graph.apply("reshape", [x], {}), r"op 'reshape': missing attribute 'shape'"),
    (lambda x: x.graph.apply("reshape", [x], {"shape": (2, -3)}), r"negative dimension"),
    (lambda x: x.graph.apply("index", [x], {"index": [("s", 0, 2, 0), ("s", None, None, None)]}),
     r"slice step cannot be zero"),
    (lambda x: x.graph.apply("index", [x], {"index": [("q", 1)]}), r"bad index entry"),
    (lambda x: gn.conv2d(x.reshape(1, 1, 2, 3), x.graph.const("w", np.ones((1, 1, 1, 1))), stride=(1, 2, 3)),
     r"expected an int or a pair"),
    (lambda x: x.graph.apply("transpose", [x], {"axes": "ab"}), r"attribute axes='ab'"),
])
def test_bad_attributes_are_graph_errors(build, pattern):
    g = gn.Graph("attrs")
    x = g.input("x", (2, 3))
    with pytest.raises(gn.GraphError, match=pattern):
        build(x)


def test_bad_role_and_compile_arguments():
    g = gn.Graph("misc")
    x = g.input("x", (2,))
    with pytest.raises(gn.GraphError, match="unknown role 'sideways'"):
        with g.provenance(role="sideways"):
            pass
    with pytest.raises(gn.GraphError, match="unknown backend 'fortran'"):
        gn.compile(x * 2.0, backend="fortran")
    with pytest.raises(gn.GraphError, match="is not a Node"):
        gn.compile([x * 2.0, 3.0])
    with pytest.raises(gn.GraphError, match="at least one output"):
        gn.compile([])
    with pytest.raises(gn.GraphError, match="updates must target params"):
        gn.compile(x * 2.0, updates={x: x * 3.0})
    w = g.param("w", (2,))
    with pytest.raises(gn.ShapeError, match=r"update of 'w': new value shape \(\) != \(2,\)"):
        gn.compile(x * 2.0, updates={w: w.sum()})


def test_bad_feeds_at_call_time():
    g = gn.Graph("feeds")
    x = g.input("x", (None, 3))
    y = g.input("y", (None, 1))
    W = g.param("W", (3, 1), seed=0)
    loss = gn.mse(x @ W, y)
    prog = gn.compile(loss)
    X, Y = np.ones((4, 3)), np.ones((4, 1))
    assert np.isfinite(prog(x=X, y=Y))
    with pytest.raises(gn.GraphError, match=r"missing feed 'y' \(input, shape \(None, 1\)\)"):
        prog(x=X)
    with pytest.raises(gn.ShapeError, match=r"feed 'x': expected shape \(None, 3\), got \(4, 2\)"):
        prog(x=np.ones((4, 2)), y=Y)
    with pytest.raises(gn.ShapeError, match=r"feed 'x': expected shape \(None, 3\), got \(3,\)"):
        prog(x=np.ones(3), y=Y)
    with pytest.raises(gn.ShapeError, match=r"feed 'y': batch size 5 differs from 4 of feed 'x'"):
        prog(x=X, y=np.ones((5, 1)))
    with pytest.raises(gn.ShapeError, match=r"feed 'W': expected shape \(3, 1\), got \(1, 3\)"):
        prog(x=X, y=Y, W=np.ones((1, 3)))
    with pytest.raises(gn.GraphError, match=r"unknown feed\(s\) \['z'\]"):
        prog(x=X, y=Y, z=1.0)
    # a feed for a graph input the program does not use is ignored, not an error
    other = g.input("other", (2,))
    assert np.isfinite(prog(x=X, y=Y, other=np.ones(2)))
    assert other.name not in prog.arg_names


def test_graph_getitem_unknown_name():
    g = gn.Graph("names")
    with pytest.raises(KeyError, match="has no node named 'nope'"):
        g["nope"]
    assert re.match(r"<graphnn.Graph 'names': 0 nodes>", repr(g))
