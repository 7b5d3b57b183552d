"""The CUDA target's kernels for ops that are not element-wise (a mixin of
CudaPrinter): matmuls through gn_gemm, reductions, softmax, and the index, layout,
convolution, window, gather and scatter ops, each a generated kernel."""
from __future__ import annotations

from ...errors import GraphError
from ...graph import Node
from ...ops import shapes as shape_rules
from .. import cuda_c, fusion
from ..fast_common import _attrs_key, _dname, _is_ew
from .cuda_common import (FLOATS, _ccomment, _coord, _ctype, _cstring, _dim, _strides, count_code,
                          kernel_source)


# ops printed by a method of their own (the rest: element-wise kernels and layout maps)
_KERNEL_OF = {"index": "c_index", "scatter": "c_scatter", "pad": "c_window",
              "windows": "c_window", "windows_adjoint": "c_window", "take": "c_take",
              "take_adjoint": "c_take", "concat": "c_concat", "conv2d": "c_conv",
              "conv2d_grad_input": "c_conv", "conv2d_grad_weight": "c_conv",
              "softmax": "c_softmax", "log_softmax": "c_softmax", "matmul": "c_matmul"}


class CudaOps:
    """Per-op C printers of CudaPrinter (targets/cuda.py), one method per op family."""

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

        comment = (f"{n.op} of a {_ccomment(str(x.shape))} array along axis {ax}, one row "
                   "per thread (shifted by the row's max)")
        kname = self._define(key, n.op, "softmax", lambda name: kernel_source(
            name, comment, [f"const {T}* p0", f"{T}* o0"], lines, index="o"))
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

        kname = self._define(key, what, "layout", lambda name: kernel_source(
            name, comment, params + [f"{T}* o0"], lines))
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
        if op in _KERNEL_OF:
            return getattr(self, _KERNEL_OF[op])(n, out)
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
        from the end) and take_adjoint (each element sums the cotangent entries whose
        index selects it). An index out of range reads as 0 and is recorded
        (gn_index_fault, with the node's escaped name): the program exits with code 6
        after the step, where NumPy raises IndexError."""
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
        coords = [f"    const long c{d} = {_coord('i', n.shape, d)};" for d in range(n.ndim)]
        if n.op == "take":
            xs = _strides(x.shape)
            ist = _strides(idx.shape)
            iterm = " + ".join(f"c{ax + j} * {ist[j]}" for j in range(k) if idx.shape[j] != 1) or "0"
            terms = [f"c{d} * {xs[d]}" for d in range(ax) if x.shape[d] != 1]
            terms.append(f"j * {xs[ax]}")
            terms += [f"c{d + k - 1} * {xs[d]}" for d in range(ax + 1, x.ndim) if x.shape[d] != 1]
            lines = [f"    const long long j0 = (long long)p1[{iterm}];",
                     f"    const long long j = j0 < 0 ? j0 + {size} : j0;",
                     f"    if (j < 0 || j >= {size}) {{ gn_index_fault(site, j0, {size}); o0[i] = ({T})0; return; }}",
                     f"    o0[i] = p0[{' + '.join(terms)}];"]
            what, comment, srcs = "take", f"take along axis {ax} (indices fed at run time, checked)", [x, idx]
        else:
            gs = _strides(g.shape)
            M = count_code(idx.shape) if idx.shape else "1"
            lines = [f"    {T} v = 0;",
                     f"    for (long m = 0; m < {M}; m++) {{",
                     f"        const long long j0 = (long long)p1[m];",
                     f"        const long long j = j0 < 0 ? j0 + {size} : j0;",
                     f"        if (j < 0 || j >= {size}) {{ gn_index_fault(site, j0, {size}); continue; }}",
                     f"        if (j != c{ax}) continue;"]
            mco = [_coord("m", idx.shape, j) for j in range(k)]
            terms = [f"c{d} * {gs[d]}" for d in range(ax) if g.shape[d] != 1]
            terms += [f"{mco[j]} * {gs[ax + j]}" for j in range(k) if g.shape[ax + j] != 1]
            terms += [f"c{d} * {gs[d + k - 1]}" for d in range(ax + 1, x.ndim) if g.shape[d + k - 1] != 1]
            lines += [f"        v += p0[{' + '.join(terms) or '0'}];", "    }", "    o0[i] = v;"]
            what, comment, srcs = "take_adjoint", f"the adjoint of take along axis {ax}", [g, idx]
        lines = coords + lines
        params = [f"const {_ctype(s_.dtype)}* p{j}" for j, s_ in enumerate(srcs)] + [f"{T}* o0",
                                                                                     "const char* site"]
        key = ("take", tuple(params), tuple(lines))

        kname = self._define(key, what, "layout",
                             lambda name: kernel_source(name, comment, params, lines))
        # the site: the node's name as ascii() spells it (quoted, escaped), then a C literal
        quoted = ascii(n.name)
        site = _cstring(f"{quoted} ({n.op} along axis {ax})")
        return [self.launch(kname, count_code(n.shape), [self.ptr(s_) for s_ in srcs] +
                            [self.c(out), site]),
                "gn_index_checks = 1;  // the host reads the index fault record after the step"]

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
