"""CUDA C printing of element-wise expressions (graphnn/compile/cuda_c.py) and the
CPU stand-in for CuPy (tests/cupy_standin.py).

* Every element-wise op of the catalog, its first derivatives and the second
  derivatives of a few: the kernel body printed by cuda_c, compiled as C and run
  through the stand-in, equals NumPy's evaluation of the same expression by
  graphnn's own printer (ExprPrinter), float64 and float32, on random values and
  edge values (0, +-1e-30, +-50, +-800 / +-100, NaN).
* Every body compiles for the GPU (nvcc -arch=sm_90 -ptx, one call) and float32
  kernels contain no `.f64` instruction.
* The stand-in: broadcasting, scalars, outputs omitted/given/non-contiguous,
  several outputs, launch counting.

Missing tools (cc, nvcc) skip these checks locally and fail them on CI (CI=true).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import graphnn  # noqa: F401  (registers the catalog)
from graphnn.compile import cuda_c
from graphnn.compile.cuda_c import CudaCPrinter, expr_code, kernel_body, kernel_name
from graphnn.ops.runtime import erf
from graphnn.ops import REGISTRY, get_op
from graphnn.ops.elementwise import ARG_NAMES, SYMBOLS, ExprPrinter

sys.path.insert(0, os.path.dirname(__file__))
import cupy_standin  # noqa: E402

NAMES = {SYMBOLS[a]: a for a in ARG_NAMES}
SECOND = ("sigmoid", "tanh", "gelu", "softplus")
# float32: values that cancel to near 0 from terms of size ~1 keep an absolute error of
# a few ulps of 1 (see agree)
TOL = {"float64": dict(rtol=1e-12, atol=1e-300), "float32": dict(rtol=1e-5, atol=1e-6)}


def need(tool: str) -> str:
    """The tool's path; skip without it, but fail on CI, where a skip would hide a broken check."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is not installed, and CI=true: this check must run on CI")
        pytest.skip(f"{tool} is not installed")
    return path


def need_cc() -> None:
    if cupy_standin.compiler() is None:
        need(os.environ.get("CC", "cc"))


# -- the catalog ----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def catalog() -> tuple:
    """(label, expression with attribute defaults bound, argument names) for every
    element-wise op, every first derivative and the second derivatives of SECOND."""
    bases = sorted(n for n, op in list(REGISTRY.items())
                   if op.elementwise is not None and op.elementwise.base is None)
    cases = []

    def add(name):
        spec = get_op(name).elementwise
        cases.append((name, spec.concrete(dict(spec.params)), spec.args))
        return spec

    for name in bases:
        spec = add(name)
        for a in spec.args:
            d = add(f"{name}_d{a}")
            if name in SECOND:
                for b in d.args:
                    add(f"{name}_d{a}_d{b}")
    return tuple(cases)


def edges(dtype) -> np.ndarray:
    big = 800.0 if dtype == "float64" else 100.0
    return np.array([0.0, 1e-30, -1e-30, 1.0, -1.0, 0.5, -2.5, 3.0, 50.0, -50.0, big, -big,
                     np.nan], dtype=dtype)


def inputs(dtype, n_random=200) -> dict[str, np.ndarray]:
    """x and y: every pair of edge values, then random values; the other arguments:
    edge values in random order, then random values."""
    rng = np.random.default_rng(15)
    e = edges(dtype)
    gx, gy = (g.ravel() for g in np.meshgrid(e, e, indexing="ij"))
    cols = {"x": gx, "y": gy}
    for a in ARG_NAMES[2:]:
        cols[a] = rng.permutation(gx)
    return {a: np.concatenate([v, rng.normal(0.0, 2.0, n_random)]).astype(dtype)
            for a, v in cols.items()}


def numpy_eval(expr, values: dict, dtype) -> np.ndarray:
    """The expression evaluated by graphnn's NumPy printer (exp clamped, as fused code is)."""
    text = ExprPrinter(dtype).doprint(expr)
    env = {"np": np, "_erf": erf, "inf": np.inf, "nan": np.nan,  # ExprPrinter prints inf bare
           **{k: v.astype(dtype) for k, v in values.items()}}
    with np.errstate(all="ignore"):
        out = eval(text, env)  # noqa: S307 - our own printer's text
    return np.broadcast_to(np.asarray(out, dtype=dtype), next(iter(values.values())).shape)


def agree(got, want) -> np.ndarray:
    """Which elements agree: NaN exactly where NumPy has NaN; elsewhere equal to rtol
    1e-12 (float64) or 1e-5 (float32). float32 also has atol 1e-6: where terms of
    size ~1 cancel (1 - tanh(x)**2 near saturation, exp(x) - 1 near 0, gelu' near
    -1), one ulp of a libm function (glibc's tanhf against NumPy's SIMD tanh,
    erff against math.erf) is more than 1e-5 of the result."""
    tol = TOL[got.dtype.name]
    return np.isclose(got, want, equal_nan=True, **tol) & (np.isnan(got) == np.isnan(want))


def catalog_kernel(dtype):
    """One ElementwiseKernel computing every catalog expression (each body in its own
    C block, as printed by kernel_body), so the whole catalog is one compilation."""
    cases = catalog()
    ctype = cuda_c.C_TYPE[dtype]
    operation = "\n".join("{\n" + kernel_body([(f"o{k}", e)], NAMES, dtype) + "\n}"
                          for k, (_, e, _) in enumerate(cases))
    return cupy_standin.ElementwiseKernel(
        ", ".join(f"{dtype} {a}" for a in ARG_NAMES),
        ", ".join(f"{dtype} o{k}" for k in range(len(cases))),
        operation, name=f"catalog_{ctype}", preamble=cuda_c.PREAMBLE[dtype])


# -- equal to NumPy -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_catalog_equals_numpy(dtype):
    need_cc()
    cases = catalog()
    assert len(cases) >= 85  # today 31 ops, 50 first derivatives, 4 second derivatives
    vals = inputs(dtype)
    before = cupy_standin.launches
    outs = catalog_kernel(dtype)(*[vals[a] for a in ARG_NAMES])
    assert cupy_standin.launches == before + 1
    failures = []
    for (label, expr, args), got in zip(cases, outs):
        want = numpy_eval(expr, vals, dtype)
        assert got.dtype == np.dtype(dtype)
        bad = ~agree(got, want)
        if bad.any():
            where = {a: vals[a][bad][:3].tolist() for a in args}
            failures.append(f"{label}: {expr}: {bad.sum()} elements differ, e.g. at {where}: "
                            f"C {got[bad][:3]} NumPy {want[bad][:3]}")
    assert not failures, "\n".join(failures)


def test_multi_output_body_shares_temporaries():
    """Forward and derivative in one body: CSE shares exp(-x); both equal NumPy."""
    need_cc()
    sig = get_op("sigmoid").elementwise.expr
    dsig = get_op("sigmoid_dx").elementwise.expr
    body = kernel_body([("y", sig), ("dy", dsig)], {SYMBOLS["x"]: "x"}, "float64")
    assert body.count("exp(") == 1 and body.startswith("const double _t0 = ")
    k = cupy_standin.ElementwiseKernel("float64 x", "float64 y, float64 dy", body, "sig",
                                       preamble=cuda_c.PREAMBLE["float64"])
    x = inputs("float64")["x"]
    y, dy = k(x)
    np.testing.assert_allclose(y, numpy_eval(sig, {"x": x}, "float64"), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(dy, numpy_eval(dsig, {"x": x}, "float64"), rtol=1e-12,
                               equal_nan=True)


# -- compiles for the GPU ---------------------------------------------------------------

EXTRA = {  # printer features the catalog does not reach, compiled too
    "inf_nan": sp.Piecewise((sp.oo * SYMBOLS["x"], SYMBOLS["x"] > 0), (-sp.oo, SYMBOLS["y"] > 0)),
    "powers": SYMBOLS["x"] ** 3 + (SYMBOLS["x"] + 1) ** -4 + SYMBOLS["x"] ** sp.Rational(3, 2)
    + 1 / sp.sqrt(SYMBOLS["y"]) + SYMBOLS["x"] ** 7 + sp.pi * SYMBOLS["y"],
    "minmax_sign": sp.Max(SYMBOLS["x"], SYMBOLS["y"], 0) - sp.Min(SYMBOLS["x"], 1)
    + sp.Heaviside(SYMBOLS["x"]) + sp.sign(SYMBOLS["y"]) + sp.Abs(SYMBOLS["x"]),
    "logic": sp.Piecewise((SYMBOLS["x"], sp.And(SYMBOLS["x"] > 0, sp.Not(SYMBOLS["y"] < 1))),
                          (SYMBOLS["y"], sp.Or(sp.Eq(SYMBOLS["x"], 2), SYMBOLS["y"] > 3))),
}


def cu_source() -> tuple[str, list[str]]:
    """Every catalog body (and EXTRA) as a __global__ kernel over raw pointers, both dtypes."""
    cases = [(label, e, args) for label, e, args in catalog()] + \
        [(label, e, ("x", "y")) for label, e in EXTRA.items()]
    parts = [cuda_c.PREAMBLE["float32"], cuda_c.PREAMBLE["float64"]]
    names = []
    for dtype, prefix in (("float32", "f32_"), ("float64", "f64_")):
        t = cuda_c.C_TYPE[dtype]
        for label, e, args in cases:
            name = kernel_name(prefix + label)
            names.append(name)
            params = "".join(f"const {t} *__restrict__ {a}_, " for a in args)
            loads = "\n".join(f"  const {t} {a} = {a}_[i];" for a in args)
            parts.append(
                f'extern "C" __global__ void {name}({params}{t} *__restrict__ out_, int n) {{\n'
                f"  int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i >= n) return;\n"
                f"{loads}\n  {t} out;\n  {{\n{kernel_body([('out', e)], NAMES, dtype)}\n  }}\n"
                f"  out_[i] = out;\n}}\n")
    return "\n".join(parts), names


def ptx_sections(ptx: str) -> dict[str, str]:
    """Each .entry / .func of a PTX text by name."""
    found = {}
    for s in re.split(r"(?m)^(?=\.(?:visible |weak |extern )*\.(?:entry|func) )", ptx)[1:]:
        m = re.match(r"\.(?:visible |weak |extern )*\.(?:entry|func)\s+(?:\([^)]*\)\s*)?(\w+)", s)
        assert m, s[:200]
        found[m.group(1)] = s
    return found


def test_every_body_compiles_for_sm90_and_float32_stays_float32(tmp_path):
    nvcc = need("nvcc")
    src, names = cu_source()
    cu = tmp_path / "catalog.cu"
    cu.write_text(src)
    r = subprocess.run([nvcc, "-arch=sm_90", "-ptx", "-o", str(tmp_path / "catalog.ptx"), str(cu)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "warning" not in r.stderr, r.stderr[-4000:]
    found = ptx_sections((tmp_path / "catalog.ptx").read_text())
    assert set(names) <= set(found)
    assert all(kind in names for kind in found), f"non-inlined functions: {set(found) - set(names)}"
    doubles = [n for n in names if n.startswith("f32_") and ".f64" in found[n]]
    assert not doubles, f"float32 kernels computing in double: {doubles}"
    assert any(".f64" in found[n] for n in names if n.startswith("f64_"))


def test_every_body_compiles_as_c(tmp_path):
    """The same source (both preambles, every body) is C too; EXTRA runs and equals NumPy."""
    need_cc()
    for dtype in ("float64", "float32"):
        body = "\n".join("{\n" + kernel_body([(f"o{k}", e)], NAMES, dtype) + "\n}"
                         for k, e in enumerate(EXTRA.values()))
        k = cupy_standin.ElementwiseKernel(
            f"{dtype} x, {dtype} y", ", ".join(f"{dtype} o{k}" for k in range(len(EXTRA))),
            body, "extra", preamble=cuda_c.PREAMBLE["float32"] + cuda_c.PREAMBLE["float64"])
        vals = inputs(dtype)
        xy = {"x": vals["x"], "y": vals["y"]}
        for e, got in zip(EXTRA.values(), k(vals["x"], vals["y"])):
            want = numpy_eval(e, xy, dtype)
            assert agree(got, want).all(), (e, got, want)


# -- the printer's text ------------------------------------------------------------------

def test_float32_text_is_float32_only():
    for label, e, _ in catalog():
        body = kernel_body([("out", e)], NAMES, "float32")
        assert "double" not in body, (label, body)
        nums = re.findall(r"(?<![\w.])(\d+\.\d*(?:e[-+]?\d+)?|\d+e[-+]?\d+)(f?)", body)
        assert all(f == "f" for _, f in nums), (label, body)
        calls = set(re.findall(r"\b([a-z_][a-z0-9_]*)\(", body))
        assert all(c.endswith("f") for c in calls), (label, calls, body)


def test_printing_rules():
    x, y = SYMBOLS["x"], SYMBOLS["y"]
    n = {x: "x", y: "y"}
    f64 = functools.partial(expr_code, names=n, dtype="float64")
    f32 = functools.partial(expr_code, names=n, dtype="float32")
    assert f64(x**2) == "(x*x)" and f32(x**3) == "(x*x*x)"
    assert f64(x**-1) == "(1.0/x)" and f64(x**-2) == "(1.0/(x*x))"
    assert f32((x + y)**2) == "gn_pow2f(x + y)"
    assert f64(sp.sqrt(x)) == "sqrt(x)" and f32(1 / sp.sqrt(x)) == "(1.0f/sqrtf(x))"
    assert f32(x**y) == "powf(x, y)" and f64(x**7) == "pow(x, 7.0)"
    assert f64(x**sp.Float(2.0)) == "(x*x)" and f64(x**sp.Float(-1.0)) == "(1.0/x)"
    assert f64(sp.pi * x) == "3.141592653589793*x" and f32(sp.pi * x) == "3.1415927f*x"
    assert f32(x / sp.sqrt(2)) == "0.70710677f*x"
    assert f64(sp.exp(x)) == "exp(gn_min(x, 300.0))" and f32(sp.exp(x)) == "expf(gn_minf(x, 40.0f))"
    assert expr_code(sp.exp(x), n, "float64", clamp_exp=False) == "exp(x)"
    assert f64(sp.log(1 + sp.exp(x))) == "log1p(exp(gn_min(x, 300.0)))"
    assert f32(sp.Max(x, y)) == "gn_maxf(x, y)" and f64(sp.Min(x, y)) == "gn_min(x, y)"
    assert f64(sp.Heaviside(x)) == "gn_heaviside(x, 0.5)" and f32(sp.Abs(x)) == "fabsf(x)"
    assert f32(sp.Piecewise((x, x > 0), (0, True))) == "((x > 0.0f) ? x : 0.0f)"
    assert f64(sp.Piecewise((x, x > 0))) == "((x > 0.0) ? x : (0.0/0.0))"
    assert f64(sp.oo * x) == "(1.0/0.0)*x"
    assert "M_" not in f64(sp.sqrt(2) * x + sp.E + sp.pi)
    with pytest.raises(KeyError, match="'z'"):
        f64(SYMBOLS["z"])
    with pytest.raises(ValueError, match="function"):
        f64(sp.gamma(x))
    with pytest.raises(ValueError):
        expr_code(x, {x: "x; evil()"}, "float64")
    with pytest.raises(ValueError):
        expr_code(x, n, "int32")
    assert isinstance(CudaCPrinter("float32"), sp.printing.c.C99CodePrinter)


def test_kernel_body_checks_names_and_is_deterministic():
    x = SYMBOLS["x"]
    with pytest.raises(ValueError, match="reserved"):
        kernel_body([("_t0", x)], {x: "x"}, "float64")
    with pytest.raises(ValueError, match="duplicate"):
        kernel_body([("o", x), ("o", x)], {x: "x"}, "float64")
    with pytest.raises(ValueError):
        kernel_body([("float", x)], {x: "x"}, "float64")
    # byte-identical in a fresh process with another hash seed (CuPy's cache keys on it)
    code = ("import sympy as sp, graphnn; from graphnn.compile.cuda_c import kernel_body; "
            "from graphnn.ops import get_op; from graphnn.ops.elementwise import SYMBOLS as S; "
            "n = {S[a]: a for a in S}; e = [get_op(o).elementwise for o in "
            "('softplus', 'softplus_dx', 'gelu_dx', 'trainable_swish_da', 'elu_dx')]; "
            "print(kernel_body([(f'o{k}', s.concrete(dict(s.params))) for k, s in enumerate(e)], "
            "n, 'float32'), end='')")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    specs = [get_op(o).elementwise for o in
             ("softplus", "softplus_dx", "gelu_dx", "trainable_swish_da", "elu_dx")]
    here = kernel_body([(f"o{k}", s.concrete(dict(s.params))) for k, s in enumerate(specs)],
                       {SYMBOLS[a]: a for a in SYMBOLS}, "float32")
    assert r.stdout == here


def test_kernel_name():
    assert kernel_name("fused_tanh_mul_add") == "fused_tanh_mul_add"
    assert kernel_name("fused tanh*mul+add (h1)") == "fused_tanh_mul_add_h1"
    assert kernel_name("3x") == "k_3x" and kernel_name("") == "kernel"
    assert kernel_name("int") == "int_k" and kernel_name("expf") == "expf_k"
    assert kernel_name("__global__") == "global" and kernel_name("gn_max") == "gn_max_k"
    assert kernel_name("gn_fused_tanh_3") == "gn_fused_tanh_3"
    long = kernel_name("a" * 200), kernel_name("a" * 201)
    assert long[0] != long[1] and all(len(n) <= 48 for n in long)
    for text in ["x" * 60, "é€", "a-b", "1", "void", "__x", "\"); system(\"", "_t0"]:
        n = kernel_name(text)
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n), (text, n)
        assert kernel_name(text) == n


def test_inputs_of_other_dtypes_are_cast_to_the_kernels():
    """int64 / int64 divides as floats, a bool is 0/1, a float64 scalar in a float32
    kernel is rounded to float32 first: the values of graphnn's dtype rule."""
    need_cc()
    x, y, z = SYMBOLS["x"], SYMBOLS["y"], SYMBOLS["z"]
    e = sp.tanh(x / y) + z * x
    names = {x: "a0", y: "a1", z: "a2"}
    assert expr_code(x / y, names, "float64") == "a0/a1"  # integer division, were they ints
    assert expr_code(x / y, names, "float64", types={x: "int64", y: "int64"}) == \
        "((double)a0)/((double)a1)"
    for dtype, ztype in (("float64", "bool"), ("float32", "float64")):
        types = {x: "int64", y: "int64", z: ztype}
        body = kernel_body([("out", e)], names, dtype, types=types)
        k = cupy_standin.ElementwiseKernel(f"int64 a0, int64 a1, {ztype} a2", f"{dtype} out", body,
                                           "casts", preamble=cuda_c.PREAMBLE[dtype])
        a0, a1 = np.array([7, 5, 3, -7]), np.array([2, 2, 2, 4])
        a2 = np.array([True, False, True, False]) if ztype == "bool" else np.array(0.1)
        got = k(a0, a1, a2)
        f = a0.astype(dtype), a1.astype(dtype), np.asarray(a2).astype(dtype)
        np.testing.assert_allclose(got, np.tanh(f[0] / f[1]) + f[2] * f[0], **TOL[dtype])


def test_nan_semantics_match_numpy():
    """gn_max/gn_min, sign, heaviside and the exp clamp keep NaN where NumPy does
    (fmax/fmin would not)."""
    need_cc()
    x, y = SYMBOLS["x"], SYMBOLS["y"]
    exprs = [sp.Max(x, y), sp.Min(x, y), sp.sign(x), sp.Heaviside(x), sp.exp(x),
             sp.Max(x, 0) * sp.exp(-y)]
    body = "\n".join("{\n" + kernel_body([(f"o{k}", e)], NAMES, "float64") + "\n}"
                     for k, e in enumerate(exprs))
    k = cupy_standin.ElementwiseKernel("float64 x, float64 y", ", ".join(
        f"float64 o{k}" for k in range(len(exprs))), body, "nans",
        preamble=cuda_c.PREAMBLE["float64"])
    v = np.array([np.nan, 1.0, np.nan, 0.0, -0.0, -3.0, 800.0])
    w = np.array([1.0, np.nan, np.nan, -0.0, 0.0, np.inf, 1.0])
    for e, got in zip(exprs, k(v, w)):
        want = numpy_eval(e, {"x": v, "y": w}, "float64")
        np.testing.assert_array_equal(got, want, err_msg=str(e))


def test_missing_tools_skip_locally_and_fail_on_ci(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        need("nvcc")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        need("nvcc")


# -- the stand-in -------------------------------------------------------------------------

def test_standin_compiles_each_source_once_outside_the_repo():
    need_cc()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert not os.path.abspath(cupy_standin.cache_dir()).startswith(repo + os.sep)
    body = "y = 2.0 * x;  /* once */"
    a = cupy_standin.ElementwiseKernel("float64 x", "float64 y", body, "twice")
    b = cupy_standin.ElementwiseKernel("float64 x", "float64 y", body, "twice")
    a(np.ones(2)), b(np.ones(2))
    n = len(cupy_standin._LIBS)
    cupy_standin.ElementwiseKernel("float64 x", "float64 y", body, "twice")(np.ones(3))
    assert len(cupy_standin._LIBS) == n and a._fn is b._fn


def test_standin_module_delegates_to_numpy():
    import types
    with cupy_standin.install() as cp:
        import cupy
        assert cupy is cp and cp.__standin__
        a = cp.arange(6.0).reshape(2, 3)
        c = cp.empty((2, 2))
        assert cp.matmul(a, a.T, out=c) is c
        assert cp.float32 is np.float32 and cp.ndarray is np.ndarray and cp.pi == np.pi
        assert float(cp.sum(a)) == 15.0
        h = cp.asnumpy(a)
        assert isinstance(h, np.ndarray) and h is not a and (h == a).all()
        assert cp.asarray(a) is a
        from cupy import ElementwiseKernel, maximum  # noqa: F401
    assert not isinstance(sys.modules.get("cupy"), types.ModuleType) or \
        not getattr(sys.modules["cupy"], "__standin__", False)


def test_standin_restores_previous_cupy():
    sentinel = object()
    sys.modules["cupy"] = sentinel
    try:
        with cupy_standin.install():
            assert sys.modules["cupy"] is not sentinel
        assert sys.modules["cupy"] is sentinel
    finally:
        del sys.modules["cupy"]


def test_standin_elementwise_kernel():
    need_cc()
    K = cupy_standin.ElementwiseKernel
    k = K("float64 x, float32 s", "float64 y", "y = x * s + 1.0;", "axpb")
    n0 = cupy_standin.launches
    x = np.arange(6.0).reshape(2, 3)
    # broadcasting with a row and a scalar; output omitted: allocated and returned alone
    y = k(x, np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_array_equal(y, x * [1, 2, 3] + 1)
    assert y.dtype == np.float64 and y.shape == (2, 3)
    np.testing.assert_array_equal(k(x, 2.0), x * 2 + 1)  # a Python scalar, cast to float32
    np.testing.assert_array_equal(k(x, np.float64(0.1)), x * np.float32(0.1) + 1)
    np.testing.assert_array_equal(k(2.0, x.astype(np.float32)), 2 * x + 1)  # shape from s
    np.testing.assert_array_equal(k(x[:, :1], np.float32([1, 2, 3])), x[:, :1] * [1, 2, 3] + 1)
    # output given: written in place and returned; a non-contiguous output
    out = np.zeros((2, 3))
    assert k(x, 3.0, out) is out and (out == 3 * x + 1).all()
    buf = np.zeros((3, 2))
    assert k(x, 1.0, buf.T) is not None and (buf.T == x + 1).all()
    # a non-contiguous input
    np.testing.assert_array_equal(k(x.T.copy().T, 1.0), x + 1.0)
    np.testing.assert_array_equal(k(np.arange(12.0).reshape(2, 6)[:, ::2], 1.0),
                                  np.arange(12.0).reshape(2, 6)[:, ::2] + 1)
    # outputs start from their current value (in-place updates read them)
    acc = K("float64 g", "float64 p", "p = p - 0.5 * g;", "sgd")
    p = np.ones(4)
    acc(np.full(4, 2.0), p)
    assert (p == 0.0).all()
    # several outputs: a tuple; booleans; scalar-only calls with size=; the index i
    two = K("float64 a, float64 b", "float64 s, bool m", "s = a + b; m = a > b;", "two")
    s, m = two(np.array([1.0, 5.0]), 2.0)
    assert (s == [3, 7]).all() and m.dtype == np.bool_ and m.tolist() == [False, True]
    s2, m2 = np.empty(2), np.empty(2, bool)
    assert two(np.array([1.0, 5.0]), 2.0, s2, m2) == (s2, m2)
    fill = K("float64 v", "float64 o", "o = v + i;", "fill")
    np.testing.assert_array_equal(fill(4.0, size=3), [4.0, 5.0, 6.0])
    assert cupy_standin.launches == n0 + 13
    assert k(np.zeros((0, 3)), 1.0).shape == (0, 3) and cupy_standin.launches == n0 + 13
    # what CuPy refuses, refused
    for bad in [lambda: k(x, 1.0, np.zeros(3)), lambda: k(x.astype(np.float32), 1.0),
                lambda: k(x, np.float64([1.0, 2.0, 3.0])),
                lambda: k(x, 1.0, out.astype(np.float32)),
                lambda: k(x, 1.0, [0.0] * 6), lambda: k(x), lambda: k(x, 1.0, size=6),
                lambda: fill(1.0)]:
        with pytest.raises((TypeError, ValueError)):
            bad()
    with pytest.raises(ValueError, match="concrete type"):
        K("T x", "T y", "y = x;")
    with pytest.raises(ValueError):
        K("float64 i", "float64 y", "y = i;")
    with pytest.raises(ValueError, match="kernel name"):
        K("float64 x", "float64 y", "y = x;", "not a name")
    assert K("float64 x", "float64 y", "y = x;", "nr", no_return=True)(x) is None
    assert isinstance(K("float64 x", "float64 y", "y = x;", "rt", return_tuple=True)(x), tuple)
    with pytest.raises(RuntimeError, match="C compilation failed"):
        K("float64 x", "float64 y", "y = x +;", "broken")(x)


# -- NVRTC, as CuPy compiles (no host headers: math.h macros do not exist there) ----------

def find_nvrtc() -> str | None:
    """libnvrtc from $GRAPHNN_NVRTC, the nvidia-cuda-nvrtc wheel, or the system."""
    import ctypes.util
    import glob
    if os.environ.get("GRAPHNN_NVRTC"):
        return os.environ["GRAPHNN_NVRTC"]
    for p in sys.path:
        for pattern in ("nvidia/cu13/lib/libnvrtc.so.*", "nvidia/cuda_nvrtc/lib/libnvrtc.so.*"):
            hits = sorted(h for h in glob.glob(os.path.join(p, pattern)) if "builtins" not in h)
            if hits:
                return hits[0]
    return ctypes.util.find_library("nvrtc")


def nvrtc_ptx(lib_path: str, source: str, arch: str = "compute_90") -> str:
    """PTX of `source` compiled by NVRTC through ctypes (needs no GPU)."""
    import ctypes
    import glob
    for b in glob.glob(os.path.join(os.path.dirname(lib_path), "libnvrtc-builtins.so.*")):
        if ".alt." not in b:  # NVRTC dlopens it by name: load it first where it lies
            ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(lib_path)
    prog = ctypes.c_void_p()

    def check(status, what):
        if status != 0:
            raise RuntimeError(f"{what}: NVRTC error {status}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"catalog.cu", 0, None, None),
          "nvrtcCreateProgram")
    opts = [f"-arch={arch}".encode(), b"-std=c++11", b"-ftz=true"]  # C++11: the oldest CuPy uses
    status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    try:
        if status != 0:
            raise RuntimeError(f"NVRTC failed ({status}):\n{log.value.decode()[-4000:]}")
        check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
        ptx = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def test_every_body_compiles_with_nvrtc():
    lib = find_nvrtc()
    if lib is None:
        if os.environ.get("CI") == "true":  # the test extra installs it: a skip would hide a gap
            pytest.fail("libnvrtc not found in CI (the test extra installs nvidia-cuda-nvrtc)")
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc, or set GRAPHNN_NVRTC)")
    src, names = cu_source()
    sections = ptx_sections(nvrtc_ptx(lib, src))
    assert set(names) <= set(sections)
    doubles = [n for n in names if n.startswith("f32_") and ".f64" in sections[n]]
    assert not doubles, f"float32 kernels computing in double: {doubles}"
