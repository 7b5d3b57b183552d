"""A small stand-in for the `cupy` module that runs on the CPU.

    with cupy_standin.install() as cp:      # sys.modules["cupy"] is the stand-in
        import cupy                         # ... and generated CuPy code imports it
        k = cupy.ElementwiseKernel("float64 x, float64 y", "float64 z", "z = x * y;", "mul")
        z = k(a, 2.0)
    cupy_standin.launches                   # kernels run so far

Everything but `ElementwiseKernel`, `asnumpy` and `asarray` is NumPy's (module
`__getattr__`): `cp.matmul(a, b, out=c)`, `cp.float32`, `cp.ndarray`, ...
An ElementwiseKernel's `operation` is compiled once per distinct source, as C, by
the system compiler (`$CC`, else `cc`) into a shared library in a cache directory
under the system temp dir, and called through ctypes: a loop over the elements
in which each parameter is a local of its declared C type, bound to the element
value before `operation` runs (outputs hold their current value); outputs are
stored after. Arguments broadcast as in CuPy; non-contiguous arguments are
copied (inputs) or computed into a temporary that is copied back (outputs).
Like CuPy, it refuses arrays of another dtype than the declared one, so a
program that runs here does not fail on a GPU for that.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np

launches = 0  # ElementwiseKernel calls since import (or the last reset())

C_TYPES = {"float64": "double", "float32": "float", "bool": "bool", "int8": "int8_t",
           "int16": "int16_t", "int32": "int32_t", "int64": "int64_t", "uint8": "uint8_t",
           "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t"}
_LIBS: dict[str, ctypes.CDLL] = {}  # source hash -> loaded library (this process)


def reset() -> None:
    global launches
    launches = 0


def compiler() -> str | None:
    """The C compiler the stand-in uses, or None when there is none."""
    return shutil.which(os.environ.get("CC", "cc"))


def cache_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), f"graphnn-cupy-standin-{os.getuid()}")
    os.makedirs(path, exist_ok=True)
    return path


def compile_c(source: str) -> ctypes.CDLL:
    """Compile C `source` into a shared library once (per process and on disk)."""
    key = hashlib.sha256(source.encode()).hexdigest()[:24]
    if key in _LIBS:
        return _LIBS[key]
    so = os.path.join(cache_dir(), f"k{key}.so")
    if not os.path.exists(so):
        cc = compiler()
        if cc is None:
            raise RuntimeError("cupy_standin needs a C compiler (cc, or $CC)")
        fd, tmp = tempfile.mkstemp(suffix=".c", dir=cache_dir())
        with os.fdopen(fd, "w") as f:
            f.write(source)
        out = tmp[:-2] + ".so"
        r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", out, tmp, "-lm"],
                           capture_output=True, text=True)
        os.unlink(tmp)
        if r.returncode != 0:
            numbered = "\n".join(f"{i + 1:4d} {ln}" for i, ln in enumerate(source.splitlines()))
            raise RuntimeError(f"C compilation failed:\n{r.stderr}\n{numbered}")
        os.replace(out, so)  # atomic: parallel test workers may race here
    _LIBS[key] = ctypes.CDLL(so)
    return _LIBS[key]


def _params(text: str) -> list[tuple[str, str]]:
    """'float64 a, float32 b' -> [('float64', 'a'), ('float32', 'b')]."""
    out = []
    for p in filter(None, (s.strip() for s in text.split(","))):
        parts = p.split()
        if len(parts) != 2 or parts[0] not in C_TYPES or not parts[1].isidentifier() \
                or parts[1] == "i" or parts[1].startswith("gn_"):
            raise ValueError(f"stand-in ElementwiseKernel: unsupported parameter {p!r} "
                             f"(use a concrete type: {', '.join(C_TYPES)}; "
                             f"names i and gn_* are the stand-in's)")
        out.append((parts[0], parts[1]))
    return out


class ElementwiseKernel:
    """CuPy's ElementwiseKernel on the CPU (concrete parameter types only).

    As CuPy does (cupy/_core/_kernel.pyx), it refuses an array argument whose dtype
    is not the declared one ('Type is mismatched'), an output that is not an
    array of the broadcast shape, `size=` beside array arguments, a parameter
    named `i` and an invalid kernel name; Python and NumPy scalars are cast."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **ignored):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f'Invalid kernel name: "{name}"')
        self.inputs, self.outputs = _params(in_params), _params(out_params)
        self.name, self.operation, self.preamble = name, operation, preamble
        self.no_return, self.return_tuple = no_return, return_tuple
        names = [n for _, n in self.inputs + self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {name}: {names}")
        self._fn = None

    @property
    def source(self) -> str:
        loads, stores = [], []
        for k, (t, n) in enumerate(self.inputs + self.outputs):
            loads.append(f"    {C_TYPES[t]} {n} = (({C_TYPES[t]} *)gn_p[{k}])[i * gn_s[{k}]];")
        for k, (t, n) in enumerate(self.outputs, len(self.inputs)):
            stores.append(f"    (({C_TYPES[t]} *)gn_p[{k}])[i] = {n};")
        return "\n".join([
            "#include <math.h>", "#include <stdbool.h>", "#include <stdint.h>",
            self.preamble,
            f"/* {self.name} */",
            "void gn_standin_run(long long gn_n, void **gn_p, const long long *gn_s) {",
            "  for (long long i = 0; i < gn_n; ++i) {  /* i: the element index, as in CuPy */",
            *loads, "    {", self.operation, "    }", *stores,
            "  }", "}", ""])

    def _check_type(self, a, t, n):
        if isinstance(a, np.ndarray) and a.dtype != np.dtype(t):
            raise TypeError(f"Type is mismatched. {n} {a.dtype} {t} (kernel {self.name})")

    def __call__(self, *args, size=None):
        global launches
        n_in, n_out = len(self.inputs), len(self.outputs)
        if len(args) not in (n_in, n_in + n_out):
            raise TypeError(f"Wrong number of arguments for {self.name}")
        ins, outs = list(args[:n_in]), list(args[n_in:]) or [None] * n_out
        for (t, n), a in zip(self.inputs + self.outputs, ins + outs):
            self._check_type(a, t, n)
        arrays = [a for a in ins + outs if isinstance(a, np.ndarray)]
        if size is not None and arrays:
            raise ValueError("Specified 'size' can be used only if all of the ndarray are 'raw'.")
        if size is None and not arrays:
            raise ValueError("Loop size is undecided.")
        shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else (int(size),)
        ptrs, steps, keep, results, copy_back = [], [], [], [], []
        for (t, n), a in zip(self.inputs, ins):
            a = np.asarray(a, dtype=t)  # scalars are cast; arrays already have type t
            if a.size == 1:  # a scalar (or one element): read at index 0 every time
                a, step = np.ascontiguousarray(a.reshape(1)), 0
            else:
                a, step = np.ascontiguousarray(np.broadcast_to(a, shape)), 1
            keep.append(a), ptrs.append(a.ctypes.data), steps.append(step)
        for (t, n), o in zip(self.outputs, outs):
            if o is None:
                o = np.zeros(shape, dtype=t)
            elif not isinstance(o, np.ndarray):
                raise TypeError(f"Output arguments type must be cupy.ndarray, not {type(o)}")
            elif o.shape != shape:
                raise ValueError(f"Out shape is mismatched: {o.shape} while {shape} is expected.")
            results.append(o)
            if not o.flags.c_contiguous:  # CuPy writes strided outputs in place; we copy back
                tmp = np.ascontiguousarray(o)  # its current values, as CuPy's kernel sees them
                copy_back.append((o, tmp))
                o = tmp
            keep.append(o), ptrs.append(o.ctypes.data), steps.append(1)
        if 0 not in shape:  # CuPy launches nothing for an empty result
            if self._fn is None:
                self._fn = compile_c(self.source).gn_standin_run
                self._fn.restype = None
            k = len(ptrs)
            self._fn(ctypes.c_longlong(math.prod(shape)), (ctypes.c_void_p * k)(*ptrs),
                     (ctypes.c_longlong * k)(*steps))
            for o, tmp in copy_back:
                np.copyto(o, tmp)
            launches += 1
        if self.no_return:
            return None
        return results[0] if n_out == 1 and not self.return_tuple else tuple(results)


def asnumpy(x, *args, **kwargs):
    """cupy.asnumpy: a host copy (so a program's own buffers never leak out)."""
    return np.array(x, copy=True)


# The names generated CuPy programs may use: functions CuPy has with NumPy's signature
# (docs.cupy.dev, CuPy 13/14). NumPy-only spellings (np.add.reduce, np.maximum.reduce,
# np.frompyfunc, np.ndindex...) are refused here as they would fail on a GPU.
CUPY_NAMES = frozenset("""
    empty zeros ones full array ascontiguousarray arange eye zeros_like ones_like empty_like
    full_like reshape transpose moveaxis swapaxes concatenate stack expand_dims squeeze
    broadcast_to pad take where copyto add subtract multiply divide true_divide negative
    power exp log log1p sqrt square tanh sin cos absolute abs sign maximum minimum fmax fmin
    greater less greater_equal less_equal equal not_equal logical_and logical_or logical_not
    isfinite isnan heaviside sum mean max min prod argmax all any matmul dot vdot tensordot
    einsum outer float16 float32 float64 int8 int16 int32 int64 uint8 bool_ dtype ndarray
    result_type shape ndim inf nan pi newaxis lib
    """.split())


def _cupy_name(name: str):
    if name not in CUPY_NAMES:
        raise AttributeError(f"the cupy stand-in refuses {name!r}: not in CuPy's NumPy-compatible "
                             "API as graphnn uses it (tests/cupy_standin.py CUPY_NAMES)")
    return getattr(np, name)


def _module() -> types.ModuleType:
    m = types.ModuleType("cupy", "graphnn's CPU stand-in for CuPy (tests/cupy_standin.py)")
    m.ElementwiseKernel = ElementwiseKernel
    m.asnumpy = asnumpy
    m.asarray = np.asarray
    m.__getattr__ = _cupy_name  # PEP 562: the rest is NumPy's, where CuPy has the name
    m.__standin__ = True
    return m


@contextlib.contextmanager
def install():
    """Make `import cupy` give the stand-in inside the block; restore afterwards."""
    missing = object()
    old = sys.modules.get("cupy", missing)
    sys.modules["cupy"] = mod = _module()
    try:
        yield mod
    finally:
        if old is missing:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = old
