"""Fused update loops (graphnn/compile/loops.py): printed from the same SymPy
expressions as the NumPy calls, equal to them, used only where they apply."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn.compile import fusion, loops
from graphnn.errors import GraphError
from graphnn.nn import optim

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from workloads import SPECS, data, graphnn_step, init_params  # noqa: E402

numba_only = pytest.mark.skipif(not loops.available(), reason="Numba is not installed")
x, y = sp.symbols("x y", real=True)


def _loop_value(expr, values, literals=None):
    """The printed loop expression evaluated by Python, element by element."""
    text = loops.LoopPrinter(literals).doprint(expr)
    fn = eval(f"lambda x, y: {text}", {"math": math})  # noqa: S307 - our own printed code
    return np.array([fn(a, b) for a, b in values])


@pytest.mark.parametrize("expr", [
    x * y + 3 * x ** 2, x / (y ** 2 + 1), sp.sqrt(x ** 2 + y ** 2), 1 / sp.sqrt(x ** 2 + 1),
    sp.exp(-x) / (1 + sp.exp(-x)) ** 2, sp.log(1 + x ** 2), sp.tanh(x) - sp.Abs(y),
    sp.Piecewise((x, x > 0), (0, True)), sp.Piecewise((1, y <= x), (0, True)) * y,
    sp.Max(x, y), sp.Min(x, 0.5 * y), sp.Rational(1, 3) * x - sp.pi * y, x ** 3 - y ** -2,
])
def test_loop_printer_means_what_the_numpy_emitter_means(expr):
    rng = np.random.default_rng(0)
    pairs = list(zip(rng.normal(size=40) * 3, rng.normal(size=40) * 3)) + [(800.0, -900.0)]
    xs, ys = np.array(pairs).T
    shapes = {x: "full", y: "full"}
    lines, n_t, n_b, fills = fusion.emit(expr, shapes, "float64", None)
    env = {"x": xs, "y": ys, "OUT": np.empty_like(xs)}
    env.update({f"F{k}": np.full(xs.shape, float(v)) for k, v in enumerate(fills)})
    env.update({f"T{k}": np.empty_like(xs) for k in range(n_t)})
    env.update({f"B{k}": np.empty(xs.shape, bool) for k in range(n_b)})
    with np.errstate(all="ignore"):
        for ln in lines:
            eval(ln.format(**{k: k for k in env}), {"np": np}, env)  # noqa: S307
        got = _loop_value(expr, pairs)
    np.testing.assert_allclose(got, env["OUT"], rtol=1e-13, atol=1e-15)  # math.tanh: 1 ulp off


def test_loop_printer_keeps_nan_through_max_and_min_as_numpy_does():
    pairs = [(math.nan, 1.0), (1.0, math.nan), (2.0, 1.0), (-1.0, 3.0)]
    for e, ref in ((sp.Max(x, y), np.maximum), (sp.Min(x, y), np.minimum)):
        got = _loop_value(e, pairs)
        want = ref(*np.array(pairs).T)
        np.testing.assert_array_equal(got, want)


def test_loop_printer_prints_exact_literals_and_invariant_factors_first():
    p = loops.LoopPrinter({sp.Symbol("c", real=True): "0.09999999999999998"},
                          frozenset({sp.Symbol("s", real=True)}))
    s, c, m = sp.symbols("s c m", real=True)
    assert p.doprint(c * (x - m) + m) == "0.09999999999999998*(-m + x) + m"
    assert p.doprint(sp.Float(0.1) * x) == "0.1*x"
    assert p.doprint(-s * x * y / (1 + x)).startswith("(-s)*")  # s hoisted out of the loop
    assert p.doprint(s * c * (x + m)) == "(0.09999999999999998*s)*(m + x)"  # a sum stays one factor
    assert not loops.printable(sp.erf(x)) and loops.printable(sp.Max(x, 0) + sp.sqrt(y))
    assert [loops.literal(v) for v in (math.inf, -math.inf, math.nan, -0.5)] == \
        ["math.inf", "(-math.inf)", "math.nan", "(-0.5)"]  # names the loop knows


def _adam_mlp():
    spec = SPECS["mlp"]
    return graphnn_step(spec, init_params(spec))


@numba_only
def test_large_adam_update_is_one_fused_loop_equal_to_the_numpy_calls():
    spec = SPECS["mlp"]
    X, Y = data(spec)
    runs = {}
    for kernels in ("numpy", "auto"):
        g, loss, ups, ps = _adam_mlp()
        prog = gn.compile([loss], updates=ups, kernels=kernels)
        losses = [float(prog(x=X, y=Y)[0]) for _ in range(4)]
        runs[kernels] = (losses, [np.array(g.values[p.name]) for p in ps], prog.source)
    (l0, p0, s0), (l1, p1, s1) = runs["numpy"], runs["auto"]
    assert "numba" not in s0
    step = s1[s1.index("def step("):]
    assert "import numba" in s1 and "def _loop0(" in s1 and "_loop0(_flat0_" in step
    assert "np.sqrt(_flat0" not in step  # no whole-buffer NumPy calls left for Adam
    assert "one pass over 85002 elements" in s1
    np.testing.assert_allclose(l1, l0, rtol=1e-13)
    for a, b in zip(p1, p0):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-15)


@numba_only
def test_small_updates_and_float32_stay_numpy():
    spec = dict(SPECS["mlp"], sizes=[4, 8, 3])
    g, loss, ups, _ = graphnn_step(spec, init_params(spec))
    assert "numba" not in gn.compile([loss], updates=ups).source  # auto: too small to pay
    assert "_loop0(" in gn.compile([loss], updates=ups, kernels="numba").source
    g, loss, ups, _ = graphnn_step(SPECS["mlp"], init_params(SPECS["mlp"]), dtype="float32")
    assert "numba" not in gn.compile([loss], updates=ups, kernels="numba").source


@numba_only
@pytest.mark.parametrize("kind", ["two_groups", "stored"])
def test_loops_keep_the_order_a_second_reader_needs(kind):
    """W1's gradient feeds two update groups (or is stored as an update): the loops
    must leave it intact for the later reader, and give the NumPy results."""
    from test_fast import _shared_gradient_net
    rng = np.random.default_rng(6)
    feeds = {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 2))}
    got = []
    for kernels in ("numpy", "numba"):
        g, outs, ups = _shared_gradient_net(kind)
        prog = gn.compile(outs, updates=ups, kernels=kernels)
        losses = [float(prog(**feeds)[0]) for _ in range(3)]
        got.append((losses, {p.name: np.array(g.values[p.name]) for p in g.params}, prog.source))
    assert "_loop" in got[1][2]
    np.testing.assert_allclose(got[1][0], got[0][0], rtol=1e-13)
    for k in got[0][1]:
        np.testing.assert_allclose(got[1][1][k], got[0][1][k], rtol=1e-13, atol=1e-15)


def test_kernels_errors(monkeypatch):
    g, loss, ups, _ = graphnn_step(SPECS["xor"])
    with pytest.raises(GraphError, match=r"unknown kernels 'llvm'.*'auto', 'numpy', 'numba'"):
        gn.compile([loss], updates=ups, kernels="llvm")
    monkeypatch.setattr(loops, "available", lambda: False)
    with pytest.raises(GraphError, match=r"kernels='numba' needs Numba.*graphnn\[fast\]"):
        gn.compile([loss], updates=ups, kernels="numba")
    src = gn.compile([loss], updates=ups, kernels="auto").source  # without Numba: NumPy
    assert "numba" not in src


@numba_only
def test_trainer_with_adam_trains_through_the_loop():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 64))
    Y = np.eye(2)[(X[:, 0] * X[:, 1] > 0).astype(int)]
    g = gn.Graph("big")
    x, y = g.input("x", (None, 64)), g.input("y", (None, 2))
    h = gn.relu(x @ g.param("W1", value=rng.normal(size=(64, 256)) / 8) + g.param("b1", value=np.zeros(256)))
    out = h @ g.param("W2", value=rng.normal(size=(256, 2)) / 16) + g.param("b2", value=np.zeros(2))
    loss = gn.softmax_cross_entropy(out, y)
    tr = gn.Trainer(loss, optim.Adam(lr=0.01))
    hist = tr.fit({"x": X, "y": Y}, epochs=5, batch_size=64, seed=0, verbose=False)
    assert "_loop0(" in tr.step_program.source
    assert hist.loss[-1] < 0.5 * hist.loss[0]


@numba_only
def test_saved_program_is_numpy_only_and_computes_the_same(tmp_path):
    import importlib.util
    spec = SPECS["mlp"]
    X, Y = data(spec)
    g, loss, ups, ps = _adam_mlp()
    prog = gn.compile([loss], updates=ups)
    assert "import numba" in prog.source
    prog.save(tmp_path / "mlp_step.py")
    text = (tmp_path / "mlp_step.py").read_text()
    assert "numba" not in text and "np.sqrt(_flat0" in text
    mod_spec = importlib.util.spec_from_file_location("mlp_step", tmp_path / "mlp_step.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    saved = [float(mod.run(x=X, y=Y)[0]) for _ in range(3)]
    live = [float(prog(x=X, y=Y)[0]) for _ in range(3)]
    np.testing.assert_allclose(saved, live, rtol=1e-12)


@numba_only
def test_hostile_names_stay_in_comments():
    """Names from a model file reach the loop only through comments and identifiers."""
    rng = np.random.default_rng(1)
    g = gn.Graph("bad")
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    W = g.param('w"""\nimport os  # \\', value=rng.normal(size=(3, 2)))
    b = g.param("b'''\n", value=np.zeros(2))
    loss = gn.mse(x @ W + b, y)
    ups = optim.Adam(lr=0.01).build([W, b], gn.grad(loss, [W, b]))
    prog = gn.compile([loss], updates=ups, kernels="numba")
    assert "def _loop0(" in prog.source and "\nimport os" not in prog.source
    feeds = {"x": rng.normal(size=(4, 3)), "y": rng.normal(size=(4, 2))}
    assert np.isfinite(prog(**feeds)[0])
