"""Slides from a step list: one picture per step (the graph, the step's node highlighted)
and the LaTeX of every equation, ready for a presentation.

    paths = viz.export_steps(viz.backprop_steps(E, feeds), "slides/", lr=0.5)

writes ``step_01.svg`` ... (``.png`` with `format="png"`, which needs the system
Graphviz), ``step_01.tex`` ... (the step's equations, one per line, as in the page's
LaTeX box), ``update.tex`` (the gradient-descent step, backprop only) and
``equations.tex`` (all of them, one ``align*`` block per step).
"""
from __future__ import annotations

import os

from .escape import dot_text

HIGHLIGHT = 'color="#ff0066" penwidth=5'


def _highlighted(source: str, node_id: str | None, label: str) -> str:
    """The DOT source with `node_id` outlined and a caption naming the step."""
    end = source.rstrip().rfind("}")
    extra = []
    if node_id:
        extra.append(f"\t{node_id} [{HIGHLIGHT}]")
    extra.append(f'\tlabel="{dot_text(label)}" labelloc=t fontsize=16')
    return source[:end] + "\n".join(extra) + "\n}\n"


def export_steps(steps, folder, format: str = "svg", lr: float | None = 0.1,
                 max_nodes: int = 120) -> list[str]:
    """Write one picture and one .tex per step (plus update.tex and equations.tex) to
    `folder`; returns the paths written. `lr`: the rate of the final update step (None: none)."""
    from . import page
    from .render import render, svg
    if format not in ("svg", "png", "pdf"):
        raise ValueError(f"export_steps: format must be 'svg', 'png' or 'pdf', got {format!r}")
    if not hasattr(steps, "root"):
        raise TypeError("export_steps: expected the list returned by viz.backprop_steps or "
                        "viz.forward_steps")
    os.makedirs(folder, exist_ok=True)
    base = page.graph_dot(steps, max_nodes)
    written: list[str] = []
    blocks: list[str] = []
    width = max(2, len(str(len(steps) + 1)))
    for k, step in enumerate(steps, start=1):
        stem = os.path.join(folder, f"step_{k:0{width}d}")
        src = _highlighted(base, f"n{step.node.index}", f"Step {k}: {step.node.name}")
        pic = f"{stem}.{format}"
        if format == "svg":
            with open(pic, "w", encoding="utf-8") as f:
                f.write(svg(src))
        else:
            render(src, pic)
        written.append(pic)
        lines = page.latex_lines(step)
        with open(f"{stem}.tex", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        written.append(f"{stem}.tex")
        blocks.append(f"% step {k}: {step.node.name}\n\\begin{{align*}}\n"
                      + " \\\\\n".join(lines) + "\n\\end{align*}")
    if lr is not None and steps.kind == "backward":
        lines = [r for r, _ in page.update_latex(steps, lr)]
        if lines:
            path = os.path.join(folder, "update.tex")
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            written.append(path)
            blocks.append("% the update\n\\begin{align*}\n" + " \\\\\n".join(lines)
                          + "\n\\end{align*}")
    path = os.path.join(folder, "equations.tex")
    with open(path, "w", encoding="utf-8") as f:
        f.write("% requires amsmath\n" + "\n\n".join(blocks) + "\n")
    written.append(path)
    return written
