"""Issue 14 D1 and D7: names from a graph never become code or collide with the
printers' own identifiers."""
from __future__ import annotations

import io
import tokenize

import numpy as np
import pytest

import graphnn as gn


@pytest.mark.parametrize("fast", [True, False])
def test_d1_a_node_name_is_never_executed(tmp_path, monkeypatch, fast):
    """An intermediate update value's name reached a module-level identifier."""
    monkeypatch.chdir(tmp_path)
    g = gn.Graph("d1")
    x = g.input("x", (None, 2))
    W = g.param("W", value=np.ones((2, 2)))
    loss = gn.sum((x @ W) ** 2)
    gW, = gn.grad(loss, [W])
    a = (gW * 0.1).named("Q")
    b = (a * 2.0).named("Q[__import__('os').system('touch PWNED')]")
    c = (b * 1.0).named("step size")  # an ordinary name with a space: was a SyntaxError
    prog = gn.compile([loss], updates={W: W - a * b - b * b - c}, fast=fast)
    prog(x=np.ones((3, 2)))
    assert not (tmp_path / "PWNED").exists()
    names = {t.string for t in tokenize.generate_tokens(io.StringIO(prog.source).readline)
             if t.type == tokenize.NAME}
    assert "__import__" not in names and "system" not in names  # only sanitized identifiers
    path = tmp_path / "step.py"
    prog.save(path)  # after save + import, too
    ns = {"__name__": "saved", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), ns)  # noqa: S102 - our own module
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("names", [("_buf1", "_B", "_buf0"), ("_alloc", "_adopt", "_tmp0_float64_Bx2"),
                                   ("_flat0_leaf0", "_foreign", "_v_W")])
def test_d7_user_names_do_not_collide_with_generated_ones(names):
    w, b, lossname = names
    g = gn.Graph("d7")
    x = g.input("x", (None, 2))
    W = g.param(w, value=np.array([[1.0, 0.5], [-0.5, 1.0]]))
    bb = g.param(b, value=np.zeros(2))
    loss = gn.mse(gn.tanh(x @ W + bb), x).named(lossname)
    X = np.random.default_rng(0).normal(size=(4, 2))
    tr = gn.Trainer(loss, optimizer=gn.optim.Adam(lr=1e-2))
    hist = tr.fit({"x": X}, epochs=3, batch_size=2)
    assert np.all(np.isfinite(hist.loss)) and len(hist.loss) == 3
    ref = gn.compile([loss])
    assert float(ref(x=X)[0]) >= 0
