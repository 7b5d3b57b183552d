"""Issue 17: the teaching views a student learns from (defects 1-13 and the new views)."""
from __future__ import annotations

import numpy as np
import pytest

import graphnn as gn
import viz.page  # noqa: F401  (tests below call viz.page's helpers)


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


# -- shared small graphs ---------------------------------------------------------------------

def _tiny():
    g = gn.Graph("tiny")
    x = g.input("x", (None, 2))
    W = g.param("W", value=np.array([[0.5], [-0.3]]))
    J = ((x @ W) ** 2).mean().named("J")
    return g, x, W, J


def _lecture004():
    """Lecture 004's 2-2-1 sigmoid network, parameters declared first."""
    g = gn.Graph("net221")
    x = g.input("x", (None, 2))
    y = g.input("y", (None, 1))
    w1 = g.param("w1", value=np.array([[0.15, 0.25], [0.20, 0.30]]))
    b1 = g.param("b1", value=np.array([0.35, 0.35]))
    w2 = g.param("w2", value=np.array([[0.40], [0.45]]))
    b2 = g.param("b2", value=np.array([0.60]))
    u1 = (x @ w1 + b1).named("u1")
    h = gn.sigmoid(u1).named("h")
    u2 = (h @ w2 + b2).named("u2")
    yhat = gn.sigmoid(u2).named("yhat")
    E = (0.5 * ((yhat - y) ** 2).sum()).named("E")
    feeds = {"x": np.array([[0.05, 0.10]]), "y": np.array([[0.01]])}
    return g, E, feeds


def _snapshot(g):
    return [(n.name, n.op) for n in g.nodes], dict(g.values)


# -- 8: looking at a graph does not change it -------------------------------------------------

def test_draw_with_gradients_leaves_the_graph_unchanged():
    import viz
    g, x, W, J = _tiny()
    before, values = _snapshot(g)
    for style in ("backward", "overlay"):
        viz.draw(J, grads=True, feeds={"x": np.ones((3, 2))}, style=style)
    viz.draw(J, tangents=True, feeds={"x": np.ones((3, 2))})
    assert _snapshot(g)[0] == before and set(g.values) == set(values)
    # the graph still works and names continue as before
    dW, = gn.grad(J, [W])
    assert len(g.nodes) > len(before)


def test_stepping_leaves_the_graph_unchanged():
    import viz
    g, E, feeds = _lecture004()
    before, _ = _snapshot(g)
    viz.backprop_steps(E, feeds)
    viz.forward_steps(E, feeds, wrt=g["w2"])
    viz.plots.gradient_flow(E, feeds)
    assert _snapshot(g)[0] == before


# -- 11: draw a list of nodes ---------------------------------------------------------------------

def test_draw_accepts_a_list_of_nodes():
    import viz
    g, x, W, J = _tiny()
    tr = gn.Trainer(J, optimizer=gn.optim.SGD(lr=0.1))
    d = viz.draw(tr.step_outputs)
    assert d.graphnn.nodes > 4 and "W" in d.source


# -- 9: gradient nodes named for what they are; no floating constants ---------------------------

def test_drawn_gradient_nodes_are_named_and_no_stray_constants():
    import viz
    g, E, feeds = _lecture004()
    d = viz.draw(E, grads=True, feeds=feeds)
    src = d.source
    assert "dE/dw1" in src and "dE/dw2" in src
    import re
    nodes = set(re.findall(r"^\t+(n\d+) \[", src, re.M))
    linked = set(re.findall(r"(n\d+) -> ", src)) | set(re.findall(r"-> (n\d+)", src))
    assert nodes and nodes <= linked      # no constant (the seed 1) floats unconnected
    # backward nodes are not inside forward scope boxes
    g2 = gn.Graph("scoped")
    x2 = g2.input("x", (None, 3))
    out = gn.nn.MLP([4, 1], activation="tanh")(x2)
    d2 = viz.draw(out.mean().named("J"), grads=True)
    body = d2.source
    start = body.index("label=fc1")
    fc1_cluster = body[start: body.index("}", start)]
    assert "backward" not in fc1_cluster


# -- 10: steps in the lecture's order, named after the loss ---------------------------------------

def test_steps_follow_the_lecture_output_layer_first():
    import viz
    g, E, feeds = _lecture004()
    names = [s.name for s in viz.backprop_steps(E, feeds)]
    assert names.index("w2") < names.index("h") < names.index("w1")
    assert names.index("b2") < names.index("u1")
    assert names[-2:] == ["y", "x"] or set(names[-2:]) == {"x", "y"}
    text = viz.backprop_steps(E, feeds)[1].numbers()
    assert "dE/d" in text and "dL" not in text


# -- 3: small tensors in full, large ones as a labelled summary ----------------------------------

def test_values_small_in_full_large_labelled():
    from viz.evaluate import summary
    assert summary(np.array([[0.15, 0.25], [0.2, 0.3]])) == "[[0.15, 0.25], [0.2, 0.3]]"
    assert summary(np.array([-0.5, -0.25])) == "[-0.5, -0.25]"
    big = summary(np.arange(40.0).reshape(5, 8))
    assert big.startswith("5x8 tensor:") and "min 0" in big and "max 39" in big


# -- 2: formulas as math, forward mode with its own rule and numbers, lecture forms ---------------

def _attention_block():
    g = gn.Graph("block", seed=0)
    x = g.input("x", (2, 3, 4))
    h = gn.nn.SelfAttention(4)(x)
    h = gn.nn.LayerNorm()(h + x)
    return g, (h ** 2).mean().named("J")


def test_step_page_has_no_raw_latex(tmp_path):
    import viz
    g, E, feeds = _lecture004()
    steps = viz.backprop_steps(E, feeds)
    html = viz.steps_html(steps, tmp_path / "p.html") and (tmp_path / "p.html").read_text()
    visible = html.split("<details>")[0] + "".join(
        part.split("</details>", 1)[1] for part in html.split("<details>")[1:])
    assert "\\text" not in visible and "\\overline" not in visible and "\\frac" not in visible
    w2 = next(s for s in steps if s.name == "w2")
    assert "<msup>" in viz.page._step_section(w2, False)     # h^T dE/du


def test_step_page_renders_softmax_and_transpose_rules():
    import viz
    g, J = _attention_block()
    steps = viz.backprop_steps(J, {"x": np.random.default_rng(0).normal(size=(2, 3, 4))})
    html = viz.page.steps_fragment(steps)
    assert "&#8857;" in html or "⊙" in html          # softmax rule s (.) (g - sum g s)
    assert "\\text" not in html.split("<details>")[0]


def test_forward_steps_use_the_tangent_rule_with_numbers():
    import viz
    g, E, feeds = _lecture004()
    steps = viz.forward_steps(E, feeds, wrt=g["w2"])
    mm = next(s for s in steps if s.name == "matmul_2")
    assert "?" not in mm.numbers() and "VJP" not in mm.text()
    assert any("dot" in line for line in mm.local_lines())
    np.testing.assert_allclose(mm.terms[0].contribution, mm.derivative)


def test_local_derivatives_in_lecture_form():
    import viz
    g, E, feeds = _lecture004()
    u2 = next(s for s in viz.backprop_steps(E, feeds) if s.name == "u2")
    text = u2.text()
    assert "sigmoid'(u2) = sigmoid(u2)*(1 - sigmoid(u2))" in text or \
        "sigmoid'(u2) = (1 - sigmoid(u2))*sigmoid(u2)" in text
    g2 = gn.Graph("r")
    x = g2.input("x", (None, 1))
    J = gn.relu(x).sum().named("J")
    st = viz.backprop_steps(J, {"x": np.array([[1.0], [-2.0]])})
    relu_text = next(s for s in st if s.name == "x").text()
    assert "relu'(x) = step(x)" in relu_text and "Piecewise" not in relu_text


# -- 4: a real block: headings, scoped names, scrolling, label size ------------------------------

def test_real_block_headings_short_and_scoped_names_not_division():
    import viz
    g, J = _attention_block()
    steps = viz.backprop_steps(J, {"x": np.ones((2, 3, 4))})
    html = viz.page.steps_fragment(steps)
    import re
    for h2 in re.findall(r"<h2[^>]*>(.*?)</h2>", html, re.S):
        assert len(re.sub(r"<[^>]+>", "", h2)) < 160
    assert "@attn1/" not in html and "attn1.Wq" in html      # scope printed as attn1.Wq


def test_page_scrolls_to_node_and_labels_are_readable(tmp_path):
    import viz
    g, E, feeds = _lecture004()
    html = (tmp_path / "p.html")
    viz.steps_html(viz.backprop_steps(E, feeds), html)
    text = html.read_text()
    assert "scrollTop" in text and "max-width:none" in text


# -- 7: w.value both ways ------------------------------------------------------------------------

def test_param_value_reads_and_writes_graph_values():
    g = gn.Graph("v")
    w = g.param("w", value=np.array([1.0, 2.0]))
    np.testing.assert_array_equal(w.value, [1.0, 2.0])
    w.value = np.array([3.0, 4.0])
    np.testing.assert_array_equal(g.values["w"], [3.0, 4.0])
    g.values["w"] = np.array([5.0, 6.0])           # training writes g.values: w.value follows
    np.testing.assert_array_equal(w.value, [5.0, 6.0])
    x = g.input("x", (2,))
    out = (x * w).sum()
    assert gn.compile(out)(x=np.ones(2)) == pytest.approx(11.0)
    with pytest.raises(gn.ShapeError):
        w.value = np.zeros(3)
    with pytest.raises(gn.GraphError):
        g.const("c", 1.0).value = 2.0
    with pytest.raises(gn.GraphError):
        out.value = 1.0
    assert x.value is None and g["c"].value == 1.0


# -- 8 (files): saving gives the model the user built --------------------------------------------

def test_save_after_training_is_the_same_model_with_trained_weights(tmp_path):
    g, E, feeds = _lecture004()
    dw1, = gn.grad(E, [g["w1"]])                     # asked for by the user: saved
    names = [n.name for n in g.nodes]
    tr = gn.Trainer(E, optimizer=gn.optim.Adam(lr=0.1), regularization=gn.nn.L2(1e-3))
    tr.fit(feeds, epochs=3, batch_size=1)
    g.save(tmp_path / "t.json")
    g2 = gn.load(tmp_path / "t.json")
    assert [n.name for n in g2.nodes] == names
    assert "dE/dw1" in g2 and not any(n.role == "update" for n in g2.nodes)
    np.testing.assert_array_equal(g2.values["w1"], g.values["w1"])
    assert not any(k.startswith("optim") for k in g2.values)
    gn.save(g, tmp_path / "all.json", derived=True)
    assert len(gn.load(tmp_path / "all.json").nodes) > len(names)


def _model_file(tmp_path):
    g, E, feeds = _lecture004()
    g.save(tmp_path / "m.json")
    np.savez(tmp_path / "d.npz", x=np.tile(feeds["x"], (4, 1)), y=np.tile(feeds["y"], (4, 1)))
    np.savez(tmp_path / "f.npz", **feeds)
    return tmp_path / "m.json"


def test_cli_train_output_retrains_teaches_and_compiles(tmp_path, capsys):
    import os
    from graphnn.cli import main
    m = _model_file(tmp_path)
    t = tmp_path / "t.json"
    assert main(["train", str(m), "--data", str(tmp_path / "d.npz"), "-o", str(t), "--epochs", "2",
                 "--quiet", "--checkpoint", str(tmp_path / "c.ckpt")]) == 0
    assert [n.name for n in gn.load(t).nodes] == [n.name for n in gn.load(m).nodes]
    assert main(["train", str(t), "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--quiet"]) == 0
    page = tmp_path / "p.html"
    assert main(["teach", str(t), "-o", str(page), "--feeds", str(tmp_path / "f.npz")]) == 0
    assert "through net221: E" in page.read_text()
    # files honour the umask
    old = os.umask(0o022)
    try:
        gn.load(m).save(tmp_path / "u.json")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "u.json").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "u.npz").st_mode & 0o777 == 0o644


def test_cli_compile_default_is_loss_and_gradients(tmp_path, capsys):
    from graphnn.cli import main
    m = _model_file(tmp_path)
    out = tmp_path / "step.py"
    assert main(["compile", str(m), "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "compiled loss 'E' and its gradients" in said
    src = out.read_text()
    assert "dE/dw1" in src and "dE/db2" in src       # gradient outputs named for what they are


def test_cli_teach_without_feeds_says_random(tmp_path, capsys):
    from graphnn.cli import main
    m = _model_file(tmp_path)
    assert main(["teach", str(m), "-o", str(tmp_path / "p.html")]) == 0
    assert "random inputs" in capsys.readouterr().err


def test_cli_draw_png_without_dot_is_a_clear_message(tmp_path, capsys, monkeypatch):
    import importlib
    from graphnn.cli import main
    monkeypatch.setattr(importlib.import_module("viz.render"), "has_dot", lambda: False)
    m = _model_file(tmp_path)
    assert main(["draw", str(m), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ".svg" in err and "dot" in err


# -- 5: zero is not vanishing; kinks are not failures; the demo teaches off the minimum ----------

def _xor_exact():
    from graphnn.cli import XOR_X, XOR_Y, xor_network
    g, out, loss = xor_network(exact=True)
    return g, loss, {"x": XOR_X, "y": XOR_Y}


def test_exactly_zero_gradients_are_labelled_zero_not_vanishing():
    import viz
    g, loss, feeds = _xor_exact()
    d = viz.draw(loss, grads=True, feeds=feeds, style="overlay")
    assert "vanishing" not in d.source.split("cluster_legend")[0]
    assert "zero" in d.source and not d.graphnn.flags


def test_check_gradients_reports_relu_kinks_as_such():
    g, loss, feeds = _xor_exact()
    report = gn.check_gradients(loss, feeds)
    assert report.ok and not report.failed()
    kinks = [r for r in report.rows if r.at_kink]
    assert kinks and all("relu" in r.notes["kink"] for r in kinks)
    assert "at a kink" in str(report) and "0 failed" in str(report)


def test_demo_shows_gradients_at_a_perturbed_point(tmp_path, capsys):
    from graphnn.cli import main
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "perturbed point" in out
    svg = (tmp_path / "xor.svg").read_text()
    assert "vanishing" not in svg.split('id="legend"')[0]


# -- 6: folding never hides a spread of orders of magnitude ----------------------------------------

def test_folded_blocks_show_their_gradient_range():
    import re
    import viz
    g, loss = viz.plots.deep_mlp("sigmoid", depth=10, width=8, seed=0)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(16, 4)), "y": rng.normal(size=(16, 1))}
    d = viz.draw(loss, grads=True, feeds=feeds, style="overlay", depth=0)
    ranges = re.findall(r"per block: ([0-9.e+-]+) \.\. ([0-9.e+-]+)", d.source)
    assert ranges
    lo, hi = (float(v) for v in ranges[0])
    assert hi / lo > 100                       # the spread the mean alone hid


# -- 11: depth=1 draws one box per layer ---------------------------------------------------------

def test_depth_one_draws_one_box_per_layer_layernorm_included():
    import viz
    g, J = _attention_block()
    d = viz.draw(J, depth=1)
    src = d.source
    assert 'label="ln1\\n' in src and 'label="attn1\\n' in src
    assert d.graphnn.boxes < 10
    # inside a container, depth=1 keeps the container as a cluster around its layers' boxes
    g2 = gn.Graph("seq")
    x = g2.input("x", (None, 4))
    out = gn.nn.Sequential(gn.nn.Linear(4, activation="relu"), gn.nn.LayerNorm(), gn.nn.Linear(1))(x)
    d2 = viz.draw(out, depth=1)
    assert "label=seq" in d2.source and 'label="ln1\\n' in d2.source


# -- new view: gradient flow over epochs -----------------------------------------------------------

def test_trainer_records_layer_gradient_norms_and_plot_draws_them():
    from viz import plots
    g, loss = plots.deep_mlp("sigmoid", depth=6, width=8, seed=0)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(64, 4)), "y": rng.normal(size=(64, 1))}
    tr = gn.Trainer(loss, optimizer=gn.optim.SGD(lr=0.1))
    tr.fit(data, epochs=5, batch_size=16, record_gradients=True)
    assert tr.gradient_epochs == [1, 2, 3, 4, 5]
    assert list(tr.gradient_norms) == [f"layer{i}" for i in range(1, 7)]
    first, last = tr.gradient_norms["layer1"][-1], tr.gradient_norms["layer6"][-1]
    assert first < last / 10                     # vanishing towards the first layers (sigmoid)
    # the numbers are the gradients of the objective at the epoch's end
    dW = gn.compile(gn.grad(loss, [g["W1"], g["b1"]]))(**data)
    np.testing.assert_allclose(first, np.sqrt(sum(np.sum(d ** 2) for d in dW)), rtol=1e-10)
    fig = plots.gradient_norms(tr)
    assert len(fig.axes[0].lines) == 6 and fig._repr_png_()[:4] == b"\x89PNG"
    with pytest.raises(gn.GraphError):
        plots.gradient_norms(gn.Trainer(loss))


# -- new view: the neuron-level diagram ------------------------------------------------------------

def test_neuron_view_of_lecture004_network():
    import viz
    g, E, feeds = _lecture004()
    before = _snapshot(g)[0]
    d = viz.neurons(E, feeds, lr=0.5)
    assert _snapshot(g)[0] == before                      # looking does not change the graph
    src = d.source
    # units as circles named like the op graph, weights on the arrows with value, gradient, update
    assert src.count("shape=circle") == 2 + 2 + 1
    assert "w2[0,0] = 0.4" in src and "h[1] = 0.5969" in src
    l2 = d.graphnn_neurons[1]
    dW2 = gn.compile(gn.grad(E, [g["w2"]]))(**feeds)[0]
    np.testing.assert_allclose(l2["dW"], dW2)
    np.testing.assert_allclose(l2["W_new"], g.values["w2"] - 0.5 * dW2)
    assert f"dE/dw = {dW2[0, 0]:.4g}" in src and f"-> {l2['W_new'][0, 0]:.4g}" in src
    assert "<svg" in viz.svg(d)


def test_neuron_view_of_an_mlp_and_refusals():
    import viz
    g = gn.Graph("m", seed=0)
    x = g.input("x", (None, 3))
    out = gn.nn.MLP([4, 2], activation="tanh")(x)
    d = viz.neurons(out, {"x": np.ones((2, 3))})          # an output: values, no gradients
    assert d.source.count("shape=circle") == 3 + 4 + 2 and "dE/dw" not in d.source
    big = gn.nn.MLP([40, 1])(x)
    with pytest.raises(gn.GraphError, match="at most"):
        viz.neurons(big.sum(), {"x": np.ones((2, 3))})


# -- new view: the page ends with the update; slides per step ----------------------------------

def test_step_page_ends_with_the_update_step(tmp_path):
    import re
    import viz
    g, E, feeds = _lecture004()
    steps = viz.backprop_steps(E, feeds)
    html = (tmp_path / "p.html")
    viz.steps_html(steps, html, lr=0.5)
    text = html.read_text()
    sections = re.findall(r'<section class="step[^"]*"', text)
    assert len(sections) == len(steps) + 1 and sections[-1] == '<section class="step update"'
    last = text[text.rindex('<section class="step update"'):]
    dW2 = next(s for s in steps if s.name == "w2").derivative
    new = g.values["w2"] - 0.5 * dW2
    assert "&#8592;" in last and f"{new[0, 0]:.4g}" in last
    assert f'data-node="n{g["b2"].index} ' in last              # every parameter highlighted
    viz.steps_html(steps, tmp_path / "q.html", lr=None)
    assert "step update" not in (tmp_path / "q.html").read_text()


def test_export_steps_writes_one_picture_and_latex_per_step(tmp_path):
    import viz
    g, E, feeds = _lecture004()
    steps = viz.backprop_steps(E, feeds)
    paths = viz.export_steps(steps, tmp_path / "slides", lr=0.5)
    svgs = sorted(p for p in paths if p.endswith(".svg"))
    texs = [p for p in paths if p.endswith(".tex")]
    assert len(svgs) == len(steps) and len(texs) == len(steps) + 2
    first = open(svgs[0]).read()
    assert first.lstrip().startswith("<?xml") or "<svg" in first
    assert "#ff0066" in first and "Step 1: E" in first
    eqs = (tmp_path / "slides" / "equations.tex").read_text()
    assert eqs.count("\\begin{align*}") == len(steps) + 1 and "\\leftarrow" in eqs
    assert "bmatrix" in (tmp_path / "slides" / "update.tex").read_text()
    with pytest.raises(ValueError):
        viz.export_steps(steps, tmp_path / "x", format="gif")


def test_forward_page_graph_shows_tangents():
    import viz
    g, E, feeds = _lecture004()
    steps = viz.forward_steps(E, feeds, wrt=g["w2"])
    src = viz.page.graph_dot(steps)
    assert "tangent= [[1.19]]" in src and "dE/d" not in src
    assert _snapshot(g)[0] == _snapshot(_lecture004()[0])[0]


def test_cli_teach_picks_the_models_loss_in_a_file_saved_with_derived_nodes(tmp_path):
    from graphnn.cli import main
    g, E, feeds = _lecture004()
    gn.Trainer(E, optimizer=gn.optim.Adam(lr=0.1))
    g.save(tmp_path / "all.json", derived=True)
    np.savez(tmp_path / "f.npz", **feeds)
    page = tmp_path / "p.html"
    assert main(["teach", str(tmp_path / "all.json"), "-o", str(page), "--feeds",
                 str(tmp_path / "f.npz")]) == 0
    assert "through net221: E<" in page.read_text()


def test_negative_zero_prints_as_zero():
    from viz.evaluate import summary
    assert summary(np.array([-0.0, 1.5])) == "[0, 1.5]" and summary(np.float64(-0.0)) == "0"
