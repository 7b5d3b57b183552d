"""viz.plots: activation gallery, training history, decision boundary, lecture 003, gradient flow."""
import numpy as np
import pytest
from matplotlib.figure import Figure

import graphnn as gn
import viz
from viz import plots


def _png(fig, tmp_path, name):
    p = tmp_path / name
    fig.savefig(p, dpi=40)
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_activation_gallery_uses_sympy_derivatives(tmp_path):
    fig = plots.activation_gallery()
    assert isinstance(fig, Figure) and len(fig.axes) == len(gn.ACTIVATIONS)
    f, df, _, _ = plots.activation_function("sigmoid")
    xs = np.linspace(-3, 3, 7)
    s = 1 / (1 + np.exp(-xs))
    np.testing.assert_allclose(df(xs), s * (1 - s))
    # derivative curve drawn = finite difference of the function curve, for every activation
    for name in gn.ACTIVATIONS:
        f, df, _, _ = plots.activation_function(name)
        x = np.array([-1.3, -0.4, 0.7, 2.1])
        fd = (f(x + 1e-6) - f(x - 1e-6)) / 2e-6
        np.testing.assert_allclose(np.broadcast_to(df(x), x.shape), fd, rtol=1e-4, atol=1e-6, err_msg=name)
    _png(fig, tmp_path, "act.png")
    with pytest.raises(gn.GraphError):
        plots.activation_function("nope")


def test_training_history_dict_and_object(tmp_path):
    hist = {"loss": [1.0, 0.5, 0.3, 0.2, 0.15], "val_loss": [1.1, 0.6, 0.4, 0.45, 0.5]}
    fig = plots.training_history(hist)
    ax = fig.axes[0]
    labels = [l.get_label() for l in ax.get_lines()]
    assert "train" in labels and "validation" in labels
    assert "early stopping point: best epoch 2" in labels  # lowest validation loss

    from graphnn.nn.train import History
    h = History(epochs=[1, 2, 3, 4], loss=[3, 2, 1, 0.5], val_loss=[3, 2.5, 2.6, 2.7], best_epoch=2,
                stopped_epoch=4)
    fig2 = plots.training_history(h)
    labels2 = [l.get_label() for l in fig2.axes[0].get_lines()]
    assert "early stopping point: best epoch 2" in labels2 and "stopped at epoch 4" in labels2
    best = next(l for l in fig2.axes[0].get_lines() if l.get_label().startswith("early"))
    assert list(best.get_xdata()) == [2] and list(best.get_ydata()) == [2.5]
    _png(fig, tmp_path, "hist.png")
    with pytest.raises(gn.GraphError, match="train loss"):
        plots.training_history({"acc": [1, 2]})


def test_decision_boundary_xor_program(tmp_path):
    # lecture 001's exact XOR solution: w^T max(0, XW + b)
    g = gn.Graph("xor")
    x = g.input("x", (None, 2))
    W = g.param("W", value=np.ones((2, 2)))
    b = g.param("b", value=np.array([0.0, -1.0]))
    w = g.param("w", value=np.array([[1.0], [-2.0]]))
    out = gn.relu(x @ W + b) @ w
    prog = gn.compile(out)
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    np.testing.assert_allclose(prog(x=X).ravel(), [0, 1, 1, 0])
    fig = plots.decision_boundary(prog, X, [0, 1, 1, 0], resolution=41)
    cls = fig.graphnn_classes
    assert cls.shape == (41, 41) and 0 < cls.mean() < 1
    fig2 = plots.decision_boundary(lambda p: prog(x=p), X, resolution=21)
    assert fig2.graphnn_classes.shape == (21, 21)
    _png(fig, tmp_path, "xor.png")
    with pytest.raises(gn.GraphError):
        plots.decision_boundary(prog, np.ones((3, 3)))


def test_shallow_relu_regions_lecture003(tmp_path):
    # three hidden units, three joints inside [-2, 2] -> four linear regions
    theta = np.array([[0.5, 1.0], [-0.2, 1.0], [1.0, -1.0]])  # joints at -0.5, 0.2, 1.0
    phi = np.array([0.1, 1.0, -2.0, 0.5])
    r = plots.shallow_relu_regions(theta, phi, (-2, 2))
    np.testing.assert_allclose(r.joints, [-0.5, 0.2, 1.0])
    assert r.count == 4 and len(r.patterns) == 4
    assert r.patterns[0] == (0, 0, 1) and r.patterns[-1] == (1, 1, 0)
    # slopes are what finite differences of the network give
    xs = (r.bounds[:-1] + r.bounds[1:]) / 2
    net = lambda x: phi[0] + np.maximum(theta[:, 0] + theta[:, 1] * x, 0) @ phi[1:]
    np.testing.assert_allclose(r.slopes, [(net(x + 1e-6) - net(x - 1e-6)) / 2e-6 for x in xs], atol=1e-6)
    # a unit with phi = 0 switches without a kink: its joint does not split a region
    r0 = plots.shallow_relu_regions(theta, np.array([0.1, 1.0, 0.0, 0.5]), (-2, 2))
    assert r0.count == 3
    fig = plots.shallow_relu_network(theta, phi)
    assert "4 linear regions" in fig.axes[0].get_title()
    _png(fig, tmp_path, "regions.png")
    with pytest.raises(gn.GraphError):
        plots.shallow_relu_regions(theta, phi[:2])


def test_vanishing_gradient_comparison(tmp_path):
    fig = viz.plots.vanishing_gradient_comparison(depth=20)
    layers = fig.graphnn_layers
    sig, relu = layers["sigmoid"], layers["relu"]
    assert len(sig) == len(relu) == 20
    # sigmoid: first-layer gradients many orders of magnitude below the last layer's
    assert sig[0].mean_abs / sig[-1].mean_abs < 1e-8
    assert relu[0].mean_abs / relu[-1].mean_abs > 1e-4
    _png(fig, tmp_path, "vanishing.png")


def test_gradient_flow_matches_gradients():
    g = gn.Graph("two")
    x = g.input("x", (None, 2))
    with g.scope("l1"):
        W = g.param("W", value=np.array([[1.0, -2.0], [0.5, 0.0]]))
    with g.scope("l2"):
        v = g.param("v", value=np.array([[3.0], [1.0]]))
    L = ((x @ W) @ v).sum()
    feeds = {"x": np.array([[1.0, 1.0]])}
    fig = viz.gradient_flow(L, feeds)
    layers = fig.graphnn_layers
    assert [l.scope for l in layers] == ["l1", "l2"]
    # dL/dW = x^T v^T, dL/dv = (xW)^T
    np.testing.assert_allclose(layers[0].mean_abs, np.abs(np.outer([1, 1], [3, 1])).mean())
    np.testing.assert_allclose(layers[1].mean_abs, np.abs([1.5, -2.0]).mean())
    assert "<table>" in layers._repr_html_()
    with pytest.raises(gn.GraphError):
        viz.gradient_flow((x * 2.0).sum(), feeds)
