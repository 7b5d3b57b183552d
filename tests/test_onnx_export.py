"""gn.to_onnx: models pass onnx.checker's full check and onnxruntime computes what
graphnn's own program computes (forward and gradient graphs); round trips
ONNX -> graphnn -> ONNX run the same as the original in onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import api

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds), [o.name for o in sess.get_outputs()]


def _mlp():
    g = gn.Graph("mlp", dtype="float32")
    x = g.input("x", (None, 4))
    y = g.input("y", (None, 3))
    W1 = g.param("W1", (4, 8), seed=0)
    b1 = g.param("b1", value=np.linspace(-1, 1, 8).astype(np.float32))
    h = gn.gelu(x @ W1 + b1)
    h2 = gn.sigmoid(h) * gn.elu(h) + gn.softplus(h) - gn.tanh(h) ** 2 + gn.leaky_relu(h) / 3
    W2 = g.param("W2", (8, 3), seed=1)
    out = gn.log_softmax(h2 @ W2 + gn.maximum(h2[:, :3], 0.5) * 0.1)
    return g, gn.mse(out, y), out


def _cnn():
    g = gn.Graph("cnn", dtype="float32")
    x = g.input("x", (None, 2, 8, 8))
    k1 = g.param("k1", (4, 2, 3, 3), seed=0)
    k2 = g.param("k2", (6, 2, 3, 3), seed=1)
    h = gn.relu(gn.conv2d(x, k1, padding=1))
    h = gn.max_pool(h, (2, 2))                                        # (B, 4, 4, 4)
    h = gn.conv(h, k2, dilation=1, pads=(1, 1, 0, 0), groups=2)      # windows path
    h = gn.avg_pool(gn.tanh(h), (2, 2), 1, pads=(1, 1, 1, 1))
    W = g.param("W", (h.shape[1] * h.shape[2] * h.shape[3], 3), seed=2)
    out = h.reshape(-1, W.shape[0]) @ W
    return g, api.sum(out * out) / 10.0, out


@pytest.mark.parametrize("build", [_mlp, _cnn])
def test_graphnn_to_onnx_matches_the_program(build, tmp_path):
    g, loss, out = build()
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.normal(size=(5,) + i.shape[1:]).astype(np.float32) for i in g.inputs
             if i in g.ancestors([loss])}
    path = tmp_path / "m.onnx"
    model = gn.to_onnx([loss, out], path, gradients=True)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    got, names = _run(model, feeds)
    params = [p for p in g.params]
    assert names == [loss.name, out.name] + [f"grad/{p.name}" for p in params]
    want = gn.compile([loss, out] + gn.grad(loss, params))(**feeds)
    for n, a, b in zip(names, got, want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=n)


@pytest.mark.parametrize("build", [_mlp, _cnn])
def test_gradient_graph_survives_graphnn_onnx_graphnn(build, tmp_path):
    """The exported gradient graph (batch counts, broadcasts to the batch, adjoints)
    imports back and computes the same values."""
    g, loss, out = build()
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.normal(size=(3,) + i.shape[1:]).astype(np.float32) for i in g.inputs
             if i in g.ancestors([loss])}
    gn.to_onnx([loss, out], tmp_path / "m.onnx", gradients=True)
    back = gn.from_onnx(tmp_path / "m.onnx")
    got = gn.compile(back.outputs)(**feeds)
    want = gn.compile([loss, out] + gn.grad(loss, g.params))(**feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_pooling_exports_as_onnx_pooling_ops():
    g = gn.Graph("p", dtype="float32")
    x = g.input("x", (None, 2, 7, 6))
    ys = [gn.max_pool(x, (2, 2)), gn.max_pool(x, (3, 2), (2, 1), pads=(1, 1, 1, 1), dilation=(1, 2)),
          gn.avg_pool(x, (3, 3), 1, pads=(1, 1, 1, 1), count_include_pad=True), gn.avg_pool(x, (2, 2)),
          gn.avg_pool(x, (3, 3), 2, pads=(1, 1, 1, 1))]  # the last: padding not counted
    m = gn.to_onnx(ys)
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("MaxPool") == 2 and ops.count("AveragePool") == 2
    X = np.random.default_rng(2).random((3, 2, 7, 6)).astype(np.float32)
    got, _ = _run(m, {"x": X})
    for a, b in zip(got, gn.compile(ys)(x=X)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_export_of_a_graph_uses_its_outputs_and_scopes():
    g = gn.Graph("scoped", dtype="float32")
    x = g.input("x", (None, 3))
    with g.scope("enc"):
        with g.scope("fc"):
            h = gn.relu(x @ g.param("W", (3, 2), seed=0))
    g.outputs = [h]
    m = gn.to_onnx(g)
    assert [o.name for o in m.graph.output] == [h.name]
    assert any(n.name.startswith("/enc/fc/") for n in m.graph.node)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # and back: the scope survives the round trip
    g2 = gn.from_onnx(m)
    assert any(n.scope == "enc/fc" for n in g2.nodes)


def test_unknown_ops_are_refused_clearly():
    g = gn.Graph("bad")
    x = g.input("x", (1, 1, 3))
    y = api.apply("take_adjoint", [x, g.const(None, np.array([[0]])), g.input("l", (2, 3))], axis=0)
    with pytest.raises(gn.GraphError, match="take_adjoint"):
        gn.to_onnx(y)
    with pytest.raises(gn.GraphError, match="scalar"):
        gn.to_onnx(x * 2, gradients=True)


torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    import onnx_models
    return {name: (x.numpy(), path) for name, (_, x, path) in
            onnx_models.exported(tmp_path_factory).items()}


@pytest.mark.parametrize("name", ["mlp", "lenet", "encoder"])
def test_onnx_graphnn_onnx_round_trip(torch_models, name):
    X, path = torch_models[name]
    original = onnx.load(path)
    want, _ = _run(original, {"x": X})
    g = gn.from_onnx(path)
    again = gn.to_onnx(g)
    got, _ = _run(again, {"x": X})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    # with the gradient graph of a scalar of the output too
    loss = api.sum(g.outputs[0] * g.outputs[0])
    m = gn.to_onnx([loss], gradients=True)
    vals, names = _run(m, {"x": X})
    ref = gn.compile([loss] + gn.grad(loss, g.params))(x=X)
    for n, a, b in zip(names, vals, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=n)
