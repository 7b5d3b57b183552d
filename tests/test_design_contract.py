"""The public API of DESIGN.md, exercised as written there (outside tests rely on it)."""
import numpy as np
import pytest
import torch

import graphnn as gn

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def test_design_api_end_to_end(tmp_path):
    g = gn.Graph("xor")
    assert isinstance(g.nx, __import__("networkx").DiGraph)
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    W1 = g.param("W1", (2, 2), init="he_normal")
    b1 = g.param("b1", (2,), value=np.array([0., -1.]))
    c = g.const("two", 2.0)
    h = gn.relu(x @ W1 + b1)
    W2 = g.param("W2", (2, 1)); b2 = g.param("b2", (1,))
    out = h @ W2 + b2
    loss = gn.mse(out, y)
    assert loss.shape == ()
    # operators
    for node in (x + c, x - c, x * c, x / c, x ** c, -x, W1.T, x.sum(0), x.mean(1), x[:, 0]):
        assert isinstance(node, gn.Node)

    assert g.values["W1"].shape == (2, 2)
    assert {n.name for n in g.inputs} == {"x", "y"}
    assert {n.name for n in g.params} == {"W1", "b1", "W2", "b2"}
    for n in g.nodes:
        n.name, n.op, n.shape, n.dtype, n.inputs

    dW1, db1 = gn.grad(loss, [W1, b1])
    dW1_f, = gn.grad(loss, [W1], mode="forward")
    with pytest.raises(gn.GraphError, match="shapes="):      # a closed form needs fixed shapes
        gn.grad(loss, [W1], mode="symbolic")
    dW1_s, = gn.grad(loss, [W1], mode="symbolic", shapes={"x": (4, 2), "y": (4, 1)})
    v = g.const("v", np.ones((1, 2))) * x          # a node of x's shape
    jv = gn.jvp(out, {x: v})
    ct = out * 1.0
    vj, = gn.vjp(out, [x], ct)
    J = gn.jacobian(out, x, mode="forward")
    H = gn.hessian(loss, W1)

    prog = gn.compile([loss, dW1, db1], backend="numpy")
    L, gW1, gb1 = prog(x=X, y=Y)
    assert np.isfinite(L) and gW1.shape == (2, 2) and gb1.shape == (2,)
    L2, *_ = prog(x=X, y=Y, W1=np.eye(2))                  # override a parameter
    assert "def step(" in prog.source
    prog.save(tmp_path / "xor_step.py")
    assert (tmp_path / "xor_step.py").exists()

    vals = gn.compile([dW1_f, jv, vj, J, H, dW1_s])(x=X, y=Y)
    np.testing.assert_allclose(vals[0], gW1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vals[5], gW1, rtol=1e-10, atol=1e-12)
    assert vals[1].shape == (4, 1) and vals[2].shape == (4, 2)
    assert vals[3].shape == (4, 1, 2) and vals[4].shape == (2, 2, 2, 2)

    before_trainer = len(g.nodes)
    tr = gn.Trainer(loss, optimizer=gn.optim.Adam(lr=1e-2), backend="numpy",
                    regularization=gn.nn.L2(1e-4))
    after_trainer = len(g.nodes)
    hist = tr.fit({"x": X, "y": Y}, epochs=20, batch_size=4, shuffle=True, seed=0,
                  validation={"x": X, "y": Y}, early_stopping=gn.EarlyStopping(patience=20),
                  verbose=False)
    assert len(hist.loss) == 20
    pred = tr.predict(out, {"x": X})
    assert pred.shape == (4, 1)

    out2 = gn.nn.MLP([16, 16, 1], activation="relu")(x)
    assert out2.shape == (None, 1)

    g.save(tmp_path / "xor.json")
    g2 = gn.load(tmp_path / "xor.json")
    # the model the user built with its trained weights; the Trainer's training graph
    # (penalty, gradients, Adam's updates and state) only when asked (issue 17 #8)
    mine = g.nodes[:before_trainer] + g.nodes[after_trainer:]
    assert [n.name for n in g2.nodes] == [n.name for n in mine]
    np.testing.assert_array_equal(g2.values["W1"], g.values["W1"])
    gn.save(g, tmp_path / "step.json", derived=True)
    assert [n.name for n in gn.load(tmp_path / "step.json").nodes] == [n.name for n in g.nodes]


def test_design_symbolic_api():
    g = gn.Graph("sym")
    x = g.input("x", (2,))
    W1 = g.param("W1", (2, 2))
    loss = gn.sum(gn.sigmoid(W1 @ x) ** 2)
    dW1_s, = gn.grad(loss, [W1], mode="symbolic")
    dW1, = gn.grad(loss, [W1])
    a, b = gn.compile([dW1_s, dW1])(x=np.array([0.3, -0.7]))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert gn.symbolic.expression(loss).free_symbols
    assert isinstance(gn.symbolic.latex(dW1_s), str)


def test_batched_jacobian_matches_torch_vmap():
    g = gn.Graph("j")
    x = g.input("x", (None, 2))
    W = g.param("W", (2, 3)); b = g.param("b", (3,))
    out = gn.tanh(x @ W + b)
    X = np.random.default_rng(0).normal(size=(4, 2))
    jf, jr = gn.compile([gn.jacobian(out, x, mode="forward"),
                         gn.jacobian(out, x, mode="reverse")])(x=X)
    Wt, bt = torch.tensor(g.values["W"]), torch.tensor(g.values["b"])
    ref = torch.vmap(torch.func.jacfwd(lambda v: torch.tanh(v @ Wt + bt)))(torch.tensor(X)).numpy()
    np.testing.assert_allclose(jf, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jr, ref, rtol=1e-12, atol=1e-14)


def test_jacobian_batch_on_one_side_only_is_an_error():
    g = gn.Graph("j2")
    x = g.input("x", (None, 2))
    W = g.param("W", (2, 3))
    with pytest.raises(gn.ShapeError, match="batch"):
        gn.jacobian((x @ W).sum(axis=0), x)


@pytest.mark.parametrize("fast", [False, None])  # plain, and the default (lowered) program
def test_symbolic_gradient_refuses_another_batch_size(fast):
    """A closed form derived for a bound batch reads those samples only: fed a different batch,
    the program must refuse instead of silently ignoring samples."""
    g = gn.Graph("bound")
    x = g.input("x", (None, 2))
    w = g.param("w", (2, 1))
    loss = gn.mean(gn.tanh(x @ w) ** 2)
    dw_s, = gn.grad(loss, [w], mode="symbolic", shapes={"x": (4, 2)})
    dw, = gn.grad(loss, [w])
    prog = gn.compile([dw_s, dw], fast=fast)  # None: the default (lowered) program
    a, b = prog(x=X)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="batch of 4; got 6"):
        prog(x=np.ones((6, 2)))
