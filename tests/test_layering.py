"""The package's layers import downward only (issue 15).

The graph IR, the op table (with its NumPy runtime helpers and the one-node
interpreter) and autodiff stand without the compiler; the printers read the
version from `graphnn.version`, not from the package they are part of; viz
imports nothing private from graphnn. Checked two ways: a fresh interpreter
loads the lower layers without `graphnn/__init__.py` (which imports
everything) and must not pull in `graphnn.compile`; and the import statements
themselves, lazy ones inside functions included, are read from the source.
"""
import ast
import os
import subprocess
import sys
import tomllib

import graphnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "graphnn")

# the layers below the compiler (autodiff/check.py and ntk.py compile programs: above it)
LOWER = ["graph.py", "io.py", "transient.py", "feeds.py", "dtypes.py", "errors.py",
         "limits.py", "archive.py", "version.py", "ops", "autodiff/api.py",
         "autodiff/reverse.py", "autodiff/forward.py", "autodiff/jacobian.py",
         "autodiff/symbolic.py"]


def _files(*rel):
    for r in rel:
        path = os.path.join(PKG, r)
        if os.path.isdir(path):
            yield from sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".py"))
        else:
            yield path


def _imports(path):
    """(module imported, names) for every import statement of a graphnn file, resolved
    to absolute names (lazy imports inside functions too)."""
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    package = rel[:-1]  # the package the file is in (for relative imports)
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            yield mod, tuple(a.name for a in node.names)


def test_lower_layers_load_without_the_compiler():
    code = r"""
import os, sys, types
import numpy as np
pkg = types.ModuleType("graphnn")        # the package without its __init__ (which loads all)
pkg.__path__ = [sys.argv[1]]
sys.modules["graphnn"] = pkg
import graphnn.graph, graphnn.io, graphnn.ops.api, graphnn.ops.pooling, graphnn.ops.interpret
import graphnn.autodiff.api, graphnn.autodiff.symbolic
from graphnn.ops import api, pooling
from graphnn.ops.interpret import evaluate

g = graphnn.graph.Graph("t")
x = g.input("x", (1, 1, 4, 4))
y = pooling.avg_pool(x, (2, 2), pads=(1, 1, 0, 0), count_include_pad=False)  # runtime._windows
e = api.erf(x)
v = np.arange(16.0).reshape(1, 1, 4, 4) / 16
assert np.allclose(evaluate(e, [v]), [[[[__import__("math").erf(t) for t in r] for r in v[0, 0]]]])
w = api.apply("windows", [x], kernel=(2, 2), stride=(2, 2), dilation=(1, 1))
graphnn.autodiff.symbolic.expression(w.sum())                 # the SymPy meaning of windows
idx = g.const("i", np.array([0, 2]))
t = api.apply("take_adjoint", [g.input("c", (2, 4)), idx, g.input("l", (3, 4))], axis=0)
graphnn.autodiff.symbolic.expression(t.sum())                 # ... and of take_adjoint
graphnn.autodiff.api.grad(y.sum(), [x], mode="symbolic")
print(sorted(m for m in sys.modules if m.startswith("graphnn.compile")))
"""
    out = subprocess.run([sys.executable, "-c", code, PKG], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_lower_layers_never_import_the_compiler_or_viz():
    bad = [(os.path.relpath(f, ROOT), mod) for f in _files(*LOWER) for mod, _ in _imports(f)
           if mod and (mod.startswith("graphnn.compile") or mod.split(".")[0] == "viz")]
    assert bad == []


def test_ops_runtime_helpers_are_self_contained():
    # their source is copied into generated programs, which import numpy and math only
    mods = {mod for mod, _ in _imports(os.path.join(PKG, "ops", "runtime.py"))}
    assert mods <= {"math", "numpy"}


def test_nothing_inside_graphnn_imports_the_package_itself():
    # the printers once took __version__ from `graphnn` (its __init__ imports the compiler)
    bad = []
    for f in _files(*[os.path.relpath(os.path.join(d, n), PKG)
                      for d, _, ns in os.walk(PKG) for n in ns if n.endswith(".py")]):
        if os.path.relpath(f, PKG) in ("__init__.py", "__main__.py", "cli.py"):
            continue
        for mod, names in _imports(f):
            if mod == "graphnn" and any(not os.path.exists(os.path.join(PKG, n + ".py"))
                                        and not os.path.isdir(os.path.join(PKG, n))
                                        for n in names):
                bad.append((os.path.relpath(f, ROOT), names))
    assert bad == []


def test_one_version():
    from graphnn.version import __version__
    assert graphnn.__version__ == __version__
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        assert tomllib.load(fh)["project"]["version"] == __version__
    prog = graphnn.compile(graphnn.Graph("v").input("x", (2,)) * 2.0, fast=False)
    assert f"graphnn {__version__}" in prog.source.splitlines()[0]


def test_the_evaluator_lives_in_the_ops_layer():
    from graphnn.compile import passes
    from graphnn.ops import interpret
    tree = ast.parse(open(passes.__file__, encoding="utf-8").read())
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "evaluate" not in defined
    assert passes.evaluate is interpret.evaluate  # constant folding runs the same interpreter
    assert not os.path.exists(os.path.join(PKG, "compile", "runtime.py"))


def test_viz_imports_nothing_private_from_graphnn():
    viz = os.path.join(ROOT, "viz")
    bad = []
    for f in sorted(os.listdir(viz)):
        if not f.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(viz, f), encoding="utf-8").read())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("graphnn"):
                parts = n.module.split(".") + [a.name for a in n.names]
                bad += [(f, n.module, p) for p in parts if p.startswith("_")]
    assert bad == []
