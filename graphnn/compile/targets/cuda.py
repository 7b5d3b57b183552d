"""The CUDA target: the fast program's plan, printed as one standalone `.cu` file.

A third spelling of the same plan as the NumPy and CuPy targets (llm.c's
`train_gpt2_fp32.cu` is the model of the result). Every planning decision is the
fast printer's (`compile/fast.py`): fusion groups (one SymPy expression each),
the buffer plan (`memory.py`), the update groups (`update_groups.py`: parameters,
gradients and optimizer state of a group are views of one flat buffer per role,
one kernel updates a whole group). This subclass only prints them as CUDA C:

* each fused element-wise group is one `__global__` kernel named after what it
  fuses, its body a `__host__ __device__` function printed from the group's
  SymPy expression by `compile/cuda_c.py`;
* matmuls go through `gn_gemm`, cuBLAS's column-major GEMM called the usual way
  for row-major data (C^T = B^T A^T), 2-D transposes as cuBLAS's flags;
* reductions, softmax, transposes and the other ops of `C_OPS` (every op of the
  catalog) are generated kernels; what this target cannot print (`supports`) is
  refused at compile time, naming the op and the node;
* every buffer is a pointer into one device allocation (`gn_alloc(B)`), laid out
  from the buffer plan for the batch size B of the data;
* built with `-DGN_CPU` the same file is a CPU program: kernels run as host
  loops and `gn_gemm` is a reference GEMM with cuBLAS's argument convention.

The program reads and writes the tensor files of `graphnn/cudafile.py` and has a
`main` (`train`, `infer`, `run`); `compile/cuda_build.py` writes, builds and runs it.
"""
from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import sympy as sp

from ... import __version__
from ... import cudafile
from ...errors import GraphError
from ...graph import Node
from ...ops import shapes as shape_rules
from ...ops.registry import get_op
from .. import cuda_c, fusion, memory
from ..fast import _EXPR_CACHE, FastPrinter
from ..fast_common import _attrs_key, _dname, _is_ew
from ..fast_text import _fused_note

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


class CudaPrinter(FastPrinter):
    """Prints a Function (outputs and parameter updates) as one CUDA C file."""
    xp = "np"  # the base printer's bookkeeping lines (flat buffers, views) are parsed

    def __init__(self, fn, name: str = "step", kernels: str = "numpy"):
        super().__init__(fn, name, "numpy")
        for n in self.order:
            if not n.is_leaf and id(n) not in self.cut:
                why = supports(n)
                if why is not None:
                    raise GraphError(f"backend 'cuda' cannot print op {n.op!r} (node {n.name!r}, "
                                     f"shape {n.shape}): {why}")
        dtypes = {_dname(n.dtype) for n in self.order if n.dtype.kind == "f"}
        self.dtype = "float32" if dtypes == {"float32"} else "float64"
        self.kernel_defs: list[str] = []
        self.kernel_by_key: dict = {}
        self.kernel_names: set[str] = set()
        self.kernel_list: list[tuple[str, str]] = []   # (name, kind) in definition order
        self.cn: dict[str, str] = {}                   # python name -> C identifier
        self.ctaken: set[str] = set()
        self.slots: dict[str, tuple] = {}              # C ident -> (shape, dtype, note)
        self.views: dict[str, tuple] = {}              # C ident -> (base C ident, offset)
        self.loose: dict[str, Node] = {}
        self.ptr_alias: set[str] = set()
        self.c_consts: dict[str, Node] = {}
        self.c_tail: list = []                         # update code: ("k", callable) / text
        self.c_deferred: list = []
        self.ones: dict[str, tuple] = {}               # dtype -> (batch long?, fixed length)

    # -- plan adjustments (this target's spellings) ------------------------------------------
    def _fold_candidates(self) -> dict:
        return {}  # no [h, 1] @ [W; b] folds: cuBLAS runs the matmul, a kernel the bias

    def _dot_reductions(self) -> dict:
        return {}  # sum(a * b) is a fused product and a reduction kernel

    def classify(self):
        super().classify()
        # a 2-D transpose stays a view only where cuBLAS reads it (a transpose flag)
        for k in list(self.alias):
            cons = self.consumers[k]
            if not cons or not all(c.op == "matmul" and c.ndim == 2 and all(i.ndim == 2 for i in c.inputs)
                                   for c in cons):
                del self.alias[k]

    # -- names ---------------------------------------------------------------------------------
    def c(self, pyname: str) -> str:
        """The C identifier of a name of the plan (`_buf3` -> `g_buf3`, `W1` -> `g_W1`)."""
        got = self.cn.get(pyname)
        if got is None:
            base = "g" + ("" if pyname.startswith("_") else "_") + re.sub(r"[^A-Za-z0-9_]", "_", pyname)
            got, k = base, 2
            while got in self.ctaken:
                got, k = f"{base}_{k}", k + 1
            self.ctaken.add(got)
            self.cn[pyname] = got
        return got

    def value_of(self, n: Node) -> str:
        if id(n) in self.snap:
            return self.snap[id(n)]
        s = self.source_of(n)
        if s.op == "const":
            ident = self.namer(s)
            self.c_consts[ident] = s
            return ident
        if id(s) in self.alias:
            return f"{self.value_of(s.inputs[0])}.T"
        if self.is_arg(s):
            return self.namer(s)
        if self.plan is not None and id(s) in self.plan.buffer:
            return self.plan.buffer[id(s)]
        ident = self.namer(s)
        self.loose[ident] = s
        return ident

    def ones_vector(self, dtype: str, length) -> str:
        """A vector of ones (at least `length` long, B for the batch axis) filled by gn_alloc."""
        ident = f"g_ones_{dtype}"
        batch, fixed = self.ones.get(dtype, (False, 1))
        batch, fixed = batch or length is None, max(fixed, length or 1)
        self.ones[dtype] = (batch, fixed)
        # B * fixed >= max(B, fixed): one shape for both kinds of length
        shape = ((None,) if batch else ()) + ((fixed,) if fixed > 1 or not batch else ())
        self.slots[ident] = (shape, dtype, "ones (row and column sums through cuBLAS)")
        return ident

    def cnote(self, n: Node) -> str:
        """The statement's comment: node name, op, type, role, scope."""
        return "// " + _ccomment(self.note(n)[2:].replace(" \u00b7 ", ", "))

    def ptr(self, n: Node) -> str:
        v = self.value_of(n)
        if v.endswith(".T"):
            raise GraphError(f"backend 'cuda': internal: transposed view {n.name!r} read "
                             "outside a matmul")
        return self.c(v)

    # -- kernels ---------------------------------------------------------------------------------
    def _define(self, key, what: str, kind: str, make) -> str:
        if key in self.kernel_by_key:
            return self.kernel_by_key[key]
        base = cuda_c.kernel_name(f"gn_{what}")
        name, k = base, 2
        while name in self.kernel_names:
            name, k = f"{base}_{k}", k + 1
        self.kernel_names.add(name)
        self.kernel_by_key[key] = name
        self.kernel_defs.append(make(name))
        self.kernel_list.append((name, kind))
        return name

    def ew_kernel(self, what: str, comment: str, out_shape, outputs, leaves) -> str:
        """An element-wise kernel over `out_shape`: `outputs` [(SymPy expression, dtype)],
        `leaves` [(symbol, shape, dtype, C literal or None)]. Pointer parameters in
        leaf order (literals are inlined), then the outputs."""
        out_dtypes = [d for _, d in outputs]
        fl = [d for d in out_dtypes + [l[2] for l in leaves] if d in FLOATS]
        kd = next((d for d in out_dtypes if d in FLOATS), None) or (
            "float32" if fl and all(d == "float32" for d in fl) else "float64")
        names, types, loads, params = {}, {}, [], []
        for k, (sym, shape, dtype, lit) in enumerate(leaves):
            names[sym] = f"a{k}"
            types[sym] = dtype
            if lit is not None:
                loads.append(f"    const {_ctype(dtype)} a{k} = {lit};")
            else:
                params.append(f"const {_ctype(dtype)}* p{k}")
                idx = "0" if shape == () else broadcast_index("i", shape, out_shape)
                loads.append(f"    const {_ctype(dtype)} a{k} = p{k}[{idx}];")
        body = cuda_c.kernel_body([(f"r{j}", e) for j, (e, _) in enumerate(outputs)], names, kd,
                                  types=types)
        params += [f"{_ctype(d)}* o{j}" for j, d in enumerate(out_dtypes)]
        decl = [f"    {cuda_c.C_TYPE[kd]} {', '.join(f'r{j}' for j in range(len(outputs)))};"]
        stores = [f"    o{j}[i] = ({_ctype(d)})r{j};" for j, d in enumerate(out_dtypes)]
        inner = loads + decl + ["    " + ln for ln in body.split("\n")] + stores
        key = ("ew", tuple(params), tuple(inner))

        def make(name):
            args = ", ".join(re.sub(r".*\*\s*", "", p) for p in params)
            return "\n".join([
                f"/* {name}: {comment} */",
                f"GN_FN void {name}_at(long i, long B, {', '.join(params)}) {{",
                *inner, "}",
                f"__global__ void {name}_kernel(long n, long B, {', '.join(params)}) {{",
                f"    GN_FOR_EACH(i, n) {name}_at(i, B, {args});", "}"])
        return self._define(key, what, "elementwise", make)

    def leaf_spec(self, sym, node: Node, dtype_hint=None):
        """(symbol, shape, dtype, literal) of a kernel leaf; 0-d constants are literals."""
        s = self.source_of(node)
        d = _dname(s.dtype)
        if s.op == "const" and s.value.ndim == 0:
            v = s.value.item()
            if d in FLOATS:
                lit = cuda_c.literal(float(v), d)
            elif d == "bool":
                lit = "true" if v else "false"
            else:
                lit = f"{int(v)}LL" if d == "int64" else str(int(v))
            return (sym, (), d, lit)
        return (sym, s.shape, d, None)

    def launch(self, kname: str, count: str, args) -> str:
        return f"GN_LAUNCH({kname}_kernel, {count}, B, {', '.join(args)});"

    # -- statements ---------------------------------------------------------------------------
    def c_group(self, root: Node, out: str) -> list[str]:
        key, leaves, sub_leaves = self._group_meta[id(root)]
        expr = _EXPR_CACHE[key][0]
        syms = [fusion.leaf_symbol(k) for k in range(len(leaves))]
        pairs = [(s, l) for s, l in zip(syms, leaves) if s in expr.free_symbols]
        pairs += [(sp.Symbol(nm, real=True), node) for nm, node in sub_leaves.items()]
        specs = [self.leaf_spec(s, l) for s, l in pairs]
        fused = [root.op] + [part.split("=")[-1] for part in
                             _fused_note(self, root)[len(" (fused: "):-1].split(", ") if part]
        what = "_".join(dict.fromkeys(reversed(fused)))
        kname = self.ew_kernel(what, f"{_ccomment(' * '.join(reversed(fused)))} ({_dname(root.dtype)})",
                               root.shape, [(expr, _dname(root.dtype))], specs)
        args = [self.ptr(l) for (s, l), spec in zip(pairs, specs) if spec[3] is None]
        return [self.launch(kname, count_code(root.shape), args + [self.c(out)])]

    def c_matmul(self, n: Node, out: str) -> list[str]:
        a, b = n.inputs
        ta = tb = False
        pa, pb = self.value_of(a), self.value_of(b)
        if pa.endswith(".T"):
            ta, pa = True, pa[:-2]
        if pb.endswith(".T"):
            tb, pb = True, pb[:-2]
        ash = (1,) + tuple(a.shape) if a.ndim == 1 else tuple(a.shape)
        bsh = tuple(b.shape) + (1,) if b.ndim == 1 else tuple(b.shape)
        m, k = ash[-2:]
        nn = bsh[-1]
        batch_a, batch_b = ash[:-2], bsh[:-2]
        batch = batch_a or batch_b
        nb = count_code(batch) if batch else "1"
        sa = count_code((m, k)) if batch_a else "0"
        sb = count_code((k, nn)) if batch_b else "0"
        sc = count_code((m, nn))
        # row-major C = A B is column-major C^T = B^T A^T: cuBLAS gets B first
        lda = _dim(m) if ta else _dim(k)
        ldb = _dim(k) if tb else _dim(nn)
        return [f"gn_gemm({'true' if tb else 'false'}, {'true' if ta else 'false'}, {_dim(nn)}, "
                f"{_dim(m)}, {_dim(k)}, {self.c(pb)}, {ldb}, {sb}, {self.c(pa)}, {lda}, {sa}, "
                f"{self.c(out)}, {_dim(nn)}, {sc}, {nb});"]

    def c_reduce(self, n: Node, out: str, how: str) -> list[str]:
        """sum / mean / max over axes: one thread per output element, a loop over the rest."""
        x = n.inputs[0]
        axes = shape_rules.norm_axes(n.attrs.get("axis"), x.ndim, x.shape)
        if how == "sum" and x.ndim == 2 and len(axes) == 1 and x.dtype == n.dtype and \
                _dname(n.dtype) in FLOATS and not self.value_of(x).endswith(".T"):
            # a column or row sum of a matrix is a product with a vector of ones: cuBLAS
            # (a bias gradient: ones(B)^T dz), deterministic and with every SM busy
            ones = self.ones_vector(_dname(n.dtype), x.shape[axes[0]])
            r, c = (_dim(x.shape[0]), _dim(x.shape[1]))
            if axes[0] == 0:  # (1 x r) @ (r x c)
                return [f"gn_gemm(false, false, {c}, 1, {r}, {self.ptr(x)}, {c}, 0, {ones}, {r}, 0, "
                        f"{self.c(out)}, {c}, {c}, 1);  // column sums: ones^T x"]
            return [f"gn_gemm(false, false, 1, {r}, {c}, {ones}, 1, 0, {self.ptr(x)}, {c}, 0, "
                    f"{self.c(out)}, 1, {r}, 1);  // row sums: x ones"]
        kept = [d for d in range(x.ndim) if d not in axes]
        kshape = tuple(x.shape[d] for d in kept)
        rshape = tuple(x.shape[d] for d in axes)
        xstr = _strides(x.shape)
        base = [f"{_coord('o', kshape, j)} * {xstr[d]}" for j, d in enumerate(kept) if x.shape[d] != 1]
        inner = [f"{_coord('r', rshape, j)} * {xstr[d]}" for j, d in enumerate(axes) if x.shape[d] != 1]
        T, X = _ctype(n.dtype), _ctype(x.dtype)
        dt = _dname(n.dtype)
        count = count_code(rshape) if rshape else "1"
        if how == "max":
            fn = "gn_maxf" if dt == "float32" else "gn_max"
            step = f"acc = {fn}(acc, ({T})p0[base + {' + '.join(inner) or '0'}]);"
            init, final = f"({T})p0[base]", "acc"
        else:
            init, step = f"({T})0", f"acc += ({T})p0[base + {' + '.join(inner) or '0'}];"
            final = f"acc / ({T}){count}" if how == "mean" else "acc"
        lines = [f"    const long base = {' + '.join(base) or '0'};", f"    {T} acc = {init};",
                 f"    for (long r = {'1' if how == 'max' else '0'}; r < {count}; r++) {step}",
                 f"    o0[o] = {final};"]
        key = ("reduce", X, T, tuple(lines))
        name_ph = "@NAME@"
        fn = "gn_maxf" if dt == "float32" else "gn_max"

        full = not kshape  # one output: on the GPU a block of threads shares the loop
        idx = " + ".join(inner) or "0"
        combine = f"{fn}(part[t], part[t + s])" if how == "max" else "part[t] + part[t + s]"
        gpu = [
            "#ifdef GN_CPU",
            f"__global__ void {name_ph}_kernel(long n, long B, const {X}* p0, {T}* o0) {{",
            f"    GN_FOR_EACH(o, n) {name_ph}_at(o, B, p0, o0);", "}",
            "#else",
            f"/* one block of GN_THREADS threads: a strided partial {how} each, then a tree */",
            f"__global__ void {name_ph}_kernel(long n, long B, const {X}* p0, {T}* o0) {{",
            f"    __shared__ {T} part[GN_THREADS];",
            "    const int t = threadIdx.x;",
            f"    {T} acc = {('(' + T + ')p0[0]') if how == 'max' else '(' + T + ')0'};",
            f"    for (long r = t; r < {count}; r += blockDim.x) "
            + (f"acc = {fn}(acc, ({T})p0[{idx}]);" if how == "max" else f"acc += ({T})p0[{idx}];"),
            "    part[t] = acc;",
            "    __syncthreads();",
            "    for (int s = blockDim.x / 2; s > 0; s >>= 1) {",
            f"        if (t < s) part[t] = {combine};",
            "        __syncthreads();", "    }",
            f"    if (t == 0) o0[0] = {('part[0] / (' + T + ')' + count) if how == 'mean' else 'part[0]'};",
            "}", "#endif"] if full else [
            f"__global__ void {name_ph}_kernel(long n, long B, const {X}* p0, {T}* o0) {{",
            f"    GN_FOR_EACH(o, n) {name_ph}_at(o, B, p0, o0);", "}"]
        key = key + (full,)

        def make(name):
            return "\n".join([
                f"/* {name}: {how} of a {_ccomment(str(x.shape))} array over axes {list(axes)} */",
                f"GN_FN void {name}_at(long o, long B, const {X}* p0, {T}* o0) {{", *lines, "}",
                *[ln.replace(name_ph, name) for ln in gpu]])
        kname = self._define(key, f"{how}_{len(axes)}axes", "reduction", make)
        return [self.launch(kname, count_code(kshape) if kshape else "1", [self.ptr(x), self.c(out)])]

    def c_softmax(self, n: Node, out: str) -> list[str]:
        x = n.inputs[0]
        ax = shape_rules.norm_axes((n.attrs["axis"],), x.ndim, x.shape)[0]
        outer, A, inner = x.shape[:ax], x.shape[ax], x.shape[ax + 1:]
        T = _ctype(n.dtype)
        f = "f" if _dname(n.dtype) == "float32" else ""
        I = count_code(inner) if inner else "1"
        An = _dim(A)
        lines = [f"    const long base = (o / {I}) * {An} * {I} + o % {I};",
                 f"    {T} m = p0[base];",
                 f"    for (long a = 1; a < {An}; a++) m = gn_max{f}(m, p0[base + a * {I}]);",
                 f"    {T} s = 0;",
                 f"    for (long a = 0; a < {An}; a++) s += exp{f}(p0[base + a * {I}] - m);"]
        if n.op == "softmax":
            lines.append(f"    for (long a = 0; a < {An}; a++) o0[base + a * {I}] = "
                         f"exp{f}(p0[base + a * {I}] - m) / s;")
        else:
            lines.append(f"    const {T} ls = log{f}(s);")
            lines.append(f"    for (long a = 0; a < {An}; a++) o0[base + a * {I}] = "
                         f"(p0[base + a * {I}] - m) - ls;")
        key = ("softmax", T, tuple(lines))

        def make(name):
            return "\n".join([
                f"/* {name}: {n.op} of a {_ccomment(str(x.shape))} array along axis {ax}, one row "
                "per thread (shifted by the row's max) */",
                f"GN_FN void {name}_at(long o, long B, const {T}* p0, {T}* o0) {{", *lines, "}",
                f"__global__ void {name}_kernel(long n, long B, const {T}* p0, {T}* o0) {{",
                f"    GN_FOR_EACH(o, n) {name}_at(o, B, p0, o0);", "}"])
        kname = self._define(key, n.op, "softmax", make)
        return [self.launch(kname, count_code(outer + inner) if outer + inner else "1",
                            [self.ptr(x), self.c(out)])]

    def c_index_map(self, what: str, comment: str, n: Node, out: str, src_index: list[str],
                    srcs: list[Node]) -> list[str]:
        """A gather kernel: out[i] = src[index(i)] (index code over coordinates c0..)."""
        T = _ctype(n.dtype)
        coords = [f"    const long c{d} = {_coord('i', n.shape, d)};" for d in range(n.ndim)]
        lines = coords + src_index + [f"    o0[i] = v;"]
        params = [f"const {_ctype(s.dtype)}* p{k}" for k, s in enumerate(srcs)]
        key = ("map", tuple(params), T, tuple(lines))

        def make(name):
            args = ", ".join(f"p{k}" for k in range(len(srcs)))
            return "\n".join([
                f"/* {name}: {comment} */",
                f"GN_FN void {name}_at(long i, long B, {', '.join(params)}, {T}* o0) {{", *lines, "}",
                f"__global__ void {name}_kernel(long n, long B, {', '.join(params)}, {T}* o0) {{",
                f"    GN_FOR_EACH(i, n) {name}_at(i, B, {args}, o0);", "}"])
        kname = self._define(key, what, "layout", make)
        return [self.launch(kname, count_code(n.shape), [self.ptr(s) for s in srcs] + [self.c(out)])]

    def c_plain(self, n: Node, fixed) -> list[str]:
        op = n.op
        T = _ctype(n.dtype)
        guard = []
        if op == "batch_guard":
            x = n.inputs[0]
            ax = shape_rules.norm_axes((n.attrs["axis"],), x.ndim, x.shape)[0]
            if x.shape[ax] is None:
                guard = [f"if (B != {n.attrs['size']}) {{ fprintf(stderr, \"model: node %s was derived "
                         f"symbolically for a batch of {n.attrs['size']}, got %ld\\n\", "
                         f"{_cstring(n.name)}, B); exit(4); }}"]
        if fixed is None and op in ("reshape", "stop_gradient", "batch_guard") and \
                not self.value_of(n.inputs[0]).endswith(".T"):
            ident = self.c(self.value_of(n))
            self.ptr_alias.add(ident)
            return guard + [f"{ident} = ({T}*){self.ptr(n.inputs[0])};  // a view: the same memory"]
        if op == "batch_guard":
            op = "reshape"  # into a buffer of its own: a copy
        out = fixed if fixed is not None else self.value_of(n)
        o = self.c(out)
        if _is_ew(n) or op in ("reshape", "stop_gradient", "broadcast_to", "broadcast_like", "cast"):
            if _is_ew(n):
                syms = [fusion.leaf_symbol(k) for k in range(len(n.inputs))]
                expr = fusion.substitute(n.op, _attrs_key(n), syms)
                ins = list(n.inputs)
            else:
                syms, expr, ins = [fusion.leaf_symbol(0)], fusion.leaf_symbol(0), [n.inputs[0]]
                if op == "reshape":  # same elements in the same order: a copy
                    ins = [n.inputs[0]]
            specs = [self.leaf_spec(s, i) for s, i in zip(syms, ins)]
            if op == "reshape":
                specs = [(specs[0][0], n.shape, specs[0][2], specs[0][3])]
            used = [(sp_, i) for sp_, i in zip(specs, ins) if sp_[0] in expr.free_symbols]
            kname = self.ew_kernel(op, f"{op} ({_dname(n.dtype)})", n.shape,
                                   [(expr, _dname(n.dtype))], [u[0] for u in used])
            return [self.launch(kname, count_code(n.shape),
                                [self.ptr(i) for s, i in used if s[3] is None] + [o])]
        if op == "zeros_like":
            return [f"gn_zero({o}, sizeof({T}) * {count_code(n.shape)});"]
        if op == "one_hot":
            depth = n.attrs["depth"]
            lab = n.inputs[0]
            return self.c_index_map("one_hot", f"one_hot rows of depth {depth}", n, out, [
                f"    const long lab = (long)p0[i / {depth}];",
                f"    const {T} v = (lab == i % {depth}) ? ({T})1 : ({T})0;"], [lab])
        if op in ("sum", "mean", "max"):
            return self.c_reduce(n, out, op)
        if op == "count":
            x = n.inputs[0]
            axes = shape_rules.norm_axes(n.attrs["axis"], x.ndim, x.shape)
            return [f"gn_set_scalar({o}, ({T}){count_code(tuple(x.shape[a] for a in axes)) if axes else '1'});"]
        if op == "transpose":
            x = n.inputs[0]
            axes = n.attrs.get("axes") or tuple(reversed(range(x.ndim)))
            xs = _strides(x.shape)
            # out coordinate d is input axis axes[d]
            terms = [f"c{d} * {xs[a]}" for d, a in enumerate(axes) if x.shape[a] != 1]
            return self.c_index_map("transpose", f"transpose {list(axes)} of {_ccomment(str(x.shape))}",
                                    n, out, [f"    const {T} v = p0[{' + '.join(terms) or '0'}];"], [x])
        if op == "index":
            return self.c_index(n, out)
        if op == "scatter":
            return self.c_scatter(n, out)
        if op in ("pad", "windows", "windows_adjoint"):
            return self.c_window(n, out)
        if op in ("take", "take_adjoint"):
            return self.c_take(n, out)
        if op == "concat":
            return self.c_concat(n, out)
        if op in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight"):
            return self.c_conv(n, out)
        if op in ("softmax", "log_softmax"):
            return self.c_softmax(n, out)
        if op == "matmul":
            return self.c_matmul(n, out)
        raise GraphError(f"backend 'cuda' cannot print op {op!r} (node {n.name!r}, shape {n.shape})")

    def c_conv(self, n: Node, out: str) -> list[str]:
        """conv2d (NCHW x, OIHW w, as torch) and its two adjoints: one thread per output
        element, a loop over what it sums (zero padding read as zeros)."""
        (sh, sw), (ph, pw) = n.attrs["stride"], n.attrs["padding"]
        T = _ctype(n.dtype)
        if n.op == "conv2d":
            x, w = n.inputs
            _, C, H, W = x.shape
            _, _, KH, KW = w.shape
            lines = [f"    {T} v = 0;",
                     f"    for (long c = 0; c < {C}; c++)",
                     f"        for (long ki = 0; ki < {KH}; ki++) {{",
                     f"            const long h = c2 * {sh} - {ph} + ki;",
                     f"            if (h < 0 || h >= {H}) continue;",
                     f"            for (long kj = 0; kj < {KW}; kj++) {{",
                     f"                const long x = c3 * {sw} - {pw} + kj;",
                     f"                if (x < 0 || x >= {W}) continue;",
                     f"                v += p0[((c0 * {C} + c) * {H} + h) * {W} + x] * "
                     f"p1[((c1 * {C} + c) * {KH} + ki) * {KW} + kj];",
                     "            }", "        }"]
            comment = f"conv2d, stride ({sh}, {sw}), padding ({ph}, {pw}), kernel {KH}x{KW}"
            srcs = [x, w]
        elif n.op == "conv2d_grad_input":
            g, w, like = n.inputs
            _, C, H, W = like.shape
            O, _, KH, KW = w.shape
            OH, OW = g.shape[2], g.shape[3]
            lines = [f"    {T} v = 0;",
                     f"    for (long o = 0; o < {O}; o++)",
                     f"        for (long ki = 0; ki < {KH}; ki++) {{",
                     f"            const long yy = c2 + {ph} - ki;",
                     f"            if (yy < 0 || yy % {sh} || yy / {sh} >= {OH}) continue;",
                     f"            for (long kj = 0; kj < {KW}; kj++) {{",
                     f"                const long xx = c3 + {pw} - kj;",
                     f"                if (xx < 0 || xx % {sw} || xx / {sw} >= {OW}) continue;",
                     f"                v += p0[((c0 * {O} + o) * {OH} + yy / {sh}) * {OW} + xx / {sw}] * "
                     f"p1[((o * {C} + c1) * {KH} + ki) * {KW} + kj];",
                     "            }", "        }"]
            comment = f"conv2d_grad_input (the adjoint of conv2d in x), stride ({sh}, {sw}), padding ({ph}, {pw})"
            srcs = [g, w]
        else:
            x, g = n.inputs
            _, C, H, W = x.shape
            O, _, KH, KW = n.shape
            OH, OW = g.shape[2], g.shape[3]
            lines = [f"    {T} v = 0;",
                     "    for (long b = 0; b < B; b++)",
                     f"        for (long y = 0; y < {OH}; y++) {{",
                     f"            const long h = y * {sh} - {ph} + c2;",
                     f"            if (h < 0 || h >= {H}) continue;",
                     f"            for (long xo = 0; xo < {OW}; xo++) {{",
                     f"                const long x = xo * {sw} - {pw} + c3;",
                     f"                if (x < 0 || x >= {W}) continue;",
                     f"                v += p0[((b * {C} + c1) * {H} + h) * {W} + x] * "
                     f"p1[((b * {O} + c0) * {OH} + y) * {OW} + xo];",
                     "            }", "        }"]
            if x.shape[0] is not None:
                lines[1] = f"    for (long b = 0; b < {x.shape[0]}; b++)"
            comment = f"conv2d_grad_weight (the adjoint of conv2d in w), stride ({sh}, {sw}), padding ({ph}, {pw})"
            srcs = [x, g]
        if None in n.shape[1:] or any(d is None for s in srcs for d in s.shape[1:]):
            raise GraphError(f"backend 'cuda' cannot print op {n.op!r} (node {n.name!r}): "
                             "only the batch axis may be unknown")
        return self.c_index_map(n.op, comment, n, out, lines, srcs)

    def c_index(self, n: Node, out: str) -> list[str]:
        x = n.inputs[0]
        T = _ctype(n.dtype)
        xs = _strides(x.shape)
        terms, od, xd = [], 0, 0
        for e in n.attrs["index"]:
            if e[0] == "n":
                od += 1
                continue
            size = x.shape[xd]
            if e[0] == "i":
                i = e[1] + (size if e[1] < 0 and size is not None else 0)
                if e[1] < 0 and size is None:
                    terms.append(f"(B + ({e[1]})) * {xs[xd]}")
                else:
                    terms.append(f"{i} * {xs[xd]}")
                xd += 1
                continue
            _, start, stop, step = e
            if size is None:
                if (start, stop, step) == (None, None, -1):  # the batch reversed
                    terms.append(f"((B - 1) - c{od}) * {xs[xd]}")
                    od += 1
                    xd += 1
                    continue
                if (start, step) not in ((None, None), (0, None), (None, 1), (0, 1)):
                    raise GraphError(f"backend 'cuda' cannot print op 'index' (node {n.name!r}): "
                                     "a strided or offset slice of the batch axis")
                st, stp = 0, 1
            else:
                st, _, stp = slice(start, stop, step).indices(size)
            terms.append(f"({st} + c{od} * ({stp})) * {xs[xd]}")
            od += 1
            xd += 1
        while xd < x.ndim:
            terms.append(f"c{od} * {xs[xd]}")
            od += 1
            xd += 1
        return self.c_index_map("index", f"slice of {_ccomment(str(x.shape))}", n, out,
                                [f"    const {T} v = p0[{' + '.join(terms) or '0'}];"], [x])

    def c_window(self, n: Node, out: str) -> list[str]:
        """pad (a constant border), windows (sliding windows over the trailing k axes,
        strided and dilated: a gather) and windows_adjoint (col2im: each element sums
        the window entries that read it)."""
        T = _ctype(n.dtype)
        x = n.inputs[0]
        if n.op == "pad":
            pads = n.attrs["pads"]
            xs = _strides(x.shape)
            conds, terms = [], []
            for d in range(x.ndim):
                b = pads[d]
                cd = f"(c{d} - {b})" if b else f"c{d}"
                if x.shape[d] is not None and (b or pads[d + x.ndim]):
                    conds.append(f"{cd} < 0 || {cd} >= {x.shape[d]}")
                if x.shape[d] != 1:
                    terms.append(f"{cd} * {xs[d]}")
            v = n.attrs["value"]
            lit = cuda_c.literal(v, _dname(n.dtype)) if _dname(n.dtype) in FLOATS else str(int(v))
            lines = [f"    {T} v = {lit};",
                     f"    if (!({' || '.join(conds) or 'false'})) v = p0[{' + '.join(terms) or '0'}];"]
            return self.c_index_map("pad", f"pad {list(pads)} with {_ccomment(repr(v))}", n, out,
                                    lines, [x])
        kernel, stride, dil = n.attrs["kernel"], n.attrs["stride"], n.attrs["dilation"]
        k = len(kernel)
        if n.op == "windows":
            lead = x.ndim - k
            xs = _strides(x.shape)
            terms = [f"c{d} * {xs[d]}" for d in range(lead) if x.shape[d] != 1]
            for j in range(k):
                terms.append(f"(c{lead + j} * {stride[j]} + c{lead + k + j} * {dil[j]}) * {xs[lead + j]}")
            return self.c_index_map("windows", f"sliding windows {list(kernel)}, stride {list(stride)}, "
                                    f"dilation {list(dil)}", n, out,
                                    [f"    const {T} v = p0[{' + '.join(terms)}];"], [x])
        g, like = n.inputs[0], n.inputs[1]
        lead = like.ndim - k
        gs = _strides(g.shape)
        osz = g.shape[lead:lead + k]
        lines = [f"    {T} v = 0;"]
        ind = "    "
        for j in range(k):
            lines += [f"{ind}for (long k{j} = 0; k{j} < {kernel[j]}; k{j}++) {{",
                      f"{ind}    const long q{j} = c{lead + j} - k{j} * {dil[j]};",
                      f"{ind}    if (q{j} < 0 || q{j} % {stride[j]} || q{j} / {stride[j]} >= {osz[j]}) continue;"]
            ind += "    "
        terms = [f"c{d} * {gs[d]}" for d in range(lead) if g.shape[d] != 1]
        terms += [f"(q{j} / {stride[j]}) * {gs[lead + j]}" for j in range(k)]
        terms += [f"k{j} * {gs[lead + k + j]}" for j in range(k)]
        lines.append(f"{ind}v += p0[{' + '.join(terms)}];")
        for j in reversed(range(k)):
            ind = ind[:-4]
            lines.append(f"{ind}}}")
        return self.c_index_map("windows_adjoint", f"col2im of windows {list(kernel)}, stride {list(stride)}, "
                                f"dilation {list(dil)}", n, out, lines, [g])

    def c_take(self, n: Node, out: str) -> list[str]:
        """take (numpy.take along an axis, indices fed at run time: negative ones count
        from the end, one out of range reads as 0 instead of raising) and take_adjoint
        (each element sums the cotangent entries whose index selects it)."""
        T = _ctype(n.dtype)
        if n.op == "take":
            x, idx = n.inputs
        else:
            g, idx, x = n.inputs
        ax = shape_rules.norm_axes((n.attrs["axis"],), x.ndim, x.shape)[0]
        size = x.shape[ax]
        if size is None:
            raise GraphError(f"backend 'cuda' cannot print op {n.op!r} (node {n.name!r}): "
                             "indices along the batch axis")
        k = idx.ndim
        if n.op == "take":
            xs = _strides(x.shape)
            ist = _strides(idx.shape)
            iterm = " + ".join(f"c{ax + j} * {ist[j]}" for j in range(k) if idx.shape[j] != 1) or "0"
            terms = [f"c{d} * {xs[d]}" for d in range(ax) if x.shape[d] != 1]
            terms.append(f"j * {xs[ax]}")
            terms += [f"c{d + k - 1} * {xs[d]}" for d in range(ax + 1, x.ndim) if x.shape[d] != 1]
            lines = [f"    long j = (long)p1[{iterm}];",
                     f"    if (j < 0) j += {size};",
                     f"    const {T} v = (j >= 0 && j < {size}) ? p0[{' + '.join(terms)}] : ({T})0;"]
            return self.c_index_map("take", f"take along axis {ax} (indices fed at run time)", n, out,
                                    lines, [x, idx])
        gs = _strides(g.shape)
        M = count_code(idx.shape) if idx.shape else "1"
        lines = [f"    {T} v = 0;",
                 f"    for (long m = 0; m < {M}; m++) {{",
                 f"        long j = (long)p1[m];",
                 f"        if (j < 0) j += {size};",
                 f"        if (j != c{ax}) continue;"]
        mco = [_coord("m", idx.shape, j) for j in range(k)]
        terms = [f"c{d} * {gs[d]}" for d in range(ax) if g.shape[d] != 1]
        terms += [f"{mco[j]} * {gs[ax + j]}" for j in range(k) if g.shape[ax + j] != 1]
        terms += [f"c{d} * {gs[d + k - 1]}" for d in range(ax + 1, x.ndim) if g.shape[d + k - 1] != 1]
        lines += [f"        v += p0[{' + '.join(terms) or '0'}];", "    }"]
        return self.c_index_map("take_adjoint", f"the adjoint of take along axis {ax}", n, out,
                                lines, [g, idx])

    def c_scatter(self, n: Node, out: str) -> list[str]:
        """Zeros shaped like the 2nd input with the 1st (broadcast to the index result)
        written at [index]: each output element finds whether the index selects it."""
        g, like = n.inputs
        T = _ctype(n.dtype)
        conds, rcoords, rshape, xd = [], [], [], 0
        for e in n.attrs["index"]:
            if e[0] == "n":
                rcoords.append("0")
                rshape.append(1)
                continue
            size = like.shape[xd]
            if e[0] == "i":
                k = e[1] + (size if e[1] < 0 and size is not None else 0)
                conds.append(f"c{xd} == {f'B + ({e[1]})' if e[1] < 0 and size is None else k}")
            else:
                _, start, stop, step = e
                if size is None:
                    rev = (start, stop, step) == (None, None, -1)  # the batch reversed
                    if not rev and ((start, step) not in ((None, None), (0, None), (None, 1), (0, 1))
                                    or stop is not None):
                        raise GraphError(f"backend 'cuda' cannot print op 'scatter' (node {n.name!r}): "
                                         "a partial slice of the batch axis")
                    rcoords.append(f"((B - 1) - c{xd})" if rev else f"c{xd}")
                    rshape.append(None)
                else:
                    st, sto, stp = slice(start, stop, step).indices(size)
                    ln = len(range(st, sto, stp))
                    conds.append(f"(c{xd} - ({st})) % ({stp}) == 0 && (c{xd} - ({st})) / ({stp}) >= 0 && "
                                 f"(c{xd} - ({st})) / ({stp}) < {ln}")
                    rcoords.append(f"((c{xd} - ({st})) / ({stp}))")
                    rshape.append(ln)
            xd += 1
        while xd < like.ndim:
            rcoords.append(f"c{xd}")
            rshape.append(like.shape[xd])
            xd += 1
        off = len(rshape) - g.ndim
        gs = _strides(g.shape)
        terms = [f"{rcoords[j + off]} * {gs[j]}" for j in range(g.ndim) if g.shape[j] != 1]
        lines = [f"    {T} v = 0;",
                 f"    if ({' && '.join('(' + c + ')' for c in conds) or 'true'}) v = ({T})p0[{' + '.join(terms) or '0'}];"]
        return self.c_index_map("scatter", f"scatter into {_ccomment(str(like.shape))} (the adjoint of a slice)",
                                n, out, lines, [g])

    def c_concat(self, n: Node, out: str) -> list[str]:
        ax = shape_rules.norm_axes((n.attrs["axis"],), n.ndim, n.shape)[0]
        T = _ctype(n.dtype)
        lines, off = [], 0
        for k, x in enumerate(n.inputs):
            size = x.shape[ax]
            xs = _strides(x.shape)
            terms = [(f"(c{d} - {off})" if d == ax else f"c{d}") + f" * {xs[d]}"
                     for d in range(n.ndim) if x.shape[d] != 1]
            cond = f"c{ax} < {off + size}" if k < len(n.inputs) - 1 else "true"
            lines.append(f"    if ({cond}) {{ o0[i] = ({T})p{k}[{' + '.join(terms) or '0'}]; return; }}")
            off += size
        lines.append(f"    const {T} v = 0; (void)v;")
        lines = [ln for ln in lines]
        return self.c_index_map("concat", f"concat along axis {ax}", n, out, lines[:-1] +
                                [f"    {T} v = ({T})0;"], list(n.inputs))[:]

    # -- update groups (update_groups.py calls this per component) -------------------------------
    def _emit_component(self, m, slot_names, total, dtype, flat_label=None, scratch=None):
        """One kernel for a component of the update region (a whole flat group through
        its first member): every leaf read once, every new value written once. A
        parameter another component still reads is written to a buffer of its own and
        copied in after every reader ran."""
        nodes, leaves = m["nodes"], m["leaves"]
        roots, root_pos, expr_of, reads, writes = self._component_exprs(m)
        local = {id(n): k for k, n in enumerate(nodes)}
        full: dict[int, sp.Expr] = {}
        for r in roots:
            e = expr_of[id(r)]
            sub = {sp.Symbol(f"R{local[id(q)]}", real=True): full[id(q)] for q in roots
                   if id(q) in full and sp.Symbol(f"R{local[id(q)]}", real=True) in e.free_symbols}
            full[id(r)] = e.xreplace(sub) if sub else e
        shape = (total,) if total is not None else m["shape"]
        used = sorted({int(s.name[1:]) for r in roots for s in full[id(r)].free_symbols})
        specs, args = [], []
        for k in used:
            sym = fusion.leaf_symbol(k)
            if total is not None and k in slot_names:
                specs.append((sym, shape, dtype, None))
                args.append(("name", slot_names[k]))
            else:
                spec = self.leaf_spec(sym, leaves[k])
                specs.append(spec)
                if spec[3] is None:
                    args.append(("node", leaves[k]))
        outputs, notes = [], []
        for r in roots:
            for p in writes.get(id(r), []):
                target = self._param_flat(p, m, slot_names, total) if total is not None \
                    else self.namer(p)
                if id(p) in self.foreign_read:  # written after every reader: a buffer first
                    dest = self.claim(f"_upd_{self.namer(p)}")
                    self.slots[self.c(dest)] = (shape, dtype, f"new value of {p.name!r}")
                    self.c_deferred.append(f"gn_copy({self.c(target)}, {self.c(dest)}, "
                                           f"sizeof({_ctype(dtype)}) * {count_code(shape)});  "
                                           f"// update '{_ccomment(p.name)}'")
                else:
                    dest = target
                outputs.append((full[id(r)], dtype))
                args.append(("name", dest))
            ps = ", ".join(f"'{_ccomment(p.name)}'" for p in writes.get(id(r), []))
            notes.append(f"'{_ccomment(r.name)}'" + (f" -> {ps}" if ps else ""))
        if not outputs:
            return
        ops = "_".join(dict.fromkeys(n.op for n in nodes))
        kname = self.ew_kernel(f"update_{ops}", f"optimizer update: {_ccomment(' '.join(dict.fromkeys(n.op for n in nodes)))}",
                               shape, outputs, specs)
        what = f"group {flat_label} ({total} elements)" if total is not None else \
            f"'{_ccomment(roots[-1].name)}'"
        self.c_tail.append(f"// {what}: {'; '.join(notes)}: one kernel, in place")
        self.c_tail.append((kname, count_code(shape), args))

    # -- the program ---------------------------------------------------------------------------
    def source(self) -> tuple[str, dict]:
        self.classify()
        args = [n for n in self.order if self.is_arg(n)]
        for a in args:
            self.namer(a)
        self.groups = self._groups()
        statements, _texts = self._body()
        keep = {id(o) for o in self.fn.outputs} | self.region_leaves | {
            id(self.source_of(v)) for _, v in self.fn.updates if id(v) not in self.region}
        plan = memory.plan([s for s, _ in statements], base_of=self.base_of, keep=keep)
        self.plan = plan
        for st, n, kind in self._entries:
            if kind[0] == "plain" and kind[1] is not None:
                plan.buffer[id(n)] = kind[1]
        # flat buffers and their views (the base printer's module lines)
        for line in self.globals_:
            if line.startswith("#") or not line.strip():
                continue
            mm = re.match(r"^(\w+) = np\.zeros\((\d+), dtype=np\.(\w+)\)$", line)
            if mm:
                self.slots[self.c(mm[1])] = ((int(mm[2]),), mm[3], "flat buffer")
                continue
            mm = re.match(r"^(\w+) = (\w+)\[(\d+):(\d+)\]\.reshape\(.*\)(  #.*)?$", line)
            if mm:
                self.views[self.c(mm[1])] = (self.c(mm[2]), int(mm[3]))
                continue
            raise GraphError(f"backend 'cuda': internal: unexpected plan line {line!r}")
        for p, v in self.flat_params:
            self.views[self.c(self.namer(p))] = (self.c(v), 0)
        body: list[str] = []
        for st, n, kind in self._entries:
            body.append(self.cnote(n))
            if kind[0] == "ew":
                out = self.value_of(n)
                body += self.c_group(n, out)
            elif kind[0] == "matmul":
                body += self.c_matmul(n, self.value_of(n))
            elif kind[0] == "reduce":
                body += self.c_reduce(n, self.value_of(n), n.op)
            elif kind[0] == "reduce_all":
                body += self.c_reduce(n, self.value_of(n), n.op)
            elif kind[0] == "softmax":
                body += self.c_softmax(n, self.value_of(n))
            elif kind[0] == "plain":
                body += self.c_plain(n, kind[1])
            else:
                raise GraphError(f"backend 'cuda': internal: statement kind {kind[0]!r} "
                                 f"(node {n.name!r})")
        counts = []  # values that depend on the batch size only: set first
        for n in self.batch_consts:
            x = n.inputs[0]
            axes = shape_rules.norm_axes(n.attrs["axis"], x.ndim, x.shape)
            counts.append(self.cnote(n))
            counts.append(f"gn_set_scalar({self.ptr(n)}, ({_ctype(n.dtype)})"
                          f"{count_code(tuple(x.shape[a] for a in axes)) if axes else '1'});")
        self.alloc_counts = counts
        # the update: snapshots, flat-buffer copies, group kernels, plain updates, deferred
        tail: list[str] = []
        for text, v in self._snapshots():
            snap = self.snap[id(v)]
            src = self.source_of(v)
            self.snap.pop(id(v))
            srcp = self.ptr(v)
            self.snap[id(v)] = snap
            self.slots[self.c(snap)] = (v.shape, _dname(v.dtype), f"{v.name!r} before the updates")
            tail.append(f"gn_copy({self.c(snap)}, {srcp}, sizeof({_ctype(v.dtype)}) * "
                        f"{count_code(v.shape)});  // '{_ccomment(v.name)}' before the parameter updates")
        for text, node in self.tail:  # copies into flat buffers (update_groups.py)
            mm = re.match(r"^np\.copyto\((\w+), \{(\d+)\}\)", text)
            if not mm:
                raise GraphError(f"backend 'cuda': internal: unexpected update line {text!r}")
            src = self._by_id[int(mm[2])]
            tail.append(f"gn_copy({self.c(mm[1])}, {self.ptr(src)}, sizeof({_ctype(src.dtype)}) * "
                        f"{count_code(src.shape)});  // into its flat buffer")
        for item in self.c_tail:
            if isinstance(item, str):
                tail.append(item)
                continue
            kname, count, kargs = item
            cargs = [self.c(a) if kind == "name" else self.ptr(a) for kind, a in kargs]
            tail.append(self.launch(kname, count, cargs))
        for p, v in self.fn.updates:
            if id(v) not in self.region:
                tail.append(f"gn_copy({self.c(self.namer(p))}, {self.ptr(v)}, sizeof({_ctype(p.dtype)}) * "
                            f"{count_code(p.shape)});  // update '{_ccomment(p.name)}' in place")
        tail += self.c_deferred
        outs = [self.ptr(o) for o in self.fn.outputs]
        return self._program(args, body, tail, outs), {}

    def _program(self, args, body, tail, outs) -> str:
        params = [a for a in args if a.op == "param"]
        inputs = [a for a in args if a.op != "param"]
        outputs = list(self.fn.outputs)
        for a in params + inputs:
            ident = self.c(self.namer(a))
            if ident not in self.views:
                self.slots[ident] = (a.shape, _dname(a.dtype), f"{a.op} {a.name!r}")
        for name, buf in self.plan.buffers.items():
            self.slots[self.c(name)] = (buf[0], buf[1], "planned buffer (memory.py)")
        for ident, n in self.loose.items():
            c = self.c(ident)
            if c not in self.ptr_alias and c not in self.slots and c not in self.views:
                self.slots[c] = (n.shape, _dname(n.dtype), f"{n.op} {n.name!r}")
        for ident, n in self.c_consts.items():
            self.slots[self.c(ident)] = (n.shape, _dname(n.value.dtype if n.value.dtype != n.dtype
                                                          else n.dtype), f"constant {n.name!r}")
        lrs = [k for k, p in enumerate(params) if re.match(r"^optim(_\d+)?/lr$", p.name)
               and p.shape == () and p.dtype.kind == "f"]
        hashes = {k: declaration_hash(k, nodes) for k, nodes in
                  (("params", params), ("data", inputs), ("outputs", outputs))}
        L = []
        L += [f"/* {_ccomment(self.name)}: graphnn program for graph {_ccomment(self.fn.graph.name)}, "
              f"generated by graphnn {__version__} (backend 'cuda').",
              " *",
              " * One file, two builds (see graphnn/compile/targets/cuda.py):",
              " *   nvcc -O2 -arch=sm_90 model.cu -lcublas -o model      (GPU: kernels, cuBLAS)",
              " *   g++ -O2 -DGN_CPU -x c++ model.cu -lm -o model_cpu    (CPU: host loops, reference GEMM)",
              " * Usage:",
              " *   ./model train --data D.bin --steps N [--lr X] [--params P.bin] --out P2.bin",
              " *   ./model infer --data X.bin [--params P.bin] --out Y.bin",
              " *   ./model run   --data X.bin [--params P.bin] --out Y.bin [--params-out P2.bin]",
              f" * Parameters ({len(params)}): " + _ccomment(", ".join(p.name for p in params))[:300],
              f" * Inputs ({len(inputs)}): " + _ccomment(", ".join(p.name for p in inputs))[:300],
              f" * Outputs ({len(outputs)}): " + _ccomment(", ".join(p.name for p in outputs))[:300],
              f" * Updates: {len(self.fn.updates)} parameters"
              + (f" in {len(self.groups)} update group(s)" if self.groups else ""),
              " * Files: graphnn tensor files (graphnn/cudafile.py): a 48-byte header, then raw tensors.",
              " */"]
        L.append(RUNTIME)
        for d in sorted({self.dtype} | {"float64"}):
            L.append(cuda_c.PREAMBLE[d].rstrip("\n"))
        L += ["", "/* ---- storage: pointers into one device allocation (gn_alloc) ---- */"]
        idents = list(self.slots) + [v for v in self.views if v not in self.slots] + \
            sorted(self.ptr_alias - set(self.slots) - set(self.views))
        type_of = {}
        for ident, (shape, dtype, note) in self.slots.items():
            type_of[ident] = dtype
        for ident in self.views:
            root = ident
            while root in self.views:
                root = self.views[root][0]
            type_of[ident] = self.slots[root][1]
        alias_type = {}
        for line in body:
            mm = re.match(r"^(g\w*) = \(([\w ]+)\*\)", line)
            if mm:
                alias_type[mm[1]] = mm[2]
        for ident in idents:
            if ident in type_of:
                shape, note = (self.slots[ident][0], self.slots[ident][2]) if ident in self.slots \
                    else (None, f"view of {self.views[ident][0]} at {self.views[ident][1]}")
                L.append(f"static {_ctype(type_of[ident])}* {ident};  // "
                         + (f"{_ccomment(str(shape))} " if shape is not None else "") + _ccomment(note))
            else:
                L.append(f"static {alias_type.get(ident, 'void')}* {ident};  // a view (reshape)")
        # constants
        L += ["", "/* ---- constants (copied into the allocation by gn_alloc) ---- */"]
        for ident, n in self.c_consts.items():
            vals = np.asarray(n.value).astype(n.dtype).ravel()
            T = _ctype(n.dtype)
            if vals.dtype.kind == "f":
                items = [cuda_c.literal(float(v), _dname(n.dtype)) for v in vals]
            elif vals.dtype.kind == "b":
                items = ["true" if v else "false" for v in vals]
            else:
                items = [str(int(v)) for v in vals]
            L.append(f"static const {T} {self.c(ident)}_host[{max(1, len(items))}] = {{"
                     f"{', '.join(items) or '0'}}};  // {_ccomment(n.name)}")
        L += ["", "/* ---- kernels, one per fused group / reduction / update group ---- */"]
        L += [k + "\n" for k in self.kernel_defs]
        # allocation
        L += ["/* ---- one allocation for every buffer, sized for batch size B ---- */",
              "static char* gn_arena = NULL;", "static size_t gn_arena_bytes = 0;", "",
              "static int gn_alloc(long B) {", "    size_t off = 0;"]
        for ident in self.slots:
            shape, dtype, _ = self.slots[ident]
            L.append(f"    const size_t off_{ident} = off; off = gn_align(off + sizeof({_ctype(dtype)}) * "
                     f"(size_t){count_code(shape)});")
        L += ["    if (gn_arena) gn_free(gn_arena);",
              "    gn_arena_bytes = off;",
              "    gn_arena = (char*)gn_malloc(off ? off : 1);",
              "    if (!gn_arena) return 0;"]
        for ident in self.slots:
            L.append(f"    {ident} = ({_ctype(self.slots[ident][1])}*)(gn_arena + off_{ident});")
        for ident, (base, off) in self.views.items():
            L.append(f"    {ident} = {base} + {off};")
        for ident, n in self.c_consts.items():
            L.append(f"    gn_to_device({self.c(ident)}, {self.c(ident)}_host, sizeof({self.c(ident)}_host));")
        L += ["    " + ln for ln in getattr(self, "alloc_counts", [])]
        for dtype in self.ones:
            ident = f"g_ones_{dtype}"
            L.append(f"    gn_fill_ones({ident}, {count_code(self.slots[ident][0])});")
        L += ["    return 1;", "}", ""]
        # tensor tables
        def table(name, nodes):
            rows = []
            for n in nodes:
                dims = ", ".join("-1" if d is None else str(d) for d in n.shape) or "0"
                rows.append(f"    {{{_cstring(n.name)}, GN_{_dname(n.dtype).upper()}, {len(n.shape)}, "
                            f"{{{dims}}}, (void**)&{self.ptr(n) if n.op != 'param' and n.op != 'input' else self.c(self.namer(n))}}},")
            return [f"static gn_tensor {name}[] = {{"] + (rows or ["    {\"\", 0, 0, {0}, NULL},"]) + ["};"]
        L += table("GN_PARAMS", params) + table("GN_INPUTS", inputs)
        L += [f"static gn_tensor GN_OUTPUTS[] = {{"]
        for n, o in zip(outputs, outs):
            dims = ", ".join("-1" if d is None else str(d) for d in n.shape) or "0"
            L.append(f"    {{{_cstring(n.name)}, GN_{_dname(n.dtype).upper()}, {len(n.shape)}, {{{dims}}}, "
                     f"(void**)&{o}}},")
        if not outputs:
            L.append("    {\"\", 0, 0, {0}, NULL},")
        L += ["};",
              f"static const int GN_N_PARAMS = {len(params)}, GN_N_INPUTS = {len(inputs)}, "
              f"GN_N_OUTPUTS = {len(outputs)};",
              f"static const int GN_DTYPE = GN_{self.dtype.upper()};",
              f"static const char* GN_HASH_PARAMS = \"{hashes['params']}\";",
              f"static const char* GN_HASH_DATA = \"{hashes['data']}\";",
              f"static const char* GN_HASH_OUTPUTS = \"{hashes['outputs']}\";",
              f"static const int GN_LR_PARAM = {lrs[0] if lrs else -1};  // optim/lr, set by --lr",
              f"static const int GN_HAS_UPDATES = {1 if self.fn.updates else 0};",
              f"static const char* GN_PROGRAM = {_cstring(self.name)};", ""]
        # the step
        L += ["/* ---- one step: the forward/backward program, then (update != 0) the updates ---- */",
              "static void gn_step(long B, int update) {", "    (void)B;"]
        L += ["    " + ln for ln in body]
        L += ["    if (!update) return;"] + ["    " + ln for ln in tail] + ["}", ""]
        L.append(MAIN)
        return "\n".join(L) + "\n"


RUNTIME = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>

#ifdef GN_CPU
/* ---- CPU build: kernels are host loops, gn_gemm a reference GEMM ---- */
#define __global__ static
#define GN_FOR_EACH(i, n) for (long i = 0; i < (n); i++)
#define GN_LAUNCH(kernel, n, ...) kernel((n), __VA_ARGS__)
static void* gn_malloc(size_t bytes) { return calloc(1, bytes); }
static void gn_free(void* p) { free(p); }
static void gn_to_device(void* dst, const void* src, size_t bytes) { if (bytes) memcpy(dst, src, bytes); }
static void gn_to_host(void* dst, const void* src, size_t bytes) { if (bytes) memcpy(dst, src, bytes); }
static void gn_copy(void* dst, const void* src, size_t bytes) { if (bytes) memmove(dst, src, bytes); }
static void gn_zero(void* dst, size_t bytes) { if (bytes) memset(dst, 0, bytes); }
static void gn_sync(void) {}
static int gn_device_init(void) { return 1; }
/* C = op(A) op(B), column-major, as cublas<t>gemmStridedBatched with alpha 1, beta 0:
   op(A) is M x K (A is lda-strided, transposed when ta), op(B) is K x N, C is M x N. */
template <typename T>
static void gn_gemm(bool ta, bool tb, long M, long N, long K, const T* A, long lda, long sA,
                    const T* Bm, long ldb, long sB, T* C, long ldc, long sC, long batch) {
    for (long b = 0; b < batch; b++) {
        const T* a = A + b * sA; const T* bb = Bm + b * sB; T* c = C + b * sC;
        for (long j = 0; j < N; j++)
            for (long i = 0; i < M; i++) {
                T acc = 0;
                for (long l = 0; l < K; l++)
                    acc += (ta ? a[l + i * lda] : a[i + l * lda]) * (tb ? bb[j + l * ldb] : bb[l + j * ldb]);
                c[i + j * ldc] = acc;
            }
    }
}
#else
/* ---- GPU build: CUDA kernels, cuBLAS ---- */
#include <cuda_runtime.h>
#include <cublas_v2.h>
#define GN_FOR_EACH(i, n) for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); \
                                  i += (long)gridDim.x * blockDim.x)
static cublasHandle_t gn_cublas;
static void gn_fail(const char* what, const char* detail) {
    fprintf(stderr, "model: CUDA error in %s: %s\n", what, detail);
    exit(5);
}
#define GN_CUDA(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) gn_fail(#call, cudaGetErrorString(e_)); } while (0)
#define GN_CUBLAS(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) gn_fail(#call, "cuBLAS status"); } while (0)
#define GN_THREADS 256
static int gn_blocks(long n) { long b = (n + GN_THREADS - 1) / GN_THREADS; return (int)(b < 65535 ? (b > 0 ? b : 1) : 65535); }
#define GN_LAUNCH(kernel, n, ...) do { if ((n) > 0) { kernel<<<gn_blocks(n), GN_THREADS>>>((n), __VA_ARGS__); \
                                        GN_CUDA(cudaGetLastError()); } } while (0)
static void* gn_malloc(size_t bytes) { void* p = NULL; if (cudaMalloc(&p, bytes) != cudaSuccess) return NULL;
                                       GN_CUDA(cudaMemset(p, 0, bytes)); return p; }
static void gn_free(void* p) { cudaFree(p); }
static void gn_to_device(void* dst, const void* src, size_t bytes) { if (bytes) GN_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice)); }
static void gn_to_host(void* dst, const void* src, size_t bytes) { if (bytes) GN_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost)); }
static void gn_copy(void* dst, const void* src, size_t bytes) { if (bytes) GN_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); }
static void gn_zero(void* dst, size_t bytes) { if (bytes) GN_CUDA(cudaMemsetAsync(dst, 0, bytes)); }
static void gn_sync(void) { GN_CUDA(cudaDeviceSynchronize()); }
static int gn_device_init(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return 0;
    if (cublasCreate(&gn_cublas) != CUBLAS_STATUS_SUCCESS) return 0;
    return 1;
}
/* row-major data, column-major cuBLAS: the caller passes B^T A^T (see the generator) */
static void gn_gemm(bool ta, bool tb, long M, long N, long K, const double* A, long lda, long sA,
                    const double* Bm, long ldb, long sB, double* C, long ldc, long sC, long batch) {
    const double one = 1.0, zero = 0.0;
    GN_CUBLAS(cublasDgemmStridedBatched(gn_cublas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
        (int)M, (int)N, (int)K, &one, A, (int)lda, sA, Bm, (int)ldb, sB, &zero, C, (int)ldc, sC, (int)batch));
}
static void gn_gemm(bool ta, bool tb, long M, long N, long K, const float* A, long lda, long sA,
                    const float* Bm, long ldb, long sB, float* C, long ldc, long sC, long batch) {
    const float one = 1.0f, zero = 0.0f;
    GN_CUBLAS(cublasSgemmStridedBatched(gn_cublas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
        (int)M, (int)N, (int)K, &one, A, (int)lda, sA, Bm, (int)ldb, sB, &zero, C, (int)ldc, sC, (int)batch));
}
#endif

template <typename T>
static void gn_set_scalar(T* dst, T value) { gn_to_device(dst, &value, sizeof(T)); }
template <typename T>
static void gn_fill_ones(T* dst, long n) {  /* once per allocation: through the host */
    T* host = (T*)malloc(sizeof(T) * (n > 0 ? n : 1));
    if (!host) { fprintf(stderr, "model: out of host memory\n"); exit(5); }
    for (long k = 0; k < n; k++) host[k] = (T)1;
    gn_to_device(dst, host, sizeof(T) * n);
    free(host);
}
static size_t gn_align(size_t off) { return (off + 255) & ~(size_t)255; }

/* tensor files (graphnn/cudafile.py): the header, then raw tensors in declared order */
enum { GN_FLOAT32 = 1, GN_FLOAT64 = 2, GN_INT64 = 3, GN_INT32 = 4, GN_BOOL = 5 };
typedef struct { const char* name; int dtype; int ndim; long dims[8]; void** ptr; } gn_tensor;
static size_t gn_itemsize(int d) { return d == GN_FLOAT64 || d == GN_INT64 ? 8 : d == GN_BOOL ? 1 : 4; }
"""

MAIN = r"""/* ---- files ---- */
#define GN_MAGIC "GNTENSOR"
#define GN_VERSION 1u
#define GN_HEADER 48
#define GN_MAX_BATCH (1L << 31)
enum { GN_KIND_PARAMS = 1, GN_KIND_DATA = 2, GN_KIND_OUTPUTS = 3 };

static uint32_t gn_u32(const unsigned char* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }
static uint64_t gn_u64(const unsigned char* p) { return gn_u32(p) | ((uint64_t)gn_u32(p + 4) << 32); }
static void gn_put32(unsigned char* p, uint32_t v) { for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k)); }
static void gn_put64(unsigned char* p, uint64_t v) { for (int k = 0; k < 8; k++) p[k] = (unsigned char)(v >> (8 * k)); }

static int gn_has_batch(const gn_tensor* t, int n) {
    for (int k = 0; k < n; k++) for (int d = 0; d < t[k].ndim; d++) if (t[k].dims[d] < 0) return 1;
    return 0;
}

/* bytes of tensor t for batch B, or 0 with *ok = 0 on overflow */
static size_t gn_bytes(const gn_tensor* t, long B, int* ok) {
    size_t n = gn_itemsize(t->dtype);
    for (int d = 0; d < t->ndim; d++) {
        size_t dim = (size_t)(t->dims[d] < 0 ? B : t->dims[d]);
        if (dim && n > SIZE_MAX / dim) { *ok = 0; return 0; }
        n *= dim;
    }
    return n;
}

/* read and check the header of a tensor file; returns the batch size (0: none) or -1 */
static long gn_open(const char* path, int kind, const char* hash, int count, int batched, FILE** out, long* size) {
    FILE* f = fopen(path, "rb");
    unsigned char h[GN_HEADER];
    if (!f) { fprintf(stderr, "model: cannot open %s\n", path); return -1; }
    if (fseek(f, 0, SEEK_END) != 0 || (*size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "model: %s: cannot find the file's size\n", path); fclose(f); return -1;
    }
    if (*size < GN_HEADER || fread(h, 1, GN_HEADER, f) != GN_HEADER) {
        fprintf(stderr, "model: %s: truncated header (%ld bytes, a header is %d)\n", path, *size, GN_HEADER);
        fclose(f); return -1;
    }
    if (memcmp(h, GN_MAGIC, 8) != 0) { fprintf(stderr, "model: %s: not a graphnn tensor file (bad magic)\n", path); fclose(f); return -1; }
    if (gn_u32(h + 8) != GN_VERSION) { fprintf(stderr, "model: %s: version %u, this program reads %u\n", path, gn_u32(h + 8), GN_VERSION); fclose(f); return -1; }
    if (gn_u32(h + 12) != (uint32_t)GN_DTYPE) { fprintf(stderr, "model: %s: dtype code %u, this program's is %d\n", path, gn_u32(h + 12), GN_DTYPE); fclose(f); return -1; }
    if (gn_u32(h + 16) != (uint32_t)count) { fprintf(stderr, "model: %s: %u tensors, this program declares %d\n", path, gn_u32(h + 16), count); fclose(f); return -1; }
    if (gn_u32(h + 20) != (uint32_t)kind) { fprintf(stderr, "model: %s: file kind %u, expected %d (1 params, 2 data, 3 outputs)\n", path, gn_u32(h + 20), kind); fclose(f); return -1; }
    if (memcmp(h + 24, hash, 16) != 0) { fprintf(stderr, "model: %s: declaration hash %.16s differs from this program's %s (other names, shapes or dtypes)\n", path, (const char*)(h + 24), hash); fclose(f); return -1; }
    uint64_t B = gn_u64(h + 40);
    if (batched ? (B < 1 || B > (uint64_t)GN_MAX_BATCH) : (B != 0)) {
        fprintf(stderr, "model: %s: batch size %llu is out of range\n", path, (unsigned long long)B); fclose(f); return -1;
    }
    *out = f;
    return (long)B;
}

/* open a tensor file and check its header and exact size (before anything is
   allocated for it); returns its batch size (0: none) or -1, the file at the tensors */
static long gn_check(const char* path, int kind, const char* hash, gn_tensor* t, int count, FILE** out) {
    FILE* f = NULL; long size = 0;
    long B = gn_open(path, kind, hash, count, gn_has_batch(t, count), &f, &size);
    if (B < 0) return -1;
    size_t total = GN_HEADER; int ok = 1;
    for (int k = 0; k < count; k++) {
        size_t b = gn_bytes(&t[k], B, &ok);
        if (!ok || total > SIZE_MAX - b) { fprintf(stderr, "model: %s: tensor sizes overflow\n", path); fclose(f); return -1; }
        total += b;
    }
    if ((size_t)size != total) {
        fprintf(stderr, "model: %s: %ld bytes, the declared tensors need %zu (wrong sizes or truncated)\n", path, size, total);
        fclose(f); return -1;
    }
    *out = f;
    return B;
}

/* read the tensors of a checked file into their buffers */
static int gn_read(const char* path, int kind, const char* hash, gn_tensor* t, int count, long B_expected) {
    FILE* f = NULL; int ok = 1;
    long B = gn_check(path, kind, hash, t, count, &f);
    if (B < 0) return 0;
    if (gn_has_batch(t, count) && B != B_expected) { fprintf(stderr, "model: %s: batch size %ld, expected %ld\n", path, B, B_expected); fclose(f); return 0; }
    for (int k = 0; k < count; k++) {
        size_t b = gn_bytes(&t[k], B, &ok);
        void* host = malloc(b ? b : 1);
        if (!host || fread(host, 1, b, f) != b) { fprintf(stderr, "model: %s: cannot read tensor %s\n", path, t[k].name); free(host); fclose(f); return 0; }
        gn_to_device(*t[k].ptr, host, b);
        free(host);
    }
    fclose(f);
    return 1;
}

static int gn_write(const char* path, int kind, const char* hash, gn_tensor* t, int count, long B) {
    unsigned char h[GN_HEADER];
    memset(h, 0, sizeof h);
    memcpy(h, GN_MAGIC, 8);
    gn_put32(h + 8, GN_VERSION); gn_put32(h + 12, (uint32_t)GN_DTYPE); gn_put32(h + 16, (uint32_t)count);
    gn_put32(h + 20, (uint32_t)kind); memcpy(h + 24, hash, 16);
    gn_put64(h + 40, gn_has_batch(t, count) ? (uint64_t)B : 0);
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(h, 1, GN_HEADER, f) != GN_HEADER) { fprintf(stderr, "model: cannot write %s\n", path); if (f) fclose(f); return 0; }
    int ok = 1;
    for (int k = 0; k < count; k++) {
        size_t b = gn_bytes(&t[k], B, &ok);
        void* host = malloc(b ? b : 1);
        if (!host) { fclose(f); return 0; }
        gn_to_host(host, *t[k].ptr, b);
        if (fwrite(host, 1, b, f) != b) { fprintf(stderr, "model: cannot write %s\n", path); free(host); fclose(f); return 0; }
        free(host);
    }
    return fclose(f) == 0;
}

static double gn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int gn_usage(void) {
    fprintf(stderr,
        "usage: model train --data D.bin --steps N [--lr X] [--params P.bin] --out P2.bin\n"
        "       model infer --data X.bin [--params P.bin] --out Y.bin\n"
        "       model run   --data X.bin [--params P.bin] --out Y.bin [--params-out P2.bin]\n"
        "exit codes: 0 ok, 2 usage, 3 no CUDA device, 4 bad file, 5 CUDA error\n");
    return 2;
}

int main(int argc, char** argv) {
    if (argc < 2) return gn_usage();
    const char* mode = argv[1];
    const char *data = NULL, *params = NULL, *out = NULL, *params_out = NULL, *lr = NULL;
    long steps = 1;
    for (int k = 2; k < argc; k++) {
        if (k + 1 >= argc) return gn_usage();
        const char* v = argv[++k];
        if (!strcmp(argv[k - 1], "--data")) data = v;
        else if (!strcmp(argv[k - 1], "--params")) params = v;
        else if (!strcmp(argv[k - 1], "--out")) out = v;
        else if (!strcmp(argv[k - 1], "--params-out")) params_out = v;
        else if (!strcmp(argv[k - 1], "--lr")) lr = v;
        else if (!strcmp(argv[k - 1], "--steps")) { char* e; steps = strtol(v, &e, 10); if (*e || steps < 0) return gn_usage(); }
        else return gn_usage();
    }
    int train = !strcmp(mode, "train"), infer = !strcmp(mode, "infer"), run = !strcmp(mode, "run");
    if (!(train || infer || run) || !out) return gn_usage();
    if (train && !GN_HAS_UPDATES) { fprintf(stderr, "model: this program has no parameter updates (a forward-only export): use infer\n"); return 2; }
    if (lr && GN_LR_PARAM < 0) { fprintf(stderr, "model: --lr: this program has no optim/lr parameter\n"); return 2; }
    if (!gn_device_init()) { fprintf(stderr, "model: no CUDA device or driver available (build with -DGN_CPU for the CPU)\n"); return 3; }
    char default_params[4096];
    if (!params) {  /* params.bin beside the program */
        const char* slash = strrchr(argv[0], '/');
        snprintf(default_params, sizeof default_params, "%.*sparams.bin",
                 slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
        params = default_params;
    }
    long B = 0;
    if (GN_N_INPUTS > 0) {
        if (!data) { fprintf(stderr, "model: --data is required (inputs: %s ...)\n", GN_INPUTS[0].name); return 2; }
        FILE* f = NULL;
        B = gn_check(data, GN_KIND_DATA, GN_HASH_DATA, GN_INPUTS, GN_N_INPUTS, &f);
        if (B < 0) return 4;
        fclose(f);
    }
    if (!gn_alloc(B)) { fprintf(stderr, "model: cannot allocate the buffers for batch size %ld\n", B); return 5; }
    if (GN_N_PARAMS > 0 && !gn_read(params, GN_KIND_PARAMS, GN_HASH_PARAMS, GN_PARAMS, GN_N_PARAMS, 0)) return 4;
    if (GN_N_INPUTS > 0 && !gn_read(data, GN_KIND_DATA, GN_HASH_DATA, GN_INPUTS, GN_N_INPUTS, B)) return 4;
    if (lr) {
        double v = atof(lr);
        if (GN_PARAMS[GN_LR_PARAM].dtype == GN_FLOAT32) { float x = (float)v; gn_to_device(*GN_PARAMS[GN_LR_PARAM].ptr, &x, 4); }
        else gn_to_device(*GN_PARAMS[GN_LR_PARAM].ptr, &v, 8);
    }
    if (train) {
        int scalar_loss = GN_N_OUTPUTS > 0 && GN_OUTPUTS[0].ndim == 0 &&
                          (GN_OUTPUTS[0].dtype == GN_FLOAT64 || GN_OUTPUTS[0].dtype == GN_FLOAT32);
        double total = 0, first = 0;
        for (long s = 0; s < steps; s++) {
            gn_sync();
            double t0 = gn_now();
            gn_step(B, 1);
            gn_sync();
            double dt = gn_now() - t0;
            total += dt;
            if (s == 0) first = dt;
            if (scalar_loss && (s < 10 || s % 100 == 0 || s == steps - 1)) {
                double loss = 0;
                if (GN_OUTPUTS[0].dtype == GN_FLOAT32) { float x; gn_to_host(&x, *GN_OUTPUTS[0].ptr, 4); loss = x; }
                else gn_to_host(&loss, *GN_OUTPUTS[0].ptr, 8);
                printf("step %ld: %s %.17g (%.4g ms)\n", s + 1, GN_OUTPUTS[0].name, loss, dt * 1e3);
            }
        }
        printf("%ld steps, %.4g ms per step", steps, steps ? total * 1e3 / steps : 0.0);
        if (steps > 1) printf(" (%.4g ms per step after the first)", (total - first) * 1e3 / (steps - 1));
        printf("\n");
        return gn_write(out, GN_KIND_PARAMS, GN_HASH_PARAMS, GN_PARAMS, GN_N_PARAMS, 0) ? 0 : 4;
    }
    gn_step(B, run ? 1 : 0);
    gn_sync();
    if (!gn_write(out, GN_KIND_OUTPUTS, GN_HASH_OUTPUTS, GN_OUTPUTS, GN_N_OUTPUTS, B)) return 4;
    if (params_out && !gn_write(params_out, GN_KIND_PARAMS, GN_HASH_PARAMS, GN_PARAMS, GN_N_PARAMS, 0)) return 4;
    return 0;
}
"""
