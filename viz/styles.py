"""Node and edge styles, and the legend that explains them (every picture has one)."""
from __future__ import annotations


NODE = {
    "input": dict(shape="box", style="rounded,filled", fillcolor="#d5f5d5", color="#2e7d32"),
    "param": dict(shape="box", style="filled", fillcolor="#fff0c2", color="#b8860b", penwidth="1.5"),
    "const": dict(shape="box", style="dashed,filled", fillcolor="#f0f0f0", color="#888888"),
    "op": dict(shape="ellipse", style="filled", fillcolor="#dce8f8", color="#2c5aa0"),
    "backward": dict(shape="ellipse", style="dashed,filled", fillcolor="#fbe3e1", color="#c0392b"),
    "tangent": dict(shape="ellipse", style="dotted,filled", fillcolor="#ece2f7", color="#7b3fa0"),
    "update": dict(shape="ellipse", style="filled", fillcolor="#dff3f1", color="#00796b"),
    "group": dict(shape="box3d", style="filled", fillcolor="#eef1f5", color="#445566"),
    "folded": dict(shape="box3d", style="filled", fillcolor="#e4e9f0", color="#445566",
                   peripheries="2"),
}
CHECK_FAILED = dict(fillcolor="#ff8a80", color="#d50000", penwidth="3")
CHECK_PASSED = dict(color="#00a040", penwidth="2.5")

EDGE = {
    "forward": dict(color="#555555"),
    "backward": dict(color="#c0392b", style="dashed"),
    "tangent": dict(color="#7b3fa0", style="dotted"),
    "feeds_backward": dict(color="#bbbbbb", style="dashed"),
    "adjoint_of": dict(color="#e08070", style="dotted", arrowhead="none", constraint="false"),
}

_DESCRIPTIONS = [
    ("input", "input (fed at call time)"),
    ("param", "parameter (trainable)"),
    ("const", "constant"),
    ("op", "operation (forward)"),
    ("backward", "backward: reverse-mode adjoint node"),
    ("tangent", "tangent: forward-mode node"),
    ("update", "parameter update"),
    ("group", "collapsed scope"),
    ("folded", "identical blocks folded (x N)"),
]


def node_kind(node) -> str:
    if node.op in ("input", "param", "const"):
        return node.op
    if node.role in ("backward", "tangent", "update"):
        return node.role
    return "op"


def add_legend(d, kinds: set, grads: bool, vanishing: float, exploding: float,
               check: bool, note: str | None) -> None:
    """A legend cluster: one sample box per node style (in a row) and a note explaining edges.

    Plain labels only: the embedded Graphviz has no HTML-like label support."""
    from .escape import dot_text
    lines = ["Node label: name, op, dtype[shape]; '=' value; 'dJ/dx=' gradient of the loss J.",
             "Grey edge: a value flowing forward; a node used twice gets two edges."]
    if "backward" in kinds:
        lines.append("Red dashed edges: the reverse-mode (backward) graph.")
    if "tangent" in kinds:
        lines.append("Purple dotted edges: the forward-mode (tangent) graph.")
    if grads:
        lines += [
            f"Edge width: log10 |gradient| along the edge: thin at {vanishing:g}, thick at {exploding:g}.",
            "Edge colour: blue (small), green, orange, red (large) |gradient|.",
            f"Dotted, 'vanishing': 0 < |g| < {vanishing:g}.   Bold red, 'exploding': |g| > {exploding:g}.",
            "Grey dotted, 'zero': the gradient is exactly 0 (a minimum, or a ReLU that is off).",
        ]
    if "group" in kinds or "folded" in kinds:
        lines.append("Edges between collapsed boxes carry tensor shapes.")
    if check:
        lines.append("Red node: gradient modes disagree (check_gradients); green outline: they agree.")
    if note:
        lines.append("Note: " + note)
    with d.subgraph(name="cluster_legend") as c:
        c.attr(label="Legend", style="rounded", color="#999999", fontsize="10", id="legend")
        names = []
        with c.subgraph(name="legend_row") as row:
            row.attr(rank="same")
            for kind, text in _DESCRIPTIONS:
                if kind not in kinds and kind not in ("input", "param", "const", "op"):
                    continue
                names.append(f"legend_{kind}")
                row.node(names[-1], label=dot_text(text), fontsize="8", **NODE[kind])
        c.node("legend_text", label=dot_text("\n".join(lines)), shape="note", fontsize="8",
               style="filled", fillcolor="#fffde7")
        c.edge(names[0], "legend_text", style="invis")
