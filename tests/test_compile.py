"""The NumPy compiler: readable generated code, linecache, saved modules, passes, cache."""
from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
import traceback

import numpy as np
import pytest

import graphnn as gn
from graphnn.compile import program as program_mod
from graphnn.ops import api


def _mlp():
    g = gn.Graph("mlp")
    x = g.input("x", (None, 3))
    with g.scope("mlp"):
        with g.scope("fc1"):
            W1 = g.param("W1", (3, 4), seed=0)
            b1 = g.param("b1", (4,), seed=1, init="normal")
            h1 = gn.gelu((x @ W1).named("xw") + b1).named("h1")
        with g.scope("fc2"):
            W2 = g.param("W2", (4, 2), seed=2)
            z = (h1 @ W2).named("logits")
    p = gn.softmax(z).named("probs")
    return g, x, p


def test_one_assignment_per_node_named_after_it_with_op_and_scope_comment():
    g, x, p = _mlp()
    prog = gn.compile(p, fast=False)  # the plain program (the default one is lowered)
    assert not prog.fast and prog.plain_source == prog.source
    # ... which a lowered program shows as its plain_source, printed from the same Function
    fast = gn.compile(p)
    assert fast.fast and fast.source != prog.source and fast.plain_source == prog.source
    lines = prog.source.splitlines()
    computed = [n for n in prog.function.order() if not n.is_leaf]
    assert computed
    for node in computed:
        hits = [ln for ln in lines if re.match(rf"\s+{re.escape(node.name)} = ", ln)]
        assert len(hits) == 1, (node.name, hits)
        comment = hits[0].split("#", 1)[1]
        assert node.op in comment and "f64[" in comment
        if node.scope:
            assert node.scope in comment
        else:
            assert "mlp/" not in comment
    for name in ("xw", "h1", "logits", "probs"):
        assert any(ln.strip().startswith(f"{name} = ") for ln in lines)
    assert "# gelu · f64[B,4] · mlp/fc1" in prog.source
    # a program returns its outputs and runs
    xv = np.random.default_rng(0).normal(size=(5, 3))
    out = prog(x=xv)
    assert out.shape == (5, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(fast(x=xv), out, rtol=1e-13)


@pytest.mark.parametrize("fast", [False, True])
def test_generated_code_is_registered_in_linecache_and_inspectable(fast):
    import linecache
    g, x, p = _mlp()
    prog = gn.compile(p, fast=fast)
    src = inspect.getsource(prog.fn)
    assert src.startswith("def step(")
    if fast:  # the lowered program: each node's statements under a comment naming it
        assert re.search(r"# probs: softmax · f64\[B,2\]", src), src
    else:
        assert "probs = _softmax(logits, -1)" in src
    assert linecache.getline(prog.filename, 1).startswith("# graphnn program")
    assert "".join(linecache.getlines(prog.filename)) == prog.source + "\n" * \
        (not prog.source.endswith("\n"))


def test_run_time_error_points_at_the_generated_line_and_names_the_node():
    g = gn.Graph("err")
    x = g.input("x", (3,))
    with g.scope("blk"):
        y = gn.log(x).named("logx")
    z = (y * 2.0).named("out")
    prog = gn.compile(z, fast=False)  # the plain program: one line per node
    with np.errstate(all="raise"), pytest.raises(FloatingPointError) as info:
        prog(x=np.array([1.0, -1.0, 2.0]))
    frames = [f for f in traceback.extract_tb(info.value.__traceback__) if f.filename == prog.filename]
    assert frames and frames[-1].line.startswith("logx = np.log(x)")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "'logx'" in notes and "log" in notes and "blk" in notes
    text = "".join(traceback.format_exception(info.value))
    assert "logx = np.log(x)" in text
    # the lowered (default) program: the traceback shows its failing line, and the note
    # names the node of that line: the fused group's node, whose comment lists logx
    prog = gn.compile(z)
    with np.errstate(all="raise"), pytest.raises(FloatingPointError) as info:
        prog(x=np.array([1.0, -1.0, 2.0]))
    frames = [f for f in traceback.extract_tb(info.value.__traceback__) if f.filename == prog.filename]
    assert frames and frames[-1].line.startswith("np.log(x, out=")
    node = prog.line_nodes[frames[-1].lineno]
    assert node.name in ("logx", "out")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert f"'{node.name}'" in notes
    above = prog.source.splitlines()[:frames[-1].lineno]
    assert "logx" in next(ln for ln in reversed(above) if "#" in ln)


def test_cut_input_fed_with_a_wrong_shape_is_named():
    g, x, p = _mlp()
    h1 = g["h1"]
    prog = gn.compile(p, inputs=[h1])
    assert "h1" in prog.arg_names and "x" not in prog.arg_names
    assert "xw =" not in prog.plain_source  # the cut node's producers are not computed
    assert "# xw:" not in prog.source and "# xw " not in prog.source
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(prog(h1=rng.normal(size=(3, 4))).sum(axis=1), 1.0)
    with pytest.raises(gn.ShapeError, match=r"'h1'.*\(None, 4\).*\(3, 5\)"):
        prog(h1=rng.normal(size=(3, 5)))


SAVED_CHECK = r"""
import importlib, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
assert "graphnn" not in sys.modules
m = importlib.import_module("saved_prog")
x = np.array(json.loads(sys.argv[2]))
out = m.run(x=x)
assert "graphnn" not in sys.modules, "the saved module imported graphnn"
print(json.dumps([np.asarray(o).tolist() for o in out]))
"""


def test_save_writes_a_standalone_module_with_the_same_numbers(tmp_path):
    g, x, p = _mlp()
    img = g.input("img", (None, 1, 4, 4))
    k = g.param("k", (2, 1, 3, 3), seed=3)
    c = gn.tanh(gn.conv2d(img, k, stride=1, padding=1)).mean()
    loss = gn.log_softmax(g["logits"]).mean() + gn.erf(g["h1"]).sum() + c
    (dW1,) = gn.grad(loss, [g["W1"]])
    prog = gn.compile([loss, dW1, p])
    path = tmp_path / "saved_prog.py"
    prog.save(path)
    assert (tmp_path / "saved_prog.npz").exists()
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"numpy", "math", "os"}, imported
    assert "numpy" in imported
    assert any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body)
    rng = np.random.default_rng(0)
    xv = rng.normal(size=(3, 3))
    imgv = rng.normal(size=(3, 1, 4, 4))
    want = prog(x=xv, img=imgv)
    code = SAVED_CHECK.replace('m.run(x=x)', 'm.run(x=x, img=np.array(json.loads(sys.argv[3])))')
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path), json.dumps(xv.tolist()),
                          json.dumps(imgv.tolist())], capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), b)


# -- passes ------------------------------------------------------------------------------------

def _pass(prog, name):
    entries = [e for e in prog.passes if e["pass"] == name]
    assert entries, [e["pass"] for e in prog.passes]
    return entries


def test_dead_code_elimination_drops_unused_nodes():
    g = gn.Graph("dce")
    x = g.input("x", (3,))
    y = gn.exp(x)
    unused = gn.tanh(y) * 3.0  # noqa: F841  (built, never asked for)
    gn.sigmoid(x).named("also_unused")
    prog = gn.compile(y)
    e = _pass(prog, "dead_code_elimination")[0]
    assert (e["nodes_before"], e["nodes_after"]) == (2, 2)  # counts the live part
    assert len(prog.function.graph) == 2 < len(g)
    assert "tanh" not in prog.source and "also_unused" not in prog.source


def test_constant_folding_evaluates_constant_subgraphs():
    g = gn.Graph("fold")
    x = g.input("x", (3,))
    c = g.const("c", np.array([1.0, 2.0, 3.0]))
    k = gn.exp(c) * 2.0 + gn.sqrt(c)  # all constant: 4 op nodes fold into one constant
    y = x * k
    prog = gn.compile(y)
    e = _pass(prog, "constant_folding")[0]
    assert e["nodes_before"] == 8 and e["nodes_after"] == 3, e
    assert "np.exp" not in prog.source and "np.sqrt" not in prog.source
    np.testing.assert_allclose(prog(x=np.ones(3)), np.exp([1, 2, 3.0]) * 2 + np.sqrt([1, 2, 3.0]))
    raw = gn.compile(y, optimize=False)
    assert raw.passes == [] and "np.exp" in raw.source
    np.testing.assert_allclose(raw(x=np.ones(3)), prog(x=np.ones(3)))


@pytest.mark.parametrize("expr,before,after", [
    ("x*1", 3, 1), ("1*x", 3, 1), ("x+0", 3, 1), ("0+x", 3, 1), ("x-0", 3, 1), ("x/1", 3, 1),
    ("x**1", 3, 1), ("--x", 3, 1),
])
def test_algebraic_identities_remove_neutral_operations(expr, before, after):
    g = gn.Graph("ident")
    x = g.input("x", (2, 3))
    y = eval(expr, {"x": x})  # noqa: S307 - a literal from the table above
    prog = gn.compile(y)
    e = _pass(prog, "algebraic_identities")[0]
    assert (e["nodes_before"], e["nodes_after"]) == (before, after)
    xv = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(prog(x=xv), xv)
    assert gn.compile(y, optimize=False).passes == []


def test_x_minus_x_becomes_zeros_and_shapes_stay():
    g = gn.Graph("xmx")
    x = g.input("x", (None, 3))
    y = gn.tanh(x) - gn.tanh(x)  # interning makes both operands the same node
    prog = gn.compile(y * 2.0 + x)
    e = _pass(prog, "algebraic_identities")[0]
    assert (e["nodes_before"], e["nodes_after"]) == (6, 6)  # tanh, sub -> zeros_like (batch shape)
    assert "np.zeros_like(tanh_1)" in prog.plain_source and "# sub" not in prog.plain_source
    assert ": sub ·" not in prog.source  # (the lowered program comments `# name: op · type`)
    xv = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(prog(x=xv), xv)
    f = g.input("f", (2, 3))
    prog = gn.compile(gn.exp(f) - gn.exp(f))  # fixed shape: a constant zero array
    e = _pass(prog, "algebraic_identities")[0]
    assert (e["nodes_before"], e["nodes_after"]) == (3, 1)
    np.testing.assert_array_equal(prog(f=xv), np.zeros((2, 3)))


def test_identities_keep_broadcasting_multiplications():
    g = gn.Graph("bc")
    x = g.input("x", (3,))
    y = x * g.const("ones", np.ones((2, 3)))  # x*1 would change the shape: must stay
    prog = gn.compile(y)
    assert prog(x=np.arange(3.0)).shape == (2, 3)


def test_common_subexpression_elimination_merges_duplicates():
    g = gn.Graph("cse")
    x = g.input("x", (3,))
    a = gn.tanh(x)
    g._intern.clear()  # as if assembled by hand or loaded from a file: no interning
    b = gn.tanh(x)
    assert a is not b
    y = a * b
    prog = gn.compile(y)
    e = _pass(prog, "common_subexpressions")[0]
    assert (e["nodes_before"], e["nodes_after"]) == (4, 3)
    assert prog.source.count("np.tanh(") == 1
    xv = np.array([0.1, -0.5, 2.0])
    np.testing.assert_allclose(prog(x=xv), np.tanh(xv) ** 2)
    assert gn.compile(y, optimize=False).source.count("np.tanh(") == 2


def test_passes_are_logged_in_order():
    g, x, p = _mlp()
    prog = gn.compile(p)
    names = [e["pass"] for e in prog.passes]
    assert names[0] == "dead_code_elimination"
    assert {"constant_folding", "algebraic_identities", "common_subexpressions"} <= set(names)
    for e in prog.passes:
        assert set(e) >= {"pass", "nodes_before", "nodes_after", "seconds"}
        assert e["nodes_after"] <= e["nodes_before"]


# -- cache -------------------------------------------------------------------------------------

def _const_graph(value):
    g = gn.Graph("cache")
    x = g.input("x", (2,))
    return g, x * g.const("k", np.array([value, 1.5]))


def test_programs_are_cached_by_content_hash():
    g1, y1 = _const_graph(2.0)
    g2, y2 = _const_graph(2.0)
    g3, y3 = _const_graph(3.0)
    p1, p2, p3 = gn.compile(y1), gn.compile(y2), gn.compile(y3)
    assert p1.key == p2.key and p1.source == p2.source
    assert p1.key in program_mod._CACHE
    assert p3.key != p1.key
    np.testing.assert_allclose(p2(x=np.ones(2)), [2.0, 1.5])
    np.testing.assert_allclose(p3(x=np.ones(2)), [3.0, 1.5])
    # a program from the cache still maps lines to the nodes of its own graph
    assert all(n.graph is p2.function.graph for n in p2.line_nodes.values())


def test_parameters_are_read_at_call_time_and_can_be_overridden():
    g = gn.Graph("params")
    x = g.input("x", (2,))
    w = g.param("w", value=np.array([1.0, 2.0]))
    prog = gn.compile(x * w)
    np.testing.assert_allclose(prog(x=np.ones(2)), [1.0, 2.0])
    g.values["w"] = np.array([3.0, 4.0])
    np.testing.assert_allclose(prog(x=np.ones(2)), [3.0, 4.0])
    np.testing.assert_allclose(prog(x=np.ones(2), w=np.array([5.0, 6.0])), [5.0, 6.0])


def test_updates_write_parameters_in_place():
    g = gn.Graph("upd")
    x = g.input("x", (2,))
    w = g.param("w", value=np.array([1.0, 2.0]))
    loss = api.sum(x * w * w)
    (dw,) = gn.grad(loss, [w])
    prog = gn.compile(loss, updates={w: w - 0.1 * dw})
    prog(x=np.ones(2))
    np.testing.assert_allclose(g.values["w"], [1.0 - 0.2, 2.0 - 0.4])


def test_float32_programs_stay_float32():
    g = gn.Graph("f32", dtype="float32")
    x = g.input("x", (None, 3))
    W = g.param("W", (3, 2), seed=0)
    y = gn.gelu(x @ W) * 0.5 + gn.log(gn.softplus(x @ W) + 1.0)
    loss = y.mean()
    (dW,) = gn.grad(loss, [W])
    out = gn.compile([loss, dW, y])(x=np.ones((4, 3), np.float32))
    assert [np.asarray(o).dtype for o in out] == [np.float32] * 3
