"""The command line on ONNX files: print, draw (--grad, collapsed by module), compile, teach."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
from graphnn.cli import main

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.fixture
def model_path(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="/fc1/Gemm", transB=1),
             helper.make_node("Tanh", ["h"], ["t"], name="/act/Tanh"),
             helper.make_node("Gemm", ["t", "fc2.weight", "fc2.bias"], ["y"], name="/fc2/Gemm", transB=1)]
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in
             [("fc1.weight", (5, 3)), ("fc1.bias", (5,)), ("fc2.weight", (2, 5)), ("fc2.bias", (2,))]]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    p = tmp_path / "tiny.onnx"
    p.write_bytes(helper.make_model(g, opset_imports=[helper.make_operatorsetid("", 17)]).SerializeToString())
    return p


def test_print_and_compile(model_path, tmp_path, capsys):
    assert main(["print", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight" in out and "# fc1" in out
    prog = tmp_path / "prog.py"
    assert main(["compile", str(model_path), "-o", str(prog)]) == 0
    import importlib.util
    spec = importlib.util.spec_from_file_location("onnx_prog", prog)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    X = np.ones((4, 3), np.float32)
    want, = gn.compile(gn.from_onnx(model_path).outputs)(x=X)
    got = mod.run(x=X)
    np.testing.assert_allclose(np.asarray(got[0] if isinstance(got, (list, tuple)) else got), want,
                               rtol=1e-6)


def test_draw_grad_collapses_by_module(model_path, tmp_path, capsys):
    svg = tmp_path / "m.svg"
    assert main(["draw", str(model_path), "--grad", "-o", str(svg)]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") or "<svg" in text
    for scope in ("fc1", "fc2", "act"):
        assert scope in text
    assert "no loss" in capsys.readouterr().err
    assert "collapsed scope" in text or "ops," in text  # modules drawn as boxes
    full = tmp_path / "full.svg"
    assert main(["draw", str(model_path), "--grad", "--depth", "1", "-o", str(full)]) == 0
    assert "cluster" in full.read_text()


def test_teach(model_path, tmp_path):
    page = tmp_path / "teach.html"
    assert main(["teach", str(model_path), "-o", str(page)]) == 0
    assert page.stat().st_size > 1000


def test_bad_onnx_file_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["print", str(bad)]) != 0
    assert "not an ONNX model" in capsys.readouterr().err
