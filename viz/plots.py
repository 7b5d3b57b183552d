"""Matplotlib figures: activations, training history, decision boundaries, gradient flow,
and lecture 003's view of a shallow ReLU network as a piecewise-linear function.

Every function returns a `viz.figure.TeachingFigure` (a `matplotlib.figure.Figure`
made without pyplot, with the Agg backend, that displays itself as PNG in
Jupyter as the last expression of a cell) and never calls `pyplot.show`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import sympy as sp
from matplotlib.figure import Figure

from .figure import TeachingFigure

from graphnn.errors import GraphError
from graphnn.ops.api import ACTIVATIONS
from graphnn.ops.elementwise import ELEMENTWISE, SYMBOLS, derivative_expr

from .flow import layer_gradients

def _erf_module():
    from graphnn.ops.runtime import erf
    return [{"erf": erf}, "numpy"]


_MODULES = _erf_module()

# values for the extra arguments of activations with learnable parts (prelu, trainable swish)
EXTRA_ARGS = {"a": 0.25, "b": 0.0, "c": 1.0, "d": 0.0}


def activation_function(name: str):
    """(f, f', sympy f, sympy f') of an activation in x alone: extra arguments take EXTRA_ARGS."""
    if name not in ELEMENTWISE:
        raise GraphError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    spec = ELEMENTWISE[name]
    x = SYMBOLS["x"]
    if "x" not in spec.args:
        raise GraphError(f"activation {name!r} has no argument x")
    fixed = {SYMBOLS[a]: sp.Float(EXTRA_ARGS[a]) for a in spec.args if a != "x"}
    params = {sp.Symbol(p, real=True): sp.Float(v) for p, v in spec.params}
    f = spec.expr.xreplace(params).xreplace(fixed)
    df = derivative_expr(spec, "x").xreplace(params).xreplace(fixed)
    return (sp.lambdify(x, f, _MODULES), sp.lambdify(x, df, _MODULES), f, df)


def _fig(n: int, cols: int, w: float = 3.0, h: float = 2.4) -> tuple[Figure, list]:
    rows = max(1, -(-n // cols))
    fig = TeachingFigure(figsize=(w * cols, h * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def activation_gallery(names: Sequence[str] = ACTIVATIONS, x_range=(-4.0, 4.0), cols: int = 4) -> Figure:
    """Each activation and its derivative (sympy.diff of its declared expression)."""
    names = list(names)
    fig, axes = _fig(len(names), cols)
    xs = np.linspace(*x_range, 401)
    for ax, name in zip(axes, names):
        f, df, _, _ = activation_function(name)
        with np.errstate(all="ignore"):
            ax.plot(xs, np.broadcast_to(f(xs), xs.shape), label=name, color="#2c5aa0")
            ax.plot(xs, np.broadcast_to(df(xs), xs.shape), label=f"{name}'", color="#c0392b", ls="--")
        ax.axhline(0, color="#999", lw=0.5)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Activations (solid) and their SymPy-derived derivatives (dashed)")
    return fig


@dataclass
class _History:
    epochs: list
    train: list
    val: list | None
    best: int | None
    stopped: int | None


_TRAIN_KEYS = ("loss", "train_loss", "train")
_VAL_KEYS = ("val_loss", "validation_loss", "val")


def _history(h) -> _History:
    if isinstance(h, Mapping):
        d = dict(h)
    elif hasattr(h, "to_dict"):
        d = dict(h.to_dict())
    elif hasattr(h, "history") and isinstance(h.history, Mapping):
        d = dict(h.history)
        d.update({k: getattr(h, k) for k in ("best_epoch", "stopped_epoch", "epochs")
                  if getattr(h, k, None) is not None})
    else:
        d = {k: getattr(h, k) for k in _TRAIN_KEYS + _VAL_KEYS + ("best_epoch", "stopped_epoch", "epochs")
             if hasattr(h, k)}
    train = next((list(d[k]) for k in _TRAIN_KEYS if d.get(k) is not None), None)
    if train is None:
        raise GraphError(f"training history: no train loss among keys {sorted(d)}; expected one of "
                         f"{_TRAIN_KEYS}")
    val = next((list(d[k]) for k in _VAL_KEYS if d.get(k) is not None and len(d[k])), None)
    epochs = list(d["epochs"]) if d.get("epochs") else list(range(len(train)))
    if len(epochs) != len(train):
        raise GraphError(f"training history: {len(epochs)} epochs but {len(train)} losses")
    best, stopped = d.get("best_epoch"), d.get("stopped_epoch")
    return _History(epochs, train, val, None if best is None else int(best),
                    None if stopped is None else int(stopped))


def training_history(history, log: bool = False) -> Figure:
    """Train (and validation) loss per epoch, with the early-stopping point marked.

    Accepts graphnn's Trainer History (epochs, loss, val_loss, best_epoch, stopped_epoch)
    or a plain dict with `loss`/`train_loss`, `val_loss` and optionally `epochs`,
    `best_epoch`, `stopped_epoch` (in the same numbering as `epochs`, default 0, 1, ...).
    Without best_epoch, the epoch of the lowest validation loss is marked."""
    h = _history(history)
    fig = TeachingFigure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(h.epochs, h.train, label="train", color="#2c5aa0")
    if h.val is not None:
        ax.plot(h.epochs[:len(h.val)], h.val, label="validation", color="#e69f00")
        best = h.best if h.best is not None else h.epochs[int(np.argmin(h.val))]
        if best in h.epochs[:len(h.val)]:
            ax.plot([best], [h.val[h.epochs.index(best)]], "o", color="#c0392b",
                    label=f"early stopping point: best epoch {best}")
    if h.stopped is not None:
        ax.axvline(h.stopped, color="#c0392b", ls="--", lw=1, label=f"stopped at epoch {h.stopped}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    return fig


def _predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    from graphnn.compile import Program
    if isinstance(model, Program):
        ins = [n for n in model.arg_nodes if n.op == "input"]
        if len(ins) != 1:
            raise GraphError(f"decision_boundary: the program takes inputs {[n.name for n in ins]}; "
                             "it needs exactly one (N, 2) input, or pass a function")
        name = ins[0].name
        return lambda pts: np.asarray(model(**{name: pts}))
    if callable(model):
        return lambda pts: np.asarray(model(pts))
    raise GraphError(f"decision_boundary: expected a Program or a function, got {type(model).__name__}")


def decision_boundary(model, X, y=None, resolution: int = 150, margin: float = 0.5,
                      threshold: float = 0.5) -> Figure:
    """Class regions of a 2-D classifier: `model` maps (N, 2) points to scores (N,), (N, 1) or (N, K)."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise GraphError(f"decision_boundary: X must be (N, 2), got {X.shape}")
    predict = _predictor(model)
    (x0, y0), (x1, y1) = X.min(0) - margin, X.max(0) + margin
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    pts = np.c_[gx.ravel(), gy.ravel()]
    s = predict(pts)
    s = s.reshape(len(pts), -1)
    cls = s.argmax(1) if s.shape[1] > 1 else (s[:, 0] > threshold).astype(int)
    fig = TeachingFigure(figsize=(5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.contourf(gx, gy, cls.reshape(gx.shape), alpha=0.3, cmap="coolwarm")
    ax.contour(gx, gy, cls.reshape(gx.shape), colors="k", linewidths=0.6)
    if y is None:
        ax.scatter(X[:, 0], X[:, 1], color="k")
    else:
        ax.scatter(X[:, 0], X[:, 1], c=np.asarray(y).ravel(), cmap="coolwarm", edgecolors="k")
    ax.set_title("decision boundary")
    fig.graphnn_classes = cls.reshape(gx.shape)
    return fig


# -- lecture 003: shallow 1-D ReLU networks -------------------------------------------------

@dataclass
class Regions:
    """Linear regions of y = phi0 + sum_i phi_i relu(theta_i0 + theta_i1 x) on an interval."""
    joints: np.ndarray        # x where a hidden unit switches (sorted, inside the interval)
    bounds: np.ndarray        # region boundaries: start, joints..., end
    patterns: list            # per region: tuple of 0/1, which hidden units are active
    slopes: np.ndarray        # per region
    count: int                # number of linear regions (regions with equal slopes on both
                              # sides of a joint are merged: that joint is not a kink)


def shallow_relu_regions(theta, phi, x_range=(-2.0, 2.0)) -> Regions:
    """theta: (H, 2) rows (theta_i0, theta_i1); phi: (H + 1,) = (phi0, phi_1..phi_H)."""
    theta = np.asarray(theta, dtype=float)
    phi = np.asarray(phi, dtype=float)
    if theta.ndim != 2 or theta.shape[1] != 2 or phi.shape != (theta.shape[0] + 1,):
        raise GraphError(f"shallow_relu_regions: want theta (H, 2) and phi (H+1,), got "
                         f"{theta.shape} and {phi.shape}")
    lo, hi = map(float, x_range)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = -theta[:, 0] / theta[:, 1]
    joints = np.unique(j[np.isfinite(j) & (j > lo) & (j < hi)])
    bounds = np.concatenate([[lo], joints, [hi]])
    mids = (bounds[:-1] + bounds[1:]) / 2
    active = (theta[:, 0][None, :] + theta[:, 1][None, :] * mids[:, None]) > 0
    slopes = (active * theta[:, 1][None, :] * phi[1:][None, :]).sum(1)
    count = 1 + int(np.sum(~np.isclose(slopes[1:], slopes[:-1])))
    return Regions(joints, bounds, [tuple(int(a) for a in row) for row in active], slopes, count)


def shallow_relu_network(theta, phi, x_range=(-2.0, 2.0)) -> Figure:
    """Lecture 003: the network as a piecewise-linear function, joints marked, each region shaded
    by its activation pattern, hidden units drawn below; the title counts the linear regions."""
    r = shallow_relu_regions(theta, phi, x_range)
    theta = np.asarray(theta, dtype=float)
    phi = np.asarray(phi, dtype=float)
    xs = np.linspace(*x_range, 801)
    pre = theta[:, 0][None, :] + theta[:, 1][None, :] * xs[:, None]
    h = np.maximum(pre, 0)
    y = phi[0] + h @ phi[1:]
    fig = TeachingFigure(figsize=(7, 6), layout="constrained")
    ax, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2, sharex=None)
    palette = ["#fde0dd", "#e0f3db", "#deebf7", "#fff7bc", "#efedf5", "#fee6ce", "#e5f5f9"]
    colours = {}
    for a, b, pat in zip(r.bounds[:-1], r.bounds[1:], r.patterns):
        c = colours.setdefault(pat, palette[len(colours) % len(palette)])
        ax.axvspan(a, b, color=c, alpha=0.9, lw=0)
        ax.text((a + b) / 2, 1.0, "".join(map(str, pat)), transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=8)
    ax.plot(xs, y, color="k", lw=2)
    for jx in r.joints:
        jy = phi[0] + np.maximum(theta[:, 0] + theta[:, 1] * jx, 0) @ phi[1:]
        ax.plot([jx], [jy], "o", color="#c0392b")
    ax.set_title(f"shallow ReLU network: {r.count} linear regions, {len(r.joints)} joints "
                 "(shading: activation pattern, 1 = unit active)")
    ax.set_ylabel("y")
    for i in range(theta.shape[0]):
        ax2.plot(xs, h[:, i] * phi[i + 1], label=f"phi_{i + 1} h_{i + 1}")
    ax2.set_xlabel("x")
    ax2.legend(fontsize=8)
    fig.graphnn_regions = r
    return fig


# -- gradient flow ------------------------------------------------------------------------------

def gradient_flow(loss, feeds=None, params=None, ax=None, title: str | None = None) -> Figure:
    """Per-layer (per scope) bar chart of mean |dloss/dparam| on a log scale.

    The numbers are on `fig.graphnn_layers` (a LayerGradients list)."""
    layers = layer_gradients(loss, feeds, params)
    if ax is None:
        fig = TeachingFigure(figsize=(max(5.0, 0.35 * len(layers) + 2), 3.6), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    vals = [max(l.mean_abs, 1e-300) for l in layers]
    ax.bar(range(len(layers)), vals, color="#2c5aa0")
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), [l.scope for l in layers], rotation=90, fontsize=7)
    ax.set_ylabel(f"mean |d{loss.name}/dparam|")
    ax.set_title(title or f"gradient flow into {loss.name}")
    fig.graphnn_layers = layers
    return fig


def deep_mlp(activation: str, depth: int = 20, width: int = 8, inputs: int = 4, seed: int = 0,
             init: str = "xavier_normal"):
    """A plain `depth`-layer MLP (scopes layer1..layerN) with an MSE loss: for the comparison below."""
    import graphnn as gn
    g = gn.Graph(f"mlp_{activation}_{depth}", seed=seed)
    x = g.input("x", (None, inputs))
    y = g.input("y", (None, 1))
    h = x
    act = getattr(gn, activation)
    for i in range(1, depth + 1):
        out = 1 if i == depth else width
        with g.scope(f"layer{i}"):
            W = g.param(f"W{i}", (h.shape[1], out), init=init, seed=seed + i)
            b = g.param(f"b{i}", value=np.zeros(out))
            h = h @ W + b
            if i < depth:
                h = act(h)
    return g, gn.mse(h, y)


def vanishing_gradient_comparison(depth: int = 20, width: int = 8, batch: int = 16,
                                  seed: int = 0) -> Figure:
    """Lecture 004: the same deep network with sigmoid and with ReLU, gradient flow side by side.

    With sigmoid (derivative <= 1/4) the mean |g| shrinks by orders of magnitude towards the
    first layers; with ReLU it does not. `fig.graphnn_layers` maps activation -> LayerGradients."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, 4))
    Y = rng.normal(size=(batch, 1))
    fig = TeachingFigure(figsize=(12, 4), layout="constrained")
    out = {}
    first = None
    for k, act in enumerate(("sigmoid", "relu")):
        g, loss = deep_mlp(act, depth, width, seed=seed,
                           init="he_normal" if act == "relu" else "xavier_normal")
        # one y-axis for both panels: the orders of magnitude are the point
        ax = fig.add_subplot(1, 2, k + 1, sharey=first)
        first = first or ax
        sub = gradient_flow(loss, {"x": X, "y": Y}, ax=ax, title=f"{depth} layers, {act}")
        out[act] = sub.graphnn_layers
    fig.suptitle("Vanishing gradient (lecture 004): mean |dL/dW| per layer")
    fig.graphnn_layers = out
    return fig


# -- gradient flow over epochs ------------------------------------------------------------------

def gradient_norms(trainer_or_norms, epochs: Sequence[int] | None = None,
                   title: str | None = None) -> Figure:
    """Per-layer gradient norms over training (lecture 004's vanishing gradient on a real run).

    `trainer_or_norms`: a Trainer fitted with `fit(..., record_gradients=True)`, or a dict
    layer -> list of norms (then `epochs` gives the x values). One line per layer on a log
    scale, first layer darkest; the numbers are on `fig.graphnn_norms`."""
    if isinstance(trainer_or_norms, Mapping):
        norms = dict(trainer_or_norms)
        xs = list(epochs) if epochs is not None else None
    else:
        norms = dict(getattr(trainer_or_norms, "gradient_norms", {}) or {})
        xs = list(getattr(trainer_or_norms, "gradient_epochs", []))
    if not norms or not any(len(v) for v in norms.values()):
        raise GraphError("gradient_norms: nothing recorded; train with "
                         "trainer.fit(..., record_gradients=True)")
    fig = TeachingFigure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    import matplotlib
    cmap = matplotlib.colormaps["viridis"]
    k = len(norms)
    for i, (layer, vals) in enumerate(norms.items()):
        x = xs if xs is not None and len(xs) == len(vals) else list(range(1, len(vals) + 1))
        ax.plot(x, np.maximum(np.asarray(vals, dtype=float), 1e-300), label=layer,
                color=cmap(0.9 * i / max(1, k - 1)), lw=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("||dJ/dparams|| of the layer")
    ax.set_title(title or "gradient flow over epochs (one line per layer)")
    ax.legend(fontsize=7, ncol=2 if k > 8 else 1)
    fig.graphnn_norms = norms
    return fig
