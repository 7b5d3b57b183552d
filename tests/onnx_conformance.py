"""Run ONNX's own backend node test cases (shipped in the onnx wheel as Python that
builds each one-op model with its inputs and expected outputs) through
gn.from_onnx + the NumPy compiler. `python tests/onnx_conformance.py` prints the
per-op counts the README quotes; tests/test_onnx_conformance.py asserts them.

Integer and boolean graph inputs (indices, shapes, axes) are baked into the model
as initializers before import: graphnn folds them, as it folds the constant shape
chains exporters write. Cases are counted as passed, failed (wrong values),
unsupported (graphnn refuses the op, an attribute or a dtype with its FormatError)
or error (anything else)."""
from __future__ import annotations

import importlib
import warnings

import numpy as np

# ONNX op -> module of onnx.backend.test.case.node that declares its cases
MODULES = {
    "Abs": "abs", "Add": "add", "AveragePool": "averagepool", "BatchNormalization": "batch_normalization",
    "Cast": "cast", "CastLike": "castlike", "Clip": "clip", "Concat": "concat", "Constant": "constant",
    "ConstantOfShape": "constantofshape", "Conv": "conv", "ConvTranspose": "convtranspose", "Div": "div", "Dropout": "dropout",
    "Elu": "elu", "Equal": "equal", "Erf": "erf", "Exp": "exp", "Expand": "expand",
    "Flatten": "flatten", "Gather": "gather", "Gelu": "gelu", "Gemm": "gemm",
    "GlobalAveragePool": "globalaveragepool", "GlobalMaxPool": "globalmaxpool", "Greater": "greater",
    "GreaterOrEqual": "greater_or_equal", "Identity": "identity", "LayerNormalization": "layernormalization",
    "LeakyRelu": "leakyrelu", "Less": "less", "LessOrEqual": "less_or_equal", "Log": "log",
    "LogSoftmax": "logsoftmax", "LRN": "lrn", "MatMul": "matmul", "Max": "max", "MaxPool": "maxpool",
    "Min": "min", "Mul": "mul", "Neg": "neg", "Pad": "pad", "Pow": "pow", "PRelu": "prelu", "Range": "rangeop",
    "Reciprocal": "reciprocal", "ReduceMax": "reducemax", "ReduceMean": "reducemean",
    "ReduceSum": "reducesum", "Relu": "relu", "Reshape": "reshape", "Selu": "selu", "Shape": "shape",
    "Sigmoid": "sigmoid", "Sign": "sign", "Size": "size", "Slice": "slice", "Softmax": "softmax",
    "Softplus": "softplus", "Softsign": "softsign", "Tile": "tile",
    "InstanceNormalization": "instance_normalization", "Split": "split", "Sqrt": "sqrt", "Squeeze": "squeeze", "Sub": "sub",
    "Sum": "sum", "Tanh": "tanh", "Transpose": "transpose", "Unsqueeze": "unsqueeze", "Where": "where",
}

_CACHE: dict[str, list] = {}


def cases(op: str) -> list:
    """The node test cases of one ONNX op (its module's cases whose node is that op,
    plus their function-expanded variants)."""
    if op in _CACHE:
        return _CACHE[op]
    from onnx.backend.test.case import node as pkg
    before = len(pkg._NodeTestCases)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        importlib.import_module(f"onnx.backend.test.case.node.{MODULES[op]}")
    new = pkg._NodeTestCases[before:]
    for o, mod in MODULES.items():  # several ops can share a module: split them
        if mod == MODULES[op]:
            _CACHE[o] = [c for c in new if _primary(c) == o]
    return _CACHE[op]


def _primary(case) -> str:
    nodes = case.model.graph.node
    if "_expanded" not in case.name and len(nodes) == 1:
        return nodes[0].op_type
    # an expanded case belongs to the op of its unexpanded twin (name without suffix)
    base = case.name.split("_expanded")[0]
    for o in MODULES:
        if base.lower().startswith("test_" + o.lower()):
            return o
    return nodes[0].op_type if nodes else ""


def run_case(case) -> tuple[str, str]:
    """('passed' | 'failed' | 'unsupported' | 'error', detail)."""
    import onnx
    from onnx import numpy_helper

    import graphnn as gn
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    (inputs, outputs), = case.data_sets[:1]
    def value(v):
        return numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
    inputs, outputs = [value(v) for v in inputs], [value(v) for v in outputs]
    if any(not isinstance(v, (np.ndarray, np.generic)) for v in list(inputs) + list(outputs)):
        return "unsupported", "non-tensor values (sequences, optionals)"
    inputs, outputs = [np.asarray(v) for v in inputs], [np.asarray(v) for v in outputs]
    graph = model.graph
    feeds = {}
    keep = []
    for vi, arr in zip(list(graph.input), inputs):
        if arr.dtype.kind in "f":
            feeds[vi.name] = arr
            keep.append(vi)
        else:
            graph.initializer.append(numpy_helper.from_array(np.asarray(arr), vi.name))
    del graph.input[:]
    graph.input.extend(keep)
    try:
        g = gn.from_onnx(model)
        with np.errstate(all="ignore"):
            got = gn.compile(g.outputs)(**feeds)
    except gn.FormatError as e:
        return ("unsupported" if "not supported" in str(e) else "error"), str(e)[:300]
    except Exception as e:  # noqa: BLE001 - counted and reported
        return "error", f"{type(e).__name__}: {str(e)[:300]}"
    for k, (a, b) in enumerate(zip(got, outputs)):
        a = np.asarray(a)
        if a.shape != b.shape:
            return "failed", f"output {k}: shape {a.shape} != {b.shape}"
        if a.dtype != b.dtype:
            return "failed", f"output {k}: dtype {a.dtype} != {b.dtype}"
        if a.dtype.kind in "fc":
            ok = np.allclose(a, b, rtol=case.rtol, atol=case.atol, equal_nan=True)
        else:
            ok = np.array_equal(a, b)
        if not ok:
            return "failed", f"output {k}: max error {np.max(np.abs(a.astype(float) - b.astype(float)))}"
    return "passed", ""


def table() -> dict[str, dict]:
    out = {}
    for op in MODULES:
        res = {"passed": [], "failed": [], "unsupported": [], "error": []}
        for c in cases(op):
            status, detail = run_case(c)
            res[status].append((c.name, detail))
        out[op] = res
    return out


if __name__ == "__main__":
    import sys
    t = table()
    verbose = "-v" in sys.argv
    for op, res in t.items():
        n = sum(len(v) for v in res.values())
        print(f"{op:20s} {len(res['passed']):3d}/{n:<3d}", end="")
        print("  " + ", ".join(f"{k} {len(v)}" for k, v in res.items() if v and k != "passed"))
        if verbose:
            for k in ("failed", "unsupported", "error"):
                for name, detail in res[k]:
                    print(f"    {k}: {name}: {detail}")


def data_dirs(kind: str) -> list:
    """The model directories of the onnx wheel's `pytorch-converted` or `pytorch-operator`
    data (a model.onnx and test_data_set_*/input_*.pb, output_*.pb each)."""
    from pathlib import Path

    import onnx
    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / kind
    return sorted(p for p in root.iterdir() if (p / "model.onnx").exists())


def run_dir(path) -> tuple[str, str]:
    """Like run_case, for a model directory of the wheel's data."""
    import onnx
    from onnx import numpy_helper

    class _Case:
        name = path.name
        rtol, atol = 1e-3, 1e-7
    case = _Case()
    case.model = onnx.load(str(path / "model.onnx"))
    sets = []
    for d in sorted(path.glob("test_data_set_*"))[:1]:
        def read(prefix):
            out = []
            for f in sorted(d.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[-1])):
                t = onnx.TensorProto()
                t.ParseFromString(f.read_bytes())
                out.append(numpy_helper.to_array(t))
            return out
        sets.append((read("input"), read("output")))
    case.data_sets = sets
    return run_case(case)


def data_table(kind: str) -> dict[str, tuple[str, str]]:
    return {p.name: run_dir(p) for p in data_dirs(kind)}
