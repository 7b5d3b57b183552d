"""Line maps of generated programs (`Program.line_nodes`) and the fast step's header.

Runtime errors are reported against the node of the failing line, so every mapped
line must be the one printed for that node, also when multi-line helper functions
(`_erf`) sit above the body."""
import re
from collections import Counter

import numpy as np
import pytest

import graphnn as gn


def _erf_graph(name):
    g = gn.Graph(name)
    x = g.input("x", (None, 3))
    W = g.param("W", (3, 3), seed=0)
    h = gn.gelu(x @ W) + gn.erf(x)
    loss = (h * h).sum()
    return g, x, W, loss


def _assert_lines_name_nodes(prog):
    lines = prog.source.split("\n")
    assert prog.line_nodes
    for ln, node in prog.line_nodes.items():
        text = lines[ln - 1]
        # the line computing a node names it (its comment), or continues the statement
        # of the comment line above it (fused element-wise code)
        above = next(lines[k] for k in range(ln - 1, -1, -1) if "#" in lines[k])
        assert node.name in text or node.name in above, (ln, node.name, text)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("step", [False, True])
def test_line_nodes_point_at_their_lines_below_helpers(fast, step):
    g, x, W, loss = _erf_graph("lines")
    (dW,) = gn.grad(loss, [W])
    prog = gn.compile([loss] if step else [loss, dW],
                      updates={W: W - 0.1 * dW} if step else None, fast=fast)
    assert prog.fast == fast
    assert "def _erf" in prog.source  # a multi-line helper above the body
    _assert_lines_name_nodes(prog)


class _Boom:
    """A NumPy function (or ufunc: `np.add.reduce`) that fails when called."""

    def __call__(self, *a, **k):
        raise FloatingPointError("boom")

    def __getattr__(self, name):
        return self


class _Failing:
    """numpy, except that the named function fails."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, name):
        return _Boom() if name == self.name else getattr(np, name)


@pytest.mark.parametrize("fast", [False, True])
def test_runtime_error_names_the_failing_node(fast):
    g = gn.Graph("fails")
    x = g.input("x", (None, 2))
    W = g.param("W", (2, 2), seed=0)
    loss = gn.erf(x @ W).sum()
    prog = gn.compile(loss, fast=fast)
    assert "def _erf" in prog.source
    # make the NumPy function of the line computing sum_1 fail (the plain program calls
    # np.sum, the lowered one a reduction of its own choice)
    lines = prog.source.split("\n")
    line = next(lines[ln - 1] for ln, n in prog.line_nodes.items() if n.name == "sum_1")
    prog.namespace["np"] = _Failing(re.search(r"\bnp\.(\w+)", line).group(1))
    with pytest.raises(FloatingPointError) as info:
        prog(x=np.ones((4, 2)))
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "'sum_1'" in notes, notes


def test_fast_step_defines_only_gradient_views_it_reads():
    g = gn.Graph("deep")
    h = x = g.input("x", (None, 4))
    y = g.input("y", (None, 4))
    ps = []
    for i in range(3):
        W = g.param(f"W{i}", (4, 4), seed=i)
        b = g.param(f"b{i}", (4,), seed=10 + i)
        ps += [W, b]
        h = gn.tanh(h @ W + b)
    loss = gn.mse(h, y)
    grads = gn.grad(loss, ps)
    prog = gn.compile([loss], updates={p: p - 0.1 * d for p, d in zip(ps, grads)})
    named = Counter(re.findall(r"\b_g_\w+", prog.source))
    defined = re.findall(r"^(_g_\w+) = ", prog.source, flags=re.M)
    assert defined  # the folded [gW; gb] views
    assert all(named[v] >= 2 for v in defined), [v for v in defined if named[v] < 2]
    _assert_lines_name_nodes(prog)
    # and the step still computes the same as the plain program
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    before = {p.name: np.array(g.values[p.name]) for p in ps}
    plain = gn.compile([loss] + grads, fast=False)(x=X, y=Y)
    (L,) = prog(x=X, y=Y)
    assert np.isclose(L, plain[0], rtol=1e-12)
    for p, d in zip(ps, plain[1:]):
        np.testing.assert_allclose(g.values[p.name], before[p.name] - 0.1 * d, rtol=1e-12,
                                   atol=1e-15)
