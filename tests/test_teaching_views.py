"""Issue 17: the teaching views a student learns from (defects 1-13 and the new views)."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn


# -- 13: initializers by name, and a default that trains like PyTorch's ------------------------

def _spirals(n=400, seed=0):
    rng = np.random.default_rng(seed)
    m = n // 2
    t = np.sqrt(rng.uniform(0, 1, m)) * 3 * np.pi
    a = np.stack([t * np.cos(t), t * np.sin(t)], 1) / (3 * np.pi)
    X = np.concatenate([a, -a]) + rng.normal(0, 0.02, (n, 2))
    Y = np.concatenate([np.zeros(m), np.ones(m)])[:, None]
    return X, Y


def test_mlp_default_init_trains_two_spirals_like_torch():
    """Issue 17 #13: MLP 32-32-1 tanh, Adam 0.01, 400 epochs, batch 64 on two spirals."""
    X, Y = _spirals()
    g = gn.Graph("spirals", seed=0)
    x, y = g.input("x", (None, 2)), g.input("y", (None, 1))
    out = gn.nn.MLP([32, 32, 1], activation="tanh")(x)
    tr = gn.Trainer(gn.bce_with_logits(out, y), optimizer=gn.optim.Adam(lr=0.01))
    tr.fit({"x": X, "y": Y}, epochs=400, batch_size=64, shuffle=True, seed=0)
    acc = ((tr.predict(out, {"x": X}) > 0) == Y).mean()
    assert acc >= 0.97


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal", "glorot_uniform",
                                  "glorot_normal", "he_uniform", "he_normal", "kaiming_uniform",
                                  "kaiming_normal", "lecun_uniform", "lecun_normal",
                                  "torch_default"])
def test_initializers_by_name(name):
    from graphnn.nn.init import INITIALIZERS, initialize
    assert name in INITIALIZERS
    w = initialize(name, (50, 40), np.random.default_rng(0))
    assert w.shape == (50, 40) and np.std(w) > 0
    g = gn.Graph("t")
    g.param("w", (3, 2), init=name)


def test_torch_default_bounds_for_weight_and_bias():
    g = gn.Graph("t", seed=1)
    gn.nn.Linear(8)(g.input("x", (None, 25)))
    assert np.abs(g.values["fc1/W"]).max() <= 0.2
    assert np.abs(g.values["fc1/b"]).max() <= 0.2 and np.any(g.values["fc1/b"] != 0)


# -- 1: plots display in a notebook --------------------------------------------------------------

def test_plots_display_as_png_in_ipython():
    from IPython.core.formatters import DisplayFormatter
    from viz import plots
    fig = plots.activation_gallery(["relu", "sigmoid"])
    data, _ = DisplayFormatter().format(fig)
    assert "image/png" in data and data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


# -- 6: one y-axis for the vanishing-gradient comparison ----------------------------------------

def test_vanishing_gradient_comparison_shares_y_axis():
    from viz import plots
    fig = plots.vanishing_gradient_comparison(depth=6)
    a, b = fig.axes[:2]
    assert a.get_shared_y_axes().joined(a, b)
    assert a.get_ylim() == b.get_ylim()
