"""Models exported by torch.onnx.export, imported with gn.from_onnx: outputs equal
torch's and onnxruntime's (float32, 1e-5) and reverse-mode gradients w.r.t. the
imported params equal torch autograd's."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import api

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx_models  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return onnx_models.exported(tmp_path_factory)


@pytest.mark.parametrize("name", ["mlp", "lenet", "encoder"])
def test_imported_model_matches_torch_and_onnxruntime(exported, name):
    module, x, path = exported[name]
    g = gn.from_onnx(path)
    assert [i.name for i in g.inputs] == ["x"]
    assert len(g.outputs) == 1
    X = x.numpy()
    if g.inputs[0].shape[0] is None:  # dynamic batch: run another batch size too
        X = np.concatenate([X, X[:1] * 0.5])
    want = module(torch.tensor(X)).detach().numpy()
    rt = ort.InferenceSession(str(path)).run(None, {"x": X})[0]
    got, = gn.compile(g.outputs, fast=False)(x=X)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, rt, rtol=1e-5, atol=1e-5)
    fast, = gn.compile(g.outputs, fast=True)(x=X)
    np.testing.assert_allclose(fast, got, rtol=1e-5, atol=1e-6)

    # reverse-mode gradients of a weighted sum of the output, against torch autograd
    C = np.random.default_rng(0).normal(size=got.shape).astype(np.float32)
    named = dict(module.named_parameters())
    params = [p for p in g.params if p.name in named]
    assert len(params) >= 4, [p.name for p in g.params]
    loss = api.sum(g.outputs[0] * g.input("c", g.outputs[0].shape))
    grads = gn.compile(gn.grad(loss, params))(x=X, c=C)
    module.zero_grad()
    (module(torch.tensor(X)) * torch.tensor(C)).sum().backward()
    for p, gv in zip(params, grads):
        np.testing.assert_allclose(gv, named[p.name].grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=p.name)


def test_scopes_follow_modules(exported):
    g = gn.from_onnx(exported["lenet"][2])
    scopes = {n.scope for n in g.nodes if not n.is_leaf}
    assert {"conv1", "bn1", "pool", "conv2", "fc"} <= scopes, scopes
    g = gn.from_onnx(exported["encoder"][2])
    scopes = {n.scope for n in g.nodes if not n.is_leaf}
    assert {"self_attn", "norm1", "linear1"} <= scopes, scopes


def test_imported_model_saves_and_loads(exported, tmp_path):
    g = gn.from_onnx(exported["lenet"][2])
    g.save(tmp_path / "lenet.json")
    g2 = gn.load(tmp_path / "lenet.json")
    X = np.random.default_rng(3).normal(size=(2, 1, 12, 12)).astype(np.float32)
    want, = gn.compile(g.outputs)(x=X)
    got, = gn.compile([g2[g.outputs[0].name]])(x=X)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_imported_model_runs_in_the_cuda_targets_cpu_build(exported, model):
    """The CUDA target (its -DGN_CPU build, no GPU needed) runs an imported model and its
    gradients: an MLP, and a CNN with convolution, pooling and batch norm."""
    from graphnn.compile import cuda_build
    if cuda_build.cxx() is None:
        pytest.skip("no C++ compiler for the CUDA target's CPU build")
    g = gn.from_onnx(exported[model][2])
    loss = api.sum(g.outputs[0] * g.outputs[0])
    outs = [loss] + gn.grad(loss, g.params)
    shape = (3, 4) if model == "mlp" else (2, 1, 12, 12)
    X = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    got = gn.compile(outs, backend="cuda")(device="cpu", x=X)
    for a, b in zip(got, gn.compile(outs)(x=X)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-5)


def test_embedding_lookup_imports_with_gradients(tmp_path):
    """Gather with indices fed at run time (an nn.Embedding) is the take op: values and
    the embedding table's gradient (take_adjoint) equal torch's."""
    import warnings

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, t):
            return self.fc(self.emb(t)).mean(1)

    torch.manual_seed(0)
    m = Bag().to(torch.float32).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.tensor([[1, 2, 9], [0, 0, 3]]),), str(tmp_path / "bag.onnx"),
                          input_names=["t"], dynamic_axes={"t": {0: "b"}}, external_data=False,
                          optimize=False, verbose=False)
    g = gn.from_onnx(tmp_path / "bag.onnx")
    assert g.inputs[0].shape == (None, 3) and g.inputs[0].dtype == np.int64
    T = np.array([[1, 2, 9], [0, 0, 3], [5, 5, 7]])
    got, = gn.compile(g.outputs)(t=T)
    np.testing.assert_allclose(got, m(torch.tensor(T)).detach().numpy(), rtol=1e-5, atol=1e-6)
    ge, = gn.grad(api.sum(g.outputs[0] * g.outputs[0]), [g["emb.weight"]])
    (m(torch.tensor(T)) ** 2).sum().backward()
    np.testing.assert_allclose(gn.compile([ge])(t=T)[0], m.emb.weight.grad.numpy(), rtol=1e-5,
                               atol=1e-6)
