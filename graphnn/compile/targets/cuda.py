"""The CUDA target: the schedule, printed as one standalone `.cu` file.

A third rendering of the same schedule as the NumPy and CuPy targets (llm.c's
`train_gpt2_fp32.cu` is the model of the result). Every planning decision is the
lowering's (`compile/schedule.py`, asked with this target's `Caps`): fusion groups
(one SymPy expression each), the buffer plan (`memory.py`), the update groups
(`update_plan.py`: parameters, gradients and optimizer state of a group are views
of one flat buffer per role, one kernel updates a whole group). This subclass of
the NumPy target names them the same way and prints them as CUDA C:

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

import re

import numpy as np
import sympy as sp

from ...version import __version__
from ...errors import GraphError
from ...graph import Node
from ...ops import shapes as shape_rules
from .. import cuda_c, fusion
from ..schedule import _EXPR_CACHE, Caps, Fused, Matmul, Opaque, Reduce, ReduceAll, Softmax
from ..update_plan import component_leaf_exprs
from ..fast_common import _dname
from .cuda_common import (FLOATS, supports, _ctype, _ccomment, _cstring, count_code, broadcast_index,
                          declaration_hash, kernel_source)
from .cuda_ops import CudaOps
from .cuda_text import MAIN, RUNTIME
from ..printer import unique_name
from .numpy import NumpyPrinter, _fused_note

class CudaPrinter(CudaOps, NumpyPrinter):
    """Prints a Function (outputs and parameter updates) as one CUDA C file."""
    # no [h, 1] @ [W; b] folds (cuBLAS runs the matmul, a kernel the bias); sum(a * b) is a
    # fused product and a reduction kernel; a 2-D transpose stays a view only where cuBLAS
    # reads it (a transpose flag)
    # (outputs are written to files: no per-call buffers)
    caps = Caps(bias_fold=False, dot_reductions=False, transpose_views="matmul",
                fresh_outputs=False)

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
        self.flat_decls: list[tuple] = []              # (name, elements, dtype, views)
        self.flat_copies: list[tuple[str, Node]] = []  # (flat view, value copied into it)
        self.alloc_counts: list[str] = []              # gn_batch's lines (values of B alone)

    # -- names ---------------------------------------------------------------------------------
    def c(self, pyname: str) -> str:
        """The C identifier of a name of the plan (`_buf3` -> `g_buf3`, `W1` -> `g_W1`)."""
        got = self.cn.get(pyname)
        if got is None:
            base = "g" + ("" if pyname.startswith("_") else "_") + re.sub(r"[^A-Za-z0-9_]", "_", pyname)
            got = self.cn[pyname] = unique_name(base, self.ctaken)
        return got

    def const_value(self, n: Node) -> str:
        """Every constant, 0-d ones too, is an array copied into the arena."""
        ident = self.namer(n)
        self.c_consts[ident] = n
        return ident

    def unplanned_value(self, n: Node) -> str:
        ident = self.namer(n)
        self.loose[ident] = n  # a slot of its own (_program)
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
        name = self.kernel_by_key[key] = unique_name(base, self.kernel_names)
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

        return self._define(key, what, "elementwise",
                            lambda name: kernel_source(name, comment, params, inner))

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


    # -- update groups (numpy_updates.print_groups names them and calls these) ------------------
    def declare_flat(self, name: str, total: int, dtype: str, views, optional: bool) -> None:
        self.flat_decls.append((name, total, dtype, views))  # storage, laid out in _program

    def copy_into_flat(self, view: str, value: Node) -> None:
        self.flat_copies.append((view, value))
    def _emit_component(self, m, slot_names, total, dtype, flat_label=None, scratch=None):
        """One kernel for a component of the update region (a whole flat group through
        its first member): every leaf read once, every new value written once. A
        parameter another component still reads is written to a buffer of its own and
        copied in after every reader ran."""
        nodes, leaves = m.nodes, m.leaves
        roots, writes, full = component_leaf_exprs(m, self.fn.updates, self.source_of)
        shape = (total,) if total is not None else m.shape
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
        args, kernels = self.plan_program()
        for name, total, dtype, views in self.flat_decls:  # flat buffers and their views
            self.slots[self.c(name)] = ((total,), dtype, "flat buffer")
            for vname, _shape, start, _end in views:
                self.views[self.c(vname)] = (self.c(name), start)
        for p, v in self.flat_params:
            self.views[self.c(self.namer(p))] = (self.c(v), 0)
        body: list[str] = []
        for k in kernels:
            n = k.node
            body.append(self.cnote(n))
            if isinstance(k, Fused):
                body += self.c_group(n, self.value_of(n))
            elif isinstance(k, Matmul):
                body += self.c_matmul(n, self.value_of(n))
            elif isinstance(k, (Reduce, ReduceAll)):
                body += self.c_reduce(n, self.value_of(n), n.op)
            elif isinstance(k, Softmax):
                body += self.c_softmax(n, self.value_of(n))
            elif isinstance(k, Opaque):
                body += self.c_plain(n, None if k.fixed is None else self.buffer_name(k.fixed))
            else:
                raise GraphError(f"backend 'cuda': internal: kernel {type(k).__name__} "
                                 f"(node {n.name!r})")
        counts = []  # values that depend on the batch size only: set first
        for n in self.schedule.batch_consts:
            x = n.inputs[0]
            axes = shape_rules.norm_axes(n.attrs["axis"], x.ndim, x.shape)
            counts.append(self.cnote(n))
            counts.append(f"gn_set_scalar({self.ptr(n)}, ({_ctype(n.dtype)})"
                          f"{count_code(tuple(x.shape[a] for a in axes)) if axes else '1'});")
        self.alloc_counts = counts
        # the update: snapshots, flat-buffer copies, group kernels, plain updates, deferred
        tail: list[str] = []
        for v in self.schedule.snapshots:
            srcp = self.ptr(v)
            snap = self.snap[id(v)] = self.claim("_pre")
            self.slots[self.c(snap)] = (v.shape, _dname(v.dtype), f"{v.name!r} before the updates")
            tail.append(f"gn_copy({self.c(snap)}, {srcp}, sizeof({_ctype(v.dtype)}) * "
                        f"{count_code(v.shape)});  // '{_ccomment(v.name)}' before the parameter updates")
        for view, src in self.flat_copies:
            tail.append(f"gn_copy({self.c(view)}, {self.ptr(src)}, sizeof({_ctype(src.dtype)}) * "
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
              " *   ./model train --data D.bin --steps N [--batch M [--shuffle SEED]] [--lr X] [--params P.bin] --out P2.bin",
              " *   ./model infer --data X.bin [--params P.bin] --out Y.bin",
              " *   ./model run   --data X.bin [--params P.bin] --out Y.bin [--params-out P2.bin]",
              f" * Parameters ({len(params)}): " + _ccomment(", ".join(p.name for p in params))[:300],
              f" * Inputs ({len(inputs)}): " + _ccomment(", ".join(p.name for p in inputs))[:300],
              f" * Outputs ({len(outputs)}): " + _ccomment(", ".join(p.name for p in outputs))[:300],
              f" * Updates: {len(self.fn.updates)} parameters"
              + (f" in {len(self.schedule.groups)} update group(s)" if self.schedule.groups else ""),
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
        L += ["/* ---- values that depend on the batch size only (a smaller last batch: "
              "gn_batch(m), then gn_batch(B) again) ---- */",
              "static void gn_batch(long B) {", "    (void)B;"]
        L += ["    " + ln for ln in self.alloc_counts]
        L += ["}", ""]
        L += ["/* ---- one allocation for every buffer, sized for batch size B (it serves any "
              "batch up to B) ---- */",
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
        L.append("    gn_batch(B);")
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

