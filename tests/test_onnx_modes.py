"""Imported nodes are ordinary nodes: reverse, forward and symbolic derivatives agree
with finite differences; and the building blocks of the classic image CNNs (AlexNet's
LRN and ceil-mode pooling, ResNet's residual batch-norm block, SqueezeNet's fire module,
DenseNet's concatenation, ShuffleNet's channel shuffle and depthwise convolution,
GoogLeNet's parallel branches) import from torch.onnx.export and equal torch."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import api

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def test_imported_nodes_differentiate_in_all_three_modes():
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(size=s), n) for n, s in
            [("w", (2, 1, 2, 2)), ("b", (2,)), ("scale", (2,)), ("bias", (2,)), ("mean", (2,)),
             ("var", (2,))]]
    init[-1] = numpy_helper.from_array(np.array([0.5, 2.0]), "var")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="/conv/Conv", pads=[1, 0, 0, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"],
                              name="/bn/BatchNormalization"),
             helper.make_node("Tanh", ["n"], ["t"]),
             helper.make_node("AveragePool", ["t"], ["p"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("Softmax", ["p"], ["y"], axis=1)]
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 1, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], init)
    m = gn.from_onnx(helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 17)]))
    loss = api.sum(m.outputs[0] * m.const(None, rng.normal(size=m.outputs[0].shape)))
    rep = gn.check_gradients(loss, {"x": rng.normal(size=(1, 1, 2, 2))}, wrt=m.params + m.inputs,
                             rtol=1e-5, atol=1e-7, symbolic_max_size=5000)
    assert rep.ok, str(rep)
    assert all(r.mode_passed.get("symbolic") for r in rep.rows), str(rep)


torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
nn = torch.nn


class ClassicBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.LocalResponseNorm(3), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.res = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.squeeze, self.e1, self.e3 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.branch = nn.Sequential(nn.AvgPool2d(3, 1, padding=1), nn.Conv2d(8, 4, 1))
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))                                   # ResNet
        s = torch.relu(self.squeeze(x))
        x = torch.cat([torch.relu(self.e1(s)), torch.relu(self.e3(s))], 1)  # SqueezeNet fire
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # ShuffleNet
        x = self.dw(x)
        x = torch.cat([x, self.branch(x)], 1)                              # GoogLeNet / DenseNet
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.softmax(self.head(nn.functional.dropout(x, 0.5, self.training)), -1)


def test_classic_cnn_blocks_from_torch(tmp_path):
    import warnings
    torch.manual_seed(0)
    model = ClassicBlocks().to(torch.float32).eval()
    with torch.no_grad():
        model.res[1].running_mean.uniform_(-0.2, 0.2)
        model.res[1].running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 15, 15, dtype=torch.float32)
    path = tmp_path / "classic.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}},
                          external_data=False, optimize=False, verbose=False)
    g = gn.from_onnx(path)
    assert g.inputs[0].shape[0] is None
    X = torch.randn(3, 3, 15, 15, dtype=torch.float32)
    got, = gn.compile(g.outputs)(x=X.numpy())
    np.testing.assert_allclose(got, model(X).detach().numpy(), rtol=1e-5, atol=1e-6)
    scopes = {n.scope for n in g.nodes}
    assert {"stem/stem.0", "res/res.1", "dw", "head", "branch/branch.1"} <= scopes, scopes
