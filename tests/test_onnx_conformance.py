"""ONNX's backend conformance node cases for every op gn.from_onnx claims, through
import + the NumPy compiler (the runner is tests/onnx_conformance.py). Each op passes
exactly the counted cases; every other case is refused with graphnn's FormatError
saying what is not supported (dtypes graphnn does not compute in, training-mode
outputs, non-constant padding modes, ...): never a wrong value, never a crash. The
counts are the README's table."""
from __future__ import annotations

import pytest

pytest.importorskip("onnx")

import onnx_conformance as oc  # noqa: E402

# op: (passed, cases); README.md quotes these
EXPECTED = {
    "Abs": (1, 1), "Add": (2, 8), "AveragePool": (20, 20), "BatchNormalization": (2, 4),
    "Cast": (2, 60), "CastLike": (2, 56), "Clip": (18, 24), "Concat": (12, 12), "Constant": (1, 1),
    "ConstantOfShape": (3, 3), "Conv": (6, 6), "ConvTranspose": (11, 11),
    "Div": (4, 10), "Dropout": (4, 12), "Elu": (6, 6),
    "Equal": (2, 10), "Erf": (1, 1), "Exp": (2, 2), "Expand": (2, 2), "Flatten": (9, 9),
    "Gather": (4, 4), "Gelu": (8, 8), "Gemm": (11, 11), "GlobalAveragePool": (2, 2),
    "GlobalMaxPool": (2, 2), "Greater": (2, 8), "GreaterOrEqual": (2, 8), "Identity": (1, 3),
    "LayerNormalization": (19, 19), "LeakyRelu": (6, 6), "Less": (2, 8), "LessOrEqual": (2, 8),
    "Log": (2, 2), "LogSoftmax": (7, 7), "LRN": (2, 2), "MatMul": (7, 7), "Max": (7, 14),
    "MaxPool": (16, 19), "Min": (7, 14), "Mul": (3, 9), "Neg": (2, 2), "Pad": (3, 6),
    "Pow": (8, 12), "PRelu": (4, 4), "Range": (1, 8), "Reciprocal": (2, 2), "ReduceMax": (9, 11),
    "ReduceMean": (8, 8), "ReduceSum": (12, 12), "Relu": (2, 2), "Reshape": (10, 10),
    "Selu": (6, 6), "Shape": (11, 11), "Sigmoid": (2, 2), "Sign": (1, 1), "Size": (2, 2),
    "Slice": (8, 8), "Softmax": (21, 21), "Softplus": (4, 4), "Softsign": (4, 4), "Tile": (2, 2),
    "InstanceNormalization": (2, 2), "Split": (16, 16), "Sqrt": (2, 2),
    "Squeeze": (2, 2), "Sub": (3, 9), "Sum": (3, 3), "Tanh": (2, 2), "Transpose": (7, 7),
    "Unsqueeze": (7, 7), "Where": (2, 2),
}


@pytest.fixture(scope="module")
def table():
    return oc.table()


def test_every_claimed_op_is_counted():
    assert set(EXPECTED) == set(oc.MODULES)


@pytest.mark.parametrize("op", sorted(EXPECTED))
def test_conformance(table, op):
    res = table[op]
    assert not res["failed"] and not res["error"], res["failed"] + res["error"]
    assert (len(res["passed"]), sum(len(v) for v in res.values())) == EXPECTED[op], \
        [(n, d) for n, d in res["unsupported"]]
    for name, detail in res["unsupported"]:
        assert "not supported" in detail or "non-tensor" in detail, (name, detail)


# the wheel's pytorch-converted / pytorch-operator models: (passed, models); the others
# use Pad modes 'reflect' and 'edge'
DATA_EXPECTED = {"pytorch-converted": (80, 82), "pytorch-operator": (34, 35)}


@pytest.mark.parametrize("kind", sorted(DATA_EXPECTED))
def test_pytorch_data_models(kind):
    res = oc.data_table(kind)
    bad = {k: v for k, v in res.items() if v[0] in ("failed", "error")}
    assert not bad, bad
    passed = sum(1 for v in res.values() if v[0] == "passed")
    assert (passed, len(res)) == DATA_EXPECTED[kind], {k: v for k, v in res.items() if v[0] != "passed"}
    for name, (status, detail) in res.items():
        if status != "passed":
            assert "mode=" in detail and "not supported" in detail, (name, detail)
