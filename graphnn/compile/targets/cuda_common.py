"""Shared pieces of the CUDA target's modules: the op table, C types, index
arithmetic for broadcasting and strides, and the tensor-file declaration hash."""
from __future__ import annotations

import math
import re

import numpy as np

from ... import cudafile
from ...errors import GraphError
from ...graph import Node
from ...ops.registry import get_op
from ..fast_common import _dname

# ops printed by a generated kernel of their own (beside element-wise ops, matmul,
# sum/mean and softmax/log_softmax, which every plan statement of theirs covers)
C_OPS = {"reshape", "stop_gradient", "transpose", "broadcast_to", "broadcast_like", "cast",
         "zeros_like", "one_hot", "sum", "mean", "max", "count", "matmul", "softmax",
         "log_softmax", "index", "concat", "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "scatter",
         "pad", "windows", "windows_adjoint", "take", "take_adjoint", "batch_guard"}
C_TYPE = {"float64": "double", "float32": "float", "int64": "long long", "int32": "int",
          "bool": "bool"}
FLOATS = ("float32", "float64")


def supports(n: Node) -> str | None:
    """None when the CUDA target can print node `n`, else why not."""
    if get_op(n.op).elementwise is not None:
        return None
    if n.op not in C_OPS:
        return "it is not in the CUDA target's table (graphnn/compile/targets/cuda.py C_OPS)"
    if n.op == "matmul":
        a, b = n.inputs
        if n.dtype.name not in FLOATS or a.dtype != n.dtype or b.dtype != n.dtype:
            return "cuBLAS multiplies float32 or float64 matrices of one dtype"
        if a.ndim == 0 or b.ndim == 0:
            return "a 0-d operand"
        ba, bb = a.shape[:-2] if a.ndim > 2 else (), b.shape[:-2] if b.ndim > 2 else ()
        if ba and bb and ba != bb:
            return "batch dimensions broadcast against each other"
    if n.op in ("softmax", "log_softmax") and n.dtype.name not in FLOATS:
        return "softmax of a non-float array"
    if n.op in ("index", "scatter") and any(e[0] not in ("s", "i", "n") for e in n.attrs["index"]):
        return "an index entry it cannot print"
    return None


def _ctype(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in C_TYPE:
        raise GraphError(f"backend 'cuda' has no C type for dtype {name}")
    return C_TYPE[name]


def _ccomment(text: str) -> str:
    """Text safe inside a comment, `//` or `/* */` (ASCII, no line continuation, no `*/`)."""
    return ascii(str(text))[1:-1].replace("\\", "/").replace("*/", "* /").replace("/*", "/ *")


def _cstring(text: str) -> str:
    """A C string literal of any text (printable ASCII as is, the rest octal escapes)."""
    out = []
    for b in str(text).encode("utf-8", "surrogatepass"):
        c = chr(b)
        if c in '"\\?':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def count_code(shape) -> str:
    """Element count of `shape` as a C expression of `B` (a `long`)."""
    known = math.prod(d for d in shape if d is not None)
    nb = sum(1 for d in shape if d is None)
    parts = ["B"] * nb + ([str(known)] if known != 1 or not nb else [])
    return "(" + " * ".join(parts) + ")" if len(parts) > 1 else parts[0]


def _dim(d) -> str:
    return "B" if d is None else str(d)


def _strides(shape) -> list[str]:
    """Row-major strides of `shape` as C expressions."""
    out, acc = [], []
    for d in reversed(shape):
        out.append(" * ".join(acc) if acc else "1")
        if d != 1:
            acc = acc + [_dim(d)]
    return list(reversed(out))


def _coord(i: str, shape, d: int) -> str:
    """Coordinate `d` of flat index `i` of a row-major array of `shape`."""
    after = [_dim(x) for x in shape[d + 1:] if x != 1]
    q = f"({i} / ({' * '.join(after)}))" if after else i
    return q if d == 0 else f"({q} % {_dim(shape[d])})"


def broadcast_index(i: str, leaf_shape, out_shape) -> str:
    """Index into a leaf of `leaf_shape` broadcast (NumPy rules) to flat index `i` of
    `out_shape`."""
    if tuple(leaf_shape) == tuple(out_shape):
        return i
    off = len(out_shape) - len(leaf_shape)
    lstr = _strides(leaf_shape)
    terms = []
    for e, d in enumerate(leaf_shape):
        if d == 1:
            continue
        c = _coord(i, out_shape, e + off)
        terms.append(c if lstr[e] == "1" else f"{c} * {lstr[e]}")
    return " + ".join(terms) if terms else "0"


def declaration_hash(kind: str, nodes) -> str:
    return cudafile.declaration_hash(kind, [(n.name, _dname(n.dtype), n.shape) for n in nodes])


def kernel_source(name: str, comment: str, params: list[str], lines: list[str],
                  index: str = "i") -> str:
    """An element-at-a-time kernel: `{name}_at` (one index; the `__host__ __device__`
    body, `lines`) and `{name}_kernel`, which runs it over n indices (a grid-stride
    loop on the GPU, a host loop in the -DGN_CPU build)."""
    args = ", ".join(re.sub(r".*[\s*]", "", p) for p in params)
    return "\n".join([
        f"/* {name}: {comment} */",
        f"GN_FN void {name}_at(long {index}, long B, {', '.join(params)}) {{", *lines, "}",
        f"__global__ void {name}_kernel(long n, long B, {', '.join(params)}) {{",
        f"    GN_FOR_EACH({index}, n) {name}_at({index}, B, {args});", "}"])
