"""`gn.compile` and the `Program` it returns."""
from __future__ import annotations

import builtins
import gc
import hashlib
import io
import linecache
import marshal
import os
import sys
import threading
import traceback
from typing import Sequence

import numpy as np

from .. import archive
from .. import feeds as feeds_check
from ..errors import GraphError, ShapeError
from ..graph import Graph, Node
from . import call_path, loops
from .passes import Function, optimize as run_passes

BACKENDS = ("numpy", "cupy", "cuda")
_CACHE: dict[str, tuple[str, dict, object]] = {}
_CACHE_MAX = 256


def content_hash(fn: Function, backend: str, extra: str = "") -> str:
    """A hash of everything the generated code depends on (not of parameter values)."""
    h = hashlib.sha256()
    # (surrogatepass: a lone surrogate is a valid JSON string, so a valid graph name)
    h.update(f"{backend}|{extra}|{fn.graph.name}".encode("utf-8", "surrogatepass"))
    pos = {}
    cut = {id(c) for c in fn.cut}  # fed, not computed: their inputs are not in the order
    rows = []
    for k, n in enumerate(fn.order()):
        pos[id(n)] = k
        ins = [] if id(n) in cut else [pos[id(i)] for i in n.inputs]
        attrs = sorted(n.attrs.items(), key=lambda kv: kv[0]) if n.attrs else []
        rows.append((n.name, n.op, attrs, n.shape, n.dtype.str, ins, n.scope, n.role, id(n) in cut))
        if n.op == "const":
            rows.append(n.value.tobytes())
    for group in (fn.outputs, [p for p, _ in fn.updates], [v for _, v in fn.updates], fn.cut):
        rows.append([pos[id(n)] for n in group])
    try:  # one C call for the whole graph; version 2 writes values only (no back-references)
        data = marshal.dumps(rows, 2)
    except ValueError:  # an attribute marshal cannot write (e.g. an array): its repr
        data = repr(rows).encode()
    h.update(data)
    return h.hexdigest()


class Program:
    """A compiled function of a graph: call it with feeds by name.

    Parameters default to the graph's current `g.values` (read at each call,
    so training updates are seen). `fn` is the raw positional function for hot
    loops (arguments in the order of `arg_names`). `source` is the module that
    runs; `fast` says whether it is the lowered program (buffers, fusion) or the
    plain one, and `plain_source` is always the plain program of the same
    outputs: one assignment per node, named after it, commented with its op and
    scope."""

    def __init__(self, graph: Graph, function: Function, source: str, namespace: dict,
                 line_nodes: dict, single: bool, backend: str, passes: list[dict], key: str,
                 name: str | None = None, fast: bool = False):
        self.graph = graph
        self.function = function
        self.source = source
        self.name = name or graph.name
        self.fast = fast
        # a fast program keeps its buffers between calls: one call at a time (threads);
        # the bound methods of the lock cost less per call than `with lock:`
        self._lock = threading.Lock() if fast else None
        self._acquire = self._lock.acquire if fast else None
        self._release = self._lock.release if fast else None
        self._plain_source = None if fast else source
        self._schedule = None
        self.namespace = namespace
        self.fn = namespace["step"]
        self.line_nodes = line_nodes
        self.single = single
        self.backend = backend
        self.passes = passes
        self.key = key
        args = [n for n in function.order() if n.op in ("input", "param")
                or any(n is c for c in function.cut)]
        self.arg_nodes = args
        self.arg_names = [n.name for n in args]
        depths = feeds_check.label_depths(function.order())
        self._labels = [(k, depths[n.name]) for k, n in enumerate(args)
                        if n.op == "input" and n.name in depths]
        self.filename = namespace["__file__"]
        # GPU programs: arrays of the device's module pass as they are, others move there
        xp = namespace.get("cp")
        self.device_array = getattr(xp, "ndarray", None) if backend == "cupy" else None
        self.to_device = xp.asarray if backend == "cupy" else None
        self.launches = namespace.get("LAUNCHES")  # device calls per step (GPU targets)
        self._arg_plan = [(n.name, n.op == "param") for n in args]
        self._arg_set = frozenset(self.arg_names)
        self._last_signature: list | None = None  # (type, dtype, shape) per argument
        self._seen = None  # the short path for that signature (call_path.py)
        self.numpy_source = None  # set when `source` calls Numba: what save() writes instead

    @property
    def plain_source(self) -> str:
        """The plain program of the same outputs, for reading: one assignment per node
        named after it, with a comment giving its op, type, role and scope (the text
        `gn.compile(..., fast=False)` runs). Printed on first use; what runs is `source`."""
        if self._plain_source is None:
            from .numpy_backend import NumPyPrinter
            self._plain_source = NumPyPrinter(self.function, self.name).source()[0]
        return self._plain_source

    @property
    def schedule(self):
        """The lowering of this program's function (`compile/schedule.py`): the kernels,
        update groups and buffer plan the NumPy and CuPy targets print;
        `print(prog.schedule)` lists them, one line each. Lowered on first use."""
        if self._schedule is None:
            from .schedule import lower
            self._schedule = lower(self.function)
        return self._schedule

    def __repr__(self):
        return (f"<graphnn.Program {self.graph.name!r} backend={self.backend} "
                f"args={self.arg_names} outputs={[o.name for o in self.function.outputs]}>")

    def args_for(self, feeds: dict) -> list:
        """The positional arguments of `fn` for feeds by name, checked (graphnn errors
        naming the feed). Arrays with the (type, dtype, shape) of the last call that
        passed with nothing to convert take a short path: the call path is timed."""
        args = self._seen_args(feeds)
        if args is not None:
            return args
        # feeds for graph inputs the program does not need (e.g. removed as dead code) are
        # ignored; a name the graph does not know is an error (usually a typo)
        unknown = {k for k in set(feeds) - set(self.arg_names)
                   if k not in self.graph or self.graph[k].op not in ("input", "param")}
        if unknown:
            raise GraphError(f"unknown feed(s) {sorted(unknown)}; program takes {self.arg_names}")
        args, batch = [], None
        for node in self.arg_nodes:
            if node.name in feeds:
                v = feeds[node.name]
            elif node.op == "param" and node.name in self.graph.values:
                v = self.graph.values[node.name]
            else:
                raise GraphError(f"missing feed {node.name!r} ({node.op}, shape {node.shape})")
            if (type(v) is not np.ndarray or v.dtype is not node.dtype) and \
                    not (self.device_array is not None and isinstance(v, self.device_array)
                         and v.dtype == node.dtype):
                v = feeds_check.convert(node, v)  # the check Trainer makes: DataError
            if v.ndim != len(node.shape) or any(d is not None and d != s
                                                for d, s in zip(node.shape, v.shape)):
                raise ShapeError(f"feed {node.name!r}: expected shape {node.shape}, got {v.shape}")
            for d, s in zip(node.shape, v.shape):
                if d is None:
                    if batch is not None and s != batch[1]:
                        raise ShapeError(f"feed {node.name!r}: batch size {s} differs from "
                                         f"{batch[1]} of feed {batch[0]!r}")
                    batch = (node.name, s)
            args.append(v)
        for k, depth in self._labels:  # class labels: a value check, only where it matters
            feeds_check.check_labels(self.arg_names[k], args[k], depth)
        if all(a is (feeds[n.name] if n.name in feeds else self.graph.values.get(n.name))
               for a, n in zip(args, self.arg_nodes)):  # nothing was converted
            sig = [(a.__class__, a.dtype, a.shape) for a in args]
            if sig != self._last_signature:
                self._last_signature = sig
                self._seen = call_path.seen_args(self._arg_plan, sig, self._arg_set)
        return args

    def _seen_args(self, feeds: dict) -> list | None:
        """The arguments, when the feeds name only arguments and every array has the type,
        dtype and shape it had in the last call that passed the full check (else None:
        check in full). Compared by identity, no hashing, in code printed for the
        signature (call_path.py): this runs on every call."""
        if self._seen is None:
            return None
        args = self._seen(feeds, self.graph.values)
        if args is None:
            return None
        for k, depth in self._labels:  # values still matter for class labels
            feeds_check.check_labels(self.arg_names[k], args[k], depth)
        return args

    def __call__(self, **feeds):
        args = self._seen_args(feeds)  # (args_for's short path, one call fewer)
        if args is None:
            args = self.args_for(feeds)
        if self.to_device is not None:  # NumPy inputs are copied to the device at each call
            args = [self.to_device(a) for a in args]
        try:
            if self._acquire is None:
                out = self.fn(*args)
            else:
                self._acquire()
                try:
                    out = self.fn(*args)
                finally:
                    self._release()
        except Exception as e:  # point at the node whose line failed
            node = self.node_of(e)
            if node is not None and hasattr(e, "add_note"):
                e.add_note(f"graphnn: while computing node {node.name!r} ({node.op}, "
                           f"shape {node.shape}, scope {node.scope or '-'})")
            raise
        return out[0] if self.single else out

    def node_of(self, exc: BaseException):
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename == self.filename:
                return self.line_nodes.get(frame.lineno)
        return None

    def save(self, path) -> None:
        """Write a standalone module (imports numpy only) and its parameters (.npz).

        A program whose updates run as Numba loops is saved as its NumPy-only twin
        (`kernels="numpy"`): the same computation, without the Numba dependency."""
        path = os.fspath(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        params = {n.name: self.graph.values[n.name] for n in self.arg_nodes
                  if n.op == "param" and n.name in self.graph.values}
        npz = os.path.splitext(path)[0] + ".npz"
        loader = [
            "",
            "",
            "def _load_params():",
            "    import os",
            f"    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), {stem + '.npz'!r})",
            "    if os.path.exists(path):",
            "        with np.load(path, allow_pickle=False) as f:",
            "            keys = list(f.files)",
            "            PARAMS.update({ARGS[int(k[1:])]: f[k] for k in keys})",
            "",
            "",
            "_load_params()",
            "",
        ]
        text = (self.numpy_source() if self.numpy_source else self.source) + "\n".join(loader)
        files = [(path, text.encode("utf-8"))]
        if params:
            index = {n: i for i, n in enumerate(self.arg_names)}
            buf = io.BytesIO()
            np.savez(buf, **{f"a{index[k]}": v for k, v in params.items()})
            files.append((npz, buf.getvalue()))
        # every temporary written before any rename; none left behind on failure
        archive.write_files(files)


def compile(outputs: Node | Sequence[Node], backend: str = "numpy", optimize: bool = True,
            updates: dict | None = None, inputs: Sequence[Node] = (), name: str | None = None,
            fast: bool | None = None, kernels: str = "auto"):
    """Compile output nodes (and optional in-place parameter updates) into a Program.

    `inputs` lists extra nodes to feed instead of computing (cut points), e.g. to
    evaluate a gradient with an intermediate value overridden. `fast` picks the
    buffer-reusing, fused, flat-parameter program (`compile/schedule.py`); by default
    (`fast=None`) every optimized program uses it, with or without `updates`
    (`gn.compile([loss, *grads])` included); `optimize=False` or `fast=False` gives
    the plain program, one assignment per node named after it. The plain program of
    a fast Program stays readable as `prog.plain_source` (printed on first use; it is
    not what runs). Either way outputs are arrays the caller owns.

    `kernels` (fast programs only) says how whole-buffer parameter updates run:
    "auto" fuses a large update (Adam on 16,384 or more elements) into one loop
    compiled by Numba when Numba is installed (`pip install graphnn[fast]`), "numba"
    does so for every update it can print (an error without Numba), and "numpy"
    never does (the program then needs NumPy alone)."""
    # Compiling allocates many small containers that are freed by reference counting;
    # the cycle collector only rescans the (large) live heap meanwhile, which cost a
    # third of the compile time of a depth-1024 step. It is paused, then restored.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile(outputs, backend, optimize, updates, inputs, name, fast, kernels)
    finally:
        if enabled:
            gc.enable()


def _compile(outputs, backend, optimize, updates, inputs, name, fast, kernels):
    single = isinstance(outputs, Node)
    try:
        outs = [outputs] if single else list(outputs)
    except TypeError:
        raise GraphError(f"compile: outputs must be a Node or a list of Nodes, got "
                         f"{type(outputs).__name__}") from None
    if not outs and not updates:
        raise GraphError("compile needs at least one output")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise GraphError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    if not isinstance(kernels, str) or kernels not in loops.MODES:
        raise GraphError(f"unknown kernels {kernels!r}; choose from {loops.MODES}")
    if kernels == "numba" and not loops.available():
        raise GraphError("kernels='numba' needs Numba, which is not installed "
                         "(pip install 'graphnn[fast]'); use kernels='auto' or 'numpy'")
    if updates is not None and not isinstance(updates, dict):
        raise GraphError(f"compile: updates must be a dict param -> new value, got "
                         f"{type(updates).__name__}")
    for o in list(outs) + list((updates or {}).keys()):
        if not isinstance(o, Node):
            raise GraphError(f"compile: {str(o)[:60]!r} is not a Node (give nodes, not names)")
    graph = (outs[0] if outs else next(iter(updates))).graph
    for o in list(outs) + list((updates or {}).keys()) + list((updates or {}).values()) + list(inputs):
        if not isinstance(o, Node):
            raise GraphError(f"compile: {o!r} is not a Node")
        if o.graph is not graph:
            raise GraphError(f"compile: {o.name!r} belongs to graph {o.graph.name!r}, not "
                             f"{graph.name!r}; nodes from two graphs cannot be mixed")
    ups = []
    for p, v in (updates or {}).items():
        if p.op != "param":
            raise GraphError(f"compile: updates must target params, {p.name!r} is a {p.op}")
        if v.shape != p.shape:
            raise ShapeError(f"update of {p.name!r}: new value shape {v.shape} != {p.shape}")
        ups.append((p, v))
    fn = Function(graph, outs, ups, list(inputs))
    passes: list[dict] = []
    if optimize:
        fn, passes = run_passes(fn)
    if fast is None:  # issue 15: programs without updates are lowered the same way
        fast = optimize
    key = content_hash(fn, backend + (f"-fast-{kernels}" if fast else ""), name or "")
    if backend == "cuda":  # a standalone program, built and run as a subprocess
        from .cuda_build import compile_cuda
        return compile_cuda(fn, graph, name or graph.name, key, single)
    from .numpy_backend import NumPyPrinter as P
    if backend == "cupy":
        _require_cupy()
        from .targets.cupy import CupyPrinter as P
        fast = True
    elif fast:
        from .targets.numpy import NumpyPrinter as P
    hit = _CACHE.get(key)
    if hit is None:
        printer = P(fn, name or graph.name, kernels) if fast else P(fn, name or graph.name)
        source, line_nodes = printer.source()
        filename = f"<graphnn {ascii(graph.name)[1:-1]} {key[:12]}>"  # no NUL/newline from names
        code = builtins.compile(source, filename, "exec")
        lines = [ln + "\n" for ln in source.splitlines()]
        linecache.cache[filename] = (len(source), None, lines, filename)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        hit = _CACHE[key] = (source, code, filename, line_nodes)
    source, code, filename, line_nodes = hit
    namespace = {"__name__": f"graphnn_program_{key[:12]}", "__file__": filename}
    exec(code, namespace)  # noqa: S102 - our own generated source
    if "_adopt" in namespace:  # fast training steps keep parameters in flat buffers
        namespace["_adopt"](graph.values)
    # line_nodes refer to the nodes of the Function printed first; map by position
    prog = Program(graph, fn, source, namespace, _remap(line_nodes, fn), single, backend,
                   passes, key, name=name, fast=fast)
    if fast and "\nimport numba\n" in source:
        pname = name or graph.name
        prog.numpy_source = lambda: P(fn, pname, "numpy").source()[0]
    return prog


def _require_cupy() -> None:
    try:
        import cupy  # noqa: F401
    except ImportError as e:
        raise GraphError("backend 'cupy' needs CuPy: pip install 'graphnn[gpu]' (a CUDA 13 "
                         f"wheel, cupy-cuda13x) on a machine with an NVIDIA GPU ({e})") from None


def _remap(line_nodes, fn):
    """Cached line maps point at nodes of an earlier, identical Function: re-point them."""
    order = fn.order()
    by_name = {n.name: n for n in order}
    return {ln: by_name.get(n.name, n) for ln, n in line_nodes.items()}
