"""gn.from_onnx on bad input: one FormatError that names what is wrong (op, node and
opset for unsupported ops and attributes), never a protobuf or NumPy traceback."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(nodes, inputs=None, outputs=None, inits=(), opset=17):
    inputs = inputs if inputs is not None else [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])]
    outputs = outputs if outputs is not None else [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_operatorsetid("", opset)])


def test_bad_protobuf_and_missing_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0fgarbage")
    with pytest.raises(gn.FormatError, match="protobuf|no graph"):
        gn.from_onnx(p)
    with pytest.raises(gn.FormatError, match="cannot read"):
        gn.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(gn.FormatError):
        gn.from_onnx(b"")


def test_unsupported_op_names_op_node_and_opset():
    m = _model([helper.make_node("Hardmax", ["x"], ["y"], name="head/hardmax")])
    with pytest.raises(gn.FormatError, match=r"'Hardmax' \(node 'head/hardmax', opset 17\).*not supported"):
        gn.from_onnx(m)


def test_unsupported_attribute_is_refused_not_approximated():
    m = _model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad", mode="reflect")],
               inits=[numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "p")])
    with pytest.raises(gn.FormatError, match=r"'Pad' \(node 'pad', opset 17\): mode='reflect'"):
        gn.from_onnx(m)
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r", bogus=1)])
    with pytest.raises(gn.FormatError, match="attribute 'bogus'"):
        gn.from_onnx(m)


def test_dangling_names_and_cycles():
    m = _model([helper.make_node("Relu", ["nowhere"], ["y"], name="r")])
    with pytest.raises(gn.FormatError, match="'nowhere' is not defined.*dangling name or a cycle"):
        gn.from_onnx(m)
    cyc = _model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                  helper.make_node("Relu", ["a"], ["b"], name="n2"),
                  helper.make_node("Identity", ["b"], ["y"], name="n3")])
    with pytest.raises(gn.FormatError, match="'b' is not defined"):
        gn.from_onnx(cyc)
    twice = _model([helper.make_node("Relu", ["x"], ["y"], name="a"),
                    helper.make_node("Relu", ["x"], ["y"], name="b")])
    with pytest.raises(gn.FormatError, match="defined twice"):
        gn.from_onnx(twice)
    m = _model([helper.make_node("Relu", ["x"], ["z"])])
    with pytest.raises(gn.FormatError, match="never computed"):
        gn.from_onnx(m)


def test_absurd_shapes_and_sizes():
    m = _model([helper.make_node("Relu", ["x"], ["y"])],
               inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1 << 40])])
    with pytest.raises(gn.FormatError, match="absurd dimension"):
        gn.from_onnx(m)
    big = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20])
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[big])
    with pytest.raises(gn.FormatError, match="elements"):
        gn.from_onnx(m)
    m = _model([helper.make_node("ConstantOfShape", ["s"], ["y"])], inits=[
        numpy_helper.from_array(np.array([1 << 30, 1 << 30], np.int64), "s")])
    with pytest.raises(gn.FormatError, match="absurd shape"):
        gn.from_onnx(m)
    m = _model([helper.make_node("Relu", ["x"], ["y"])],
               inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "S"])])
    with pytest.raises(gn.FormatError, match="symbolic dimension"):
        gn.from_onnx(m)


def test_external_data_is_confined_next_to_the_model(tmp_path):
    t = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value="../../etc/passwd")
    t.ClearField("raw_data")
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[t])
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(gn.FormatError, match="plain file name"):
        gn.from_onnx(p)
    with pytest.raises(gn.FormatError, match="loaded from a path"):
        gn.from_onnx(m)


def test_a_small_model_imports_with_names_scopes_and_batch():
    m = _model([helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="/enc/layer.0/fc/Gemm", transB=1),
                helper.make_node("Relu", ["h"], ["y"], name="/enc/Relu")],
               inits=[numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "W"),
                      numpy_helper.from_array(np.ones(2, np.float32), "b")])
    g = gn.from_onnx(m)
    assert [n.name for n in g.inputs] == ["x"] and g.inputs[0].shape == (None, 3)
    assert [p.name for p in g.params] == ["W", "b"]
    assert g["h"].scope == "enc/layer.0/fc" and g["y"].scope == "enc"
    X = np.ones((4, 3), np.float32)
    y, = gn.compile(g.outputs)(x=X)
    np.testing.assert_allclose(y, np.maximum(X @ np.arange(6).reshape(2, 3).T + 1, 0))
    assert all(p.op == "const" for p in gn.from_onnx(m, trainable=False).nodes
               if p.name in ("W", "b"))
