"""viz: pictures of graphnn graphs — drawings, gradient flow, step-by-step backprop, plots.

`viz` imports graphnn; graphnn imports viz only from its command line.
"""
from .draw import DrawInfo, draw
from .render import RenderError, has_dot, render, svg
from .flow import Flag, LayerGradients, layer_gradients

__all__ = ["draw", "svg", "render", "RenderError", "has_dot", "DrawInfo", "Flag",
           "layer_gradients", "LayerGradients", "gradient_flow", "draw_check",
           "backprop_steps", "forward_steps", "steps_html", "plots", "neurons",
           "export_steps"]


import importlib as _importlib


def _install_display() -> None:
    """Graphs and nodes draw themselves in Jupyter once viz is imported.

    graphnn never imports viz (the core does not depend on rendering), so the
    display hooks are attached from this side."""
    from graphnn.graph import Graph, Node

    def _svg(obj):
        return svg(draw(obj))

    Graph._repr_svg_ = _svg
    Node._repr_svg_ = _svg


_install_display()


def __getattr__(name):
    # matplotlib and sympy-heavy parts load on first use
    if name == "plots":
        return _importlib.import_module("viz.plots")
    if name == "gradient_flow":
        return _importlib.import_module("viz.plots").gradient_flow
    if name in ("backprop_steps", "forward_steps", "Step", "Steps", "Term"):
        return getattr(_importlib.import_module("viz.steps"), name)
    if name == "steps_html":
        return _importlib.import_module("viz.page").steps_html
    if name == "neurons":
        return _importlib.import_module("viz.neuron_view").neurons
    if name == "export_steps":
        return _importlib.import_module("viz.export").export_steps
    if name == "draw_check":
        return _importlib.import_module("viz.check").draw_check
    raise AttributeError(f"module 'viz' has no attribute {name!r}")
