"""The lowering (compile/schedule.py) is data that every target prints: kernels,
update groups and the buffer plan, no code strings; capabilities switch rewrites."""
import dataclasses
import sys
from pathlib import Path

import numpy as np
import sympy as sp

import graphnn as gn
from graphnn.compile import memory
from graphnn.compile.passes import Function, optimize
from graphnn.compile.schedule import (Affine, AffineGrad, Caps, CopyIn, Dot, Fused, Matmul,
                                      Schedule, UpdateGroup, lower)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import workloads  # noqa: E402


def _function(name="xor", updates=True):
    spec = workloads.SPECS[name]
    g, loss, ups, ps = workloads.graphnn_step(spec, workloads.init_params(spec))
    if updates:
        fn = Function(g, [loss], list(ups.items()), [])
    else:
        fn = Function(g, [loss, *gn.grad(loss, ps)], [], [])
    return optimize(fn)[0]


def test_the_xor_step_lowers_to_folded_affine_layers_and_one_flat_update_group():
    s = lower(_function("xor"))
    assert isinstance(s, Schedule)
    kinds = [type(k).__name__ for k in s.kernels]
    assert kinds.count("Affine") == 2 and kinds.count("AffineGrad") == 2, kinds
    assert "Dot" in kinds  # the MSE's sum of squares
    (grp,) = s.groups
    assert isinstance(grp, UpdateGroup) and grp.flat and grp.total == 9
    assert len(grp.folds) == 2 and len(grp.members) == 4
    text = str(s)
    assert "Affine" in text and "[x, 1] @ [W1; b1]" in text and "group 0: 4 members" in text


def test_a_schedule_holds_no_code():
    """Kernels and groups carry nodes, SymPy expressions and planner statements; only
    a target turns them into text."""
    s = lower(_function("mlp"))
    allowed = (gn.Node, memory.Statement, sp.Basic, int, float, tuple, type(None), bool)

    def walk(v, where):
        if isinstance(v, memory.Statement):  # value keys, shapes and dtype names
            assert not any(isinstance(r.fixed, str) for r in v.defines), where
            return
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            for f in dataclasses.fields(v):
                walk(getattr(v, f.name), f"{where}.{f.name}")
        elif isinstance(v, (list, set, frozenset)):
            for x in v:
                walk(x, where)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x, where)
        elif where.endswith(".dtype"):  # a dtype's name
            assert np.dtype(v).name == v, where
        elif where.endswith(".kind"):  # a flat slot's role: a parameter or a leaf
            assert v in ("p", "f"), where
        else:
            assert isinstance(v, allowed), (where, type(v), v)
    for k in s.kernels:
        walk(k, type(k).__name__)
    for grp in s.groups:
        walk(grp, "group")


def test_capabilities_switch_the_optional_rewrites():
    fn = _function("xor")
    full = lower(fn)
    bare = lower(fn, Caps(bias_fold=False, dot_reductions=False, transpose_views="matmul"))
    assert any(isinstance(k, Affine) for k in full.kernels)
    assert not any(isinstance(k, (Affine, AffineGrad, CopyIn, Dot)) for k in bare.kernels)
    assert any(isinstance(k, Matmul) for k in bare.kernels)
    # transposes stay views only where a matmul reads them
    for t in bare.views:
        node = next(n for n in fn.order() if id(n) == t)
        assert node.op == "transpose"
    small = lower(fn, Caps(max_group=1))
    assert not small.inline and len([k for k in small.kernels if isinstance(k, Fused)]) > \
        len([k for k in full.kernels if isinstance(k, Fused)])


def test_programs_without_updates_lower_with_buffers_and_fusion():
    s = lower(_function("deep", updates=False))
    assert not s.groups
    assert s.plan.buffers and any(isinstance(k, Fused) for k in s.kernels)
    assert len(s.plan.buffers) < len(s.kernels)  # buffers are reused


def test_every_target_prints_the_same_schedule():
    from graphnn.compile.targets.cupy import CupyPrinter
    from graphnn.compile.targets.numpy import NumpyPrinter
    fn = _function("mlp")
    a, b = NumpyPrinter(fn), CupyPrinter(fn)
    a.source()
    b.source()
    assert [(type(k), k.node.name) for k in a.schedule.kernels] == \
        [(type(k), k.node.name) for k in b.schedule.kernels]


def test_hostile_names_stay_on_one_line_when_a_schedule_prints():
    g = gn.Graph("h\nx")
    x = g.input("x\n; import os", (None, 2))
    W = g.param("W\r", value=np.ones((2, 2)))
    out = gn.tanh(x @ W).named("o\n#")
    s = lower(optimize(Function(g, [gn.sum(out)], [], []))[0])
    text = str(s)
    assert len(text.splitlines()) == 1 + len(s.kernels) + len(s.groups)
    assert "\r" not in text


def test_returned_values_get_buffers_of_their_own_and_no_copy():
    """Outputs are computed into a new array per call (the caller owns it) instead of a
    reused buffer copied at return; the CUDA target, which writes files, opts out."""
    fn = _function("mlp", updates=False)
    s = lower(fn)
    outs = [o for o in fn.outputs if o.shape != ()]
    assert outs and all(s.plan.buffer[id(o)] in s.plan.fresh for o in outs)
    assert len(s.plan.fresh) == len(outs)
    assert not lower(fn, Caps(fresh_outputs=False)).plan.fresh
    spec = workloads.SPECS["mlp"]
    g, loss, ups, ps = workloads.graphnn_step(spec, workloads.init_params(spec))
    prog = gn.compile([loss, *gn.grad(loss, ps)])
    assert ".copy()" not in prog.source and "returned, a new array at each call" in prog.source
    X, Y = workloads.data(spec)
    first = prog(x=X, y=Y)
    second = prog(x=X, y=Y)
    assert all(a is not b for a, b in zip(first[1:], second[1:]))


def test_relu_runs_in_place_when_its_gradient_reads_the_mask_through_its_value():
    """relu(z) > 0 exactly where z > 0, so the backward mask reads relu's value and z
    dies after relu: relu writes into z's buffer, as hand-written NumPy does."""
    s = lower(_function("mlp", updates=False))
    relus = [k for k in s.kernels if isinstance(k, Fused) and k.node.op == "relu"]
    assert len(relus) == 2
    for k in relus:
        assert s.plan.aliased.get(id(k.node)) == id(k.node.inputs[0])
