"""Issue 14 (D11-D14): building graphs from bad values gives graphnn's documented errors,
shape arithmetic cannot overflow, and the declared dtype is the dtype that runs."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import graphnn as gn
from graphnn.errors import DtypeError, GraphnnError


# -- D13: only documented error types while building ------------------------------------------

@pytest.mark.parametrize("build, err, match", [
    (lambda g: g.input("a", (2,), dtype="complex64"), DtypeError, "complex64"),
    (lambda g: g.input("a", (2,), dtype="U3"), DtypeError, "unsupported dtype"),
    (lambda g: g.input("a", (2,), dtype="not a dtype"), DtypeError, "unsupported dtype"),
    (lambda g: g.param("b", (2,), init="nope"), gn.GraphError, "unknown initializer 'nope'"),
    (lambda g: g.param("c", value=[[1, 2], [3]]), gn.ShapeError, "param 'c'.*rectangular"),
    (lambda g: g.param("d", value=[1 + 2j]), DtypeError, "param 'd'.*complex"),
    (lambda g: g.param("e", value=np.array([1 + 2j]), dtype="float64"), DtypeError, "complex"),
    (lambda g: g.param("f", value=["1.5"]), DtypeError, "strings"),
    (lambda g: g.const("k", [1j]), DtypeError, "const 'k'.*complex"),
    (lambda g: g.const("k", np.array(["2020-01-01"], dtype="datetime64[D]")), DtypeError, "dates"),
    (lambda g: g.const("k", [[1.0], [2.0, 3.0]]), gn.ShapeError, "rectangular"),
    (lambda g: gn.grad(3.0, [g.param("W", (2,))]), gn.GraphError, "y must be a Node"),
    (lambda g: gn.grad(g.param("W", (2,)).sum(), ["W"]), gn.GraphError, "respect to Nodes"),
    (lambda g: gn.compile(["loss"]), gn.GraphError, "not a Node"),
    (lambda g: gn.compile([g.param("W", (2,))], updates=[1]), gn.GraphError, "dict"),
])
def test_graph_building_errors_are_documented_types(build, err, match):
    g = gn.Graph("g")
    with pytest.raises(err, match=match):
        build(g)
    assert issubclass(err, GraphnnError)


def test_dtype_error_is_still_a_type_error():
    # code that caught the old TypeError keeps working
    with pytest.raises(TypeError):
        gn.Graph("g").input("a", (2,), dtype="complex128")


def test_complex_param_value_is_not_silently_truncated():
    g = gn.Graph("g")
    with pytest.raises(DtypeError):
        g.param("d", value=[1 + 2j])
    assert "d" not in g and "d" not in g.values


# -- D12: shape arithmetic in Python ints, bounded ---------------------------------------------

def test_reshape_element_count_does_not_wrap():
    g = gn.Graph("g")
    x = g.input("x", (4,))
    with pytest.raises(GraphnnError):
        x.reshape(4, 2 ** 62 + 1)  # 4 * (2**62 + 1) is 4 in int64
    with pytest.raises(GraphnnError):
        x.reshape(2 ** 32, 2 ** 32 + 1)


def test_huge_dimensions_and_one_hot_depth_are_refused():
    g = gn.Graph("g")
    with pytest.raises(gn.ShapeError, match="2\\*\\*48"):
        g.input("h", (2 ** 63,))
    with pytest.raises(gn.ShapeError, match="2\\*\\*48"):
        g.input("h2", (None, 2 ** 30, 2 ** 30))
    with pytest.raises(gn.ShapeError):
        g.param("p", (2 ** 63,))
    labels = g.input("l", (3,), dtype="int64")
    with pytest.raises(gn.ShapeError, match="one_hot"):
        gn.one_hot(labels, 2 ** 70)
    # the limit is far from anything real: a large but sane shape still builds
    assert g.input("ok", (None, 2 ** 20, 2 ** 10)).shape == (None, 2 ** 20, 2 ** 10)
    assert gn.one_hot(labels, 1000).shape == (3, 1000)


def test_node_size_is_a_python_int():
    g = gn.Graph("g")
    x = g.input("x", (2 ** 20, 2 ** 20))
    assert x.size == 2 ** 40 and isinstance(x.size, int)


# -- D14: the declared dtype is what runs ------------------------------------------------------

KINDS = ["int64", "int32", "float32", "float64", "bool"]


@pytest.mark.parametrize("ta, tb", list(itertools.product(KINDS, repeat=2)))
def test_declared_dtype_is_the_computed_dtype(ta, tb):
    g = gn.Graph("g")
    a = g.input("a", (3,), dtype=ta)
    b = g.input("b", (3,), dtype=tb)
    va = np.array([1, 2, 3]).astype(ta)
    vb = np.array([1, 2, 3]).astype(tb)
    for node in (a + b, a * b, a - b, a / b, gn.sigmoid(a), a ** 2, gn.relu(b)):
        out = gn.compile(node)(a=va, b=vb)
        assert out.dtype == node.dtype, (ta, tb, node.op, node.dtype, out.dtype)


def test_mixed_int_float32_stays_float32():
    g = gn.Graph("g")
    i = g.input("i", (2,), dtype="int64")
    f = g.input("f", (2,), dtype="float32")
    s = i + f
    assert s.dtype == np.float32
    out = gn.compile(s)(i=np.array([1, 2]), f=np.array([0.5, 0.25], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([1.5, 2.25], np.float32))
    j = g.input("j", (2,), dtype="int32")
    assert gn.compile(j + i)(i=np.array([1, 2]), j=np.array([3, 4], np.int32)).dtype == (j + i).dtype


# -- D11: any valid string may name a graph ----------------------------------------------------

def test_lone_surrogate_graph_and_node_names_compile():
    s = "\ud800"
    g = gn.Graph(s)
    x = g.input("x" + s, (None, 2))
    W = g.param("W" + s, (2, 1), value=np.ones((2, 1)))
    with g.scope("scope" + s):
        loss = ((x @ W) ** 2).mean().named("loss" + s)
    feeds = {x.name: np.ones((3, 2))}
    assert gn.compile(loss)(**feeds) == pytest.approx(4.0)
    (gW,) = gn.grad(loss, [W])
    prog = gn.compile([loss], updates={W: W - 0.1 * gW})
    assert prog(**feeds)[0] == pytest.approx(4.0)


# -- D8: class labels are checked where they enter -----------------------------------------------

def classifier(label_dtype="int64"):
    g = gn.Graph("cls")
    x = g.input("x", (None, 2))
    labels = g.input("labels", (None,), dtype=label_dtype)
    W = g.param("W", (2, 3), value=np.arange(6.0).reshape(2, 3) / 10)
    logits = x @ W
    return g, x, labels, W, logits, gn.softmax_cross_entropy(logits, labels)


@pytest.mark.parametrize("bad, match", [
    ([0, 7], "class label 7 \\(sample 1\\) is outside \\[0, 3\\)"),
    ([-1, 2], "class label -1 \\(sample 0\\)"),
    ([1.7, 1.0], "takes int64 values, got float64; cast it explicitly"),
    ([np.nan, 1.0], "got float64"),
])
def test_out_of_range_or_fractional_labels_are_refused_by_programs(bad, match):
    g, x, labels, W, logits, loss = classifier()
    prog = gn.compile(loss)
    X = np.ones((2, 2))
    with pytest.raises(gn.DataError, match="feed 'labels': .*" + match):
        prog(x=X, labels=np.array(bad))
    assert np.isfinite(prog(x=X, labels=np.array([0, 2])))
    assert np.isfinite(prog(x=X, labels=np.array([0, 2], dtype=np.int32)))


def test_out_of_range_labels_are_refused_by_the_trainer():
    g, x, labels, W, logits, loss = classifier()
    tr = gn.Trainer(loss, optimizer=gn.optim.SGD(lr=0.1))
    before = g.values["W"].copy()
    with pytest.raises(gn.DataError, match="training data: input 'labels': class label 9"):
        tr.fit({"x": np.ones((4, 2)), "labels": np.array([0, 1, 9, 2])}, epochs=1,
               verbose=False)
    with pytest.raises(gn.DataError, match="got float64"):
        tr.fit({"x": np.ones((4, 2)), "labels": np.array([0, 1, 1.5, 2])}, epochs=1,
               verbose=False)
    np.testing.assert_array_equal(g.values["W"], before)
    hist = tr.fit({"x": np.ones((4, 2)), "labels": np.array([0, 1, 2, 2])}, epochs=1,
                  verbose=False)
    assert hist.loss[0] > 0.5


def test_int32_labels_fed_int64_run_as_int32_and_are_checked():
    g, x, labels, W, logits, loss = classifier("int32")
    prog = gn.compile(loss)
    assert np.isfinite(prog(x=np.ones((2, 2)), labels=np.array([0, 2])))
    with pytest.raises(gn.DataError, match="class label 3"):
        prog(x=np.ones((2, 2)), labels=np.array([0, 3]))
    with pytest.raises(gn.DataError, match="range"):
        prog(x=np.ones((2, 2)), labels=np.array([0, 2 ** 40]))


def test_constant_labels_out_of_range_are_refused_when_built():
    g = gn.Graph("c")
    logits = g.input("z", (2, 3))
    with pytest.raises(gn.ShapeError, match="outside the classes \\[0, 3\\)"):
        gn.softmax_cross_entropy(logits, g.const("lab", np.array([0, 5])))


# -- D9: one feed check for programs and Trainer -----------------------------------------------

BAD_FEEDS = {
    "complex": (np.array([[1 + 2j, 2]]), "complex numbers"),
    "numeric strings": (np.array([["1", "2"]]), "strings"),
    "bytes": (np.array([[b"1", b"2"]]), "bytes"),
    "datetime": (np.array([["2020-01-01", "2020-01-02"]], dtype="datetime64[D]"), "dates"),
    "object with None": (np.array([[None, 1.0]], dtype=object), "Python objects"),
    "ragged": ([[1.0, 2.0], [3.0]], "not an array of numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
@pytest.mark.parametrize("fast", [False, True])
def test_bad_feed_values_are_data_errors_naming_the_input(case, fast):
    value, match = BAD_FEEDS[case]
    g = gn.Graph("f")
    x = g.input("x", (None, 2))
    W = g.param("W", (2, 1), value=np.ones((2, 1)))
    loss = (x @ W).mean()
    (gW,) = gn.grad(loss, [W])
    prog = gn.compile([loss], updates={W: W - 0.1 * gW}, fast=fast) if fast else gn.compile(loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: refused, not truncated
        with pytest.raises(gn.DataError, match=f"feed 'x'.*{match}"):
            prog(x=value)
    tr = gn.Trainer(loss, optimizer=gn.optim.SGD(lr=0.1))
    with pytest.raises(gn.DataError, match="'x'"):
        tr.fit({"x": value}, epochs=1, verbose=False)


def test_good_feeds_are_converted_once_and_exact_dtypes_pass_through():
    g = gn.Graph("f")
    x = g.input("x", (None, 2), dtype="float32")
    prog = gn.compile(x * 2.0)
    a = np.ones((3, 2), np.float32)
    assert prog.args_for({"x": a})[0] is a  # no copy on the benchmarked path
    out = prog(x=[[1, 2]])  # lists and ints are numbers: converted
    assert out.dtype == np.float32 and out.tolist() == [[2.0, 4.0]]


# -- D13: misuse of the API is a graphnn error, not an AttributeError or a NumPy ValueError -----

def test_api_misuse_gives_graphnn_errors():
    g = gn.Graph("api")
    x = g.input("x", (None, 3))
    W = g.param("W", (3, 2))
    labels = g.input("l", (None,), dtype="int64")
    other = gn.Graph("o").input("z", (2,))
    values = [x, W, labels, other, 3.0, "x", None, [1, 2], np.ones(3), np.ones((2, 2, 2)), 1j,
              (1, "a"), -1, 2 ** 70, float("nan"), True, {}, object()]
    fns = [gn.reshape, gn.broadcast_to, gn.cast, gn.concat, gn.stack, gn.expand_dims,
           gn.squeeze, gn.index, gn.one_hot, gn.transpose, gn.matmul, gn.add, gn.sum,
           gn.mse, gn.softmax_cross_entropy, gn.bce_with_logits, gn.grad, gn.jvp,
           gn.jacobian, gn.hessian, gn.compile, gn.relu]
    leaks = set()
    for fn in fns:
        for a, b in itertools.product(values, repeat=2):
            try:
                fn(a, b)
            except GraphnnError:
                pass
            except Exception as e:  # noqa: BLE001 -- what the test looks for
                leaks.add((fn.__name__, type(e).__name__, repr(a)[:20], repr(b)[:20]))
    assert not leaks, sorted(leaks)[:10]
