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


def _fuzz_model():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([0, 2], np.int64), "idx"),
             numpy_helper.from_array(np.array([-1, 2], np.int64), "shape"),
             numpy_helper.from_array(rng.normal(size=(2, 1, 2, 2)).astype(np.float32), "k")]
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="/fc/Gemm", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="/act/Relu"),
             helper.make_node("Gather", ["r", "idx"], ["gth"], axis=1),
             helper.make_node("Reshape", ["gth", "shape"], ["y"]),
             helper.make_node("MaxPool", ["x4"], ["mp"], kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
             helper.make_node("Conv", ["mp", "k"], ["cv"], group=1)]
    return _model(nodes, inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                                 helper.make_tensor_value_info("x4", TensorProto.FLOAT, ["N", 1, 5, 5])],
                  outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("cv", TensorProto.FLOAT, None)], inits=inits)


def _import_and_run(model):
    try:
        g = gn.from_onnx(model)
    except gn.FormatError:
        return
    feeds = {i.name: np.ones(tuple(2 if d is None else d for d in i.shape), np.float32)
             for i in g.inputs}
    try:
        gn.compile(g.outputs)(**feeds)
    except gn.GraphnnError:
        pass


def test_mutated_files_give_format_errors_only():
    """Random byte edits of a valid file and random edits of its fields (attribute and
    dimension values, initializer entries, input names): import raises FormatError or
    gives a graph that compiles and runs; never another exception."""
    base = _fuzz_model()
    data = base.SerializeToString()
    rng = np.random.default_rng(0)
    for _ in range(300):
        b = bytearray(data)
        pos = int(rng.integers(0, len(b)))
        if rng.integers(0, 2):
            b[pos] = int(rng.integers(0, 256))
        else:
            del b[pos:pos + int(rng.integers(1, 8))]
        with np.errstate(all="ignore"):
            _import_and_run(bytes(b))
    vals = [-(1 << 40), -7, -1, 0, 1, 2, 5, 1 << 40]
    for _ in range(300):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        n = m.graph.node[int(rng.integers(0, len(m.graph.node)))]
        what = int(rng.integers(0, 3))
        if what == 0 and n.attribute:
            a = n.attribute[int(rng.integers(0, len(n.attribute)))]
            if a.ints:
                a.ints[int(rng.integers(0, len(a.ints)))] = int(rng.choice(vals))
            else:
                a.i = int(rng.choice(vals))
        elif what == 1:
            n.input[int(rng.integers(0, len(n.input)))] = str(rng.choice(["x", "h", "y", "zz", "", "cv"]))
        else:
            vi = m.graph.input[int(rng.integers(0, 2))]
            dims = vi.type.tensor_type.shape.dim
            dims[int(rng.integers(0, len(dims)))].dim_value = int(rng.choice(vals))
        with np.errstate(all="ignore"):
            _import_and_run(m)
    with pytest.raises(gn.FormatError, match="UTF-8"):
        gn.from_onnx(data.replace(b"/fc/Gemm", b"/fc/\xffemm"))


def test_hostile_names_stay_names(tmp_path):
    """Tensor, node and graph names from the file are node names and scopes only: the
    program compiles, runs and saves whatever they say."""
    evil = ['x"); import os #', "h\n= 1", "__import__('os')", "y}{", "λ é\u202e"]
    nodes = [helper.make_node("Relu", [evil[0]], [evil[1]], name="/a'b/\\c/Relu"),
             helper.make_node("Tanh", [evil[1]], [evil[2]], name="/" + evil[3] + "/Tanh"),
             helper.make_node("Neg", [evil[2]], [evil[4]])]
    m = _model(nodes, inputs=[helper.make_tensor_value_info(evil[0], TensorProto.FLOAT, ["N", 2])],
               outputs=[helper.make_tensor_value_info(evil[4], TensorProto.FLOAT, None)])
    m.graph.name = "g'''\"\"\"\n"
    g = gn.from_onnx(m)
    assert [i.name for i in g.inputs] == [evil[0]] and g.outputs[0].name == evil[4]
    X = np.array([[-1.0, 2.0]], np.float32)
    prog = gn.compile(g.outputs)
    np.testing.assert_allclose(prog(**{evil[0]: X})[0], -np.tanh(np.maximum(X, 0)))
    prog.save(tmp_path / "p.py")
    again = gn.to_onnx(g)
    assert again.graph.output[0].name == evil[4]
